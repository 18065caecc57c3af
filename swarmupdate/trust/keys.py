"""Signing keys: generated ed25519 files (0600) or any securesystemslib signer URI.

The publisher keeps ``keys/signers.json``: a map from key id to private key URI. Generated
keys are PEM files next to it, named by the ``file2:`` scheme with a path relative to the
keys directory; an HSM, a cloud KMS or a key held elsewhere is named by its own URI
(``hsm:``, ``gcpkms:``, ``awskms:``, ``azurekms:``, ``file2:/abs/path``...). A URI whose
key is not reachable (an offline root key) makes only the operations that need it fail.
"""

from __future__ import annotations

import json
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Key, Signer

from swarmupdate.errors import ConfigError, SigningError
from swarmupdate.fsutil import atomic_write_bytes

__all__ = ["KeyStore"]

SIGNERS_FILE = "signers.json"


class KeyStore:
    """The private side of a repository's keys: ``DIR/keys/``."""

    def __init__(self, keys_dir: Path) -> None:
        self.dir = keys_dir
        self._uris: dict[str, str] = {}
        path = keys_dir / SIGNERS_FILE
        if path.exists():
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{path}: cannot read: {exc}") from exc
            if not isinstance(doc, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
            ):
                raise ConfigError(f"{path}: expected an object mapping key ids to signer URIs")
            self._uris = dict(doc)

    def generate(self, label: str) -> Key:
        """Make a new ed25519 key, store its private half (0600) and return the public key."""
        signer = CryptoSigner.generate_ed25519()
        key = signer.public_key
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{label}-{key.keyid[:12]}.pem"
        atomic_write_bytes(self.dir / name, signer.private_bytes, mode=0o600)
        self.add_uri(key.keyid, f"file2:{name}")
        return key

    def add_uri(self, keyid: str, uri: str) -> None:
        """Remember that ``keyid`` is signed with the private key at ``uri``."""
        self._uris[keyid] = uri
        self._save()

    def retire(self, keyid: str) -> None:
        """Forget ``keyid``; a generated key file moves to ``keys/retired/``."""
        uri = self._uris.pop(keyid, None)
        if uri is not None and uri.startswith("file2:") and not Path(uri[6:]).is_absolute():
            src = self.dir / uri[6:]
            if src.exists():
                (self.dir / "retired").mkdir(mode=0o700, exist_ok=True)
                src.replace(self.dir / "retired" / src.name)
        self._save()

    def has(self, keyid: str) -> bool:
        """True when a URI is known for ``keyid`` (it may still be unreachable)."""
        return keyid in self._uris

    def signer(self, key: Key, role: str) -> Signer:
        """Load the signer for ``key``.

        Raises:
            SigningError: no URI for that key, or the key behind it cannot be loaded.
        """
        uri = self._uris.get(key.keyid)
        if uri is None:
            raise SigningError(f"role {role!r}: no private key for key id {key.keyid[:12]}… in {self.dir}")
        if uri.startswith("file2:") and not Path(uri[6:]).is_absolute():
            uri = f"file2:{self.dir / uri[6:]}"
        try:
            return Signer.from_priv_key_uri(uri, key)
        except Exception as exc:  # securesystemslib raises many types; all mean "cannot sign"
            raise SigningError(f"role {role!r}: cannot load key {key.keyid[:12]}… from {uri}: {exc}") from exc

    def _save(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(self._uris, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write_bytes(self.dir / SIGNERS_FILE, data, mode=0o600)

"""Key rotation: root by old and new keys together, other roles re-keyed by their delegator."""

from __future__ import annotations

import copy

from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError

from swarmupdate.errors import ConfigError, SigningError
from swarmupdate.publisher.repository import TOP_LEVEL_ROLES, Repository

__all__ = ["rotate_key"]


def rotate_key(
    repo: Repository,
    role: str,
    *,
    keyid: str | None = None,
    new_key: Key | None = None,
    new_uri: str | None = None,
) -> list[tuple[str, str]]:
    """Replace the keys of ``role`` (or only ``keyid``) and publish the change.

    A new key is generated unless ``new_key`` and ``new_uri`` name one held elsewhere (an HSM,
    a KMS). Returns (old keyid, new keyid) pairs.

    Raises:
        ConfigError: unknown role or key id. SigningError: a key needed to sign is missing.
    """
    if (new_key is None) != (new_uri is None):
        raise ConfigError("--public-key and --signer-uri go together")
    if role not in TOP_LEVEL_ROLES:
        repo.app(role)  # raises UnknownAppError
    keys, _threshold = repo.role_keys(role)
    old_ids = [k.keyid for k in keys]
    if keyid is not None:
        matches = [k for k in old_ids if k.startswith(keyid)]
        if len(matches) != 1:
            raise ConfigError(f"--keyid {keyid}: matches {len(matches)} key(s) of role {role!r}")
        old_ids = matches
    if new_key is not None and len(old_ids) != 1:
        raise ConfigError(f"role {role!r} has {len(old_ids)} keys: name the one to replace with --keyid")

    # check every signature we will need before changing anything
    needed = ["root"] if role in TOP_LEVEL_ROLES else ["targets", role]
    repo.require_signers(needed)

    old_root = copy.deepcopy(repo.root)
    old_root_keys = [repo.root.signed.keys[k] for k in repo.root.signed.roles["root"].keyids]
    pairs = []
    new_keys: list[Key] = []
    for old in old_ids:
        if new_key is not None and new_uri is not None:
            key = new_key
            repo.keys.add_uri(key.keyid, new_uri)
        else:
            key = repo.keys.generate(role if role in TOP_LEVEL_ROLES else f"app-{role}")
        new_keys.append(key)
        pairs.append((old, key.keyid))

    if role in TOP_LEVEL_ROLES:
        root = repo.stage("root")
        for old, new in zip(old_ids, new_keys, strict=True):
            root.signed.revoke_key(old, role)
            root.signed.add_key(new, role)
        if role == "targets":
            repo.stage("targets")
    else:
        targets = repo.stage("targets")
        for old, new in zip(old_ids, new_keys, strict=True):
            targets.signed.revoke_key(old, role)
            targets.signed.add_key(new, role)
        repo.stage(role)

    if role == "root":
        repo.commit(extra_root_keys=old_root_keys)
    else:
        repo.commit()
    if "root" in needed:
        try:
            old_root.verify_delegate("root", repo.root)
        except UnsignedMetadataError as exc:  # pragma: no cover - require_signers makes this unreachable
            raise SigningError("the new root is not signed by the old root's threshold") from exc

    still_used = {k for r in repo.root.signed.roles.values() for k in r.keyids}
    delegations = repo.targets.signed.delegations
    if delegations is not None and delegations.roles:
        still_used |= {k for r in delegations.roles.values() for k in r.keyids}
    for old in old_ids:
        if old not in still_used:
            repo.keys.retire(old)
    return pairs

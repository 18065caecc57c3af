"""The publisher's TUF repository: load the live state from the origin tree, change it, sign, commit.

The origin tree is the only state: the live versions are the ones ``timestamp.json`` reaches
(timestamp -> snapshot -> targets and app roles) plus the highest ``N.root.json``. A commit writes
new versioned files first and ``timestamp.json`` last, each by an atomic rename, so a publish that
dies at any point leaves the previous release live.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import Key, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from swarmupdate.errors import (
    ConfigError,
    RemoteDataError,
    RepositoryStateError,
    SigningError,
    UnknownAppError,
)
from swarmupdate.fsutil import atomic_write_bytes
from swarmupdate.model import DEFAULT_CHUNKER, TOP_LEVEL_ROLES, ChunkerParams, is_app_name
from swarmupdate.origin.layout import OriginLayout
from swarmupdate.trust.keys import KeyStore

__all__ = ["Repository", "RepoSettings", "TOP_LEVEL_ROLES", "fault_point", "validate_app_name"]

SETTINGS_FILE = "repo.json"
_SERIALIZER = JSONSerializer(compact=False)
T = TypeVar("T", Root, Timestamp, Snapshot, Targets)


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``SWARMUPDATE_FAULT_POINT`` names this point.

    Used by the crash-consistency tests to interrupt a publish between two steps exactly as
    ``kill -9`` would; does nothing otherwise.
    """
    if os.environ.get("SWARMUPDATE_FAULT_POINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def validate_app_name(name: str) -> str:
    """Return ``name`` or raise ConfigError: lowercase letters, digits, ``-``, ``_``; not a top role."""
    if not is_app_name(name):
        raise ConfigError(
            f"app name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            f"not one of {', '.join(TOP_LEVEL_ROLES)}"
        )
    return name


@dataclass(frozen=True)
class RepoSettings:
    """``DIR/repo.json``: how long each role's signature lasts, and how releases are chunked."""

    expiry_days: dict[str, int] = field(
        default_factory=lambda: {"root": 365, "targets": 365, "app": 90, "snapshot": 7, "timestamp": 1}
    )
    chunker: ChunkerParams = DEFAULT_CHUNKER
    store_artifacts: bool = False

    def expiry(self, role: str) -> timedelta:
        key = role if role in TOP_LEVEL_ROLES else "app"
        return timedelta(days=self.expiry_days[key])

    def to_json(self) -> bytes:
        doc = {
            "format": 1,
            "expiry_days": self.expiry_days,
            "chunker": {"min": self.chunker.min, "avg": self.chunker.avg, "max": self.chunker.max},
            "store_artifacts": self.store_artifacts,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, path: Path) -> RepoSettings:
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: not a swarmupdate repository (run 'swarmupdate repo init')") from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        try:
            days = {str(k): int(v) for k, v in doc["expiry_days"].items()}
            for role in ("root", "targets", "app", "snapshot", "timestamp"):
                if days.get(role, 0) <= 0:
                    raise ValueError(f"expiry_days.{role} must be a positive number of days")
            ch = doc["chunker"]
            chunker = ChunkerParams(min=int(ch["min"]), avg=int(ch["avg"]), max=int(ch["max"]))
            return cls(days, chunker, bool(doc.get("store_artifacts", False)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc


@dataclass
class _Staged:
    """Metadata changed in memory, waiting for a commit."""

    roles: dict[str, Metadata[Any]] = field(default_factory=dict)
    #: roles created in this transaction: they keep version 1
    new: set[str] = field(default_factory=set)


class Repository:
    """A loaded repository. Change it with the methods below, then :meth:`commit`."""

    def __init__(self, directory: Path, *, now: datetime | None = None) -> None:
        self.dir = directory
        self.now = now or datetime.now(UTC)
        self.settings = RepoSettings.load(directory / SETTINGS_FILE)
        self.keys = KeyStore(directory / "keys")
        self.layout = OriginLayout(directory / "origin")
        self.root: Metadata[Root]
        self.timestamp: Metadata[Timestamp]
        self.snapshot: Metadata[Snapshot]
        self.targets: Metadata[Targets]
        self.apps: dict[str, Metadata[Targets]] = {}
        self._staged = _Staged()
        self._load()

    # ------------------------------------------------------------------ creation

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        root_keys: int = 1,
        root_threshold: int = 1,
        expiry_days: dict[str, int] | None = None,
        store_artifacts: bool = False,
        now: datetime | None = None,
    ) -> Repository:
        """Create a new repository with fresh ed25519 keys and version 1 of every top-level role.

        Raises:
            ConfigError: bad key counts, or ``directory`` already holds a repository.
        """
        if root_keys < 1 or not 1 <= root_threshold <= root_keys:
            raise ConfigError(
                f"--root-keys {root_keys} --root-threshold {root_threshold}: need 1 <= threshold <= keys"
            )
        if (directory / SETTINGS_FILE).exists() or (directory / "origin" / "metadata").exists():
            raise ConfigError(f"{directory}: already holds a repository")
        settings = RepoSettings()
        if expiry_days:
            unknown = set(expiry_days) - set(settings.expiry_days)
            if unknown:
                raise ConfigError(f"--expiry: unknown role {sorted(unknown)[0]!r}")
            if any(v <= 0 for v in expiry_days.values()):
                raise ConfigError("--expiry: days must be positive")
            settings = RepoSettings({**settings.expiry_days, **expiry_days}, store_artifacts=store_artifacts)
        else:
            settings = RepoSettings(store_artifacts=store_artifacts)
        now = now or datetime.now(UTC)
        directory.mkdir(parents=True, exist_ok=True)
        keys = KeyStore(directory / "keys")
        root = Root(consistent_snapshot=True, expires=_expiry(now, settings.expiry("root")))
        for i in range(root_keys):
            root.add_key(keys.generate(f"root{i + 1}"), "root")
        root.roles["root"].threshold = root_threshold
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(keys.generate(role), role)
        atomic_write_bytes(directory / SETTINGS_FILE, settings.to_json())

        repo = cls.__new__(cls)
        repo.dir, repo.now, repo.settings, repo.keys = directory, now, settings, keys
        repo.layout = OriginLayout(directory / "origin")
        repo.apps = {}
        repo.stale = set()
        repo._staged = _Staged()
        repo.root = Metadata(root)
        repo.targets = Metadata(Targets(expires=_expiry(now, settings.expiry("targets"))))
        repo.snapshot = Metadata(Snapshot(expires=_expiry(now, settings.expiry("snapshot"))))
        repo.timestamp = Metadata(Timestamp(expires=_expiry(now, settings.expiry("timestamp"))))
        repo._staged.roles["root"] = repo.root
        repo._staged.roles["targets"] = repo.targets
        repo.commit(initial=True)
        return repo

    # ------------------------------------------------------------------ loading

    def _read(self, path: Path, cls: type[T]) -> Metadata[T]:
        try:
            md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError as exc:
            raise RemoteDataError(f"{path}: missing from the origin tree") from exc
        except (OSError, DeserializationError) as exc:
            raise RemoteDataError(f"{path}: damaged metadata: {exc}") from exc
        if not isinstance(md.signed, cls):
            raise RemoteDataError(f"{path}: expected {cls.type} metadata, found {md.signed.type}")
        return md

    def _check(self, delegator: Metadata[Any], role: str, md: Metadata[Any], path: Path) -> None:
        try:
            delegator.verify_delegate(role, md)
        except UnsignedMetadataError as exc:
            raise RemoteDataError(f"{path}: signatures do not meet the threshold of role {role!r}") from exc

    def _load(self) -> None:
        md_dir = self.layout.metadata_dir
        versions = sorted(
            int(p.name.split(".", 1)[0])
            for p in md_dir.glob("*.root.json")
            if p.name.split(".", 1)[0].isdigit()
        )
        if not versions:
            raise RemoteDataError(f"{md_dir}: no N.root.json found")
        # walk the chain as a client would: each root must be signed by its predecessor and itself
        root = self._read(self.layout.metadata("root", 1), Root)
        self._check(root, "root", root, self.layout.metadata("root", 1))
        previous: Metadata[Root] | None = None
        v = 2
        while self.layout.metadata("root", v).exists():
            path = self.layout.metadata("root", v)
            new = self._read(path, Root)
            self._check(root, "root", new, path)
            self._check(new, "root", new, path)
            if new.signed.version != v:
                raise RemoteDataError(f"{path}: says version {new.signed.version}")
            previous, root, v = root, new, v + 1
        self.root = root
        #: top-level roles still signed under the previous root: a key rotation was interrupted
        #: after the new root went live; the next commit re-signs them
        self.stale: set[str] = set()

        def check_top(role: str, md: Metadata[Any], path: Path) -> None:
            try:
                self._check(self.root, role, md, path)
            except RemoteDataError:
                if previous is None:
                    raise
                self._check(previous, role, md, path)
                self.stale.add(role)

        ts_path = self.layout.metadata("timestamp", None)
        self.timestamp = self._read(ts_path, Timestamp)
        check_top("timestamp", self.timestamp, ts_path)
        snap_path = self.layout.metadata("snapshot", self.timestamp.signed.snapshot_meta.version)
        self.snapshot = self._read(snap_path, Snapshot)
        check_top("snapshot", self.snapshot, snap_path)
        t_meta = self.snapshot.signed.meta.get("targets.json")
        if t_meta is None:
            raise RemoteDataError(f"{snap_path}: lists no targets.json")
        t_path = self.layout.metadata("targets", t_meta.version)
        self.targets = self._read(t_path, Targets)
        check_top("targets", self.targets, t_path)
        delegations = self.targets.signed.delegations
        for name in delegations.roles if delegations and delegations.roles else {}:
            meta = self.snapshot.signed.meta.get(f"{name}.json")
            if meta is None:
                raise RemoteDataError(f"{snap_path}: lists no {name}.json")
            path = self.layout.metadata(name, meta.version)
            md = self._read(path, Targets)
            self._check(self.targets, name, md, path)
            self.apps[name] = md
        if "targets" in self.stale:
            self.stage("targets")

    # ------------------------------------------------------------------ queries

    def app(self, name: str) -> Metadata[Targets]:
        """The live metadata of application ``name``.

        Raises:
            UnknownAppError: no such application role.
        """
        md = self.apps.get(name)
        if md is None:
            known = ", ".join(sorted(self.apps)) or "none"
            raise UnknownAppError(f"unknown app {name!r} (known: {known}); add it with 'swarmupdate app add'")
        return md

    def role_keys(self, role: str) -> tuple[list[Key], int]:
        """The keys and threshold that may sign ``role``."""
        if role in TOP_LEVEL_ROLES:
            r: Role = self.root.signed.roles[role]
            return [self.root.signed.keys[k] for k in r.keyids], r.threshold
        delegations = self.targets.signed.delegations
        assert delegations is not None and delegations.roles is not None
        d = delegations.roles[role]
        return [delegations.keys[k] for k in d.keyids], d.threshold

    def require_signers(self, roles: Iterable[str]) -> None:
        """Fail early, before any work, when a role cannot reach its threshold.

        Raises:
            SigningError: names the role and the missing key ids.
        """
        for role in roles:
            keys, threshold = self.role_keys(role)
            have, problems = 0, []
            for key in keys:
                try:
                    self.keys.signer(key, role)
                except SigningError as exc:
                    problems.append(str(exc))
                else:
                    have += 1
            if have < threshold:
                raise SigningError(
                    f"role {role!r} needs {threshold} signature(s), {have} key(s) available: "
                    + "; ".join(problems)
                )

    def check_not_expired(self, roles: Iterable[str]) -> None:
        """Refuse to build on offline-signed roles that clients would reject as expired.

        Raises:
            RepositoryStateError: names the file and the fix.
        """
        for role in roles:
            md = self._live(role)
            if md.signed.is_expired(self.now):
                raise RepositoryStateError(
                    f"{self.layout.metadata(role, None if role == 'timestamp' else md.signed.version)}: "
                    f"expired {md.signed.expires.isoformat()}; renew it with "
                    f"'swarmupdate repo refresh {self.dir} --role {role}'"
                )

    def _live(self, role: str) -> Metadata[Any]:
        if role == "root":
            return self.root
        if role == "timestamp":
            return self.timestamp
        if role == "snapshot":
            return self.snapshot
        if role == "targets":
            return self.targets
        return self.app(role)

    # ------------------------------------------------------------------ changes

    def stage(self, role: str) -> Metadata[Any]:
        """Mark ``role`` as changed in this transaction and return its metadata to edit."""
        md = self._live(role) if role not in self._staged.roles else self._staged.roles[role]
        self._staged.roles[role] = md
        return md

    def add_app(self, name: str, key: Key, threshold: int = 1) -> None:
        """Delegate ``name/*/*`` to a new app role signed by ``key``."""
        validate_app_name(name)
        if name in self.apps:
            raise RepositoryStateError(f"app {name!r} already exists")
        targets = self.stage("targets")
        if targets.signed.delegations is None:
            targets.signed.delegations = Delegations(keys={}, roles={})
        role = DelegatedRole(name, [], threshold, terminating=True, paths=[f"{name}/*/*"])
        assert targets.signed.delegations.roles is not None
        targets.signed.delegations.roles[name] = role
        targets.signed.add_key(key, name)
        md = Metadata(Targets(version=1, expires=self.now))
        self.apps[name] = md
        self._staged.roles[name] = md
        self._staged.new.add(name)

    def sign(self, role: str, md: Metadata[Any], extra_keys: Iterable[Key] = ()) -> None:
        """Sign ``md`` with every reachable key of ``role`` (plus ``extra_keys``).

        Raises:
            SigningError: fewer reachable keys than the role's threshold.
        """
        keys, threshold = self.role_keys(role)
        md.signatures.clear()
        signed = 0
        errors = []
        seen = set()
        for key in [*keys, *extra_keys]:
            if key.keyid in seen:
                continue
            seen.add(key.keyid)
            if not self.keys.has(key.keyid):
                errors.append(f"{key.keyid[:12]}: no private key")
                continue
            signer = self.keys.signer(key, role)
            try:
                md.sign(signer, append=True)
            except UnsignedMetadataError as exc:
                raise SigningError(f"role {role!r}: key {key.keyid[:12]}… failed to sign: {exc}") from exc
            if key in keys:
                signed += 1
        if signed < threshold:
            raise SigningError(
                f"role {role!r}: {signed} of {threshold} required signature(s) ({'; '.join(errors)})"
            )

    def commit(self, *, initial: bool = False, extra_root_keys: Iterable[Key] = ()) -> None:
        """Bump, sign and write every staged role, then snapshot and timestamp, timestamp last.

        Raises:
            SigningError: a key is missing; nothing has been written in that case.
        """
        staged = dict(self._staged.roles)
        order = [r for r in staged if r not in TOP_LEVEL_ROLES] + [r for r in ("targets",) if r in staged]
        self.require_signers([*(["root"] if "root" in staged else []), *order, "snapshot", "timestamp"])

        # sign everything in memory first: a missing key must fail before the first write
        blobs: list[tuple[str, Path, bytes]] = []
        if "root" in staged:
            md = staged["root"]
            if not initial:
                md.signed.version += 1
            md.signed.expires = _expiry(self.now, self.settings.expiry("root"))
            self.sign("root", md, extra_root_keys)
            blobs.append(("root", self.layout.metadata("root", md.signed.version), md.to_bytes(_SERIALIZER)))
        snap = self.snapshot.signed
        if not initial:
            snap.version += 1
        for role in order:
            md = staged[role]
            if not initial and role not in self._staged.new:
                md.signed.version += 1
            md.signed.expires = _expiry(self.now, self.settings.expiry(role))
            self.sign(role, md)
            data = md.to_bytes(_SERIALIZER)
            blobs.append((role, self.layout.metadata(role, md.signed.version), data))
            snap.meta[f"{role}.json"] = MetaFile(md.signed.version, len(data), {"sha256": _sha256(data)})
        snap.expires = _expiry(self.now, self.settings.expiry("snapshot"))
        self.sign("snapshot", self.snapshot)
        snap_bytes = self.snapshot.to_bytes(_SERIALIZER)
        blobs.append(("snapshot", self.layout.metadata("snapshot", snap.version), snap_bytes))
        ts = self.timestamp.signed
        if not initial:
            ts.version += 1
        ts.snapshot_meta = MetaFile(snap.version, len(snap_bytes), {"sha256": _sha256(snap_bytes)})
        ts.expires = _expiry(self.now, self.settings.expiry("timestamp"))
        self.sign("timestamp", self.timestamp)
        blobs.append(
            ("timestamp", self.layout.metadata("timestamp", None), self.timestamp.to_bytes(_SERIALIZER))
        )

        for role, path, data in blobs:
            fault_point(f"before-{role}")
            atomic_write_bytes(path, data)
        self._staged = _Staged()
        fault_point("after-commit")

    def refresh_timestamp(self, *, snapshot_too: bool) -> None:
        """Re-sign timestamp (and snapshot when asked) with fresh expiry; nothing else changes.

        Roles left stale by an interrupted key rotation are re-signed too.
        """
        if snapshot_too or self.stale - {"timestamp"}:
            self.commit()
        else:
            self._commit_timestamp_only()

    def _commit_timestamp_only(self) -> None:
        self.require_signers(["timestamp"])
        ts = self.timestamp.signed
        ts.version += 1
        ts.expires = _expiry(self.now, self.settings.expiry("timestamp"))
        self.sign("timestamp", self.timestamp)
        atomic_write_bytes(self.layout.metadata("timestamp", None), self.timestamp.to_bytes(_SERIALIZER))

    def write_target_file(self, target_path: str, data: bytes) -> TargetFile:
        """Write a target's bytes under its consistent-snapshot name and return its TargetFile."""
        tf = TargetFile.from_data(target_path, data, ["sha256"])
        atomic_write_bytes(self.layout.target(target_path, tf.hashes["sha256"]), data, durable=False)
        return tf

    def public_key_from_pem(self, pem_path: Path) -> Key:
        """Read a PEM public key file (ed25519, ecdsa or rsa) as a TUF key.

        Raises:
            ConfigError: the file is missing or not a public key.
        """
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            return SSlibKey.from_crypto(load_pem_public_key(pem_path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{pem_path}: not a PEM public key: {exc}") from exc


def _expiry(now: datetime, delta: timedelta) -> datetime:
    return (now + delta).replace(microsecond=0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

"""The agent-side trust client: a driver around ``tuf.ngclient.Updater``.

One :class:`TrustClient` per metadata directory. Each :meth:`TrustClient.refresh` builds a new
``Updater`` (python-tuf wants one ``refresh()`` per Updater) under a lock that allows one
refresh at a time per directory, in this process (a thread lock) and across processes (flock).
It is blocking: the agent calls it from a worker thread (``anyio.to_thread.run_sync``).

python-tuf errors are translated here: ``RepositoryError`` (bad data) becomes
:class:`RemoteDataError`, ``DownloadError`` (failed transfer) becomes :class:`TransferError`,
except ``DownloadLengthMismatchError`` (a server sending more than the signed length), which is
bad data.
"""

from __future__ import annotations

import fcntl
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from swarmupdate.errors import ConfigError, RemoteDataError, StoreError, SwarmUpdateError, TransferError
from swarmupdate.fsutil import atomic_write_bytes
from swarmupdate.manifest import MAX_MANIFEST_BYTES, Manifest
from swarmupdate.trust.fetcher import HttpxFetcher

__all__ = ["Release", "TrustClient", "translate_tuf_errors", "version_key"]

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Release:
    """A release the publisher signed, with its verified chunk manifest."""

    app: str
    version: str
    channel: str
    target_path: str
    length: int
    sha256: str
    manifest_path: str
    manifest: Manifest
    #: sha256 of the manifest target file (its consistent-snapshot name starts with it)
    manifest_sha256: str = ""
    #: the verified manifest bytes, exactly as signed (served to peers)
    manifest_bytes: bytes = field(default=b"", repr=False)

    @property
    def swarm_id(self) -> str:
        """The swarm of a release is named by its artifact's sha256."""
        return self.sha256


def version_key(version: str) -> tuple[tuple[float, int | str], ...]:
    """Order versions naturally: ``1.9 < 1.10``, and letters mark a pre-release: ``1.0rc1 < 1.0 < 1.0.1``."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    key: list[tuple[float, int | str]] = [(2, int(p)) if p.isdigit() else (0, p) for p in parts]
    # the end of a version sorts after any pre-release word and before any further number
    key.append((1, ""))
    return tuple(key)


@contextmanager
def translate_tuf_errors(what: str) -> Iterator[None]:
    """Turn python-tuf's and OSError exceptions into ours, naming ``what`` was being done."""
    try:
        yield
    except SwarmUpdateError:
        raise
    except tuf_exc.DownloadLengthMismatchError as exc:
        raise RemoteDataError(f"{what}: server sent more than the signed length: {exc}") from exc
    except tuf_exc.DownloadHTTPError as exc:
        raise TransferError(f"{what}: {exc}") from exc
    except tuf_exc.DownloadError as exc:
        raise TransferError(f"{what}: {exc}") from exc
    except tuf_exc.RepositoryError as exc:
        raise RemoteDataError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"{what}: {exc}") from exc


class TrustClient:
    """Verified TUF metadata for one repository, kept in ``metadata_dir``."""

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str | None = None,
        *,
        fetcher: FetcherInterface | None = None,
        now: datetime | None = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        self.metadata_url = metadata_url
        self.targets_url = targets_url or _sibling(metadata_url, "targets")
        self.fetcher = fetcher or HttpxFetcher()
        #: a fixed reference time for expiry checks (tests); None means the clock
        self.now = now
        self.targets_cache = metadata_dir / "targets"
        #: expiry (Unix time) of each trusted top-level role after the last refresh
        self.expires: dict[str, float] = {}

    @staticmethod
    def init(metadata_dir: Path, root: bytes | Path) -> None:
        """Trust ``root`` as the initial root (no network). Keeps an existing root.json.

        Raises:
            ConfigError: the file cannot be read.
        """
        if isinstance(root, Path):
            try:
                data = root.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{root}: cannot read the trusted root: {exc.strerror}") from exc
        else:
            data = root
        metadata_dir.mkdir(parents=True, exist_ok=True)
        if not (metadata_dir / "root.json").exists():
            atomic_write_bytes(metadata_dir / "root.json", data)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        key = self.metadata_dir.resolve()
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        with lock:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            with (self.metadata_dir / ".lock").open("a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _updater(self, target_dir: Path | None = None, target_base_url: str | None = None) -> Updater:
        if not (self.metadata_dir / "root.json").exists():
            raise ConfigError(f"{self.metadata_dir}/root.json: no trusted root; initialise the client first")
        with translate_tuf_errors(f"{self.metadata_dir}/root.json"):
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_url,
                str(target_dir) if target_dir is not None else None,
                target_base_url or self.targets_url,
                fetcher=self.fetcher,
                config=UpdaterConfig(app_user_agent="swarmupdate"),
                bootstrap=None,
            )
        if self.now is not None:
            # python-tuf (pinned <8) fixes its reference time when the Updater is built
            updater._trusted_set.reference_time = self.now
        return updater

    @contextmanager
    def session(
        self, target_dir: Path | None = None, target_base_url: str | None = None
    ) -> Iterator[Updater]:
        """A refreshed Updater, held exclusively for this metadata directory.

        Raises:
            RemoteDataError, TransferError, ConfigError, StoreError.
        """
        with self._exclusive():
            updater = self._updater(target_dir, target_base_url)
            with translate_tuf_errors(f"refresh from {self.metadata_url}"):
                updater.refresh()
            trusted = updater._trusted_set
            self.expires = {
                role: trusted[role].expires.timestamp()
                for role in ("root", "timestamp", "snapshot", "targets")
                if role in trusted
            }
            yield updater

    def refresh(self) -> None:
        """Update the top-level metadata per the TUF client workflow."""
        with self.session():
            pass

    def latest_release(self, app: str, channel: str) -> Release | None:
        """Refresh, then return the newest release of ``app`` on ``channel`` with its verified manifest.

        Returns None when the app publishes nothing on that channel.

        Raises:
            RemoteDataError: any verification failed (metadata or manifest).
            TransferError: the origin could not be reached.
        """
        with self.session(self.targets_cache) as updater:
            with translate_tuf_errors(f"app {app!r}"):
                candidates = self._app_releases(updater, app, channel)
            if not candidates:
                return None
            version, tf, custom = max(candidates, key=lambda c: version_key(c[0]))
            manifest_path = custom["manifest"]
            with translate_tuf_errors(f"manifest {manifest_path}"):
                m_info = updater.get_targetinfo(manifest_path)
                if m_info is None:
                    raise RemoteDataError(f"{tf.path}: its manifest {manifest_path} is not a signed target")
                if m_info.length > MAX_MANIFEST_BYTES:
                    raise RemoteDataError(f"{manifest_path}: signed length {m_info.length} is too large")
                cached = updater.find_cached_target(m_info)
                path = cached or updater.download_target(m_info)
                data = Path(path).read_bytes()
            manifest = Manifest.decode(data, source=manifest_path)
            if (
                manifest.artifact != tf.path
                or manifest.length != tf.length
                or manifest.sha256 != tf.hashes.get("sha256")
            ):
                raise RemoteDataError(
                    f"{manifest_path}: describes {manifest.artifact} ({manifest.length} bytes, "
                    f"sha256 {manifest.sha256[:12]}…), not the signed target {tf.path}"
                )
            return Release(
                app,
                version,
                channel,
                tf.path,
                tf.length,
                tf.hashes["sha256"],
                manifest_path,
                manifest,
                m_info.hashes["sha256"],
                data,
            )

    @staticmethod
    def _app_releases(
        updater: Updater, app: str, channel: str
    ) -> list[tuple[str, TargetFile, dict[str, Any]]]:
        # get_targetinfo walks the delegations, which loads and verifies the app's role
        updater.get_targetinfo(f"{app}/-/-")
        trusted = updater._trusted_set
        if app not in trusted:
            return []
        role = trusted[app]
        assert isinstance(role, Targets)
        out = []
        for path, tf in role.targets.items():
            custom = tf.custom.get("swarmupdate") if isinstance(tf.custom, dict) else None
            if not isinstance(custom, dict) or custom.get("channel") != channel:
                continue
            if not isinstance(custom.get("version"), str) or not isinstance(custom.get("manifest"), str):
                continue
            if not path.startswith(f"{app}/"):
                continue
            # the artifact must be one the delegation chain really grants to this app
            if updater.get_targetinfo(path) != tf:
                continue
            out.append((custom["version"], tf, custom))
        return out


def _sibling(metadata_url: str, name: str) -> str:
    base = metadata_url.rstrip("/")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}/"

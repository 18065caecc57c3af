"""Install one application's releases: build, switch ``current`` atomically, health-check, roll back, prune.

Layout under ``install_dir`` (names starting with ``.`` are the installer's own)::

    releases/<V>/                    a complete release: ``artifact``, what the install command made, and
                                     ``.swarmupdate-release.json`` (version, sha256, install time)
    releases/.<V>.partial-<rand>/    a release being built; never referenced; removed on recovery
    releases/.<V>.failed/            a release that failed its health check (kept for inspection; the same
                                     artifact is not tried again)
    releases/.trash-<rand>/          a release being deleted (pruned or replaced); removed on recovery
    current -> releases/<V>          relative symlink, replaced atomically (temp name, fsync, rename, fsync)
    .swarmupdate-install.json        the journal, written atomically before every step that matters
    .swarmupdate-install.lock        ``flock``: one installer per directory, across processes

A release directory only ever appears under its final name complete (built under a partial name, synced,
then renamed), and ``current`` only ever points at a complete release, so a crash at any point leaves the
old or the new release active. The journal tells :meth:`Installer.recover` which way to finish:

``building``      the new release may be half built. Remove partial directories; ``current`` is untouched.
``activating``    the new release is complete; ``current`` may point at the old or the new one. Switch to the
                  new one (again) and run the health check (again): pass keeps it, failure rolls back.
``rolling_back``  the health check failed. Switch back to the previous release (or remove ``current`` when
                  there is none), set the failed release aside as ``.<V>.failed``.
``idle``          nothing in progress (also holds the last outcome for the operator).

Fault points (``SWARMUPDATE_FAULT_POINT``, the same switch the publisher uses) kill the process between
steps for the crash tests; they do nothing otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from swarmupdate.errors import ConfigError, RemoteDataError, StoreError
from swarmupdate.fsutil import atomic_write_bytes, fsync_dir
from swarmupdate.obs.logging import get_logger

__all__ = ["InstallResult", "InstallSpec", "Installer"]

_log = get_logger("swarmupdate.install")

#: how much of a command's output (its end) goes into results and logs
OUTPUT_LIMIT = 4096
JOURNAL_NAME = ".swarmupdate-install.json"
LOCK_NAME = ".swarmupdate-install.lock"
MARKER_NAME = ".swarmupdate-release.json"
CURRENT_NAME = "current"
RELEASES_NAME = "releases"
ARTIFACT_NAME = "artifact"
_VERSION_MAX = 200  # leaves room for the ".<V>.partial-<rand>" names within NAME_MAX
# the agent's own systemd channel is not for the commands it runs
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SWARMUPDATE_FAULT_POINT")

Outcome = Literal["installed", "rolled_back", "failed", "already"]


@dataclass(frozen=True)
class InstallSpec:
    """How one application is installed.

    Attributes:
        app: application name (passed to the commands as ``SWARMUPDATE_APP``).
        install_dir: holds ``releases/`` and the ``current`` symlink.
        install_command: argv run in the new release directory to build it; empty: only copy the artifact.
        health_command: argv run after the switch; non-zero exit or timeout rolls back. Empty: always healthy.
        health_timeout: seconds before the health command is killed (and counted as failed).
        keep_releases: complete releases kept, newest first by install time (the current and the previous
            one are always kept on top).
        install_timeout: seconds before the install command is killed (and the install fails).
    """

    app: str
    install_dir: Path
    install_command: tuple[str, ...] = ()
    health_command: tuple[str, ...] = ()
    health_timeout: float = 60.0
    keep_releases: int = 3
    install_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.app:
            raise ConfigError("app: must not be empty")
        if self.keep_releases < 1:
            raise ConfigError(f"app {self.app}: keep_releases must be at least 1, not {self.keep_releases}")
        for name in ("health_timeout", "install_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"app {self.app}: {name} must be positive, not {getattr(self, name)}")


@dataclass(frozen=True)
class InstallResult:
    """What :meth:`Installer.install` did.

    ``result``: ``installed`` (the new release is current and healthy), ``rolled_back`` (its health check
    failed and ``previous`` is current again), ``failed`` (nothing changed: the install command failed, the
    same artifact failed its health check before, or it failed its health check with nothing to roll back
    to), ``already`` (that version with that artifact is current). ``previous`` is the version that was
    current before the call. ``message`` says why, with the end of the command's output.
    """

    version: str
    result: Outcome
    previous: str | None
    message: str = ""


@dataclass(frozen=True)
class _Journal:
    state: Literal["idle", "building", "activating", "rolling_back"]
    version: str | None = None
    sha256: str | None = None
    previous: str | None = None


@dataclass(frozen=True)
class _Marker:
    version: str
    sha256: str
    installed_at: float
    failed_at: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Ran:
    ok: bool
    summary: str  # "exited 3", "timed out after 5s", "could not start: ..."
    output: str


class Installer:
    """Installs releases of one application under ``spec.install_dir``.

    Methods block (they run commands and fsync); the agent calls them from a worker thread. Calls on one
    instance are serialised; a second process on the same directory gets :class:`StoreError`.
    """

    def __init__(self, spec: InstallSpec, *, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self._dir = spec.install_dir.absolute()
        self._releases = self._dir / RELEASES_NAME
        self._journal_path = self._dir / JOURNAL_NAME
        self._clock = clock
        self._lock = threading.Lock()
        self._log = _log.bind(app=spec.app)

    # -- queries ------------------------------------------------------------------------------------

    def current(self) -> str | None:
        """The version ``current`` points at, or None when there is no ``current``.

        Raises:
            StoreError: ``current`` is not a symlink to ``releases/<version>``.
        """
        link = self._dir / CURRENT_NAME
        try:
            target = str(link.readlink())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{link}: not a symlink ({exc.strerror})") from exc
        parts = PurePosixPath(target).parts
        if len(parts) != 2 or parts[0] != RELEASES_NAME or not _is_version(parts[1]):
            raise StoreError(f"{link} points at {target!r}, not {RELEASES_NAME}/<version>")
        return parts[1]

    def installed_versions(self) -> list[str]:
        """Complete releases on disk, oldest install first."""
        return [m.version for m in sorted(self._complete(), key=lambda m: (m.installed_at, m.version))]

    # -- operations ---------------------------------------------------------------------------------

    def install(
        self, version: str, artifact: Path, sha256: str, *, consume: bool = False, verified: bool = False
    ) -> InstallResult:
        """Install ``artifact`` as ``version`` and make it current if its health check passes.

        ``consume``: the artifact is this installer's to take (a file the agent assembled for it): it
        is moved into the release instead of copied when on the same file system, and checked once,
        after the move, instead of before and while copying. Either way nothing that does not have
        the signed sha256 is ever made current.

        ``verified`` (with ``consume``): the caller hashed this very file as it wrote it and found
        ``sha256``, and the file lies where only the caller writes (the agent's assembly of chunks it
        verified): it is moved into the release without being read and hashed a second time. (A
        fleet finishing together spent 60% of its install time on that second hash.) A move across
        file systems copies, and then hashes the copy as usual.

        Raises:
            RemoteDataError: the version is not a safe name, or the artifact does not have the signed
                sha256 (checked before anything changes).
            StoreError: the disk refused, or another process is installing into the same directory.
        """
        _check_version(version)
        expected = sha256.lower()
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise RemoteDataError(f"{self.spec.app} {version}: {sha256!r} is not a sha256 digest")
        actual = expected if consume else _sha256_file(artifact)  # consumed: checked once in _build
        if actual != expected:
            raise RemoteDataError(
                f"{self.spec.app} {version}: {artifact} has sha256 {actual}, the signed value is {expected}"
            )
        with self._locked():
            self._settle()
            previous = self.current()
            marker = self._marker(self._releases / version)
            if previous == version:
                if marker is not None and marker.sha256 == expected:
                    return InstallResult(version, "already", previous)
                return self._refuse(
                    version, previous, "is current with a different artifact; not replacing it"
                )
            failed = self._marker(self._failed_dir(version))
            if failed is not None:
                if failed.sha256 == expected:
                    return self._refuse(
                        version, previous, f"failed its health check before ({failed.reason}); not retrying"
                    )
                self._discard(self._failed_dir(version))
            if marker is not None and marker.sha256 == expected:
                # built before and still complete (a roll-back target or an interrupted install): reuse it
                self._write_marker(self._releases / version, replace(marker, installed_at=self._clock()))
            else:
                failure = self._build(
                    version, artifact, expected, previous, consume=consume, verified=consume and verified
                )
                if failure is not None:
                    return failure
            return self._activate(version, expected, previous)

    def recover(self) -> None:
        """Finish or undo what a crash left (call at agent start), then remove leftovers.

        Afterwards ``current`` is absent (nothing was ever installed) or points at a complete release.

        Raises:
            StoreError: the disk refused, or another process holds the directory.
        """
        if not self._dir.is_dir():
            return
        with self._locked():
            self._settle()

    # -- steps --------------------------------------------------------------------------------------

    def _build(
        self,
        version: str,
        artifact: Path,
        sha256: str,
        previous: str | None,
        *,
        consume: bool = False,
        verified: bool = False,
    ) -> InstallResult | None:
        """Build ``releases/<version>``; return a result only when the install command failed."""
        self._write_journal(_Journal("building", version, sha256, previous))
        _fault("install-after-journal")
        partial = self._releases / f".{version}.partial-{secrets.token_hex(4)}"
        try:
            partial.mkdir()
            copied = (
                _move_hashing(artifact, partial / ARTIFACT_NAME, sha256 if verified else None)
                if consume
                else None
            )
            if copied is None:
                copied = _copy_hashing(artifact, partial / ARTIFACT_NAME)
        except OSError as exc:
            _rmtree(partial)
            raise _store_error(partial, exc) from exc
        if copied != sha256:  # the file changed under us since the first check
            _rmtree(partial)
            self._write_journal(_Journal("idle", version, sha256, previous))
            raise RemoteDataError(
                f"{self.spec.app} {version}: {artifact} has sha256 {copied} once in place, "
                f"the signed value is {sha256}"
            )
        _fault("install-after-copy")
        if self.spec.install_command:
            ran = self._run("install", self.spec.install_command, version, partial, self.spec.install_timeout)
            if not ran.ok:
                _rmtree(partial)
                self._write_journal(_Journal("idle", version, sha256, previous))
                return InstallResult(
                    version, "failed", previous, _message(f"install command {ran.summary}", ran)
                )
        self._write_marker(partial, _Marker(version, sha256, self._clock()), durable=False)
        _sync_tree(partial)
        _fault("install-after-build")
        final = self._releases / version
        if os.path.lexists(final):  # a stale build of this version that is not current: replace it
            self._discard(final)
        try:
            partial.rename(final)
            fsync_dir(self._releases)
        except OSError as exc:
            raise _store_error(final, exc) from exc
        _fault("install-after-rename")
        return None

    def _activate(self, version: str, sha256: str, previous: str | None) -> InstallResult:
        self._write_journal(_Journal("activating", version, sha256, previous))
        _fault("install-after-activating")
        if self._marker(self._releases / version) is None:
            return self._roll_back(version, sha256, previous, f"release directory of {version} is gone")
        self._switch(version)
        _fault("install-after-switch")
        self._log.info("install_switched", version=version, previous=previous)
        if self.spec.health_command:
            ran = self._run(
                "health",
                self.spec.health_command,
                version,
                self._releases / version,
                self.spec.health_timeout,
            )
            if not ran.ok:
                return self._roll_back(
                    version, sha256, previous, _message(f"health command {ran.summary}", ran)
                )
        _fault("install-after-health")
        self._write_journal(_Journal("idle", version, sha256, previous))
        _fault("install-after-idle")
        self._prune({version, previous})
        self._log.info("install_done", version=version, previous=previous, result="installed")
        return InstallResult(version, "installed", previous)

    def _roll_back(self, version: str, sha256: str, previous: str | None, reason: str) -> InstallResult:
        self._write_journal(_Journal("rolling_back", version, sha256, previous))
        _fault("install-before-rollback")
        target = previous if previous is not None and self._marker(self._releases / previous) else None
        if target is None:
            target = self._newest_other(version)
        if target is None:
            with contextlib.suppress(FileNotFoundError):
                (self._dir / CURRENT_NAME).unlink()
            fsync_dir(self._dir)
        else:
            self._switch(target)
        _fault("install-after-rollback-switch")
        self._set_aside(version, reason)
        _fault("install-after-failed-rename")
        self._write_journal(_Journal("idle", version, sha256, previous))
        self._prune({target})
        result: Outcome = "rolled_back" if target is not None else "failed"
        self._log.warning("install_done", version=version, previous=previous, result=result, current=target)
        suffix = f"; rolled back to {target}" if target else "; no release to roll back to"
        first, _, rest = reason.partition("\n")
        return InstallResult(version, result, previous, f"{first}{suffix}" + (f"\n{rest}" if rest else ""))

    def _settle(self) -> None:
        """Finish the operation the journal names, remove leftovers, make sure ``current`` is sound."""
        journal = self._read_journal()
        if journal.state != "idle" and journal.version is not None and journal.sha256 is not None:
            self._log.warning("install_recovering", state=journal.state, version=journal.version)
            if journal.state == "building":
                self._write_journal(replace(journal, state="idle"))
            elif journal.state == "activating":
                self._activate(journal.version, journal.sha256, journal.previous)
            else:
                self._roll_back(journal.version, journal.sha256, journal.previous, "interrupted roll-back")
        self._remove_leftovers()
        try:
            current = self.current()
        except StoreError as exc:
            self._log.error("install_current_unusable", error=str(exc))
            return
        if current is not None and self._marker(self._releases / current) is None:
            fallback = self._newest_other(current)
            self._log.error("install_current_dangling", current=current, switching_to=fallback)
            if fallback is not None:
                self._switch(fallback)
            else:
                (self._dir / CURRENT_NAME).unlink()
                fsync_dir(self._dir)

    def _switch(self, version: str) -> None:
        """Point ``current`` at ``releases/<version>`` atomically and durably."""
        tmp = self._dir / f".{CURRENT_NAME}.tmp-{secrets.token_hex(4)}"
        try:
            tmp.symlink_to(f"{RELEASES_NAME}/{version}")
            fsync_dir(self._dir)
            _fault("install-after-tmp-link")
            tmp.replace(self._dir / CURRENT_NAME)
            fsync_dir(self._dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _store_error(self._dir / CURRENT_NAME, exc) from exc

    def _set_aside(self, version: str, reason: str) -> None:
        """Rename a release that failed its health check to ``.<version>.failed``."""
        release = self._releases / version
        marker = self._marker(release)
        if marker is None:
            return
        if marker.failed_at is None:  # a resumed roll-back keeps the first reason
            failed_marker = replace(marker, failed_at=self._clock(), reason=reason.partition("\n")[0])
            self._write_marker(release, failed_marker)
        failed = self._failed_dir(version)
        if os.path.lexists(failed):
            self._discard(failed)
        try:
            release.rename(failed)
            fsync_dir(self._releases)
        except OSError as exc:
            raise _store_error(release, exc) from exc

    def _prune(self, protect: set[str | None]) -> None:
        """Keep the newest ``keep_releases`` releases plus ``protect`` and ``current``; same for failed."""
        try:
            protect = protect | {self.current()}
            keep = self.spec.keep_releases
            newest = sorted(self._complete(), key=lambda m: (m.installed_at, m.version), reverse=True)
            for m in newest[keep:]:
                if m.version not in protect:
                    self._log.info("install_pruned", version=m.version)
                    self._discard(self._releases / m.version)
            failed = sorted(self._failed(), key=lambda m: (m.failed_at or 0.0, m.version), reverse=True)
            for m in failed[keep:]:
                self._discard(self._failed_dir(m.version))
        except (OSError, StoreError) as exc:  # the install itself succeeded; pruning retries next time
            self._log.warning("install_prune_failed", error=str(exc))

    def _discard(self, path: Path) -> None:
        """Delete a release directory: first rename it out of sight (one atomic step), then remove it."""
        trash = self._releases / f".trash-{secrets.token_hex(4)}"
        try:
            path.rename(trash)
            fsync_dir(self._releases)
        except OSError as exc:
            raise _store_error(path, exc) from exc
        _fault("install-during-discard")
        _rmtree(trash)

    def _remove_leftovers(self) -> None:
        for entry in _listdir(self._releases):
            if entry.startswith(".trash-") or (entry.startswith(".") and ".partial-" in entry):
                _rmtree(self._releases / entry)
            elif not entry.startswith("."):
                for tmp in (self._releases / entry).glob(f".{MARKER_NAME}.*.tmp"):
                    tmp.unlink(missing_ok=True)
        for entry in _listdir(self._dir):
            if entry.startswith(f".{CURRENT_NAME}.tmp-") or (
                entry.startswith(f".{JOURNAL_NAME}.") and entry.endswith(".tmp")
            ):
                (self._dir / entry).unlink(missing_ok=True)

    # -- commands -----------------------------------------------------------------------------------

    def _run(self, what: str, argv: tuple[str, ...], version: str, release: Path, timeout: float) -> _Ran:
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env.update(
            SWARMUPDATE_APP=self.spec.app,
            SWARMUPDATE_VERSION=version,
            SWARMUPDATE_RELEASE_DIR=str(release),
            SWARMUPDATE_ARTIFACT=str(release / ARTIFACT_NAME),
            SWARMUPDATE_INSTALL_DIR=str(self._dir),
        )
        started = time.monotonic()
        ran = _run_command(argv, release, env, timeout)
        log = self._log.info if ran.ok else self._log.warning
        log(
            f"{what}_command",
            version=version,
            ok=ran.ok,
            status=ran.summary,
            seconds=round(time.monotonic() - started, 3),
            output=ran.output,
        )
        return ran

    # -- files --------------------------------------------------------------------------------------

    def _refuse(self, version: str, previous: str | None, why: str) -> InstallResult:
        self._log.warning("install_refused", version=version, reason=why)
        return InstallResult(version, "failed", previous, f"{self.spec.app} {version} {why}")

    def _failed_dir(self, version: str) -> Path:
        return self._releases / f".{version}.failed"

    def _newest_other(self, version: str) -> str | None:
        others = [m for m in self._complete() if m.version != version]
        return max(others, key=lambda m: (m.installed_at, m.version)).version if others else None

    def _complete(self) -> list[_Marker]:
        markers = (
            self._marker(self._releases / name) for name in _listdir(self._releases) if _is_version(name)
        )
        return [m for m in markers if m is not None]

    def _failed(self) -> list[_Marker]:
        names = (n[1 : -len(".failed")] for n in _listdir(self._releases) if n.endswith(".failed"))
        markers = (self._marker(self._failed_dir(v)) for v in names if _is_version(v))
        return [m for m in markers if m is not None]

    def _marker(self, release: Path) -> _Marker | None:
        """The release's marker, or None when ``release`` is not a complete release directory."""
        try:
            if not stat.S_ISDIR(release.lstat().st_mode):
                return None
            doc = json.loads((release / MARKER_NAME).read_bytes())
            return _Marker(
                version=str(doc["version"]),
                sha256=str(doc["sha256"]),
                installed_at=float(doc["installed_at"]),
                failed_at=None if doc.get("failed_at") is None else float(doc["failed_at"]),
                reason=str(doc.get("reason", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_marker(self, release: Path, marker: _Marker, *, durable: bool = True) -> None:
        doc = {"format": 1, "app": self.spec.app, **asdict(marker)}
        atomic_write_bytes(release / MARKER_NAME, _dumps(doc), durable=durable)

    def _read_journal(self) -> _Journal:
        try:
            doc: Any = json.loads(self._journal_path.read_bytes())
            state = doc["state"]
            if state not in ("idle", "building", "activating", "rolling_back"):
                raise ValueError(state)
            version = doc.get("version")
            if version is not None:
                _check_version(version)
            return _Journal(state, version, doc.get("sha256"), doc.get("previous"))
        except FileNotFoundError:
            return _Journal("idle")
        except (OSError, ValueError, KeyError, TypeError, RemoteDataError) as exc:
            # written atomically, so this is damage from outside: recover what the links say
            self._log.error("install_journal_unreadable", path=str(self._journal_path), error=str(exc))
            return _Journal("idle")

    def _write_journal(self, journal: _Journal) -> None:
        doc = {"format": 1, "app": self.spec.app, "at": self._clock(), **asdict(journal)}
        atomic_write_bytes(self._journal_path, _dumps(doc))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                self._releases.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise _store_error(self._dir, exc) from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as exc:
                    raise StoreError(f"{self._dir}: another process is installing {self.spec.app}") from exc
                yield
            finally:
                os.close(fd)


def _run_command(argv: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float) -> _Ran:
    """Run ``argv`` in its own process group; kill the whole group on timeout. Output goes to a temporary
    file, not a pipe, so a background process that keeps the descriptor open cannot hang us."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        except OSError as exc:
            return _Ran(False, f"could not start: {exc}", "")
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return _Ran(False, f"timed out after {timeout:g}s", _tail(out))
        except BaseException:
            _kill_group(proc)
            raise
        summary = f"exited {code}" if code >= 0 else f"killed by signal {signal.Signals(-code).name}"
        return _Ran(code == 0, summary, _tail(out))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(out: IO[bytes]) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - OUTPUT_LIMIT))
    text = out.read().decode("utf-8", errors="replace")
    return ("…" + text[1:]) if size > OUTPUT_LIMIT else text


def _message(head: str, ran: _Ran) -> str:
    return f"{head}\n{ran.output}" if ran.output else head


def _is_version(name: str) -> bool:
    return (
        0 < len(name) <= _VERSION_MAX
        and not name.startswith(".")
        and "/" not in name
        and all(c.isprintable() for c in name)
    )


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _is_version(version):
        raise RemoteDataError(
            f"version {version!r}: want 1-{_VERSION_MAX} printable characters, no '/', no leading '.'"
        )


def _sha256_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise _store_error(path, exc) from exc


def _move_hashing(src: Path, dst: Path, known: str | None = None) -> str | None:
    """Move ``src`` to ``dst`` and hash it there (or, when ``known`` is given, trust that as its hash:
    a rename moves the very bytes that were hashed); None when they are on different file systems."""
    try:
        src.rename(dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return None
        raise
    if known is not None:
        return known
    with dst.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _copy_hashing(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with src.open("rb") as fin, dst.open("xb") as fout:
        while block := fin.read(1 << 20):
            digest.update(block)
            fout.write(block)
    return digest.hexdigest()


def _sync_tree(root: Path) -> None:
    """fsync every file and directory of a freshly built release before it is renamed into place."""
    try:
        for dirpath, _dirs, files in os.walk(root, topdown=False):
            for name in files:
                path = os.path.join(dirpath, name)  # noqa: PTH118 - os.walk hands out strings
                if stat.S_ISREG(os.lstat(path).st_mode):
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            fsync_dir(Path(dirpath))
    except OSError:  # e.g. a file the install command made unreadable: flush everything instead
        os.sync()


def _rmtree(path: Path) -> None:
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            path.unlink()
            return
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        # the install command may have left read-only directories behind
        for dirpath, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, 0o700)  # noqa: PTH101 - os.walk hands out strings
        shutil.rmtree(path, ignore_errors=True)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in path.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _store_error(path, exc) from exc


def _dumps(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def _store_error(path: Path, exc: OSError) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{path}: no space left on device")
    if exc.errno == errno.EROFS:
        return StoreError(f"{path}: read-only file system")
    return StoreError(f"{path}: {exc.strerror or exc}")


def _fault(point: str) -> None:
    """SIGKILL this process when ``SWARMUPDATE_FAULT_POINT`` names ``point`` (crash tests only)."""
    if os.environ.get("SWARMUPDATE_FAULT_POINT") == point:
        os.kill(os.getpid(), signal.SIGKILL)

"""A booted Debian container (``systemd-nspawn --boot``) for the system tests that need a real systemd.

The root file system is built once with ``debootstrap --variant=minbase`` and cached under
``/var/cache/swarmupdate-test/rootfs``; every container boots an ephemeral snapshot of it (``--ephemeral``),
so tests never change the cache. The container shares the host's network namespace (no
``--private-network``): services inside reach processes the test runs on the host at 127.0.0.1 and the other
way round. The rootfs has no Python: tests bind-mount the host's interpreter and the project read-only
(see ``_install_python`` in tests/system/test_systemd.py).

Usage::

    rootfs = ensure_rootfs()
    with Container.boot(rootfs, binds_ro=["/work/main", ("/host/path", "/container/path")]) as ct:
        ct.put("/etc/swarmupdate/agent.toml", text)          # files in, before or after enabling units
        ct.run("systemctl", "enable", "--now", "swarmupdate-agent.service")
        ct.wait_unit("swarmupdate-agent.service", ActiveState="active")
        ct.read("/var/lib/swarmupdate/status.json")          # files out, through /proc/<pid>/root

Commands run inside with ``nsenter`` into all the namespaces of the container's PID 1, which needs neither
machined nor D-Bus (``--register=no``); ``systemctl`` then talks to the container's systemd over its private
socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE", "Container", "ContainerError", "ensure_rootfs"]

CACHE = Path(os.environ.get("SWARMUPDATE_TEST_ROOTFS_CACHE", "/var/cache/swarmupdate-test"))
SUITE = "bookworm"
#: besides minbase: an init, D-Bus, and procps for the units' ExecReload=/bin/kill; Debian's Python with
#: venv, and what Ansible's apt and pip modules need on a managed host (the converge test)
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "python3",
    "python3-venv",
    "python3-packaging",
    "python3-apt",
)
#: bump to rebuild every cached rootfs when PACKAGES or the build steps change
ROOTFS_VERSION = "3"
_MARKER = ".swarmupdate-test-rootfs"


class ContainerError(AssertionError):
    """The container failed to build, boot, or run a command (an AssertionError, so pytest shows it whole)."""


def ensure_rootfs(
    cache: Path = CACHE, *, log: Callable[[str], None] = print, mirror: str | None = None
) -> Path:
    """The cached rootfs, built first when missing.

    The build goes to a temporary directory next to the cache and is renamed into place only once complete
    and marked, so a killed build is never reused (its leftovers are removed by the next build).

    Raises:
        ContainerError: debootstrap failed.
    """
    root = cache / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    # one builder at a time (parallel test runs); the others wait, then find the finished rootfs
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(root):
            _build(cache, root, log, mirror)
    return root


def _usable(root: Path) -> bool:
    marker = root / _MARKER
    return marker.is_file() and marker.read_text().strip() == ROOTFS_VERSION


def _build(cache: Path, root: Path, log: Callable[[str], None], mirror: str | None) -> None:
    for stale in cache.glob("rootfs.build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix="rootfs.build-", dir=cache))
    started = time.monotonic()
    log(f"building the container rootfs with debootstrap into {root} (once; a few minutes)")
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(build),
        *([mirror] if mirror else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        raise ContainerError(
            f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr}"
        )
    # A blank machine-id makes systemd generate one per boot (each ephemeral container is a new machine);
    # no getty on a console nobody reads; the tests drive the container, not a login.
    (build / "etc/machine-id").write_text("")
    (build / "etc/hostname").write_text("swarmupdate-test\n")
    for unit in ("getty.target", "console-getty.service", "systemd-networkd-wait-online.service"):
        link = build / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (build / _MARKER).write_text(ROOTFS_VERSION + "\n")
    if root.exists():  # an older ROOTFS_VERSION
        old = cache / f"rootfs.build-old-{uuid.uuid4().hex[:8]}"
        root.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    build.rename(root)
    log(f"rootfs built in {time.monotonic() - started:.0f}s")


def _die_with_parent() -> None:
    """In the nspawn child: SIGTERM (nspawn halts the container) when the test process dies, even by
    SIGKILL, so no container outlives its test run."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


@dataclass
class Container:
    """A booted container; use :meth:`boot` as a context manager, which always tears it down."""

    name: str
    popen: subprocess.Popen[bytes]
    console: Path
    leader: int = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @contextlib.contextmanager
    def boot(
        cls,
        rootfs: Path,
        *,
        binds_ro: Sequence[str | tuple[str, str]] = (),
        binds: Sequence[str | tuple[str, str]] = (),
        timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> Iterator[Container]:
        """Boot an ephemeral snapshot of ``rootfs`` and wait until its systemd is up.

        ``binds_ro``/``binds`` are ``PATH`` or ``(HOST, CONTAINER)`` bind mounts. The snapshot is discarded
        when nspawn exits; the container is always powered off (killed after a timeout) on exit, also on
        failure. The console goes to ``log_dir/console-NAME.log`` (a temporary directory by default).
        """
        name = f"swarmupdate-test-{uuid.uuid4().hex[:8]}"
        logs = Path(tempfile.mkdtemp(prefix="nspawn-")) if log_dir is None else log_dir
        logs.mkdir(parents=True, exist_ok=True)
        console = logs / f"console-{name}.log"
        cmd = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--ephemeral",
            f"--directory={rootfs}",
            f"--machine={name}",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--console=read-only",
            *(f"--bind-ro={b if isinstance(b, str) else ':'.join(b)}" for b in binds_ro),
            *(f"--bind={b if isinstance(b, str) else ':'.join(b)}" for b in binds),
        ]
        with console.open("wb") as out:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        ct = cls(name, popen, console)
        try:
            ct._wait_booted(timeout)
            yield ct
        finally:
            ct.stop()

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        host_ns = _pid_ns(os.getpid())
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self.popen.returncode}:\n{self.console_tail()}")
            if not self.leader:
                self.leader = self._find_leader(host_ns)
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False, timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise ContainerError(
            f"container {self.name} did not boot within {timeout:.0f}s:\n{self.console_tail()}"
        )

    def _find_leader(self, host_ns: str | None) -> int:
        """The container's PID 1 as the host sees it: the first descendant of nspawn in another PID ns."""
        todo = [self.popen.pid]
        while todo:
            pid = todo.pop(0)
            ns = _pid_ns(pid)
            if pid != self.popen.pid and ns is not None and ns != host_ns:
                return pid
            todo += _children(pid)
        return 0

    def stop(self, timeout: float = 20.0) -> None:
        """Power off (SIGRTMIN+4 to its init, as ``machinectl poweroff`` does); kill it on timeout."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.leader:
                os.kill(self.leader, signal.SIGRTMIN + 4)
            else:
                self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def console_tail(self, n: int = 4000) -> str:
        try:
            return self.console.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ inside

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all its namespaces, root) and capture the output.

        Raises:
            ContainerError: with ``check``, a non-zero exit.
        """
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--", *argv]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"in {self.name}: {shlex.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside."""
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def read(self, path: str) -> bytes:
        """A file's bytes inside the container (through /proc/<leader>/root, so no copy)."""
        return (self.root / path.lstrip("/")).read_bytes()

    @property
    def root(self) -> Path:
        """The container's root directory as the host sees it."""
        return Path(f"/proc/{self.leader}/root")

    def put(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a file (and its parent directories) inside the running container."""
        dst = self.root / path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        tmp.chmod(mode)
        tmp.replace(dst)

    def symlink(self, path: str, target: str) -> None:
        """Create the symlink ``path`` -> ``target`` inside the container (parents created)."""
        dst = self.root / path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        dst.symlink_to(target)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(
        self,
        unit: str,
        timeout: float = 30.0,
        check: Callable[[dict[str, str]], bool] | None = None,
        **want: str,
    ) -> dict[str, str]:
        """Poll ``systemctl show`` until every property in ``want`` has its value (and ``check`` holds).

        Raises:
            ContainerError: on timeout, with the unit's status and journal.
        """
        props = sorted({*want, "ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText"})
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            last = self.show(unit, *props)
            if all(last.get(k) == v for k, v in want.items()) and (check is None or check(last)):
                return last
            time.sleep(0.25)
        raise ContainerError(
            f"{unit} did not reach {want} within {timeout:.0f}s; last {last}\n{self.journal(unit)}"
        )

    def journal(self, unit: str, lines: int = 60) -> str:
        return self.run(
            "journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit, check=False
        ).stdout

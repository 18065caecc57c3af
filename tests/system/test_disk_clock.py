"""A real agent process against a full disk at each stage, a read-only store, and a skewed clock.

Disk full while storing chunks is tests/system/test_agent_faults.py; here the other places the agent
writes: its state dir (TUF metadata, status.json, the verified manifest copies), the assembly location
(``state_dir/assembly``) and the install dir (the release directory being built). Each case: the agent
names the path and the reason, the active release stays complete, nothing half-written stays, and once
there is room the update completes. Small tmpfs mounts stand in for the full disks (root only).

Clock skew runs the agent under ``faketime`` (libfaketime): within the metadata expiry (the publisher's
default expiries: timestamp 1 day, snapshot 7, app roles 90, targets and root 365) and behind, it
updates; beyond an expiry it refuses and names the expired role. TUF only checks expiry, so a clock
that is behind (before the metadata was signed) changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmupdate.publisher.release import PublishedRelease
from tests.conftest import STRICT, need_tool
from tests.fleet import Agent, Fleet, metric, scrape, sha256, wait_for

pytestmark = pytest.mark.slow
MB = 1024 * 1024


# ---------------------------------------------------------------------- helpers


def _need_root() -> None:
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: the disk tests need root to mount a tmpfs")
        pytest.skip("needs root to mount a small tmpfs")


@contextlib.contextmanager
def _mounts() -> Iterator[list[Path]]:
    """Mount points to take down at the end (innermost last in, first out)."""
    points: list[Path] = []
    try:
        yield points
    finally:
        for p in reversed(points):
            subprocess.run(["umount", "-l", str(p)], check=False)


def _tmpfs(points: list[Path], path: Path, size: str, *, ro: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    points.append(path)


def _remount(path: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True)


def _fill(path: Path) -> None:
    """Take every free byte of the file system holding ``path``."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    try:  # the last few bytes too
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def _events(agent: Agent, event: str) -> list[dict[str, Any]]:
    out = []
    for line in agent.log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            doc = json.loads(line)
            if doc.get("event") == event:
                out.append(doc)
    return out


def _logged(agent: Agent, event: str | None, *fragments: str) -> bool:
    """An ``event`` (any event when None) was logged with an error that holds every fragment."""
    docs = _events(agent, event) if event else [json.loads(x) for x in _json_lines(agent)]
    return any(all(f in str(e.get("error", "")) for f in fragments) for e in docs)


def _json_lines(agent: Agent) -> list[str]:
    return [x for x in agent.log.read_text(errors="replace").splitlines() if x.startswith("{")]


def _start(fleet: Fleet, agent: Agent, version: str = "1.0") -> None:
    agent.start("serving peers")
    fleet.agents.append(agent)
    fleet.wait_installed(version)


def _poll_now(agent: Agent) -> None:
    agent.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]


def _assert_unchanged(
    agent: Agent, rel: PublishedRelease, new: PublishedRelease, *, assembly_idle: bool = True
) -> None:
    """The active release is the old one, complete; nothing of the new one is visible anywhere.

    ``assembly_idle``: the agent is not assembling now (when it retries every poll it may be).
    """
    assert agent.alive, agent.log.read_text()[-3000:]
    assert agent.current() == rel.ref.version
    assert sha256(agent.installed_bytes()) == rel.sha256
    releases = agent.dir / "install/releases"
    names = sorted(p.name for p in releases.iterdir())
    assert new.ref.version not in names, names
    assert not [n for n in names if ".partial-" in n or n.startswith(".trash-")], names
    assembly = agent.dir / "state/assembly"
    if assembly_idle:
        assert not list(assembly.glob(f"{new.sha256}*")), "a half-written or unused assembled artifact"
    for p in (agent.dir / "store").rglob("*"):
        if p.is_file() and len(p.name) == 64:
            assert sha256(p.read_bytes()) == p.name, p


def _wait_installed_then_check(
    fleet: Fleet, agent: Agent, rel: PublishedRelease, timeout: float = 60
) -> None:
    fleet.wait_installed(rel.ref.version, timeout=timeout)
    assert sha256(agent.installed_bytes()) == rel.sha256


# ---------------------------------------------------------------------- disk full


@pytest.mark.parametrize(
    "where",
    [
        "state",
        # the verified manifest copy (served to peers) is written at each new release: a full disk
        # there once ended the whole agent; now that poll fails and the next retries
        "manifests",
    ],
)
def test_state_dir_full_then_resumes(fleet: Fleet, tmp_path: Path, where: str) -> None:
    """``state``: the whole state dir is full (TUF metadata, status.json); the assembly location has its
    own mount so that only the small writes fail. ``manifests``: only the manifest copies' dir is full."""
    _need_root()
    rel1, _ = fleet.publish("1.0", 2 * MB, seed=1)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    state = agent.dir / "state"
    with _mounts() as points:
        if where == "state":
            _tmpfs(points, state, "1m")
            _tmpfs(points, state / "assembly", "64m")
            full = state
        else:
            _tmpfs(points, state / "manifests", "64k")
            full = state / "manifests"
        _start(fleet, agent)
        _fill(full)
        rel2, _ = fleet.publish("1.1", 4 * MB, seed=2)
        _poll_now(agent)
        if where == "state":
            wait_for(
                lambda: _logged(agent, "refresh_failed", str(state / "metadata"), "No space left on device"),
                30,
                "the agent to report the full metadata dir",
            )
            wait_for(
                lambda: _logged(agent, "status_write_failed", str(state / "status.json"), "no space left"),
                10,
                "the agent to report that status.json cannot be written",
            )
        else:
            wait_for(
                lambda: not agent.alive or _logged(agent, None, str(full), "no space left"),
                30,
                "the agent to report the full manifests dir",
            )
        _assert_unchanged(agent, rel1, rel2)
        _remount(full, "size=64m")
        _poll_now(agent)
        _wait_installed_then_check(fleet, agent, rel2)


def test_assembly_location_full_then_resumes(fleet: Fleet) -> None:
    """The artifact is assembled in ``state_dir/assembly``; a full disk there fails the assembly, names
    the file, leaves no part of it, and every poll tries again until there is room."""
    _need_root()
    rel1, _ = fleet.publish("1.0", 2 * MB, seed=1)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    assembly = agent.dir / "state/assembly"
    with _mounts() as points:
        _tmpfs(points, assembly, "3m")  # room for 1.0 (2 MiB), not for 1.1 (4 MiB)
        _start(fleet, agent)
        rel2, _ = fleet.publish("1.1", 4 * MB, seed=2)
        _poll_now(agent)
        partial = str(assembly / f"{rel2.sha256}.partial")
        wait_for(
            lambda: len([e for e in _events(agent, "assemble_failed") if partial in e["error"]]) >= 2,
            30,
            "the agent to report the full assembly location, twice (it retries)",
        )
        assert _logged(agent, "assemble_failed", partial, "No space left on device")
        _assert_unchanged(agent, rel1, rel2, assembly_idle=False)
        # the chunks stay: nothing is fetched again once there is room
        origin_before = fleet.origin_sent()
        _remount(assembly, "size=64m")
        _wait_installed_then_check(fleet, agent, rel2)
        assert fleet.origin_sent() - origin_before < 100_000  # metadata only
        assert not list(assembly.iterdir()), "the assembled artifact is moved or deleted after install"


def test_install_dir_full_then_resumes(fleet: Fleet) -> None:
    """The release directory is built in the install dir: a full disk there fails the build, names the
    directory, removes it, keeps the current release; the update completes once there is room."""
    _need_root()
    rel1, _ = fleet.publish("1.0", 2 * MB, seed=1)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    install = agent.dir / "install"
    with _mounts() as points:
        _tmpfs(points, install, "4m")  # 1.0 (2 MiB) fits, 1.0 and 1.1 (4 MiB) do not
        _start(fleet, agent)
        rel2, _ = fleet.publish("1.1", 4 * MB, seed=2)
        _poll_now(agent)
        wait_for(
            lambda: _logged(
                agent, "install_failed", str(install / "releases/.1.1.partial-"), "no space left"
            ),
            30,
            "the agent to report the full install dir",
        )
        _assert_unchanged(agent, rel1, rel2)
        # our full disk is not the release's fault: 1.1 is not recorded as failed (that would keep it
        # from being tried again until a restart), and it completes at the next poll
        assert agent.status()["apps"]["web"]["failed"] == []
        _remount(install, "size=64m")
        _poll_now(agent)
        _wait_installed_then_check(fleet, agent, rel2)


# ---------------------------------------------------------------------- read-only store


def test_read_only_store_reports_and_resumes(fleet: Fleet) -> None:
    _need_root()
    rel1, _ = fleet.publish("1.0", 2 * MB, seed=1)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    store = agent.dir / "store"
    with _mounts() as points:
        _tmpfs(points, store, "64m")
        _start(fleet, agent)
        _remount(store, "ro")
        rel2, _ = fleet.publish("1.1", 4 * MB, seed=2)
        _poll_now(agent)

        def store_error() -> str:
            errors = [s["error"] for s in agent.status().get("swarms", []) if s["version"] == "1.1"]
            return errors[0] if errors else ""

        wait_for(lambda: "read-only file system" in store_error(), 30, "status.json to show the error")
        assert f"chunk store {store}" in store_error()
        assert _logged(agent, "store_failed", str(store), "read-only file system")
        _assert_unchanged(agent, rel1, rel2)
        # a restart while still read-only: it starts, serves, and reports again (no silent crash loop)
        agent.stop()
        agent.start("serving peers")
        pid = agent.popen.pid  # type: ignore[union-attr]
        wait_for(
            lambda: agent.status().get("pid") == pid and "read-only file system" in store_error(),
            30,
            "the restarted agent to report the error",
        )
        assert agent.alive
        _assert_unchanged(agent, rel1, rel2)
        _remount(store, "rw")
        _wait_installed_then_check(fleet, agent, rel2)
        wait_for(lambda: not store_error(), 10, "the error to clear")


def test_read_only_empty_store_fails_at_start_with_the_reason(fleet: Fleet, tmp_path: Path) -> None:
    """Nothing to serve and nowhere to write: ``agent run`` exits at once, non-zero, naming the store."""
    _need_root()
    fleet.publish("1.0", 1 * MB)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    store = agent.dir / "store"
    with _mounts() as points:
        _tmpfs(points, store, "1m", ro=True)
        proc = subprocess.run(agent.cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 6, proc.stderr[-2000:]  # StoreError's exit code
    assert f"chunk store {store}: cannot open the store: read-only file system" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (agent.dir / "install/current").exists()


# ---------------------------------------------------------------------- clock skew


def _libfaketime() -> str:
    """The thread-safe libfaketime (the agent runs worker threads), from the faketime package."""
    need_tool("faketime")
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    found += sorted(Path("/usr/lib/faketime").glob("libfaketimeMT.so.1"))
    if not found:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: faketime is installed but libfaketimeMT.so.1 is not found")
        pytest.skip("libfaketimeMT.so.1 not found")
    return str(found[0])


@pytest.mark.parametrize(
    ("skew", "refused"),
    [
        ("+12h", ""),  # within the 1-day timestamp expiry
        ("-1d", ""),  # behind: before the metadata was signed; TUF has no not-before
        ("+2d", "ExpiredMetadataError: timestamp.json is expired"),
        ("+400d", "ExpiredMetadataError: Final root.json is expired"),  # past every expiry
    ],
)
def test_clock_skew(fleet: Fleet, skew: str, refused: str) -> None:
    libfaketime = _libfaketime()
    rel1, _ = fleet.publish("1.0", 1 * MB, seed=1)
    fleet.start_origin()
    agent = fleet.write_agent(0)
    _start(fleet, agent)  # with the right time
    agent.stop()
    (agent.dir / "state/status.json").unlink()
    rel2, _ = fleet.publish("1.1", 1 * MB, seed=2)
    # what faketime(1) -m -f SKEW does, without its wrapper process (which does not pass signals on)
    agent.start("serving peers", env={"LD_PRELOAD": libfaketime, "FAKETIME": skew})
    pid = agent.popen.pid  # type: ignore[union-attr]
    if not refused:
        _wait_installed_then_check(fleet, agent, rel2)
        assert agent.status()["refresh_error"] == ""
        return
    wait_for(
        lambda: agent.status().get("pid") == pid and refused in agent.status().get("refresh_error", ""),
        30,
        f"status.json to name the expired role ({refused})",
    )
    wait_for(lambda: len(_events(agent, "refresh_failed")) >= 2, 30, "a second refusal (it keeps polling)")
    assert all(refused in e["error"] for e in _events(agent, "refresh_failed"))
    samples = scrape(agent.metrics_url)
    assert metric(samples, "swarmupdate_metadata_refresh_total", result="error") >= 2
    assert metric(samples, "swarmupdate_metadata_refresh_total", result="ok") == 0
    assert metric(samples, "swarmupdate_install_total") == 0
    # nothing of 1.1 was fetched or installed: no manifest, no swarm, the old release stays active
    assert not agent.status()["swarms"]
    assert not list((agent.dir / "state/manifests").glob(f"{rel2.sha256}*"))
    _assert_unchanged(agent, rel1, rel2)

"""The installer with real install and health commands (small shell scripts run as real processes)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from swarmupdate.agent.install import OUTPUT_LIMIT, Installer, InstallSpec
from swarmupdate.errors import RemoteDataError, StoreError


def write_script(path: Path, body: str) -> Path:
    """An executable ``/bin/sh`` script; ``set -e`` so a failing step fails the script."""
    path.write_text("#!/bin/sh\nset -e\n" + body)
    path.chmod(0o755)
    return path


def make_artifact(path: Path, seed: int, size: int = 50_000) -> tuple[Path, str]:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def poll(condition: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Return as soon as ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def journal_state(install_dir: Path) -> str | None:
    path = install_dir / ".swarmupdate-install.json"
    return json.loads(path.read_text())["state"] if path.exists() else None


def leftovers(install_dir: Path) -> list[str]:
    """Names that must not survive a recovery or a finished install."""
    releases = install_dir / "releases"
    found = [p.name for p in releases.glob(".*.partial-*")] + [p.name for p in releases.glob(".trash-*")]
    return found + [p.name for p in install_dir.glob(".current.tmp-*")]


# The install command checks its environment and marks the release complete as its last step.
INSTALL = """\
test "$SWARMUPDATE_APP" = web
test "$SWARMUPDATE_RELEASE_DIR" = "$PWD"
test "$SWARMUPDATE_ARTIFACT" = "$PWD/artifact"
test -d "$SWARMUPDATE_INSTALL_DIR/releases"
echo "building $SWARMUPDATE_VERSION"
cp artifact app.bin
echo "$SWARMUPDATE_VERSION" > done
"""

# The health command runs against the switched release: `current` already points at it.
HEALTH = """\
test "$(readlink "$SWARMUPDATE_INSTALL_DIR/current")" = "releases/$SWARMUPDATE_VERSION"
test "$(cat "$SWARMUPDATE_RELEASE_DIR/done")" = "$SWARMUPDATE_VERSION"
echo "healthy $SWARMUPDATE_VERSION"
case "$SWARMUPDATE_VERSION" in *bad*) echo "unhealthy: $SWARMUPDATE_VERSION" >&2; exit 1;; esac
"""


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    return {
        "install": (str(write_script(tmp_path / "install.sh", INSTALL)),),
        "health": (str(write_script(tmp_path / "health.sh", HEALTH)),),
    }


def installer(tmp_path: Path, scripts: dict[str, tuple[str, ...]], **overrides: object) -> Installer:
    fields: dict[str, object] = {
        "app": "web",
        "install_dir": tmp_path / "web",
        "install_command": scripts["install"],
        "health_command": scripts["health"],
        **overrides,
    }
    return Installer(InstallSpec(**fields))  # type: ignore[arg-type]


def test_fresh_install_then_upgrade(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    a2, h2 = make_artifact(tmp_path / "a2", 2)
    assert inst.current() is None
    assert inst.installed_versions() == []

    r = inst.install("1.0", a1, h1)
    assert (r.result, r.previous, r.version) == ("installed", None, "1.0"), r.message
    d = tmp_path / "web"
    assert os.readlink(d / "current") == "releases/1.0"
    assert sha256_of(d / "current/artifact") == h1
    assert (d / "current/app.bin").read_bytes() == a1.read_bytes()
    assert inst.current() == "1.0"

    r = inst.install("2.0", a2, h2)
    assert (r.result, r.previous) == ("installed", "1.0"), r.message
    assert os.readlink(d / "current") == "releases/2.0"
    assert inst.installed_versions() == ["1.0", "2.0"]
    assert journal_state(d) == "idle"
    assert leftovers(d) == []


def test_same_version_twice_is_already(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    counter = tmp_path / "runs"
    scripts["install"] = (str(write_script(tmp_path / "i.sh", f"echo x >> {counter}\n" + INSTALL)),)
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    assert inst.install("1.0", a1, h1).result == "installed"
    r = inst.install("1.0", a1, h1)
    assert (r.result, r.previous) == ("already", "1.0")
    assert counter.read_text() == "x\n", "the install command must not run again"
    # the same version with another artifact is refused, not swapped under the running app
    a2, h2 = make_artifact(tmp_path / "a2", 2)
    r = inst.install("1.0", a2, h2)
    assert r.result == "failed" and "different artifact" in r.message
    assert sha256_of(tmp_path / "web/current/artifact") == h1


def test_failed_install_command_leaves_current(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    assert inst.install("1.0", a1, h1).result == "installed"
    # lots of output: the message keeps only the end
    noisy = "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done\necho 'disk on fire' >&2\nexit 3\n"
    scripts["install"] = (str(write_script(tmp_path / "bad.sh", noisy)),)
    with structlog.testing.capture_logs() as logs:
        r = installer(tmp_path, scripts).install("2.0", *make_artifact(tmp_path / "a2", 2))
    assert (r.result, r.previous) == ("failed", "1.0")
    assert r.message.startswith("install command exited 3\n")
    assert r.message.rstrip().endswith("disk on fire")
    assert "line 1999" in r.message and "line 0\n" not in r.message
    assert len(r.message.encode()) <= OUTPUT_LIMIT + 100
    assert os.readlink(tmp_path / "web/current") == "releases/1.0"
    assert sorted(p.name for p in (tmp_path / "web/releases").iterdir()) == ["1.0"]
    event = next(e for e in logs if e["event"] == "install_command")
    assert event["ok"] is False and event["status"] == "exited 3" and "disk on fire" in event["output"]
    assert event["app"] == "web" and event["version"] == "2.0"


def test_install_command_that_cannot_start(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    scripts["install"] = (str(tmp_path / "missing.sh"),)
    r = installer(tmp_path, scripts).install("1.0", *make_artifact(tmp_path / "a1", 1))
    assert r.result == "failed" and "could not start" in r.message
    assert not (tmp_path / "web/current").exists()


def test_failed_health_rolls_back_and_is_not_retried(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]]
) -> None:
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    a2, h2 = make_artifact(tmp_path / "a2", 2)
    assert inst.install("1.0", a1, h1).result == "installed"
    r = inst.install("2.0-bad", a2, h2)
    assert (r.result, r.previous) == ("rolled_back", "1.0")
    assert r.message.startswith("health command exited 1; rolled back to 1.0")
    assert "unhealthy: 2.0-bad" in r.message
    d = tmp_path / "web"
    assert os.readlink(d / "current") == "releases/1.0"
    assert (d / "releases/.2.0-bad.failed/done").read_text() == "2.0-bad\n", "kept for inspection"
    assert inst.installed_versions() == ["1.0"]

    # the same artifact again: refused without running anything
    runs = tmp_path / "runs"
    scripts["install"] = (str(write_script(tmp_path / "i.sh", f"echo x >> {runs}\n" + INSTALL)),)
    r = installer(tmp_path, scripts).install("2.0-bad", a2, h2)
    assert r.result == "failed" and "failed its health check before" in r.message
    assert not runs.exists()
    # another artifact under that version is tried (and fails health again here)
    a3, h3 = make_artifact(tmp_path / "a3", 3)
    r = installer(tmp_path, scripts).install("2.0-bad", a3, h3)
    assert r.result == "rolled_back" and runs.read_text() == "x\n"
    assert sha256_of(d / "releases/.2.0-bad.failed/artifact") == h3


def test_failed_health_on_first_install_removes_current(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]]
) -> None:
    inst = installer(tmp_path, scripts)
    r = inst.install("1.0-bad", *make_artifact(tmp_path / "a1", 1))
    assert (r.result, r.previous) == ("failed", None)
    assert "no release to roll back to" in r.message
    assert not os.path.lexists(tmp_path / "web/current")
    assert inst.current() is None


def test_health_timeout_kills_the_whole_command(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    pidfile = tmp_path / "sleeper.pid"
    slow = (
        'test -f "$SWARMUPDATE_INSTALL_DIR/slow-$SWARMUPDATE_VERSION" || exit 0\n'
        f"sleep 60 &\necho $! > {pidfile}\nwait\n"
    )
    scripts["health"] = (str(write_script(tmp_path / "slow.sh", slow)),)
    inst = installer(tmp_path, scripts, health_timeout=0.5)
    assert inst.install("1.0", *make_artifact(tmp_path / "a1", 1)).result == "installed"
    (tmp_path / "web/slow-2.0").touch()
    started = time.monotonic()
    r = inst.install("2.0", *make_artifact(tmp_path / "a2", 2))
    assert time.monotonic() - started < 10
    assert (r.result, r.previous) == ("rolled_back", "1.0")
    assert r.message.startswith("health command timed out after 0.5s")
    assert os.readlink(tmp_path / "web/current") == "releases/1.0"
    sleeper = int(pidfile.read_text())
    poll(lambda: not _alive(sleeper), what="the health command's child to be killed")


def test_install_timeout(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    scripts["install"] = (str(write_script(tmp_path / "slow.sh", "echo starting\nsleep 60\n")),)
    r = installer(tmp_path, scripts, install_timeout=0.3).install("1.0", *make_artifact(tmp_path / "a1", 1))
    assert r.result == "failed"
    assert r.message == "install command timed out after 0.3s\nstarting\n"
    assert not (tmp_path / "web/current").exists()
    assert leftovers(tmp_path / "web") == []


def test_keep_releases_prunes_oldest_but_never_current_or_previous(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]]
) -> None:
    inst = installer(tmp_path, scripts, keep_releases=2)
    for i in range(1, 6):
        assert inst.install(f"{i}.0", *make_artifact(tmp_path / f"a{i}", i)).result == "installed"
    assert inst.installed_versions() == ["4.0", "5.0"]
    assert sorted(p.name for p in (tmp_path / "web/releases").iterdir()) == ["4.0", "5.0"]

    # keep_releases=1 still keeps the previous release (the roll-back target)
    inst = installer(tmp_path, scripts, keep_releases=1)
    assert inst.install("6.0", *make_artifact(tmp_path / "a6", 6)).result == "installed"
    assert inst.installed_versions() == ["5.0", "6.0"]
    r = inst.install("7.0-bad", *make_artifact(tmp_path / "a7", 7))
    assert r.result == "rolled_back" and inst.current() == "6.0"


def test_reinstalling_an_older_release_reuses_it(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    runs = tmp_path / "runs"
    scripts["install"] = (str(write_script(tmp_path / "i.sh", f"echo x >> {runs}\n" + INSTALL)),)
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    assert inst.install("1.0", a1, h1).result == "installed"
    assert inst.install("2.0", *make_artifact(tmp_path / "a2", 2)).result == "installed"
    r = inst.install("1.0", a1, h1)  # the channel went back
    assert (r.result, r.previous) == ("installed", "2.0")
    assert inst.current() == "1.0"
    assert runs.read_text() == "x\nx\n", "the complete 1.0 release is switched to, not rebuilt"
    assert inst.installed_versions() == ["2.0", "1.0"], "install time order"


def test_second_process_is_refused(tmp_path: Path, scripts: dict[str, tuple[str, ...]]) -> None:
    import fcntl

    d = tmp_path / "web"
    (d / "releases").mkdir(parents=True)
    with (d / ".swarmupdate-install.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="another process"):
            installer(tmp_path, scripts).install("1.0", *make_artifact(tmp_path / "a1", 1))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_consumed_artifact_is_moved_in_and_checked_once(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]]
) -> None:
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    inode = a1.stat().st_ino
    r = inst.install("1.0", a1, h1, consume=True)
    assert r.result == "installed", r.message
    installed = tmp_path / "web/current/artifact"
    # the same file, moved (same file system): not copied, and no longer where it was
    assert installed.stat().st_ino == inode and not a1.exists()
    assert sha256_of(installed) == h1
    assert journal_state(tmp_path / "web") == "idle"


@pytest.mark.parametrize("verified", [False, True])
def test_a_verified_consumed_artifact_is_moved_in_without_a_second_hash(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]], monkeypatch: pytest.MonkeyPatch, verified: bool
) -> None:
    """The agent hashes its assembly as it writes it; the installer then only moves it. Without
    ``verified`` (the control) the installer reads and hashes it once more."""
    import hashlib

    hashed: list[object] = []
    real = hashlib.file_digest

    def counting(f: Any, digest: Any) -> Any:
        hashed.append(f)
        return real(f, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    inode = a1.stat().st_ino
    r = inst.install("1.0", a1, h1, consume=True, verified=verified)
    assert r.result == "installed", r.message
    installed = tmp_path / "web/current/artifact"
    assert installed.stat().st_ino == inode and not a1.exists()
    assert len(hashed) == (0 if verified else 1)
    assert sha256_of(installed) == h1
    # without consume, "verified" changes nothing: a file the installer does not own is checked
    a2, h2 = make_artifact(tmp_path / "a2", 2)
    hashed.clear()
    assert inst.install("2.0", a2, h2, verified=True).result == "installed"
    assert len(hashed) >= 1 and a2.exists()


def test_a_consumed_artifact_that_is_not_the_signed_one_is_refused(
    tmp_path: Path, scripts: dict[str, tuple[str, ...]]
) -> None:
    inst = installer(tmp_path, scripts)
    a1, h1 = make_artifact(tmp_path / "a1", 1)
    assert inst.install("1.0", a1, h1).result == "installed"
    a2, _ = make_artifact(tmp_path / "a2", 2)
    with pytest.raises(RemoteDataError, match="once in place, the signed value is"):
        inst.install("2.0", a2, h1.replace(h1[0], "0" if h1[0] != "0" else "1", 1), consume=True)
    assert inst.current() == "1.0"
    assert inst.installed_versions() == ["1.0"]
    assert leftovers(tmp_path / "web") == []

"""Faults on one real agent process: kill -9 during install, a full disk while storing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import STRICT
from tests.fleet import Fleet, sha256, wait_for

pytestmark = pytest.mark.slow
MB = 1024 * 1024


def _slow_install_script(tmp: Path) -> Path:
    script = tmp / "install.sh"
    script.write_text(
        "#!/bin/sh\n"
        'touch "$SWARMUPDATE_RELEASE_DIR/../../installing-$SWARMUPDATE_VERSION"\n'
        'if [ "$SWARMUPDATE_VERSION" != "1.0" ]; then sleep 30; fi\n'
        'cp "$SWARMUPDATE_ARTIFACT" "$SWARMUPDATE_RELEASE_DIR/app.bin"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("phase", ["install", "health"])
def test_kill_9_during_install_leaves_old_or_new(fleet: Fleet, tmp_path: Path, phase: str) -> None:
    rel1, _ = fleet.publish("1.0", 3 * MB, seed=1)
    fleet.start_origin()
    marker_dir = tmp_path / "agent0" / "install"
    if phase == "install":
        script = _slow_install_script(tmp_path)
        extra_app = f'install_command = ["{script}"]\n'
    else:
        health = tmp_path / "health.sh"
        health.write_text(
            '#!/bin/sh\ntouch "$SWARMUPDATE_RELEASE_DIR/../../installing-$SWARMUPDATE_VERSION"\n'
            'if [ "$SWARMUPDATE_VERSION" != "1.0" ] && '
            '[ ! -e "$SWARMUPDATE_RELEASE_DIR/../../let-pass" ]; then sleep 30; fi\n'
        )
        health.chmod(0o755)
        extra_app = f'health_command = ["{health}"]\n'
    agent = fleet.write_agent(0)
    agent.config.write_text(agent.config.read_text() + extra_app)
    agent.start("serving peers")
    fleet.agents.append(agent)
    fleet.wait_installed("1.0")
    rel2, data2 = fleet.publish("1.1", 3 * MB, seed=2)
    agent.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: (marker_dir / "installing-1.1").exists(), 60, f"the {phase} step of 1.1 to start")
    agent.kill(signal.SIGKILL)
    # right after the kill: the active release is a complete one, old or new, never a partial one
    current = agent.current()
    assert current in ("1.0", "1.1") if phase == "health" else current == "1.0"
    assert sha256(agent.installed_bytes()) == {"1.0": rel1.sha256, "1.1": rel2.sha256}[current or ""]
    # restart: the agent recovers and finishes the update
    if phase == "install":
        _slow_install_script(tmp_path).write_text(
            '#!/bin/sh\ncp "$SWARMUPDATE_ARTIFACT" "$SWARMUPDATE_RELEASE_DIR/app.bin"\n'
        )
    else:
        (marker_dir / "let-pass").touch()
    agent.start("serving peers")
    fleet.wait_installed("1.1", timeout=60)
    assert sha256(agent.installed_bytes()) == rel2.sha256 == sha256(data2)
    assert not list((marker_dir / "releases").glob(".*partial*"))


def test_disk_full_while_storing_then_resumes(fleet: Fleet, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: the disk-full test needs root to mount a tmpfs")
        pytest.skip("needs root to mount a small tmpfs")
    store = tmp_path / "agent0" / "store"
    store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], check=True)
    try:
        rel, _ = fleet.publish("1.0", 8 * MB)
        fleet.start_origin()
        agent = fleet.write_agent(0)
        agent.start("serving peers")
        fleet.agents.append(agent)
        wait_for(
            lambda: any("no space" in s.get("error", "") for s in agent.status().get("swarms", [])),
            60,
            "the agent to report the full disk",
        )
        assert agent.alive
        assert agent.current() is None
        # nothing unverified is in the store: every chunk file matches its name
        for p in store.rglob("*"):
            if p.is_file() and len(p.name) == 64:
                assert sha256(p.read_bytes()) == p.name
        subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)
        fleet.wait_installed("1.0", timeout=60)
        assert sha256(agent.installed_bytes()) == rel.sha256
        wait_for(lambda: "no space" not in str(agent.status().get("swarms")), 10, "the error to clear")
    finally:
        for a in fleet.agents:
            a.stop()
        subprocess.run(["umount", "-l", str(store)], check=False)

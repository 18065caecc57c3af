"""A publish or key rotation killed (SIGKILL) between any two steps leaves the origin consistent:
the previous release stays live and verifiable, and the next run completes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from swarmupdate.publisher.repository import Repository
from swarmupdate.trust.client import TrustClient
from tests.conftest import Origin, make_artifact, run_cli

POINTS = ["after-chunks", "after-targets", "before-web", "before-snapshot", "before-timestamp"]


@pytest.mark.parametrize("point", POINTS)
def test_killed_publish_keeps_previous_release(
    repo_dir: Path, origin: Origin, tmp_path: Path, point: str
) -> None:
    v1 = make_artifact(tmp_path / "app.bin", 2_000_000, seed=1)
    run_cli("release", "add", repo_dir, v1, "--app", "web", "--version", "1.0", check=True)
    client_dir = tmp_path / "client"
    TrustClient.init(client_dir, repo_dir / "origin/metadata/1.root.json")
    client = TrustClient(client_dir, origin.metadata_url)
    assert client.latest_release("web", "stable").version == "1.0"  # type: ignore[union-attr]
    timestamp = (repo_dir / "origin/metadata/timestamp.json").read_bytes()

    v2 = make_artifact(tmp_path / "app2.bin", 2_000_000, seed=2)
    proc = run_cli(
        "release",
        "add",
        repo_dir,
        v2,
        "--app",
        "web",
        "--version",
        "2.0",
        env={"SWARMUPDATE_FAULT_POINT": point},
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)

    # nothing new is live: same timestamp, the client still gets 1.0, the repository verifies
    assert (repo_dir / "origin/metadata/timestamp.json").read_bytes() == timestamp
    assert client.latest_release("web", "stable").version == "1.0"  # type: ignore[union-attr]
    report = json.loads(run_cli("repo", "verify", repo_dir, "--json", check=True).stdout)
    assert report["ok"] and report["releases"] == 1
    assert not list((repo_dir / "origin").rglob(".*.tmp")), "temporary files must not be left visible"

    # and publishing again completes
    run_cli("release", "add", repo_dir, v2, "--app", "web", "--version", "2.0", check=True)
    assert client.latest_release("web", "stable").version == "2.0"  # type: ignore[union-attr]
    assert json.loads(run_cli("repo", "verify", repo_dir, "--json", check=True).stdout)["releases"] == 2


ROTATION_POINTS = [
    ("timestamp", "before-root"),
    ("timestamp", "before-snapshot"),
    ("timestamp", "before-timestamp"),
    ("targets", "before-targets"),
    ("targets", "before-snapshot"),
    ("targets", "before-timestamp"),
    ("root", "before-root"),
    ("root", "before-snapshot"),
    ("root", "before-timestamp"),
    ("web", "before-web"),
    ("web", "before-targets"),
    ("web", "before-timestamp"),
]


@pytest.mark.parametrize(("role", "point"), ROTATION_POINTS)
def test_killed_rotation_heals_on_next_refresh(
    repo_dir: Path, origin: Origin, tmp_path: Path, role: str, point: str
) -> None:
    v1 = make_artifact(tmp_path / "app.bin", 500_000)
    run_cli("release", "add", repo_dir, v1, "--app", "web", "--version", "1.0", check=True)
    client_dir = tmp_path / "client"
    TrustClient.init(client_dir, repo_dir / "origin/metadata/1.root.json")
    client = TrustClient(client_dir, origin.metadata_url)
    client.refresh()
    proc = run_cli("key", "rotate", repo_dir, "--role", role, env={"SWARMUPDATE_FAULT_POINT": point})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the repository still loads; the refresh a timer runs re-signs whatever the new root made stale
    run_cli("repo", "refresh", repo_dir, check=True)
    assert Repository(repo_dir).stale == set()
    assert json.loads(run_cli("repo", "verify", repo_dir, "--json", check=True).stdout)["ok"]
    rel = client.latest_release("web", "stable")
    assert rel is not None and rel.version == "1.0"

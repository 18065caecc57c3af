"""The agent-side trust client rejects the TUF attacks: rollback, freeze, mix-and-match, tampered
targets and endless data.

Every attack is real metadata or bytes on a real origin (or a hostile server) on loopback, forged
with python-tuf and the repository's own keys. Each test checks both the failure (our error type
and its message, or exit 1 for ``swarmupdate-tuf-client``) and that the client's trusted state
did not move.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swarmupdate.errors import RemoteDataError
from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository
from swarmupdate.trust.client import TrustClient
from tests.conftest import Origin, make_artifact, need_tool, run_tuf_client, tree_state
from tests.tufhelpers import (
    HostileServer,
    files_of,
    init_client,
    meta_of,
    origin_target,
    publish_snapshot,
    publish_timestamp,
    version_of,
)

DRIVERS = ["trustclient", "cli"]


@pytest.fixture
def synced(repo_dir: Path, origin: Origin, tmp_path: Path) -> Path:
    """Releases web 1.0 and 2.0 published, and a client that has seen them: its metadata dir.

    Versions live on the origin and in the client afterwards: root 1, targets 2, web 3,
    snapshot 4, timestamp 4.
    """
    for version, seed in (("1.0", 1), ("2.0", 2)):
        (tmp_path / version).mkdir()
        art = make_artifact(tmp_path / version / "app.bin", 200_000, seed)
        add_release(Repository(repo_dir), "web", version, art)
    client = init_client(tmp_path, repo_dir)
    rel = TrustClient(client, origin.metadata_url).latest_release("web", "stable")
    assert rel is not None
    assert rel.version == "2.0"
    assert [version_of(client / f) for f in ("timestamp.json", "snapshot.json", "web.json")] == [4, 4, 3]
    return client


def expect_rejected(driver: str, client: Path, origin: Origin, fragment: str) -> None:
    """The client refuses the origin's current state, with ``fragment`` in the error message."""
    if driver == "trustclient":
        with pytest.raises(RemoteDataError, match=re.escape(fragment)):
            TrustClient(client, origin.metadata_url).latest_release("web", "stable")
    else:
        proc = run_tuf_client("--metadata-dir", client, "--metadata-url", origin.metadata_url, "refresh")
        assert proc.returncode == 1, proc.stderr
        assert fragment in proc.stderr


# ---------------------------------------------------------------------- rollback


@pytest.mark.parametrize("driver", DRIVERS)
def test_rollback_timestamp(repo_dir: Path, origin: Origin, synced: Path, driver: str) -> None:
    ts_path = repo_dir / "origin/metadata/timestamp.json"
    old = ts_path.read_bytes()
    Repository(repo_dir).refresh_timestamp(snapshot_too=False)  # timestamp 5
    TrustClient(synced, origin.metadata_url).refresh()
    assert version_of(synced / "timestamp.json") == 5
    before = tree_state(synced)

    ts_path.write_bytes(old)  # the origin serves timestamp 4 again
    expect_rejected(driver, synced, origin, "BadVersionNumberError: New timestamp version 4 must be >= 5")
    assert tree_state(synced) == before


@pytest.mark.parametrize("driver", DRIVERS)
def test_rollback_snapshot(repo_dir: Path, origin: Origin, synced: Path, driver: str) -> None:
    repo = Repository(repo_dir)
    old_snapshot = (repo_dir / "origin/metadata/3.snapshot.json").read_bytes()
    # a validly signed timestamp 5 that names snapshot 3 (which is on the origin, hashes correct)
    publish_timestamp(repo, meta_of(old_snapshot, 3))
    before = tree_state(synced)

    expect_rejected(driver, synced, origin, "New snapshot version must be >= 4, got version 3")
    assert tree_state(synced) == before
    assert version_of(synced / "timestamp.json") == 4


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("role", "old_version"), [("targets", 1), ("web", 2)])
def test_rollback_targets_and_app_role(
    repo_dir: Path, origin: Origin, synced: Path, driver: str, role: str, old_version: int
) -> None:
    repo = Repository(repo_dir)
    old = (repo_dir / f"origin/metadata/{old_version}.{role}.json").read_bytes()
    # snapshot 5 (real snapshot key) lists the older, genuinely signed role file
    publish_snapshot(repo, {f"{role}.json": meta_of(old, old_version)})
    kept = files_of(synced, ["root.json", "snapshot.json", "targets.json", "web.json"])
    cache = tree_state(synced / "targets")

    expect_rejected(
        driver, synced, origin, f"BadVersionNumberError: Expected {role}.json version {old_version}"
    )
    assert files_of(synced, kept) == kept
    assert version_of(synced / f"{role}.json") == old_version + 1
    assert tree_state(synced / "targets") == cache


@pytest.mark.parametrize("driver", DRIVERS)
def test_rollback_root(repo_dir: Path, origin: Origin, synced: Path, driver: str) -> None:
    repo = Repository(repo_dir)
    repo.stage("root")
    repo.commit()  # root 2, legitimately
    TrustClient(synced, origin.metadata_url).refresh()
    assert version_of(synced / "root.json") == 2
    before = tree_state(synced)

    md = repo_dir / "origin/metadata"
    (md / "3.root.json").write_bytes((md / "1.root.json").read_bytes())
    expect_rejected(driver, synced, origin, "Expected root version 3 instead got version 1")
    assert tree_state(synced) == before
    assert not (synced / "root_history/3.root.json").exists()


# ---------------------------------------------------------------------- freeze


def test_freeze_expired_timestamp_injected_time(
    repo_dir: Path, origin: Origin, synced: Path, tmp_path: Path
) -> None:
    later = datetime.now(UTC) + timedelta(days=3)  # timestamp expiry is 1 day
    before = tree_state(synced)
    with pytest.raises(RemoteDataError, match=r"ExpiredMetadataError: timestamp\.json is expired"):
        TrustClient(synced, origin.metadata_url, now=later).latest_release("web", "stable")
    assert tree_state(synced) == before

    # a client that never saw this timestamp does not keep the expired one either
    fresh = init_client(tmp_path, repo_dir, "fresh")
    with pytest.raises(RemoteDataError, match=r"ExpiredMetadataError: timestamp\.json is expired"):
        TrustClient(fresh, origin.metadata_url, now=later).refresh()
    assert not (fresh / "timestamp.json").exists()
    assert not (fresh / "snapshot.json").exists()


def test_freeze_expired_timestamp_faketime_cli(repo_dir: Path, origin: Origin, tmp_path: Path) -> None:
    faketime = need_tool("faketime")
    client = tmp_path / "client"
    assert (
        run_tuf_client("--metadata-dir", client, "init", repo_dir / "origin/metadata/1.root.json").returncode
        == 0
    )
    refresh: list[str | Path] = ["--metadata-dir", client, "--metadata-url", origin.metadata_url, "refresh"]
    proc = run_tuf_client(*refresh)
    assert proc.returncode == 0, proc.stderr  # control: today the same refresh succeeds
    before = tree_state(client)

    # -f: libfaketime's own offset syntax ("+3d"); without it faketime hands the string to date(1)
    proc = run_tuf_client(*refresh, prefix=[faketime, "-f", "+3d"])
    assert proc.returncode == 1, proc.stderr
    assert "timestamp.json is expired" in proc.stderr
    assert tree_state(client) == before


# ---------------------------------------------------------------------- mix-and-match


@pytest.mark.parametrize("driver", DRIVERS)
def test_mix_and_match_snapshot_content(repo_dir: Path, origin: Origin, synced: Path, driver: str) -> None:
    Repository(repo_dir).refresh_timestamp(snapshot_too=True)  # snapshot 5, timestamp 5
    md = repo_dir / "origin/metadata"
    (md / "5.snapshot.json").write_bytes((md / "4.snapshot.json").read_bytes())
    kept = files_of(synced, ["root.json", "snapshot.json", "targets.json", "web.json"])

    expect_rejected(driver, synced, origin, "LengthOrHashMismatchError")
    assert files_of(synced, kept) == kept
    assert version_of(synced / "snapshot.json") == 4


def test_mix_and_match_manifest_of_another_release(repo_dir: Path, origin: Origin, synced: Path) -> None:
    # web's own key signs a 3.0 whose artifact names the 1.0 manifest
    add_release(Repository(repo_dir), "web", "3.0", make_artifact(repo_dir.parent / "app.bin", 200_000, 3))
    repo = Repository(repo_dir)
    web = repo.stage("web")
    tf = web.signed.targets["web/3.0/app.bin"]
    tf.unrecognized_fields["custom"]["swarmupdate"]["manifest"] = "web/1.0/app.bin.manifest.json"
    repo.commit()
    cache = synced / "targets"
    before = tree_state(cache)

    with pytest.raises(
        RemoteDataError, match=r"web/1\.0/app\.bin\.manifest\.json: describes web/1\.0/app\.bin"
    ):
        TrustClient(synced, origin.metadata_url).latest_release("web", "stable")
    # no 3.0 manifest (or anything else) was taken in; the 1.0 manifest is not cached as 3.0's
    after = tree_state(cache)
    assert set(after) - set(before) <= {"web%2F1.0%2Fapp.bin.manifest.json"}
    assert all(after[k] == v for k, v in before.items())


# ---------------------------------------------------------------------- tampered targets


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        ("flip", "LengthOrHashMismatchError: Observed hash"),
        ("append", "server sent more than the signed length"),
    ],
)
def test_tampered_manifest_on_origin(
    repo_dir: Path, origin: Origin, tmp_path: Path, tamper: str, fragment: str
) -> None:
    pub = add_release(Repository(repo_dir), "web", "1.0", make_artifact(tmp_path / "app.bin", 200_000))
    path = origin_target(repo_dir, pub.ref.manifest_path)
    data = bytearray(path.read_bytes())
    if tamper == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data += b" "
    path.write_bytes(bytes(data))

    client = init_client(tmp_path, repo_dir)
    with pytest.raises(RemoteDataError, match=re.escape(fragment)) as err:
        TrustClient(client, origin.metadata_url).latest_release("web", "stable")
    assert "manifest web/1.0/app.bin.manifest.json" in str(err.value)
    assert tree_state(client / "targets") == {}


def test_target_hash_mismatch_cli_download(serve_origin: object, tmp_path: Path) -> None:
    d = tmp_path / "repo"
    Repository.init(d, store_artifacts=True)
    repo = Repository(d)
    repo.add_app("web", repo.keys.generate("app-web"))
    repo.commit()
    pub = add_release(Repository(d), "web", "1.0", make_artifact(tmp_path / "app.bin", 300_000))
    stored = Repository(d).layout.target(pub.ref.artifact_path, pub.sha256)
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    origin: Origin = serve_origin(d / "origin")  # type: ignore[operator]

    client, out = tmp_path / "client", tmp_path / "out"
    assert run_tuf_client("--metadata-dir", client, "init", d / "origin/metadata/1.root.json").returncode == 0
    proc = run_tuf_client(
        "--metadata-dir", client, "--metadata-url", origin.metadata_url,
        "--target-name", "web/1.0/app.bin", "--target-base-url", origin.targets_url,
        "--target-dir", out, "download",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "target web/1.0/app.bin: LengthOrHashMismatchError: Observed hash" in proc.stderr
    assert list(out.iterdir()) == []
    assert origin.sent_bytes() >= 300_000  # it really was served, and refused


# ---------------------------------------------------------------------- endless data


def test_endless_timestamp(repo_dir: Path, origin: Origin, synced: Path) -> None:
    before = tree_state(synced)
    with HostileServer(repo_dir / "origin", {"/metadata/timestamp.json"}) as hostile:
        start = time.monotonic()
        with pytest.raises(RemoteDataError, match="server sent more than the signed length"):
            TrustClient(synced, f"{hostile.url}/metadata/").refresh()
        elapsed = time.monotonic() - start
        assert "/metadata/timestamp.json" in hostile.requests
        assert hostile.streamed_bytes > 16384  # more than any timestamp may be
    assert elapsed < 5
    assert tree_state(synced) == before


def test_endless_manifest_target(repo_dir: Path, tmp_path: Path) -> None:
    pub = add_release(Repository(repo_dir), "web", "1.0", make_artifact(tmp_path / "app.bin", 200_000))
    manifest_file = origin_target(repo_dir, pub.ref.manifest_path)
    manifest_url = "/" + manifest_file.relative_to(repo_dir / "origin").as_posix()
    client = init_client(tmp_path, repo_dir)
    with HostileServer(repo_dir / "origin", {manifest_url}) as hostile:
        start = time.monotonic()
        with pytest.raises(RemoteDataError, match="server sent more than the signed length") as err:
            TrustClient(client, f"{hostile.url}/metadata/").latest_release("web", "stable")
        elapsed = time.monotonic() - start
        assert manifest_url in hostile.requests
        assert hostile.streamed_bytes > len(manifest_file.read_bytes())  # past the signed length
    assert elapsed < 5
    assert "manifest web/1.0/app.bin.manifest.json" in str(err.value)
    assert tree_state(client / "targets") == {}

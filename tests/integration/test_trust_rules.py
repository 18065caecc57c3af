"""The trust rules the client enforces beyond rollback and freeze: root thresholds, who may sign
for an app, following a key rotation, and the ``swarmupdate-tuf-client`` command-line contract.

Real repositories, a real origin on loopback, python-tuf for every forgery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile, Targets

from swarmupdate.errors import RemoteDataError
from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository
from swarmupdate.publisher.rotate import rotate_key
from swarmupdate.trust.client import TrustClient
from tests.conftest import Origin, make_artifact, run_tuf_client, tree_state
from tests.tufhelpers import (
    TOP_LEVEL_FILES,
    init_client,
    origin_target,
    publish_snapshot,
    sign_with,
    version_of,
    write_role,
)

# ---------------------------------------------------------------------- threshold


def test_root_threshold_two_of_three(serve_origin: object, tmp_path: Path) -> None:
    d = tmp_path / "repo"
    Repository.init(d, root_keys=3, root_threshold=2)
    origin: Origin = serve_origin(d / "origin")  # type: ignore[operator]
    client = init_client(tmp_path, d)
    TrustClient(client, origin.metadata_url).refresh()
    before = tree_state(client)

    repo = Repository(d)
    keys, threshold = repo.role_keys("root")
    assert (len(keys), threshold) == (3, 2)
    root = repo.root
    root.signed.version = 2

    sign_with(repo, root, "root", keys[:1])
    write_role(repo, "root", root)
    with pytest.raises(RemoteDataError, match="UnsignedMetadataError: root was signed by 1/2 keys"):
        TrustClient(client, origin.metadata_url).refresh()
    assert tree_state(client) == before
    assert version_of(client / "root.json") == 1

    # the same root signed by two of the three keys is a valid next root
    sign_with(repo, root, "root", [keys[0], keys[2]])
    write_role(repo, "root", root)
    TrustClient(client, origin.metadata_url).refresh()
    assert version_of(client / "root.json") == 2
    assert (client / "root.json").read_bytes() == (d / "origin/metadata/2.root.json").read_bytes()


# ---------------------------------------------------------------------- delegation


@pytest.fixture
def two_apps(repo_dir: Path, tmp_path: Path) -> Path:
    """``web`` and ``db``, each with a release 1.0 signed by its own key."""
    repo = Repository(repo_dir)
    repo.add_app("db", repo.keys.generate("app-db"))
    repo.commit()
    add_release(Repository(repo_dir), "web", "1.0", make_artifact(tmp_path / "app.bin", 100_000, 1))
    add_release(Repository(repo_dir), "db", "1.0", make_artifact(tmp_path / "db.bin", 100_000, 2))
    return repo_dir


def test_app_role_signed_by_another_apps_key(two_apps: Path, origin: Origin, tmp_path: Path) -> None:
    client = init_client(tmp_path, two_apps)
    rel = TrustClient(client, origin.metadata_url).latest_release("db", "stable")
    assert rel is not None
    assert rel.version == "1.0"
    db_before = (client / "db.json").read_bytes()

    # a new db version that adds a release, signed with web's key instead of db's
    repo = Repository(two_apps)
    db = repo.app("db")
    db.signed.version += 1
    evil = TargetFile.from_data("db/6.6/db.bin", b"evil", ["sha256"])
    evil.unrecognized_fields["custom"] = {
        "swarmupdate": {"version": "6.6", "channel": "stable", "manifest": "db/1.0/db.bin.manifest.json"}
    }
    db.signed.targets[evil.path] = evil
    web_keys, _ = repo.role_keys("web")
    sign_with(repo, db, "db", web_keys)
    publish_snapshot(repo, {"db.json": write_role(repo, "db", db)})

    with pytest.raises(RemoteDataError, match="UnsignedMetadataError: db was signed by 0/1 keys"):
        TrustClient(client, origin.metadata_url).latest_release("db", "stable")
    assert (client / "db.json").read_bytes() == db_before
    assert version_of(client / "db.json") == db.signed.version - 1


def test_app_cannot_publish_into_another_apps_namespace(
    two_apps: Path, origin: Origin, tmp_path: Path
) -> None:
    # web's own key, validly, lists db/1.0/x as a newer db release
    repo = Repository(two_apps)
    web = repo.stage("web")
    forged = TargetFile.from_data("db/1.0/x", b"not db's", ["sha256"])
    forged.unrecognized_fields["custom"] = {
        "swarmupdate": {"version": "9.0", "channel": "stable", "manifest": "db/1.0/db.bin.manifest.json"}
    }
    web.signed.targets[forged.path] = forged
    repo.commit()

    client = init_client(tmp_path, two_apps)
    trust = TrustClient(client, origin.metadata_url)
    db_rel = trust.latest_release("db", "stable")
    assert db_rel is not None
    assert (db_rel.version, db_rel.target_path) == ("1.0", "db/1.0/db.bin")
    web_rel = trust.latest_release("web", "stable")
    assert web_rel is not None
    assert (web_rel.version, web_rel.target_path) == ("1.0", "web/1.0/app.bin")
    with trust.session() as updater:
        assert updater.get_targetinfo("db/1.0/x") is None
        # the client did load web's role and saw the forged entry: it is just not web's to grant
        updater.get_targetinfo("web/-/-")
        web_role = updater._trusted_set["web"]
        assert isinstance(web_role, Targets)
        assert "db/1.0/x" in web_role.targets


# ---------------------------------------------------------------------- rotation


def test_client_follows_root_rotation_then_new_keys(repo_dir: Path, origin: Origin, tmp_path: Path) -> None:
    add_release(Repository(repo_dir), "web", "1.0", make_artifact(tmp_path / "app.bin", 100_000, 1))
    client = init_client(tmp_path, repo_dir)
    trust = TrustClient(client, origin.metadata_url)
    rel = trust.latest_release("web", "stable")
    assert rel is not None
    assert rel.version == "1.0"
    old_root = json.loads((client / "root.json").read_bytes())["signed"]

    for role in ("root", "timestamp", "web"):
        rotate_key(Repository(repo_dir), role)
    (tmp_path / "2").mkdir()
    add_release(Repository(repo_dir), "web", "2.0", make_artifact(tmp_path / "2" / "app.bin", 100_000, 2))
    repo = Repository(repo_dir)
    assert repo.root.signed.version == 3  # root key rotated, then timestamp key rotated

    rel = trust.latest_release("web", "stable")
    assert rel is not None
    assert rel.version == "2.0"
    assert version_of(client / "root.json") == 3
    assert (client / "root.json").read_bytes() == (repo_dir / "origin/metadata/3.root.json").read_bytes()
    new_root = json.loads((client / "root.json").read_bytes())["signed"]
    for role in ("root", "timestamp"):
        assert new_root["roles"][role]["keyids"] != old_root["roles"][role]["keyids"]
    assert version_of(client / "timestamp.json") == repo.timestamp.signed.version


# ---------------------------------------------------------------------- the CLI contract


def test_tuf_client_cli_contract(serve_origin: object, tmp_path: Path) -> None:
    d = tmp_path / "repo"
    Repository.init(d, store_artifacts=True)
    repo = Repository(d)
    repo.add_app("web", repo.keys.generate("app-web"))
    repo.commit()
    art = make_artifact(tmp_path / "app.bin", 300_000)
    pub = add_release(Repository(d), "web", "1.0", art)
    origin: Origin = serve_origin(d / "origin")  # type: ignore[operator]
    client, out = tmp_path / "client", tmp_path / "out"
    root1 = d / "origin/metadata/1.root.json"

    proc = run_tuf_client("--metadata-dir", client, "init", root1)
    assert proc.returncode == 0, proc.stderr
    assert (client / "root.json").read_bytes() == root1.read_bytes()

    common: list[str | Path] = ["--metadata-dir", client, "--metadata-url", origin.metadata_url]
    proc = run_tuf_client(*common, "refresh")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in client.glob("*.json")} == set(TOP_LEVEL_FILES)

    names = [pub.ref.artifact_path, pub.ref.manifest_path]
    download: list[str | Path] = [
        *common, "--target-name", names[0], "--target-name", names[1],
        "--target-base-url", origin.targets_url, "--target-dir", out, "download",
    ]  # fmt: skip
    proc = run_tuf_client(*download)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(out) == {
        "web%2F1.0%2Fapp.bin": art.read_bytes(),
        "web%2F1.0%2Fapp.bin.manifest.json": origin_target(d, pub.ref.manifest_path).read_bytes(),
    }

    # metadata is kept under unversioned names, each the live version on the origin
    md = d / "origin/metadata"
    assert {p.name for p in client.glob("*.json")} == {*TOP_LEVEL_FILES, "web.json"}
    assert not [p.name for p in client.glob("[0-9]*.json")]
    live = Repository(d)
    assert version_of(client / "root.json") == live.root.signed.version
    assert (client / "timestamp.json").read_bytes() == (md / "timestamp.json").read_bytes()
    assert version_of(client / "snapshot.json") == live.snapshot.signed.version
    assert version_of(client / "targets.json") == live.targets.signed.version
    assert version_of(client / "web.json") == live.app("web").signed.version

    # the same download again fetches only timestamp.json (and the 404 for the next root)
    sent, state = origin.sent_bytes(), tree_state(out)
    proc = run_tuf_client(*download)
    assert proc.returncode == 0, proc.stderr
    delta = origin.sent_bytes() - sent
    assert delta == len((md / "timestamp.json").read_bytes()) + len(b"not found\n")
    assert tree_state(out) == state

    # a name no role grants: exit 1, alone or after a good one, and nothing new is written
    for targets in (["web/9.9/nope"], [names[0], "web/9.9/nope"]):
        flags = [arg for name in targets for arg in ("--target-name", name)]
        proc = run_tuf_client(
            *common, *flags, "--target-base-url", origin.targets_url, "--target-dir", out, "download"
        )
        assert proc.returncode == 1, proc.stderr
        assert "target web/9.9/nope: not found in trusted metadata" in proc.stderr
        assert set(tree_state(out)) == set(state)

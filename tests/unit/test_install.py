"""Installer without install or health commands: validation, layout, pruning, and recovery from journals
left in each state (the kill -9 tests in tests/integration/test_install_crash.py make them for real)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import pytest

from swarmupdate.agent.install import Installer, InstallSpec
from swarmupdate.errors import ConfigError, RemoteDataError, StoreError


def _artifact(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / f"artifact-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _installer(tmp_path: Path, keep: int = 3) -> Installer:
    ticks = itertools.count(1000)
    return Installer(
        InstallSpec("web", tmp_path / "web", keep_releases=keep), clock=lambda: float(next(ticks))
    )


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: symlink targets and file hashes (to prove nothing changed)."""
    state: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            state[key] = "-> " + os.readlink(p)
        elif p.is_file():
            state[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            state[key] = "dir"
    return state


def _journal(d: Path, state: str, version: str, sha256: str, previous: str | None) -> None:
    doc = {
        "format": 1,
        "app": "web",
        "state": state,
        "version": version,
        "sha256": sha256,
        "previous": previous,
    }
    (d / ".swarmupdate-install.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"app": ""}, "app"),
        ({"keep_releases": 0}, "keep_releases"),
        ({"health_timeout": 0}, "health_timeout"),
        ({"install_timeout": -1}, "install_timeout"),
    ],
)
def test_spec_is_validated(tmp_path: Path, fields: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"app": "web", "install_dir": tmp_path, **fields}
    with pytest.raises(ConfigError, match=fragment):
        InstallSpec(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["", ".hidden", "..", "1.0/../../etc", "a/b", "1.0\n", "x" * 201])
def test_unsafe_versions_are_refused(tmp_path: Path, version: str) -> None:
    path, sha = _artifact(tmp_path, b"v")
    with pytest.raises(RemoteDataError, match="version"):
        _installer(tmp_path).install(version, path, sha)
    assert not (tmp_path / "web").exists()


def test_sha_mismatch_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    one, sha_one = _artifact(tmp_path, b"one")
    assert inst.install("1.0", one, sha_one).result == "installed"
    before = _snapshot(tmp_path / "web")
    two, _ = _artifact(tmp_path, b"two")
    with pytest.raises(RemoteDataError, match="signed value"):
        inst.install("2.0", two, sha_one)
    with pytest.raises(RemoteDataError, match="not a sha256"):
        inst.install("2.0", two, "abc")
    assert _snapshot(tmp_path / "web") == before
    # a fresh directory is not even created
    with pytest.raises(RemoteDataError):
        _installer(tmp_path / "fresh").install("1.0", two, sha_one)
    assert not (tmp_path / "fresh").exists()


def test_missing_artifact_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        _installer(tmp_path).install("1.0", tmp_path / "nope", "0" * 64)


def test_copy_only_install_layout(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    path, sha = _artifact(tmp_path, b"payload")
    r = inst.install("1.0", path, sha.upper())  # hex case does not matter
    assert (r.result, r.previous, r.message) == ("installed", None, "")
    d = tmp_path / "web"
    assert os.readlink(d / "current") == "releases/1.0"
    assert (d / "current/artifact").read_bytes() == b"payload"
    marker = json.loads((d / "releases/1.0/.swarmupdate-release.json").read_text())
    assert (marker["version"], marker["sha256"]) == ("1.0", sha)
    assert json.loads((d / ".swarmupdate-install.json").read_text())["state"] == "idle"
    assert inst.install("1.0", path, sha).result == "already"


def test_pruning_follows_install_time_not_version_order(tmp_path: Path) -> None:
    inst = _installer(tmp_path, keep=2)
    for version in ("9", "10", "2", "3"):
        assert inst.install(version, *_artifact(tmp_path, version.encode())).result == "installed"
    assert inst.installed_versions() == ["2", "3"]
    assert inst.current() == "3"


def test_recover_when_nothing_was_installed(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    inst.recover()  # no directory at all: nothing is created
    assert not (tmp_path / "web").exists()
    (tmp_path / "web").mkdir()
    inst.recover()
    assert inst.current() is None
    assert inst.installed_versions() == []


def test_recover_building_removes_partial_keeps_current(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    assert inst.install("1.0", *_artifact(tmp_path, b"one")).result == "installed"
    d = tmp_path / "web"
    (d / "releases/.2.0.partial-abcd1234/sub").mkdir(parents=True)
    (d / "releases/.2.0.partial-abcd1234/sub/f").write_text("half")
    (d / "releases/.trash-00000000").mkdir()
    os.symlink("releases/2.0", d / ".current.tmp-deadbeef")
    _journal(d, "building", "2.0", "0" * 64, "1.0")
    inst.recover()
    assert sorted(p.name for p in (d / "releases").iterdir()) == ["1.0"]
    assert not (d / ".current.tmp-deadbeef").is_symlink()
    assert inst.current() == "1.0"
    assert json.loads((d / ".swarmupdate-install.json").read_text())["state"] == "idle"


def test_recover_activating_rolls_forward(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    assert inst.install("1.0", *_artifact(tmp_path, b"one")).result == "installed"
    path, sha = _artifact(tmp_path, b"two")
    assert inst.install("2.0", path, sha).result == "installed"
    d = tmp_path / "web"
    os.symlink("releases/1.0", d / "tmp")
    os.replace(d / "tmp", d / "current")  # crashed before the switch
    _journal(d, "activating", "2.0", sha, "1.0")
    inst.recover()
    assert inst.current() == "2.0"


def test_recover_rolling_back(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    assert inst.install("1.0", *_artifact(tmp_path, b"one")).result == "installed"
    path, sha = _artifact(tmp_path, b"two")
    assert inst.install("2.0", path, sha).result == "installed"
    d = tmp_path / "web"
    _journal(d, "rolling_back", "2.0", sha, "1.0")
    inst.recover()
    assert inst.current() == "1.0"
    assert (d / "releases/.2.0.failed/artifact").read_bytes() == b"two"
    r = inst.install("2.0", path, sha)
    assert r.result == "failed" and "not retrying" in r.message


def test_recover_repairs_a_dangling_current(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    for version in ("1.0", "2.0"):
        assert inst.install(version, *_artifact(tmp_path, version.encode())).result == "installed"
    d = tmp_path / "web"
    os.rename(d / "releases/2.0", d / "elsewhere")  # damage from outside
    inst.recover()
    assert inst.current() == "1.0"
    os.rename(d / "releases/1.0", d / "elsewhere2")
    inst.recover()
    assert not os.path.lexists(d / "current")


def test_unreadable_journal_is_survived(tmp_path: Path) -> None:
    inst = _installer(tmp_path)
    assert inst.install("1.0", *_artifact(tmp_path, b"one")).result == "installed"
    (tmp_path / "web/.swarmupdate-install.json").write_text("{not json")
    inst.recover()
    assert inst.current() == "1.0"


def test_current_that_is_not_ours_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "web"
    d.mkdir()
    os.symlink("/opt/elsewhere", d / "current")
    with pytest.raises(StoreError, match="points at"):
        _installer(tmp_path).current()
    (d / "current").unlink()
    (d / "current").mkdir()
    with pytest.raises(StoreError, match="not a symlink"):
        _installer(tmp_path).current()

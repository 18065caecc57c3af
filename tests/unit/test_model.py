from __future__ import annotations

from pathlib import Path

import pytest

from swarmupdate.model import ReleaseRef, is_sha256_hex
from swarmupdate.origin.layout import OriginLayout
from swarmupdate.trust.client import version_key


def test_sha256_hex_is_strict() -> None:
    assert is_sha256_hex("a" * 64)
    assert not is_sha256_hex("A" * 64)
    assert not is_sha256_hex("a" * 63)
    assert not is_sha256_hex("../" + "a" * 61)
    assert not is_sha256_hex(None)


def test_release_paths() -> None:
    ref = ReleaseRef("web", "1.2", "app.tar")
    assert ref.artifact_path == "web/1.2/app.tar"
    assert ref.manifest_path == "web/1.2/app.tar.manifest.json"


def test_layout_names() -> None:
    lay = OriginLayout(Path("/o"))
    h = "ab" + "c" * 62
    assert lay.chunk(h) == Path(f"/o/chunks/ab/{h}")
    assert lay.metadata("web", 3) == Path("/o/metadata/3.web.json")
    assert lay.metadata("timestamp", None) == Path("/o/metadata/timestamp.json")
    assert lay.target("web/1.2/app.tar", h) == Path(f"/o/targets/web/1.2/{h}.app.tar")
    with pytest.raises(ValueError, match="not a sha256"):
        lay.chunk("../../etc/passwd")


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.9", "1.10"),
        ("1.0", "1.0.1"),
        ("1.0rc1", "1.0"),
        ("1.0rc1", "1.0rc2"),
        ("2", "10"),
        ("2026.01.02", "2026.1.10"),
    ],
)
def test_version_order(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)

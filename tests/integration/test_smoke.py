from __future__ import annotations

from pathlib import Path

from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository
from swarmupdate.trust.client import TrustClient
from tests.conftest import Origin, make_artifact


def test_publish_then_client_finds_release(repo_dir: Path, origin: Origin, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "app.bin", 3_000_000)
    add_release(Repository(repo_dir), "web", "1.0", art)
    TrustClient.init(tmp_path / "client", repo_dir / "origin/metadata/1.root.json")
    rel = TrustClient(tmp_path / "client", origin.metadata_url).latest_release("web", "stable")
    assert rel is not None
    assert rel.version == "1.0"
    assert rel.length == 3_000_000
    assert sum(c.length for c in rel.manifest.chunks) == 3_000_000
    assert origin.sent_bytes() > 0

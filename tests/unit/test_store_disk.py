"""What only the disk store does: layout, reopening, leftover temp files, the directory lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmupdate.errors import ChunkVerificationError, StoreError
from swarmupdate.store import DiskChunkStore
from tests.unit.test_store import make_chunk


def test_layout_and_path(tmp_path: Path) -> None:
    ref, data = make_chunk(1234)
    with DiskChunkStore(tmp_path) as store:
        store.put(ref, data)
        path = store.path(ref.sha256)
        assert path == tmp_path / ref.sha256[:2] / ref.sha256
        assert path.read_bytes() == data
        with pytest.raises(KeyError):
            store.path("f" * 64)


def test_reopen_finds_chunks_and_total(tmp_path: Path) -> None:
    chunks = [make_chunk(100 * (i + 1), seed=i) for i in range(5)]
    with DiskChunkStore(tmp_path) as store:
        for ref, data in chunks:
            store.put(ref, data)
    with DiskChunkStore(tmp_path) as store:
        assert set(store.chunks()) == {r.sha256 for r, _ in chunks}
        assert store.total_bytes() == 1500
        for ref, data in chunks:
            assert store.read(ref.sha256) == data


def test_leftover_temp_files_are_removed_at_open(tmp_path: Path) -> None:
    ref, data = make_chunk(1000)
    with DiskChunkStore(tmp_path) as store:
        w = store.writer(ref)
        w.write(data[:500])
        assert len(list((tmp_path / "tmp").iterdir())) == 1
        # The process dies here: the writer is never committed or aborted.
    (tmp_path / "tmp" / "stray.tmp").write_bytes(b"partial")
    with DiskChunkStore(tmp_path) as store:
        assert list((tmp_path / "tmp").iterdir()) == []
        assert not store.has(ref.sha256)
        assert store.total_bytes() == 0
        store.put(ref, data)
        assert store.has(ref.sha256)
    os.close(w._fd)  # the "dead" writer's descriptor


def test_temp_file_lives_in_tmp_until_commit(tmp_path: Path) -> None:
    ref, data = make_chunk(1000)
    with DiskChunkStore(tmp_path) as store:
        w = store.writer(ref)
        w.write(data)
        (tmp,) = (tmp_path / "tmp").iterdir()
        assert not (tmp_path / ref.sha256[:2] / ref.sha256).exists()
        w.commit()
        assert not tmp.exists()
        assert (tmp_path / ref.sha256[:2] / ref.sha256).read_bytes() == data


def test_unrelated_and_misplaced_files_are_ignored(tmp_path: Path) -> None:
    ref, data = make_chunk(100)
    wrong_shard = "00" if ref.sha256[:2] != "00" else "01"
    (tmp_path / wrong_shard).mkdir()
    (tmp_path / wrong_shard / "README").write_text("not a chunk")
    (tmp_path / wrong_shard / ref.sha256).write_bytes(data)
    (tmp_path / "notes.txt").write_text("x")
    with DiskChunkStore(tmp_path) as store:
        assert list(store.chunks()) == []
        assert store.total_bytes() == 0
    assert (tmp_path / wrong_shard / "README").exists()


def test_a_planted_file_under_a_chunk_name_is_caught_by_verify_all(tmp_path: Path) -> None:
    ref, data = make_chunk(100)
    (tmp_path / ref.sha256[:2]).mkdir()
    (tmp_path / ref.sha256[:2] / ref.sha256).write_bytes(b"evil" + data[4:])
    with DiskChunkStore(tmp_path) as store:
        assert store.verify_all() == [ref.sha256]
        assert not (tmp_path / ref.sha256[:2] / ref.sha256).exists()
        store.put(ref, data)
        assert store.verify_all() == []


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    store = DiskChunkStore(tmp_path)
    with pytest.raises(StoreError, match="in use by another process"):
        DiskChunkStore(tmp_path)
    store.close()
    store.close()  # idempotent
    DiskChunkStore(tmp_path).close()


def test_root_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"chunk store .*file: cannot open the store"):
        DiskChunkStore(tmp_path / "file")


def test_failed_verification_leaves_no_file_anywhere(tmp_path: Path) -> None:
    ref, _ = make_chunk(4096)
    with DiskChunkStore(tmp_path) as store:
        with pytest.raises(ChunkVerificationError):
            store.put(ref, bytes(4096))
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["tmp"]

"""Behaviour every chunk store shares, run against the disk store and its in-memory twin."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swarmupdate.errors import ChunkVerificationError, StoreError
from swarmupdate.model import ChunkRef
from swarmupdate.store import ChunkStore, DiskChunkStore, MemoryChunkStore


def make_chunk(size: int, seed: int = 0) -> tuple[ChunkRef, bytes]:
    data = random.Random(seed).randbytes(size)
    return ChunkRef(hashlib.sha256(data).hexdigest(), size), data


def corrupt(store: ChunkStore, sha256: str, data: bytes) -> None:
    """Change stored bytes behind the store's back, as bit rot would."""
    if isinstance(store, DiskChunkStore):
        store.path(sha256).write_bytes(data)
    else:
        assert isinstance(store, MemoryChunkStore)
        store.tamper(sha256, data)


def leftovers(store: ChunkStore) -> list[str]:
    """Temporary files the disk store left behind (none for the memory twin)."""
    if isinstance(store, DiskChunkStore):
        return sorted(p.name for p in (store.root / "tmp").iterdir())
    return []


def files(store: ChunkStore) -> set[str]:
    """Chunk files as they are on disk (the index for the memory twin)."""
    if isinstance(store, DiskChunkStore):
        return {p.name for p in store.root.glob("??/*")}
    return set(store.chunks())


@pytest.fixture(params=["disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkStore]:
    s: ChunkStore = DiskChunkStore(tmp_path / "store") if request.param == "disk" else MemoryChunkStore()
    yield s
    s.close()


def test_round_trip(store: ChunkStore) -> None:
    ref, data = make_chunk(5000)
    assert not store.has(ref.sha256)
    assert store.size(ref.sha256) is None
    store.put(ref, data)
    assert store.has(ref.sha256)
    assert store.size(ref.sha256) == 5000
    assert store.read(ref.sha256) == data
    assert list(store.chunks()) == [ref.sha256]
    assert store.total_bytes() == 5000
    assert leftovers(store) == []


def test_streaming_writer_with_explicit_commit(store: ChunkStore) -> None:
    ref, data = make_chunk(10_000, seed=1)
    with store.writer(ref) as w:
        w.write(data[:10])
        w.write(memoryview(data)[10:4000])
        w.write(b"")
        w.write(memoryview(bytearray(data[4000:])))
        assert not store.has(ref.sha256), "visible before commit"
        w.commit()
        assert store.has(ref.sha256)
    assert store.read(ref.sha256) == data


def test_clean_exit_of_with_block_commits(store: ChunkStore) -> None:
    ref, data = make_chunk(100)
    with store.writer(ref) as w:
        w.write(data)
    assert store.read(ref.sha256) == data


def test_empty_chunk(store: ChunkStore) -> None:
    ref, data = make_chunk(0)
    store.put(ref, data)
    assert store.read(ref.sha256) == b""


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: bytes([d[0] ^ 1]) + d[1:], "sha256 mismatch"),
        (lambda d: d[:-1], "length 999, expected 1000"),
        (lambda d: b"", "length 0, expected 1000"),
    ],
    ids=["corrupt", "too-short", "empty"],
)
def test_bad_bytes_are_rejected_and_nothing_is_visible(
    store: ChunkStore, mangle: Callable[[bytes], bytes], message: str
) -> None:
    ref, data = make_chunk(1000)
    with pytest.raises(ChunkVerificationError, match=message):
        store.put(ref, mangle(data))
    assert not store.has(ref.sha256)
    assert store.total_bytes() == 0
    assert files(store) == set()
    assert leftovers(store) == []


def test_too_long_is_rejected_as_soon_as_it_overflows(store: ChunkStore) -> None:
    ref, data = make_chunk(1000)
    w = store.writer(ref)
    w.write(data)
    with pytest.raises(ChunkVerificationError, match="more than the expected 1000 bytes"):
        w.write(b"x")
    assert leftovers(store) == [], "overflow must abort the writer at once"
    with pytest.raises(ValueError, match="aborted"):
        w.write(b"")
    with pytest.raises(ValueError, match="aborted"):
        w.commit()
    assert not store.has(ref.sha256)
    assert files(store) == set()


def test_too_long_in_one_write(store: ChunkStore) -> None:
    ref, data = make_chunk(1000)
    with pytest.raises(ChunkVerificationError):
        store.put(ref, data + b"!")
    assert not store.has(ref.sha256)
    assert leftovers(store) == []


def test_exception_in_with_block_aborts(store: ChunkStore) -> None:
    ref, data = make_chunk(1000)
    with pytest.raises(RuntimeError, match="peer went away"), store.writer(ref) as w:
        w.write(data)
        raise RuntimeError("peer went away")
    assert not store.has(ref.sha256)
    assert leftovers(store) == []


def test_abort_and_misuse(store: ChunkStore) -> None:
    ref, data = make_chunk(100)
    w = store.writer(ref)
    w.write(data[:50])
    w.abort()
    w.abort()  # idempotent
    assert not store.has(ref.sha256)
    assert leftovers(store) == []
    w2 = store.writer(ref)
    w2.write(data)
    w2.commit()
    w2.abort()  # no-op after a commit
    assert store.has(ref.sha256)
    with pytest.raises(ValueError, match="committed"):
        w2.commit()


BAD_IDS = [
    "",
    "ab",
    "A" * 64,
    "0" * 63,
    "0" * 65,
    "g" * 64,
    "../" + "0" * 61,
    "0" * 63 + "\n",
    "0" * 32 + "/" + "0" * 31,
    "０" * 64,  # fullwidth digits: str.isdigit would accept them  # noqa: RUF001
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_rejected_before_touching_storage(store: ChunkStore, bad: str) -> None:
    before = files(store) | set(leftovers(store))
    for call in (store.has, store.size, store.read):
        with pytest.raises(ValueError, match="not a chunk id"):
            call(bad)
    with pytest.raises(ValueError, match="not a chunk id"):
        store.writer(ChunkRef(bad, 1))
    with pytest.raises(ValueError, match="not a chunk id"):
        store.put(ChunkRef(bad, 1), b"x")
    if isinstance(store, DiskChunkStore):
        with pytest.raises(ValueError, match="not a chunk id"):
            store.path(bad)
    assert files(store) | set(leftovers(store)) == before


def test_non_string_id_is_rejected(store: ChunkStore) -> None:
    with pytest.raises(ValueError, match="not a chunk id"):
        store.has(b"0" * 64)  # type: ignore[arg-type]


def test_read_of_missing_chunk_is_key_error(store: ChunkStore) -> None:
    with pytest.raises(KeyError):
        store.read("0" * 64)


def test_same_chunk_twice_is_stored_once(store: ChunkStore) -> None:
    ref, data = make_chunk(300)
    store.put(ref, data)
    store.put(ref, data)
    assert list(store.chunks()) == [ref.sha256]
    assert store.total_bytes() == 300


def test_evict_least_recently_used_not_in_keep(store: ChunkStore) -> None:
    (a, da), (b, db), (c, dc), (d, dd) = (make_chunk(100, seed=i) for i in range(4))
    for ref, data in ((a, da), (b, db), (c, dc), (d, dd)):
        store.put(ref, data)
    store.read(a.sha256)  # order of use now: b, c, d, a
    assert store.total_bytes() == 400
    assert store.evict(keep=set(), max_bytes=400) == []
    removed = store.evict(keep={b.sha256}, max_bytes=150)
    assert removed == [c.sha256, d.sha256, a.sha256]
    assert set(store.chunks()) == {b.sha256}
    assert store.total_bytes() == 100
    assert files(store) == {b.sha256}


def test_evict_stops_at_the_cap(store: ChunkStore) -> None:
    refs = [make_chunk(100, seed=i) for i in range(5)]
    for ref, data in refs:
        store.put(ref, data)
    assert store.evict(keep=(), max_bytes=250) == [refs[0][0].sha256, refs[1][0].sha256, refs[2][0].sha256]
    assert store.total_bytes() == 200


def test_evict_cannot_go_below_keep(store: ChunkStore) -> None:
    refs = [make_chunk(100, seed=i) for i in range(3)]
    for ref, data in refs:
        store.put(ref, data)
    keep = {r.sha256 for r, _ in refs}
    assert store.evict(keep=keep, max_bytes=0) == []
    assert store.total_bytes() == 300


def test_verify_all_deletes_mismatches(store: ChunkStore) -> None:
    (good, dg), (bad, db) = make_chunk(100, seed=1), make_chunk(100, seed=2)
    store.put(good, dg)
    store.put(bad, db)
    corrupt(store, bad.sha256, b"rot" + db[3:])
    assert store.verify_all() == [bad.sha256]
    assert not store.has(bad.sha256)
    assert store.read(good.sha256) == dg
    assert store.total_bytes() == 100
    assert store.verify_all() == []


def test_concurrent_writers_of_the_same_chunk_all_succeed(store: ChunkStore) -> None:
    ref, data = make_chunk(256 * 1024, seed=7)
    n = 16
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with store.writer(ref) as w:
                barrier.wait()
                for i in range(0, len(data), 16 * 1024):
                    w.write(data[i : i + 16 * 1024])
                barrier.wait()  # everybody has written everything before anybody commits
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert files(store) == {ref.sha256}
    assert store.total_bytes() == len(data)
    assert store.read(ref.sha256) == data
    assert leftovers(store) == []


def test_concurrent_writers_readers_and_eviction_keep_the_books(store: ChunkStore) -> None:
    chunks = [make_chunk(1000 + i, seed=i) for i in range(40)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        try:
            for ref, data in chunks[offset::4] + chunks[::-3]:
                store.put(ref, data)
                with contextlib.suppress(KeyError):  # evicted meanwhile
                    assert store.read(ref.sha256) == data
        except BaseException as exc:
            errors.append(exc)

    def evictor() -> None:
        try:
            while not stop.is_set():
                store.evict(keep=(), max_bytes=20_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    ev = threading.Thread(target=evictor)
    ev.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    ev.join(timeout=60)
    assert errors == []
    sizes = {r.sha256: r.length for r, _ in chunks}
    stored = set(store.chunks())
    assert store.total_bytes() == sum(sizes[s] for s in stored)
    assert files(store) == stored
    assert leftovers(store) == []
    assert store.verify_all() == []


def test_memory_twin_can_pretend_to_be_full(tmp_path: Path) -> None:
    store = MemoryChunkStore(capacity=1500)
    a, da = make_chunk(1000, seed=1)
    b, db = make_chunk(1000, seed=2)
    store.put(a, da)
    with pytest.raises(StoreError, match="no space left on device"):
        store.put(b, db)
    assert not store.has(b.sha256)
    store.evict(keep=(), max_bytes=0)
    store.put(b, db)
    assert store.read(b.sha256) == db


def test_memory_twin_can_pretend_to_be_read_only() -> None:
    store = MemoryChunkStore()
    a, da = make_chunk(10)
    store.read_only = True
    with pytest.raises(StoreError, match="read-only"):
        store.put(a, da)
    store.read_only = False
    store.put(a, da)
    assert store.has(a.sha256)

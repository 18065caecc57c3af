from __future__ import annotations

import hashlib
import io
import random

from swarmupdate.chunker import chunk_stream
from swarmupdate.model import ChunkerParams

SMALL = ChunkerParams(min=4096, avg=16384, max=65536)


def test_chunks_cover_the_file_and_hash_it() -> None:
    data = random.Random(7).randbytes(1_000_000)
    seen: list[bytes] = []
    result = chunk_stream(io.BytesIO(data), SMALL, lambda ref, mv: seen.append(bytes(mv)))
    assert result.length == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(seen) == data
    for ref, blob in zip(result.chunks, seen, strict=True):
        assert ref.length == len(blob)
        assert ref.sha256 == hashlib.sha256(blob).hexdigest()
        assert ref.length <= SMALL.max
    assert all(c.length >= SMALL.min for c in result.chunks[:-1])


def test_deterministic() -> None:
    data = random.Random(8).randbytes(300_000)
    assert chunk_stream(io.BytesIO(data), SMALL) == chunk_stream(io.BytesIO(data), SMALL)


def test_local_edit_changes_few_chunks() -> None:
    """Content-defined boundaries: inserting bytes in the middle leaves most chunks shared."""
    data = random.Random(9).randbytes(2_000_000)
    edited = data[:1_000_000] + b"x" * 100 + data[1_000_000:]
    a = {c.sha256 for c in chunk_stream(io.BytesIO(data), SMALL).chunks}
    b = chunk_stream(io.BytesIO(edited), SMALL).chunks
    new = [c for c in b if c.sha256 not in a]
    assert len(new) <= 3, f"{len(new)} of {len(b)} chunks changed"
    assert sum(c.length for c in new) < 3 * SMALL.max


def test_empty_file() -> None:
    result = chunk_stream(io.BytesIO(b""), SMALL)
    assert result.length == 0
    assert result.chunks == ()
    assert result.sha256 == hashlib.sha256(b"").hexdigest()

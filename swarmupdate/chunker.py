"""Content-defined chunking (FastCDC 2020 via pyfastcdc) with sha256 of every chunk and of the whole.

pyfastcdc was picked by measurement against the other PyPI candidate (``fastcdc``): on 128 MiB of
random data it cut at ~2.0 GB/s against ~1.5 GB/s, and it streams from a file object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import pyfastcdc

from swarmupdate.model import DEFAULT_CHUNKER, ChunkerParams, ChunkRef

__all__ = ["ChunkedFile", "chunk_stream"]

#: Called with each chunk's digest and bytes, in order; the memoryview is valid only during the call.
ChunkSink = Callable[[ChunkRef, memoryview], None]


@dataclass(frozen=True, slots=True)
class ChunkedFile:
    """The result of chunking one file."""

    length: int
    sha256: str
    chunks: tuple[ChunkRef, ...]


def chunk_stream(
    stream: BinaryIO,
    params: ChunkerParams = DEFAULT_CHUNKER,
    sink: ChunkSink | None = None,
    progress: Callable[[int], None] | None = None,
) -> ChunkedFile:
    """Cut ``stream`` into content-defined chunks and hash them.

    The whole-file sha256 runs in a second thread (hashlib releases the GIL on large
    buffers), so chunk hashing and file hashing use both cores.
    """
    cdc = pyfastcdc.FastCDC(params.avg, min_size=params.min, max_size=params.max)
    whole = hashlib.sha256()
    chunks: list[ChunkRef] = []
    length = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for piece in cdc.cut_stream(stream):
            # cut_stream reuses its buffer after we return, so hand the other thread a copy
            data = bytes(piece.data)
            if pending is not None:
                pending.result()
            pending = pool.submit(whole.update, data)
            ref = ChunkRef(hashlib.sha256(data).hexdigest(), len(data))
            chunks.append(ref)
            length += ref.length
            if sink is not None:
                sink(ref, memoryview(data))
            if progress is not None:
                progress(ref.length)
        if pending is not None:
            pending.result()
    return ChunkedFile(length, whole.hexdigest(), tuple(chunks))

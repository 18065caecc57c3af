"""Content-defined chunking (FastCDC 2020 via pyfastcdc) with sha256 of every chunk and of the whole.

pyfastcdc was picked by measurement against the other PyPI candidate (``fastcdc``): on 128 MiB of
random data it cut at ~2.0 GB/s against ~1.5 GB/s, and it streams from a file object.

How the work is spread over the cores (pyfastcdc and hashlib both release the GIL on large
buffers): the calling thread reads the input into a few large buffers of its own and cuts them;
the sha256 of each chunk runs in a thread pool and the sha256 of the whole in one more thread, in
order; meanwhile the calling thread hands the previous block's chunks to the sink, in order. Every
consumer reads the same private copy of the bytes, so an input that changes while it is being
chunked can never give a chunk whose bytes are not the ones that were hashed (as an mmap of the
file could).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyfastcdc

from swarmupdate.model import DEFAULT_CHUNKER, ChunkerParams, ChunkRef

__all__ = ["ChunkedFile", "chunk_stream"]

#: Called with each chunk's digest and bytes, in order; the memoryview is valid only during the call.
ChunkSink = Callable[[ChunkRef, memoryview], None]

#: Bytes read per block (plus room for the unfinished tail of the previous one).
_BLOCK = 16 * 1024 * 1024
#: Blocks in the ring: one being filled, one whose chunks go to the sink, one for the whole hash to lag.
_BUFFERS = 3
_HASH_WORKERS = min(4, os.cpu_count() or 1)


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

    ``sink`` and ``progress`` are called in chunk order from one worker thread; an exception
    from either stops the delivery of later chunks and is raised here.

    The boundaries are those of ``pyfastcdc.FastCDC.cut_stream``: a cut is looked for in the
    ``params.max`` bytes after the previous one, so a block's last chunks wait for the next block
    unless the input has ended.
    """
    cdc = pyfastcdc.FastCDC(params.avg, min_size=params.min, max_size=params.max)
    readinto = _reader(stream)
    whole = hashlib.sha256()
    views: list[memoryview] = []  # allocated as needed: a small input needs one
    # per buffer, the last tasks that read it: it is refilled only when they are done
    readers: list[list[Future[Any]]] = [[] for _ in range(_BUFFERS)]
    delivered: list[Future[ChunkRef]] = []
    stop = threading.Event()  # set on the first error: deliver nothing more

    def deliver(digest: Future[str], data: memoryview) -> ChunkRef:
        ref = ChunkRef(digest.result(), len(data))
        if stop.is_set():
            return ref
        try:
            if sink is not None:
                sink(ref, data)
            if progress is not None:
                progress(ref.length)
        except BaseException:
            stop.set()
            raise
        return ref

    with (
        ThreadPoolExecutor(1) as whole_pool,
        ThreadPoolExecutor(1) as sink_pool,
        ThreadPoolExecutor(_HASH_WORKERS) as hash_pool,
    ):
        try:
            tail = memoryview(b"")
            length = 0
            block = 0
            eof = False
            while not eof:
                slot = block % _BUFFERS
                for task in readers[slot]:
                    task.result()  # raises what the sink raised
                if slot == len(views):
                    views.append(memoryview(bytearray(_BLOCK + params.max)))
                view = views[slot]
                view[: len(tail)] = tail
                filled, eof = _fill(readinto, view, len(tail))
                consumed = 0
                for piece in cdc.cut_buf(view[:filled]):
                    if not eof and filled - piece.offset < params.max:
                        break  # the cut may lie beyond what is read yet
                    digest = hash_pool.submit(_sha256_hex, piece.data)
                    delivered.append(sink_pool.submit(deliver, digest, piece.data))
                    consumed = piece.offset + piece.length
                readers[slot] = [whole_pool.submit(whole.update, view[:consumed]), *delivered[-1:]]
                length += consumed
                tail = view[consumed:filled]
                block += 1
            chunks = tuple(task.result() for task in delivered)
            for tasks in readers:
                for task in tasks:
                    task.result()
        except BaseException:
            stop.set()
            raise
    return ChunkedFile(length, whole.hexdigest(), chunks)


def _sha256_hex(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _reader(stream: BinaryIO) -> Callable[[memoryview], int]:
    """``stream.readinto``, or an equivalent built on ``read`` for streams that lack it."""
    readinto = getattr(stream, "readinto", None)
    if callable(readinto):
        return readinto  # type: ignore[no-any-return]

    def read_into(dest: memoryview) -> int:
        data = stream.read(len(dest))
        dest[: len(data)] = data
        return len(data)

    return read_into


def _fill(readinto: Callable[[memoryview], int], view: memoryview, start: int) -> tuple[int, bool]:
    """Read into ``view[start:]`` until it is full or the input ends; return (bytes in view, ended)."""
    filled = start
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            return filled, True
        filled += n
    return filled, False

"""The in-memory twin of the disk store, for fast tests: same checks, same errors, no files.

It can also pretend to be a full or read-only disk (``capacity``, ``read_only``) so that callers'
handling of :class:`~swarmupdate.errors.StoreError` can be tested without mounting anything.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Iterator
from types import TracebackType
from typing import Self

from swarmupdate.errors import StoreError
from swarmupdate.model import ChunkRef
from swarmupdate.store.base import check_chunk_id
from swarmupdate.store.index import ChunkIndex
from swarmupdate.store.writer import VerifyingWriter

__all__ = ["MemoryChunkStore"]


class MemoryChunkStore:
    """A content-addressed chunk store in a dict, behaving like :class:`DiskChunkStore`.

    Attributes:
        capacity: bytes the pretend disk holds, stored chunks and unfinished writes together;
            None for no limit. Going over raises StoreError("no space left on device").
        read_only: when True, starting a write raises StoreError("read-only file system").
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.read_only = False
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}
        self._index = ChunkIndex()
        self._pending = 0

    def has(self, sha256: str) -> bool:
        """True when the chunk is stored.

        Raises:
            ValueError: ``sha256`` is not a chunk id.
        """
        check_chunk_id(sha256)
        with self._lock:
            return sha256 in self._index

    def size(self, sha256: str) -> int | None:
        """The stored chunk's length, or None.

        Raises:
            ValueError: ``sha256`` is not a chunk id.
        """
        check_chunk_id(sha256)
        with self._lock:
            return self._index.size(sha256)

    def read(self, sha256: str) -> bytes:
        """The chunk's bytes.

        Raises:
            KeyError: the chunk is not stored.
            ValueError: ``sha256`` is not a chunk id.
        """
        check_chunk_id(sha256)
        with self._lock:
            self._index.touch(sha256)
            return self._data[sha256]

    def writer(self, ref: ChunkRef) -> _MemoryWriter:
        """A writer that stores ``ref`` if the bytes written match it.

        Raises:
            StoreError: the store is read-only.
            ValueError: ``ref.sha256`` is not a chunk id or ``ref.length`` is negative.
        """
        check_chunk_id(ref.sha256)
        if ref.length < 0:
            raise ValueError(f"chunk {ref.sha256}: negative length {ref.length}")
        if self.read_only:
            raise StoreError(f"memory chunk store: cannot write chunk {ref.sha256}: read-only file system")
        return _MemoryWriter(self, ref)

    def put(self, ref: ChunkRef, data: bytes | memoryview) -> None:
        """Store ``data`` as ``ref``.

        Raises:
            ChunkVerificationError: ``data`` is not that chunk; nothing is stored.
            StoreError: the pretend disk is full or read-only; nothing is stored.
            ValueError: ``ref.sha256`` is not a chunk id.
        """
        with self.writer(ref) as w:
            w.write(data)

    def total_bytes(self) -> int:
        """Sum of the lengths of all stored chunks."""
        with self._lock:
            return self._index.total

    def chunks(self) -> Iterator[str]:
        """The ids stored when called, least recently used first."""
        with self._lock:
            return iter(self._index.ids())

    def evict(self, keep: Collection[str], max_bytes: int) -> list[str]:
        """Delete chunks not in ``keep``, least recently used first, until the total is <= ``max_bytes``."""
        with self._lock:
            removed = self._index.victims(keep, max_bytes)
            for sha256 in removed:
                self._index.remove(sha256)
                del self._data[sha256]
        return removed

    def verify_all(self) -> list[str]:
        """Re-hash every chunk, delete those whose bytes do not match their name, return their ids."""
        with self._lock:
            bad = [s for s, data in self._data.items() if hashlib.sha256(data).hexdigest() != s]
            for sha256 in bad:
                self._index.remove(sha256)
                del self._data[sha256]
        return bad

    def tamper(self, sha256: str, data: bytes) -> None:
        """For tests: replace a stored chunk's bytes without any check, as bit rot would.

        Raises:
            KeyError: the chunk is not stored.
        """
        with self._lock:
            if sha256 not in self._data:
                raise KeyError(sha256)
            self._data[sha256] = data

    def close(self) -> None:
        """Nothing to release; here for parity with the disk store."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _reserve(self, ref: ChunkRef, n: int) -> None:
        with self._lock:
            if self.capacity is not None and self._index.total + self._pending + n > self.capacity:
                raise StoreError(
                    f"memory chunk store: cannot write chunk {ref.sha256}: no space left on device"
                )
            self._pending += n

    def _release(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _install(self, ref: ChunkRef, data: bytes) -> None:
        with self._lock:
            self._pending -= len(data)
            if self._index.add(ref.sha256, ref.length):
                self._data[ref.sha256] = data


class _MemoryWriter(VerifyingWriter):
    """Collects one chunk's bytes in a buffer."""

    commit_blocks = False

    def __init__(self, store: MemoryChunkStore, ref: ChunkRef) -> None:
        super().__init__(ref)
        self._store = store
        self._buf = bytearray()

    def _sink(self, data: memoryview) -> None:
        self._store._reserve(self.ref, len(data))
        self._buf += data

    def _publish(self) -> None:
        data, self._buf = bytes(self._buf), bytearray()
        self._store._install(self.ref, data)

    def _discard(self) -> None:
        self._store._release(len(self._buf))
        self._buf = bytearray()

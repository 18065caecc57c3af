"""The chunk store's interface, shared by the disk store and its in-memory twin.

A chunk store holds chunks by their sha256. A chunk becomes visible under its name only after its
bytes hashed to that name while they were written, so anything :meth:`ChunkStore.read` returns was
verified once; peers, which send us these names, can never plant a chunk under a wrong name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from types import TracebackType
from typing import Protocol, Self

from swarmupdate.model import ChunkRef, is_sha256_hex

__all__ = ["ChunkStore", "ChunkWriter", "check_chunk_id"]


def check_chunk_id(sha256: object) -> str:
    """Return ``sha256`` when it is a lowercase 64-hex-digit string.

    Chunk ids come from peers; checking them before any path is built keeps ``../`` and friends out.

    Raises:
        ValueError: anything else.
    """
    if isinstance(sha256, str) and is_sha256_hex(sha256):
        return sha256
    raise ValueError(f"not a chunk id (lowercase 64-hex sha256): {sha256!r:.80}")


class ChunkWriter(Protocol):
    """Receives one chunk's bytes, hashing them as they arrive.

    Used as a context manager: a clean exit commits (unless :meth:`commit` or :meth:`abort` was
    already called), an exception aborts.
    """

    #: whether :meth:`commit` may wait for a disk: then it is called from a worker thread
    commit_blocks: bool

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``.

        Raises:
            ChunkVerificationError: more than ``ref.length`` bytes arrived (the writer is aborted).
            StoreError: the disk refused (the writer is aborted).
            ValueError: the writer was already committed or aborted.
        """
        ...

    def commit(self) -> None:
        """Check length and sha256 against the ref, then make the chunk visible under its name.

        Raises:
            ChunkVerificationError: length or sha256 do not match; nothing is stored.
            StoreError: the disk refused; nothing is stored.
            ValueError: the writer was already committed or aborted.
        """
        ...

    def abort(self) -> None:
        """Drop everything written so far. Does nothing after a commit or an abort."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class ChunkStore(Protocol):
    """A content-addressed chunk store, safe to call from several threads at once.

    Every method that takes a chunk id raises ``ValueError`` for anything but a lowercase
    64-hex string, before touching storage.
    """

    def has(self, sha256: str) -> bool:
        """True when the chunk is stored."""
        ...

    def size(self, sha256: str) -> int | None:
        """The stored chunk's length, or None when it is not stored."""
        ...

    def read(self, sha256: str) -> bytes:
        """The chunk's bytes.

        Raises:
            KeyError: the chunk is not stored (it may have been evicted since :meth:`has`).
            StoreError: the disk refused the read.
        """
        ...

    def writer(self, ref: ChunkRef) -> ChunkWriter:
        """A writer that stores ``ref`` if the bytes written match it.

        Raises:
            StoreError: the disk refused to start a write (read-only, permissions).
        """
        ...

    def put(self, ref: ChunkRef, data: bytes | memoryview) -> None:
        """Store ``data`` as ``ref``: writer, write, commit.

        Raises:
            ChunkVerificationError: ``data`` is not that chunk; nothing is stored.
            StoreError: the disk refused; nothing is stored.
        """
        ...

    def total_bytes(self) -> int:
        """Sum of the lengths of all stored chunks."""
        ...

    def chunks(self) -> Iterator[str]:
        """The ids of the stored chunks (a snapshot taken at the call)."""
        ...

    def evict(self, keep: Collection[str], max_bytes: int) -> list[str]:
        """Delete chunks not in ``keep``, least recently used first, until the total is <= ``max_bytes``.

        Returns the ids removed. The total may stay above ``max_bytes`` when ``keep`` is that large.

        Raises:
            StoreError: the disk refused a delete.
        """
        ...

    def verify_all(self) -> list[str]:
        """Re-hash every chunk and delete those whose bytes no longer match; returns their ids.

        Raises:
            StoreError: the disk refused a read or delete.
        """
        ...

    def close(self) -> None:
        """Release the store (the disk store's directory lock). Idempotent."""
        ...

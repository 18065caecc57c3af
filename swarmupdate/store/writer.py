"""The verify-while-writing logic shared by both stores' writers; each store supplies where bytes go."""

from __future__ import annotations

import abc
import hashlib
from types import TracebackType
from typing import Self

from swarmupdate.errors import ChunkVerificationError
from swarmupdate.model import ChunkRef

__all__ = ["VerifyingWriter"]


class VerifyingWriter(abc.ABC):
    """Hashes and counts bytes as they are written, and lets a chunk through only on a match.

    One writer belongs to one thread; several writers, even of the same chunk, may run at once.
    Subclasses say where bytes go (:meth:`_sink`), how a verified chunk becomes visible
    (:meth:`_publish`) and how a failed one is dropped (:meth:`_discard`).
    """

    #: whether :meth:`commit` may wait for a disk (an fsync): then call it from a worker thread, not
    #: from an event loop. A store whose files live in memory says False
    commit_blocks: bool = True

    def __init__(self, ref: ChunkRef) -> None:
        self.ref = ref
        self._hash = hashlib.sha256()
        self._received = 0
        self._state = "open"

    @property
    def received(self) -> int:
        """Bytes written so far."""
        return self._received

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; see :meth:`swarmupdate.store.base.ChunkWriter.write`.

        Raises:
            ChunkVerificationError: more than ``ref.length`` bytes arrived (the writer is aborted).
            StoreError: the storage refused (the writer is aborted).
            ValueError: the writer was already committed or aborted.
        """
        self._check_open()
        view = memoryview(data).cast("B")
        if self._received + len(view) > self.ref.length:
            self.abort()
            raise ChunkVerificationError(
                f"chunk {self.ref.sha256}: more than the expected {self.ref.length} bytes"
            )
        try:
            self._sink(view)
        except BaseException:
            self.abort()
            raise
        self._hash.update(view)
        self._received += len(view)

    def commit(self) -> None:
        """Verify length and sha256, then publish; see :meth:`swarmupdate.store.base.ChunkWriter.commit`.

        Raises:
            ChunkVerificationError: length or sha256 do not match; nothing is stored.
            StoreError: the storage refused; nothing is stored.
            ValueError: the writer was already committed or aborted.
        """
        self._check_open()
        try:
            if self._received != self.ref.length:
                raise ChunkVerificationError(
                    f"chunk {self.ref.sha256}: length {self._received}, expected {self.ref.length}"
                )
            if self._hash.hexdigest() != self.ref.sha256:
                raise ChunkVerificationError(f"chunk {self.ref.sha256}: sha256 mismatch")
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"

    def abort(self) -> None:
        """Drop what was written. Does nothing after a commit or an abort."""
        if self._state == "open":
            self._state = "aborted"
            self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self._state == "open":
            self.commit()
        else:
            self.abort()

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"writer for chunk {self.ref.sha256} is already {self._state}")

    @abc.abstractmethod
    def _sink(self, data: memoryview) -> None:
        """Store ``data`` somewhere invisible. May raise StoreError."""

    @abc.abstractmethod
    def _publish(self) -> None:
        """Make the verified bytes visible under ``ref.sha256``. Raises StoreError or nothing."""

    @abc.abstractmethod
    def _discard(self) -> None:
        """Forget everything written; never raises."""

"""The chunk store on disk: ``root/ab/abcdef...`` per chunk, writes staged in ``root/tmp/``.

A chunk is written to a temporary file while it is hashed; only when length and sha256 match is the
file fsynced and renamed to its name, so a name always holds the bytes it names. The directory is
not fsynced after the rename: after a power cut a chunk may be missing, never wrong, and a missing
chunk is simply fetched again. Leftover temporary files (a ``kill -9`` mid-write) are deleted when
the store is opened, under an exclusive ``flock`` on ``root`` that keeps a second process out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from swarmupdate.errors import StoreError
from swarmupdate.fsutil import in_memory
from swarmupdate.model import ChunkRef, is_sha256_hex
from swarmupdate.store.base import check_chunk_id
from swarmupdate.store.index import ChunkIndex
from swarmupdate.store.writer import VerifyingWriter

__all__ = ["DiskChunkStore"]

_HEX = frozenset("0123456789abcdef")
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class DiskChunkStore:
    """A content-addressed chunk store in a directory; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        """Open (creating if needed) the store at ``root``, delete leftover temp files, index the chunks.

        Raises:
            StoreError: the directory cannot be created or read, or another process has it open.
        """
        self.root = root
        self._tmp = root / "tmp"
        self._lock = threading.Lock()
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise self._error("open the store", exc) from exc
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._dir_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"chunk store {root}: in use by another process") from exc
            raise self._error("lock the store", exc) from exc
        self._closed = False
        #: the store is on tmpfs or ramfs: an fsync costs nothing, so a chunk is committed in the
        #: caller's thread (a worker-thread hop per chunk cost an agent ~15% of its CPU at 100 Mbit/s)
        self.in_memory = in_memory(os.fstat(self._dir_fd).st_dev)
        try:
            self._remove_temp_files()
            self._index = ChunkIndex(self._scan())
        except BaseException:
            self.close()
            raise

    def path(self, sha256: str) -> Path:
        """Where chunk ``sha256`` lives, to serve it with ``sendfile``.

        The file may be evicted at any moment after this returns: open it once and treat
        ``FileNotFoundError`` as "not stored".

        Raises:
            KeyError: the chunk is not stored.
            ValueError: ``sha256`` is not a chunk id.
        """
        check_chunk_id(sha256)
        with self._lock:
            if sha256 not in self._index:
                raise KeyError(sha256)
            self._index.touch(sha256)
        return self._path(sha256)

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
        """The chunk's bytes (verified when written, not again here).

        Raises:
            KeyError: the chunk is not stored.
            StoreError: the disk refused the read.
            ValueError: ``sha256`` is not a chunk id.
        """
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._index.remove(sha256)
            raise KeyError(sha256) from None
        except OSError as exc:
            raise self._error(f"read chunk {sha256}", exc) from exc

    def writer(self, ref: ChunkRef) -> _DiskWriter:
        """A writer that stores ``ref`` if the bytes written match it.

        Raises:
            StoreError: a temporary file cannot be created (read-only, permissions, no space).
            ValueError: ``ref.sha256`` is not a chunk id or ``ref.length`` is negative.
        """
        check_chunk_id(ref.sha256)
        if ref.length < 0:
            raise ValueError(f"chunk {ref.sha256}: negative length {ref.length}")
        try:
            fd, name = tempfile.mkstemp(prefix=f"{ref.sha256[:16]}.", suffix=".tmp", dir=self._tmp)
        except OSError as exc:
            raise self._error(f"write chunk {ref.sha256}", exc) from exc
        return _DiskWriter(self, ref, fd, Path(name))

    def put(self, ref: ChunkRef, data: bytes | memoryview) -> None:
        """Store ``data`` as ``ref``.

        Raises:
            ChunkVerificationError: ``data`` is not that chunk; nothing is stored.
            StoreError: the disk refused; nothing is stored.
            ValueError: ``ref.sha256`` is not a chunk id.
        """
        with self.writer(ref) as w:
            w.write(data)

    def total_bytes(self) -> int:
        """Sum of the lengths of all stored chunks (kept as chunks come and go)."""
        with self._lock:
            return self._index.total

    def chunks(self) -> Iterator[str]:
        """The ids stored when called, least recently used first."""
        with self._lock:
            return iter(self._index.ids())

    def evict(self, keep: Collection[str], max_bytes: int) -> list[str]:
        """Delete chunks not in ``keep``, least recently used first, until the total is <= ``max_bytes``.

        Raises:
            StoreError: the disk refused a delete (the chunks deleted before stay deleted).
        """
        removed: list[str] = []
        with self._lock:
            for sha256 in self._index.victims(keep, max_bytes):
                try:
                    self._path(sha256).unlink(missing_ok=True)
                except OSError as exc:
                    raise self._error(f"evict chunk {sha256}", exc) from exc
                self._index.remove(sha256)
                removed.append(sha256)
        return removed

    def verify_all(self) -> list[str]:
        """Re-hash every chunk, delete those whose bytes do not match their name, return their ids.

        Raises:
            StoreError: the disk refused a read or a delete.
        """
        bad: list[str] = []
        for sha256 in self.chunks():
            path = self._path(sha256)
            try:
                with path.open("rb") as f:
                    inode = os.fstat(f.fileno()).st_ino
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(f"verify chunk {sha256}", exc) from exc
            if digest == sha256:
                continue
            with self._lock:
                try:
                    # A writer may have replaced the file meanwhile; delete only what we hashed.
                    if path.lstat().st_ino == inode:
                        path.unlink()
                        self._index.remove(sha256)
                        bad.append(sha256)
                except FileNotFoundError:
                    self._index.remove(sha256)
                except OSError as exc:
                    raise self._error(f"delete corrupt chunk {sha256}", exc) from exc
        return bad

    def close(self) -> None:
        """Release the directory lock. Idempotent; the store must not be used afterwards."""
        if not self._closed:
            self._closed = True
            os.close(self._dir_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _error(self, action: str, exc: OSError) -> StoreError:
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        return StoreError(f"chunk store {self.root}: cannot {action}: {reason}")

    def _remove_temp_files(self) -> None:
        try:
            for entry in self._tmp.iterdir():
                entry.unlink()
        except OSError as exc:
            if exc.errno != errno.EROFS:  # nothing can be written either, so they stay invisible
                raise self._error("remove leftover temporary files", exc) from exc

    def _scan(self) -> list[tuple[str, int]]:
        found: list[tuple[float, str, int]] = []
        try:
            for shard in self.root.iterdir():
                if len(shard.name) != 2 or not _HEX.issuperset(shard.name) or not shard.is_dir():
                    continue
                for file in shard.iterdir():
                    name = file.name
                    if not (is_sha256_hex(name) and name.startswith(shard.name)):
                        continue
                    st = file.lstat()
                    if stat.S_ISREG(st.st_mode):
                        found.append((st.st_mtime, name, st.st_size))
        except OSError as exc:
            raise self._error("scan the store", exc) from exc
        found.sort()
        return [(name, size) for _, name, size in found]

    def _install(self, ref: ChunkRef, tmp: Path) -> None:
        """Rename a verified temporary file to its chunk name (called by the writer)."""
        final = self._path(ref.sha256)
        with self._lock:
            if ref.sha256 in self._index:
                # Another writer of the same chunk won; its file has the same bytes.
                self._index.touch(ref.sha256)
                tmp.unlink(missing_ok=True)
                return
            try:
                final.parent.mkdir(exist_ok=True)
                tmp.rename(final)
            except OSError as exc:
                raise self._error(f"store chunk {ref.sha256}", exc) from exc
            self._index.add(ref.sha256, ref.length)


class _DiskWriter(VerifyingWriter):
    """Writes one chunk to a temporary file in ``root/tmp``."""

    def __init__(self, store: DiskChunkStore, ref: ChunkRef, fd: int, tmp: Path) -> None:
        super().__init__(ref)
        self._store = store
        self._fd = fd
        self._tmp = tmp
        self.commit_blocks = not store.in_memory

    def _sink(self, data: memoryview) -> None:
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            raise self._store._error(f"write chunk {self.ref.sha256}", exc) from exc

    def _publish(self) -> None:
        try:
            os.fsync(self._fd)
            fd, self._fd = self._fd, -1
            os.close(fd)
        except OSError as exc:
            raise self._store._error(f"write chunk {self.ref.sha256}", exc) from exc
        self._store._install(self.ref, self._tmp)

    def _discard(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

"""Atomic file writes: a temporary name in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from swarmupdate.errors import StoreError

__all__ = ["atomic_write_bytes", "atomic_writer", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is untouched.

    Raises:
        StoreError: the disk refused the write (full, read-only, permissions).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _store_error(path, exc) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _store_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode, durable=durable) as f:
        f.write(data)


def _store_error(path: Path, exc: OSError) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{path}: no space left on device")
    if exc.errno == errno.EROFS:
        return StoreError(f"{path}: read-only file system")
    return StoreError(f"{path}: {exc.strerror or exc}")


#: file systems whose files live in memory: a read or an fsync there never waits for a disk
MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
_memory_devices: dict[int, bool] = {}


def in_memory(dev: int) -> bool:
    """Whether the file system of device ``dev`` keeps its files in memory (from /proc/self/mountinfo;
    False when that cannot be read). Remembered per device."""
    known = _memory_devices.get(dev)
    if known is None:
        known = False
        want = f"{os.major(dev)}:{os.minor(dev)}"
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == want and " - " in line:
                    known = line.split(" - ", 1)[1].split()[0] in MEMORY_FILE_SYSTEMS
                    break
        _memory_devices[dev] = known
    return known

"""The disk store against a real kernel: a full disk, a read-only disk, a writer killed with SIGKILL.

The full and read-only disks are a 1 MiB tmpfs mounted for the test (root only; root ignores file
permissions, so ``chmod`` cannot make a read-only directory). Without the right to mount, the tests
skip with the reason, or fail under ``SWARMUPDATE_STRICT=1``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmupdate.errors import StoreError
from swarmupdate.store import DiskChunkStore
from tests.conftest import STRICT, need_tool
from tests.unit.test_store import make_chunk


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"SWARMUPDATE_STRICT=1: {reason}")
    pytest.skip(reason)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 1 MiB tmpfs, unmounted afterwards."""
    mount, umount = need_tool("mount"), need_tool("umount")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): {' '.join(proc.stderr.split())}")
    try:
        yield mnt
    finally:
        subprocess.run([umount, str(mnt)], check=True)


def remount(mnt: Path, mode: str) -> None:
    subprocess.run([need_tool("mount"), "-o", f"remount,{mode}", str(mnt)], check=True)


def test_disk_full_is_a_clear_store_error_and_leaves_nothing(tmpfs: Path) -> None:
    root = tmpfs / "store"
    filler = tmpfs / "filler"
    filler.write_bytes(bytes(700 * 1024))
    ref, data = make_chunk(512 * 1024)
    with DiskChunkStore(root) as store:
        with pytest.raises(
            StoreError,
            match=f"chunk store {re.escape(str(root))}: cannot write chunk {ref.sha256}: no space left",
        ):
            store.put(ref, data)
        assert not store.has(ref.sha256)
        assert store.total_bytes() == 0
        assert list((root / "tmp").iterdir()) == []
        assert list(root.glob("??/*")) == []

        filler.unlink()
        store.put(ref, data)
        assert store.read(ref.sha256) == data
        assert list((root / "tmp").iterdir()) == []


def test_disk_full_during_a_streamed_write(tmpfs: Path) -> None:
    root = tmpfs / "store"
    ref, data = make_chunk(768 * 1024, seed=3)
    filler = tmpfs / "filler"
    filler.write_bytes(bytes(512 * 1024))
    with DiskChunkStore(root) as store:
        w = store.writer(ref)
        with pytest.raises(StoreError, match="no space left on device"):
            for i in range(0, len(data), 64 * 1024):
                w.write(data[i : i + 64 * 1024])
        assert list((root / "tmp").iterdir()) == []
        with pytest.raises(ValueError, match="aborted"):
            w.write(b"")
        filler.unlink()
        store.put(ref, data)
        assert store.has(ref.sha256)


def test_read_only_disk(tmpfs: Path) -> None:
    root = tmpfs / "store"
    old, old_data = make_chunk(1000, seed=1)
    new, new_data = make_chunk(1000, seed=2)
    with DiskChunkStore(root) as store:
        store.put(old, old_data)
        remount(tmpfs, "ro")
        try:
            with pytest.raises(
                StoreError,
                match=f"chunk store {re.escape(str(root))}: cannot write chunk .*: read-only file system",
            ):
                store.put(new, new_data)
            assert not store.has(new.sha256)
            assert store.read(old.sha256) == old_data, "reads keep working for seeding"
            with pytest.raises(StoreError, match="read-only file system"):
                store.evict(keep=(), max_bytes=0)
        finally:
            remount(tmpfs, "rw")
    assert list((root / "tmp").iterdir()) == []


def test_opening_a_store_on_a_read_only_disk(tmpfs: Path) -> None:
    root = tmpfs / "store"
    ref, data = make_chunk(1000)
    with DiskChunkStore(root) as store:
        store.put(ref, data)
    remount(tmpfs, "ro")
    try:
        with DiskChunkStore(root) as store:
            assert store.read(ref.sha256) == data
            with pytest.raises(StoreError, match="read-only file system"):
                store.put(*make_chunk(10, seed=9))
        with pytest.raises(
            StoreError,
            match=f"chunk store {re.escape(str(tmpfs / 'absent'))}: cannot open the store: read-only",
        ):
            DiskChunkStore(tmpfs / "absent")
    finally:
        remount(tmpfs, "rw")


WRITER = """
import sys
from pathlib import Path
from swarmupdate.model import ChunkRef
from swarmupdate.store import DiskChunkStore

store = DiskChunkStore(Path(sys.argv[1]))
w = store.writer(ChunkRef(sys.argv[2], int(sys.argv[3])))
w.write(b"x" * (int(sys.argv[3]) // 2))
print("half written", flush=True)
sys.stdin.read()  # block until killed
"""


def test_writer_killed_with_sigkill_leaves_nothing_usable(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ref, data = make_chunk(100_000)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), ref.sha256, str(ref.length)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "half written\n"
        assert len(list((root / "tmp").iterdir())) == 1
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    with DiskChunkStore(root) as store:
        assert list((root / "tmp").iterdir()) == []
        assert not store.has(ref.sha256)
        assert store.total_bytes() == 0
        store.put(ref, data)
        assert store.read(ref.sha256) == data

"""bench/btnode.py, the BitTorrent side of the benchmark: one seeder and one leecher on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STRICT, free_port

try:
    import libtorrent  # noqa: F401
except ImportError:
    if STRICT:
        raise
    pytest.skip("libtorrent is not installed (pip install -e '.[bench]')", allow_module_level=True)

BTNODE = Path(__file__).resolve().parents[2] / "bench" / "btnode.py"


def _status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _btnode(*args: str | Path) -> list[str]:
    return [sys.executable, str(BTNODE), *map(str, args)]


def test_seed_and_leech_on_loopback(tmp_path: Path) -> None:
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    data = os.urandom(2 * 1024 * 1024 + 12345)  # not a whole number of pieces
    (seed_dir / "artifact.bin").write_bytes(data)
    torrent = tmp_path / "artifact.torrent"
    made = subprocess.run(
        _btnode("make-torrent", seed_dir / "artifact.bin", "--out", torrent, "--piece-size", 256 * 1024),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr

    seed_at, leech_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    seed_status, leech_status = tmp_path / "seed.json", tmp_path / "leech.json"
    seed = ("seed", "--torrent", torrent, "--dir", seed_dir, "--listen", seed_at, "--status", seed_status)
    leech = (
        "leech",
        "--torrent",
        torrent,
        "--dir",
        leech_dir,
        "--listen",
        leech_at,
        "--status",
        leech_status,
    )
    procs = [
        subprocess.Popen(_btnode(*seed)),
        subprocess.Popen(_btnode(*leech, "--peers", f"{seed_at},{leech_at}")),
    ]
    try:
        deadline = time.monotonic() + 20
        while not _status(leech_status).get("complete"):
            assert time.monotonic() < deadline, f"leecher not complete: {_status(leech_status)}"
            assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
            time.sleep(0.1)
        status = _status(leech_status)
        assert status["sha256"] == hashlib.sha256(data).hexdigest()
        assert status["progress"] == 1.0
        assert status["completed_at"] >= status["started_at"]
        assert (leech_dir / "artifact.bin").read_bytes() == data
        assert _status(seed_status)["uploaded_payload"] >= len(data)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=20) for p in procs]
    assert codes == [0, 0]


def test_bad_input_exits_2_naming_the_culprit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.torrent"
    bad.write_text("not bencoded")
    (tmp_path / "x").write_bytes(b"x" * 1000)
    good = tmp_path / "x.torrent"
    assert subprocess.run(_btnode("make-torrent", tmp_path / "x", "--out", good), timeout=30).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_at = f"127.0.0.1:{busy.getsockname()[1]}"
        cases = {
            "bad.torrent": (
                "seed",
                "--torrent",
                bad,
                "--dir",
                tmp_path,
                "--listen",
                f"127.0.0.1:{free_port()}",
            ),
            "nope": ("seed", "--torrent", good, "--dir", tmp_path, "--listen", "127.0.0.1:nope"),
            busy_at: ("seed", "--torrent", good, "--dir", tmp_path, "--listen", busy_at),
        }
        for culprit, args in cases.items():
            proc = subprocess.run(_btnode(*args), capture_output=True, text=True, timeout=30)
            assert proc.returncode == 2, proc.stderr
            assert culprit in proc.stderr

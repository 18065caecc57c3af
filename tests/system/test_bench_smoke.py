"""A small run of the fleet benchmark (bench/fleet.py --scenario smoke): the namespace testbed, the three
contenders (swarmupdate, BitTorrent via libtorrent, plain HTTP) and the report, end to end. Its figures are
not judged here (benchmarks are compared side by side in `make bench`); that every host got the verified
artifact and the counters are sane is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STRICT, need_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_fleet_benchmark_smoke(tmp_path: Path) -> None:
    need_tool("ip")
    need_tool("tc")
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: the namespace testbed needs root")
        pytest.skip("the namespace testbed needs root")
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: libtorrent is not installed (pip install -e '.[bench]')")
        pytest.skip("libtorrent is not installed (pip install -e '.[bench]')")
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/fleet.py"),
            "--scenario",
            "smoke",
            "--prefix",
            "swbtest",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    runs = {r["contender"]: r for r in doc["runs"]}
    assert set(runs) == {"swarmupdate", "bittorrent", "http"}
    for r in runs.values():
        assert r["complete"] and r["verified"], r
        assert r["t_all_s"] > r["t_min_s"] * 0.9, r  # nobody beats physics: the counters and the clock agree
        assert r["cpu_s"] > 0 and r["peak_rss_agent_mb"] > 1
        # the CPU used while the clock ran leaves out what the servers used to start before it
        assert 0 < r["cpu_s_measured"] < r["cpu_s"], r
    n = runs["http"]["agents"]
    # plain HTTP: the origin sends every copy; the interface counters see it (payload plus headers)
    assert n <= runs["http"]["origin_copies"] < n * 1.1
    # the swarm and BitTorrent send less than one copy per agent from the origin
    assert runs["swarmupdate"]["origin_copies"] < n
    assert runs["bittorrent"]["origin_copies"] < n
    assert "| smoke | swarmupdate |" in doc["table"]
    assert [Path(p).parent for p in doc["plots"]] == [tmp_path]
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "swbtest-" not in leftover, leftover

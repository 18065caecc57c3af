"""The tracker under a burst of announces, on the namespace testbed.

    sudo .venv/bin/python chaos/tracker_load.py                       # 10,000 announces, 1,000 swarms
    sudo .venv/bin/python chaos/tracker_load.py --announces 100000 --swarms 10000

A tracker in one host, the burst (chaos/announce.py) from another, over keep-alive connections. Reported:
answers by status, latency p50/p99/max, announces per second, the tracker's peak RSS (VmHWM) and CPU, and
its own count of swarms and peers afterwards (its metrics). Results: chaos/results/tracker-load-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bed import (
    TRACKER_PORT,
    Host,
    Testbed,
    TestbedError,
    cli,
    fetch_in,
    finish,
    need_root,
    wait_log,
)

HERE = Path(__file__).resolve().parent


def _metrics(host: Host, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in fetch_in(host, url + "/metrics").splitlines():
        if line.startswith("swarmupdate_tracker_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    with Testbed(args.prefix) as bed:
        tracker = bed.add_host("tracker", up_mbit=None)
        loader = bed.add_host("loader", up_mbit=None)
        url = f"http://{tracker.ip}:{TRACKER_PORT}"
        tproc = tracker.run(
            "tracker",
            cli(
                "--log-level",
                "warning",
                "tracker",
                "serve",
                "--listen",
                f"{tracker.ip}:{TRACKER_PORT}",
                "--interval",
                "600",
            ),
            logs / "tracker.log",
        )
        wait_log(tproc, "http://")
        tproc.sample()
        rss_idle = tproc.hwm
        burst = loader.run(
            "burst",
            [
                sys.executable,
                str(HERE / "announce.py"),
                url,
                f"--announces={args.announces}",
                f"--swarms={args.swarms}",
                f"--concurrency={args.concurrency}",
            ],
            logs / "burst.json",
        )
        while burst.alive():
            tproc.sample()
            time.sleep(0.1)
        lines = burst.log.read_text(errors="replace").strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise TestbedError(f"the burst failed: {burst.log.read_text()[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        metrics = _metrics(tracker, url)
        usage = tproc.stop()
    result.update(
        {
            "tracker_rss_idle_bytes": rss_idle,
            "tracker_peak_rss_bytes": usage.max_rss_bytes,
            "tracker_cpu_s": usage.cpu_s,
            "tracker_metrics": metrics,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--announces", type=int, default=10_000)
    p.add_argument("--swarms", type=int, default=1_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--out", type=Path)
    p.add_argument("--prefix", default="swk", help="namespace name prefix")
    args = p.parse_args(argv)
    if not need_root():
        return 2
    with tempfile.TemporaryDirectory(prefix="swarmupdate-tracker-load-") as tmp:
        try:
            result = run(args, Path(tmp))
        except TestbedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    finish("tracker-load", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

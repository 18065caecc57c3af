"""Churn on the namespace testbed: agents killed and restarted, links cut and restored, during a release.

    sudo .venv/bin/python chaos/churn.py                      # 16 agents, 64 MiB, a fault every 2 s

Two runs on fresh testbeds with the same release and caps: ``quiet`` (no faults) and ``churn``: from the
moment the release is published until ``--fault-seconds`` have passed (or every agent has it), every
``--period`` seconds a seeded choice strikes one agent: SIGKILL it and start it again 1-4 s later, or take
its link down (``ip link set eth0 down`` in its namespace) and bring it back 2-5 s later. At most a third
of the agents are down at once. Then every fault is undone and the run waits for the release everywhere.

Reported per run: completion time of every agent (max, median), origin egress in copies (the origin
host's interface counters), the faults dealt, and that every agent installed exactly the signed bytes.
Results: chaos/results/churn-<stamp>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bed import (
    AgentHandle,
    Published,
    Testbed,
    TestbedError,
    finish,
    need_root,
    release,
    start_origin,
    start_tracker,
    wait_until,
)

MIB = 1024 * 1024
APP = "chaos"


def _link(ns: str, up: bool) -> None:
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up" if up else "down"], check=True, timeout=10)


def run_once(workdir: Path, pub: Published, args: argparse.Namespace, *, churn: bool) -> dict[str, Any]:
    name = "churn" if churn else "quiet"
    logs = workdir / "logs" / name
    root = pub.repo / "origin/metadata/1.root.json"
    rng = random.Random(args.seed)
    with Testbed(args.prefix) as bed:
        origin = bed.add_host("origin", up_mbit=args.origin_mbit)
        tracker = bed.add_host("tracker", up_mbit=None)
        hosts = [bed.add_host(f"a{i:02d}", up_mbit=args.up_mbit) for i in range(args.agents)]
        _, origin_url = start_origin(origin, pub, logs)
        _, tracker_url = start_tracker(tracker, logs)
        agents = [AgentHandle(i, h, workdir / name / f"a{i:02d}", APP) for i, h in enumerate(hosts)]
        for a in agents:
            a.write_config(origin_url, root, trackers=[tracker_url])
        tx0 = origin.tx_bytes()
        t0 = time.monotonic()
        for a in agents:
            a.start(logs)
        done_at: dict[int, float] = {}
        down: dict[int, tuple[str, float]] = {}  # agent -> (what, when to undo)
        faults = {"kill": 0, "cut": 0}
        next_fault = t0 + args.period

        def undo(i: int) -> None:
            what, _ = down.pop(i)
            if what == "kill":
                agents[i].start(logs)
            else:
                _link(hosts[i].ns, True)

        def tick() -> None:
            now = time.monotonic()
            for a in agents:
                if a.index not in done_at and a.current() == pub.version:
                    done_at[a.index] = now - t0
            for i, (_, at) in list(down.items()):
                if now >= at:
                    undo(i)
            nonlocal next_fault
            faulting = churn and now - t0 < args.fault_seconds and len(done_at) < len(agents)
            if faulting and now >= next_fault:
                next_fault = now + args.period
                candidates = [a.index for a in agents if a.index not in down]
                if candidates and len(down) < max(1, args.agents // 3):
                    i = rng.choice(candidates)
                    if rng.random() < 0.5:
                        proc = agents[i].proc
                        if proc is not None and proc.alive():
                            proc.popen.send_signal(signal.SIGKILL)
                            proc.wait(10)
                        down[i] = ("kill", now + rng.uniform(1.0, 4.0))
                        faults["kill"] += 1
                    else:
                        _link(hosts[i].ns, False)
                        down[i] = ("cut", now + rng.uniform(2.0, 5.0))
                        faults["cut"] += 1
            if not faulting:
                for i in list(down):
                    undo(i)

        try:
            wait_until(
                f"{name}: every agent to install", lambda: len(done_at) == len(agents), args.timeout, tick
            )
        finally:
            for i in list(down):
                undo(i)
            origin_tx = origin.tx_bytes() - tx0
            for a in agents:
                if a.proc is not None:
                    a.proc.stop()
    verified = all(a.installed_sha256() == pub.sha256 for a in agents)
    times = sorted(done_at.values())
    return {
        "run": name,
        "agents": args.agents,
        "faults": faults,
        "done_s": [round(t, 2) for t in times],
        "max_s": round(times[-1], 2) if times else None,
        "p50_s": round(statistics.median(times), 2) if times else None,
        "origin_copies": round(origin_tx / pub.length, 3),
        "verified": verified,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=16)
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--up-mbit", type=float, default=50.0)
    p.add_argument("--origin-mbit", type=float, default=50.0)
    p.add_argument("--period", type=float, default=2.0, help="seconds between faults")
    p.add_argument("--fault-seconds", type=float, default=60.0, help="faults stop after this long")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--prefix", default="swc", help="namespace name prefix")
    args = p.parse_args(argv)
    if not need_root():
        return 2
    runs = []
    with release("churn", args.size_mib, APP) as (workdir, pub):
        for churn in (False, True):
            print("churn ..." if churn else "quiet ...", flush=True)
            try:
                runs.append(run_once(workdir, pub, args, churn=churn))
            except TestbedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(runs[-1]), flush=True)
    quiet, loud = runs
    doc = {
        "size": args.size_mib * MIB,
        "caps_mbit": {"up": args.up_mbit, "origin": args.origin_mbit},
        "period_s": args.period,
        "runs": runs,
        "slowdown": round(loud["max_s"] / quiet["max_s"], 2) if loud["max_s"] and quiet["max_s"] else None,
    }
    print("| run | agents | kills | link cuts | max s | p50 s | origin copies | verified |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(
            f"| {r['run']} | {r['agents']} | {r['faults']['kill']} | {r['faults']['cut']} | {r['max_s']} | "
            f"{r['p50_s']} | {r['origin_copies']} | {r['verified']} |"
        )
    finish("churn", doc, args.out)
    return 0 if all(r["verified"] for r in runs) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())

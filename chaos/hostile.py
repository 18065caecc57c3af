"""Hostile peers on the namespace testbed: a quarter of the swarm replaced by adversaries.

    sudo .venv/bin/python chaos/hostile.py                    # 16 hosts, 4 of them adversaries, 64 MiB

Scenarios, run one after another on fresh testbeds with the same release and caps:

- ``baseline``: the honest agents alone, with an honest tracker;
- ``adversaries``: the adversaries (chaos/adversary.py) announce themselves to the same tracker as
  complete seeds with peer ids ground to rank first among the origin pullers, claim to be pulling every
  chunk, keep false bitfields, answer chunks with wrong, truncated, endless, stalled, missing or
  trickling bodies, lie in peer exchange (peers that point at nothing, and at the origin) and serve
  garbage metadata;
- ``evil-tracker``: as ``adversaries``, and one of the agents' two trackers (chaos/evil_tracker.py)
  hands out only adversaries;
- ``evil-only``: the only tracker hands out only adversaries.

Reported per scenario: completion time of every honest agent (max, median) and its ratio to the
baseline, origin egress in copies (the origin host's interface counters), peers banned, what the
adversaries served, and that every honest agent installed exactly the signed bytes.
Results: chaos/results/hostile-<stamp>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bed import (
    PEER_PORT,
    TRACKER_PORT,
    AgentHandle,
    Process,
    Published,
    Testbed,
    TestbedError,
    finish,
    need_root,
    release,
    start_origin,
    start_tracker,
    wait_log,
    wait_until,
)

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
APP = "chaos"
SCENARIOS = ("baseline", "adversaries", "evil-tracker", "evil-only")


def run_scenario(workdir: Path, pub: Published, args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    n_adv = 0 if scenario == "baseline" else args.adversaries
    n_honest = args.agents - args.adversaries
    logs = workdir / "logs" / scenario
    root = pub.repo / "origin/metadata/1.root.json"
    fleet_swarm = hashlib.sha256(root.read_bytes()).hexdigest()
    manifest = next((pub.repo / "origin/targets" / APP / pub.version).glob("*.manifest.json"))
    with Testbed(args.prefix) as bed:
        origin = bed.add_host("origin", up_mbit=args.origin_mbit)
        tracker = bed.add_host("tracker", up_mbit=None)
        evil = bed.add_host("evil", up_mbit=None)
        adv_hosts = [bed.add_host(f"x{i}", up_mbit=args.up_mbit) for i in range(n_adv)]
        hosts = [bed.add_host(f"a{i:02d}", up_mbit=args.up_mbit) for i in range(n_honest)]
        _, origin_url = start_origin(origin, pub, logs)
        _, tracker_url = start_tracker(tracker, logs)
        evil_url = f"http://{evil.ip}:{TRACKER_PORT}"
        advs: list[tuple[Process, str]] = []
        for i, h in enumerate(adv_hosts):
            url = f"http://{h.ip}:{PEER_PORT}"
            proc = h.run(
                f"adv{i}",
                [
                    sys.executable,
                    str(HERE / "adversary.py"),
                    f"--listen={h.ip}:{PEER_PORT}",
                    f"--url={url}",
                    f"--peer-id=evil{i}",
                    f"--swarm={pub.sha256}",
                    f"--fleet-swarm={fleet_swarm}",
                    f"--manifest={manifest}",
                    f"--tracker={tracker_url}",
                    f"--origin={origin_url}",
                    "--grind",
                    "--claim",
                    f"--seed={args.seed + i}",
                ],
                logs / f"adv{i}.log",
            )
            line = wait_log(proc, '"ready"', timeout=60)
            peer_id = json.loads(line)["peer_id"]
            advs.append((proc, f"{peer_id}={url}"))
        if scenario in ("evil-tracker", "evil-only"):
            eproc = evil.run(
                "evil-tracker",
                [
                    sys.executable,
                    str(HERE / "evil_tracker.py"),
                    f"--listen={evil.ip}:{TRACKER_PORT}",
                    *(f"--peer={p}" for _, p in advs),
                ],
                logs / "evil.log",
            )
            wait_log(eproc, "evil tracker on")
        trackers = {
            "baseline": [tracker_url],
            "adversaries": [tracker_url],
            "evil-tracker": [evil_url, tracker_url],
            "evil-only": [evil_url],
        }[scenario]
        if n_adv:
            time.sleep(3)  # the adversaries have announced: the tracker ranks them first
        agents = [AgentHandle(i, h, workdir / scenario / f"a{i:02d}", APP) for i, h in enumerate(hosts)]
        for a in agents:
            a.write_config(origin_url, root, trackers=trackers)
        tx0 = origin.tx_bytes()
        t0 = time.monotonic()
        for a in agents:
            a.start(logs)
        done_at: dict[int, float] = {}

        def tick() -> None:
            for a in agents:
                if a.proc is not None:
                    a.proc.sample()
                if a.index not in done_at and a.current() == pub.version:
                    done_at[a.index] = time.monotonic() - t0

        try:
            wait_until(
                f"{scenario}: every honest agent to install",
                lambda: len(done_at) == len(agents),
                args.timeout,
                tick=tick,
            )
        finally:
            origin_tx = origin.tx_bytes() - tx0
            statuses = [a.status() for a in agents]
            served: dict[str, int] = {}
            for proc, _ in advs:
                os.kill(proc.pid, signal.SIGINT)
                proc.wait(10)
                last = proc.log.read_text(errors="replace").strip().splitlines()[-1]
                for mode, count in json.loads(last).get("served", {}).items() if last.startswith("{") else ():
                    served[mode] = served.get(mode, 0) + count
            rss = [a.proc.stop().max_rss_bytes for a in agents if a.proc is not None]
    verified = all(a.installed_sha256() == pub.sha256 for a in agents)
    times = sorted(done_at.values())
    banned = sum(s.get("banned", 0) for st in statuses for s in st.get("swarms", []))
    return {
        "scenario": scenario,
        "honest": n_honest,
        "adversaries": n_adv,
        "trackers": len(trackers),
        "done_s": [round(t, 2) for t in times],
        "max_s": round(times[-1], 2) if times else None,
        "p50_s": round(statistics.median(times), 2) if times else None,
        "origin_copies": round(origin_tx / pub.length, 3),
        "banned": banned,
        "adversaries_served": served,
        "verified": verified,
        "peak_rss_bytes": max(rss, default=0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=16, help="hosts in the swarm, adversaries included")
    p.add_argument("--adversaries", type=int, help="default: a quarter of --agents")
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--up-mbit", type=float, default=50.0)
    p.add_argument("--origin-mbit", type=float, default=50.0)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--prefix", default="swh", help="namespace name prefix")
    args = p.parse_args(argv)
    if args.adversaries is None:
        args.adversaries = args.agents // 4
    if not need_root():
        return 2
    runs: list[dict[str, Any]] = []
    with release("hostile", args.size_mib, APP) as (workdir, pub):
        for scenario in args.scenario or SCENARIOS:
            print(f"{scenario} ...", flush=True)
            try:
                runs.append(run_scenario(workdir, pub, args, scenario))
            except TestbedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(runs[-1]), flush=True)
    base = next((r for r in runs if r["scenario"] == "baseline"), None)
    for r in runs:
        r["slowdown"] = (
            round(r["max_s"] / base["max_s"], 2) if base and r["max_s"] and base["max_s"] else None
        )
    doc = {
        "size": args.size_mib * MIB,
        "caps_mbit": {"up": args.up_mbit, "origin": args.origin_mbit},
        "runs": runs,
    }
    print(
        "| scenario | honest | adversaries | max s | p50 s | slowdown | origin copies | banned | verified |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(
            f"| {r['scenario']} | {r['honest']} | {r['adversaries']} | {r['max_s']} | {r['p50_s']} | "
            f"{r['slowdown']} | {r['origin_copies']} | {r['banned']} | {r['verified']} |"
        )
    finish("hostile", doc, args.out)
    return 0 if all(r["verified"] for r in runs) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())

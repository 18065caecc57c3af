"""One agent under load on the namespace testbed: does it keep serving its honest peers?

    sudo .venv/bin/python chaos/load.py                        # 1,000 connections, 64 MiB
    sudo .venv/bin/python chaos/load.py --connections 4000 --size-mib 128

Hosts: an origin, a target agent, ``--honest`` honest agents and an attacker host. The target fetches a
release from the origin, then the origin is stopped, so the honest agents can get the release only from
the target (a static peer; no tracker). The run is done twice, side by side: once quietly (the baseline)
and once while the attacker holds ``--connections`` connections to the target's peer port (idle ones,
slowloris heads dripping a byte every 2 s, slow readers taking 1 KiB/s of a chunk, and pollers asking for
the bitfield every second as a big fleet's peers do; see chaos/attack.py).

Reported per run: the honest agents' completion times, that each installed the signed bytes, the target's
peak RSS (VmHWM) and open connections, its uplink rate (interface counters, the highest 2 s window)
against its ``upload_limit``, and the attacker's counters (connections opened and closed by the target,
poll answer times). Results: chaos/results/load-<stamp>.json and a summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bed import (
    ORIGIN_PORT,
    AgentHandle,
    Host,
    Process,
    Published,
    Testbed,
    TestbedError,
    cli,
    fetch_in,
    finish,
    manifest_chunks,
    need_root,
    release,
    wait_log,
    wait_until,
)

from swarmupdate.agent.config import parse_rate

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
APP = "chaos"


def _mix(connections: int) -> dict[str, int]:
    """Split the attack's connections: 40% idle, 30% slowloris, 10% slow readers, 20% pollers."""
    slowread = connections // 10
    pollers = connections // 5
    slowloris = (connections * 3) // 10
    return {
        "idle": connections - slowread - pollers - slowloris,
        "slowloris": slowloris,
        "slowread": slowread,
        "pollers": pollers,
    }


def _connections(ns: str, port: int) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def _vm(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _scrape(host: Host) -> dict[str, float]:
    """The target's connection and upload counters from its metrics endpoint (inside its namespace)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = ("swarmupdate_peer_connections", "swarmupdate_upload_preemptions", "swarmupdate_upload_bytes")
    out: dict[str, float] = {}
    text = fetch_in(host, f"http://{host.ip}:9100/metrics")
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.startswith(wanted):
                key = sample.name + "".join(f"{{{v}}}" for v in sample.labels.values())
                out[key] = sample.value
    return out


def run_once(
    workdir: Path, pub: Published, args: argparse.Namespace, *, attack: bool, prefix: str
) -> dict[str, Any]:
    logs = workdir / "logs" / ("attack" if attack else "quiet")
    root = pub.repo / "origin/metadata/1.root.json"
    with Testbed(prefix) as bed:
        origin = bed.add_host("origin", up_mbit=None)
        target_host = bed.add_host("target", up_mbit=args.up_mbit)
        honest_hosts = [bed.add_host(f"h{i}", up_mbit=args.up_mbit) for i in range(args.honest)]
        attacker = bed.add_host("attacker", up_mbit=None)
        origin_url = f"http://{origin.ip}:{ORIGIN_PORT}"
        origin_proc = origin.run(
            "origin",
            cli("origin", "serve", str(pub.repo / "origin"), "--listen", f"{origin.ip}:{ORIGIN_PORT}"),
            logs / "origin.log",
        )
        wait_log(origin_proc, "http://")
        run_dir = workdir / ("attack" if attack else "quiet")
        target = AgentHandle(0, target_host, run_dir / "target", APP)
        target.write_config(origin_url, root, extra=f'upload_limit = "{args.upload_limit}"\n')
        tproc = target.start(logs)
        wait_until(
            "the target to install the release",
            lambda: target.current() == pub.version,
            120,
            tick=tproc.sample,
        )
        origin_proc.stop()  # from now on the target is the only source
        att: Process | None = None
        held = 0
        if attack:
            mix = _mix(args.connections)
            att = attacker.run(
                "attack",
                [
                    sys.executable,
                    str(HERE / "attack.py"),
                    target.url,
                    "--swarm",
                    pub.sha256,
                    "--seconds",
                    "600",
                    "--ramp",
                    str(args.ramp),
                    *(f"--{k}={v}" for k, v in mix.items()),
                    *(f"--chunk={c}" for c, _ in sorted(manifest_chunks(pub, APP), key=lambda c: -c[1])[:8]),
                ],
                logs / "attack.json",
            )
            # let the connections open
            wait_until(
                "the attack's connections to open",
                lambda: _connections(target_host.ns, 7071) >= 0.9 * args.connections,
                args.ramp + 30,
                tick=tproc.sample,
            )
            held = _connections(target_host.ns, 7071)
        honest = [AgentHandle(i + 1, h, run_dir / f"h{i}", APP) for i, h in enumerate(honest_hosts)]
        for a in honest:
            a.write_config(origin_url, root, static_peers=[target.url])
        tx0 = target_host.tx_bytes()
        samples: list[tuple[float, int]] = [(time.monotonic(), tx0)]
        conns: list[int] = []
        t0 = time.monotonic()
        for a in honest:
            a.start(logs)
        done_at: dict[int, float] = {}

        def tick() -> None:
            tproc.sample()
            samples.append((time.monotonic(), target_host.tx_bytes()))
            if len(samples) % 5 == 0:
                conns.append(_connections(target_host.ns, 7071))
            for a in honest:
                if a.index not in done_at and a.current() == pub.version:
                    done_at[a.index] = time.monotonic() - t0

        try:
            wait_until(
                "the honest agents to install the release",
                lambda: len(done_at) == len(honest),
                args.timeout,
                tick=tick,
            )
        finally:
            attack_report: dict[str, Any] = {}
            if att is not None:
                att.stop(timeout=15)
                lines = att.log.read_text(errors="replace").strip().splitlines()
                attack_report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
            rss_now = _vm(tproc.pid, "VmRSS")
            target_metrics = _scrape(target_host)
            target_status = target.status()
            tusage = tproc.stop()
            for a in honest:
                if a.proc is not None:
                    a.proc.stop()
        verified = all(a.installed_sha256() == pub.sha256 for a in honest)
    rate = 0.0
    for i, (t, b) in enumerate(samples):  # the highest rate over any window of at least 5 s
        for t2, b2 in samples[i + 1 :]:
            if t2 - t >= 5.0:
                rate = max(rate, (b2 - b) / (t2 - t))
                break
    (ta, ba), (tb, bb) = samples[0], samples[-1]
    mean = (bb - ba) / (tb - ta) if tb > ta else 0.0
    times = sorted(done_at.values())
    return {
        "attack": attack,
        "connections_held_at_start": held,
        "connections_peak": max(conns, default=held),
        "honest_done_s": times,
        "honest_max_s": times[-1] if times else None,
        "verified": verified,
        "target_peak_rss_bytes": tusage.max_rss_bytes,
        "target_rss_end_bytes": rss_now,
        "target_cpu_s": tusage.cpu_s,
        "target_uplink_bytes": bb - ba,
        "target_uplink_seconds": round(tb - ta, 2),
        "target_uplink_mean_bytes_per_s": round(mean),
        "target_uplink_peak5s_bytes_per_s": round(rate),
        "upload_limit": args.upload_limit,
        "upload_limit_bytes_per_s": parse_rate(args.upload_limit),
        "target_metrics": target_metrics,
        "target_bytes_by_source": target_status.get("bytes", {}),
        "attacker": attack_report,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--honest", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--up-mbit", type=float, default=200.0, help="every agent's uplink")
    p.add_argument("--upload-limit", default="8MB/s", help="the target's upload_limit")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which the attack connects")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, help="the JSON result (default chaos/results/load-<stamp>.json)")
    p.add_argument("--prefix", default="swl", help="namespace name prefix")
    args = p.parse_args(argv)
    if not need_root():
        return 2
    runs = []
    with release("load", args.size_mib, APP) as (workdir, pub):
        for attack in (False, True):
            print(f"{'attack' if attack else 'quiet'} run ...", flush=True)
            try:
                runs.append(run_once(workdir, pub, args, attack=attack, prefix=args.prefix))
            except TestbedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
    quiet, loud = runs
    doc = {
        "size": args.size_mib * MIB,
        "connections": args.connections,
        "mix": _mix(args.connections),
        "runs": runs,
        "slowdown": (loud["honest_max_s"] / quiet["honest_max_s"])
        if quiet["honest_max_s"] and loud["honest_max_s"]
        else None,
    }
    print(json.dumps({k: doc[k] for k in ("connections", "slowdown")}))
    for r in runs:
        print(json.dumps({k: v for k, v in r.items() if k != "attacker"}))
    print(json.dumps(loud["attacker"].get("kinds", {})))
    finish("load", doc, args.out)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())

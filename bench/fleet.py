"""The swarm against the physical limit, BitTorrent and plain HTTP, side by side on a namespace testbed.

    sudo .venv/bin/python bench/fleet.py                      # every scenario (about half an hour)
    sudo .venv/bin/python bench/fleet.py --scenario network   # one of: network cpu slow-origin delta smoke

Each scenario runs the contenders one after another on fresh testbeds (bench/netbed.py) with the same
artifact and caps, and reports for each run: time until every host has the verified artifact (and the
median), origin egress in copies of the artifact (the origin host's interface counters), CPU seconds per
GB delivered, peak RSS per agent, machine CPU utilisation during the run, and the Kumar & Ross lower bound
T_min with the efficiency T_min / T. Results: one JSON file per invocation in bench/results/, a markdown
table on stdout (and in the JSON), and a PNG plot of completion time against N.

Every host's files (stores, installs, downloads, logs) live on a tmpfs mounted for the run: on a fleet each
machine writes its own disk, while here 16-24 hosts would share one disk and its fsync queue, and the
benchmark would measure that disk instead of the network. ``--on-disk`` keeps them on the disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, machine_info, markdown_table, utc_stamp, write_result
from contenders import (
    Caps,
    Published,
    Run,
    init_repo,
    publish,
    run_bittorrent,
    run_http,
    run_swarmupdate,
    t_min_seconds,
)
from netbed import TestbedError, require_root

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    size_mib: int
    caps: Caps
    swarm_n: tuple[int, ...]
    bt_n: tuple[int, ...]
    http_n: tuple[int, ...]
    delta: bool = False


SCENARIOS = {
    "network": Scenario("network", 64, Caps(20, 20), (4, 8, 16, 24), (4, 8, 16, 24), (4, 16)),
    "cpu": Scenario("cpu", 64, Caps(100, 100), (4, 8, 16, 24), (4, 8, 16, 24), (4, 16)),
    "slow-origin": Scenario("slow-origin", 64, Caps(20, 5), (16,), (16,), ()),
    "delta": Scenario("delta", 128, Caps(100, 100), (8,), (8,), (4,), delta=True),
    "smoke": Scenario("smoke", 4, Caps(100, 100), (3,), (3,), (3,)),
}
ORDER = ("network", "cpu", "slow-origin", "delta")


def make_artifact(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def changed_copy(src: Path, dst: Path, fraction: float, seed: int) -> Path:
    """``src`` with ``fraction`` of its bytes replaced in the middle and 1 KiB inserted after them: an
    uncompressed archive in which one file changed and grew, so every byte after it moves."""
    data = bytearray(src.read_bytes())
    n = int(len(data) * fraction)
    at = len(data) // 2
    rng = random.Random(seed)
    data[at : at + n] = rng.randbytes(n)
    data[at + n : at + n] = rng.randbytes(1024)
    dst.write_bytes(bytes(data))
    return dst


def timeout_for(n: int, size: int, caps: Caps) -> float:
    """Generous: plain HTTP's own time at these caps, twice, plus a minute."""
    return 2 * n * size * 8 / (caps.origin_up_mbit * 1e6) + 60


def run_scenario(
    sc: Scenario,
    workdir: Path,
    only: set[str],
    log: Callable[[str], None],
    prefix: str = "swb",
    warm: bool = False,
    keep: bool = False,
) -> list[dict[str, Any]]:
    """Run one scenario's contenders one after another; each run's files are deleted once it is
    measured unless ``keep`` (a full run of every scenario would not fit on the tmpfs otherwise)."""
    size = sc.size_mib * MIB
    art = make_artifact(workdir / "artifact-1.bin", size, seed=1)
    out: list[dict[str, Any]] = []

    def record(run: Run, **extra: Any) -> None:
        doc = {"scenario": sc.name, **run.to_json(), **extra}
        if warm and run.contender != "http":
            doc["warm"] = True
        out.append(doc)
        log(_one_line(doc))
        if not keep:
            for d in workdir.iterdir():
                if d.is_dir() and d.name != "swarm":  # (the published release the swarm runs share)
                    shutil.rmtree(d, ignore_errors=True)

    if sc.delta:
        new = changed_copy(art, workdir / "artifact-2.bin", 0.02, seed=2)
        for n in sc.swarm_n if "swarmupdate" in only else ():
            d = workdir / f"swarm-delta-{n}"
            first = publish(d, art, "1.0")

            def then(d: Path = d) -> Published:
                return publish(d, new, "2.0")

            run = run_swarmupdate(
                d, first, n, sc.caps, timeout=timeout_for(n, size, sc.caps), prefix=prefix, then=then
            )
            record(run, moved_share=run.rx_total / n / size, efficiency=None)  # T_min is for a whole copy
        for n in sc.bt_n if "bittorrent" in only else ():
            run = run_bittorrent(
                workdir / f"bt-delta-{n}",
                new,
                n,
                sc.caps,
                timeout=timeout_for(n, size, sc.caps),
                prefix=prefix,
                old=art,
            )
            record(run, moved_share=run.rx_total / n / size, efficiency=None)  # T_min is for a whole copy
        for n in sc.http_n if "http" in only else ():
            run = run_http(
                workdir / f"http-{n}", new, n, sc.caps, timeout=timeout_for(n, size, sc.caps), prefix=prefix
            )
            record(run, moved_share=run.rx_total / n / size, efficiency=None)  # T_min is for a whole copy
        return out
    if "swarmupdate" in only or "swarmupdate+mtls" in only:
        pub = publish(workdir / "swarm", art, "1.0")
        for n in sc.swarm_n:
            for tls in (False, True):  # side by side: plain HTTP between peers, then mutual TLS
                if ("swarmupdate+mtls" if tls else "swarmupdate") not in only:
                    continue
                d = workdir / f"swarm-{n}{'-tls' if tls else ''}"
                then_: Callable[[], Published] | None = None
                first = pub
                if warm:  # the agents run first; the release comes to them
                    first = init_repo(d / "warm")
                    then_ = functools.partial(publish, d / "warm", art, "1.0")
                run = run_swarmupdate(
                    d,
                    first,
                    n,
                    sc.caps,
                    timeout=timeout_for(n, size, sc.caps),
                    prefix=prefix,
                    tls=tls,
                    then=then_,
                    warm=warm,
                )
                record(run)
    for n in sc.bt_n if "bittorrent" in only else ():
        record(
            run_bittorrent(
                workdir / f"bt-{n}",
                art,
                n,
                sc.caps,
                timeout=timeout_for(n, size, sc.caps),
                prefix=prefix,
                warm=warm,
            )
        )
    for n in sc.http_n if "http" in only else ():
        record(
            run_http(
                workdir / f"http-{n}", art, n, sc.caps, timeout=timeout_for(n, size, sc.caps), prefix=prefix
            )
        )
    return out


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _one_line(d: dict[str, Any]) -> str:
    return (
        f"{d['scenario']:<11} {d['contender']:<16} N={d['agents']:<3} T={_fmt(d['t_all_s'])}s "
        f"p50={_fmt(d['t_p50_s'])}s T_min={d['t_min_s']:.1f}s eff={_fmt(d['efficiency'], '.2f')} "
        f"origin={d['origin_copies']:.2f} copies cpu={_fmt(d['cpu_s_per_gb'])}s/GB "
        f"(in T {_fmt(d.get('cpu_s_per_gb_measured'))}) "
        f"rss={d['peak_rss_agent_mb']:.0f}MB util={d['cpu_utilisation']:.0%} verified={d['verified']}"
        + (f" moved={d['moved_share']:.1%}" if "moved_share" in d else "")
    )


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "scenario",
        "contender",
        "N",
        "T all (s)",
        "T p50 (s)",
        "T_min (s)",
        "T_min/T",
        "origin copies",
        "CPU s/GB",
        "CPU s/GB in T",
        "peak RSS/agent (MB)",
        "CPU util",
        "moved/artifact",
        "all verified",
    ]
    body = [
        [
            d["scenario"],
            d["contender"],
            str(d["agents"]),
            _fmt(d["t_all_s"]),
            _fmt(d["t_p50_s"]),
            f"{d['t_min_s']:.1f}",
            _fmt(d["efficiency"], ".2f"),
            f"{d['origin_copies']:.2f}",
            _fmt(d["cpu_s_per_gb"]),
            _fmt(d.get("cpu_s_per_gb_measured")),
            f"{d['peak_rss_agent_mb']:.0f}",
            f"{d['cpu_utilisation']:.0%}",
            f"{d['moved_share']:.1%}" if "moved_share" in d else "",
            "yes" if d["verified"] and d["complete"] else "NO",
        ]
        for d in rows
    ]
    return markdown_table(header, body)


def plot(rows: list[dict[str, Any]], scenario: str, path: Path) -> Path | None:
    """Completion time against N for the contenders and the bound, one scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    mine = [r for r in rows if r["scenario"] == scenario and r["t_all_s"] is not None]
    if not mine:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    styles = {"swarmupdate": "o-", "swarmupdate+mtls": "o:", "bittorrent": "s-", "http": "^--"}
    for contender, style in styles.items():
        pts = sorted((r["agents"], r["t_all_s"]) for r in mine if r["contender"] == contender)
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=contender)
    ns = sorted({r["agents"] for r in mine})
    caps = Caps(**mine[0]["caps"])
    size = mine[0]["size"]
    ax.plot(ns, [t_min_seconds(n, size, caps) for n in ns], "k:", label="lower bound T_min")
    ax.plot(
        ns,
        [n * size * 8 / (caps.origin_up_mbit * 1e6) for n in ns],
        color="0.6",
        lw=0.8,
        ls="--",
        label="N·F/u_origin (plain HTTP by construction)",
    )
    ax.set_xlabel("agents N")
    ax.set_ylabel("time until every agent has the verified artifact (s)")
    ax.set_title(f"{size // MIB} MiB, uplinks {caps.up_mbit:g} Mbit/s, origin {caps.origin_up_mbit:g} Mbit/s")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"], help="default: all")
    p.add_argument("--contenders", default="swarmupdate,bittorrent,http")
    p.add_argument("--agents", help="N for every contender instead of the scenario's, e.g. 16,24")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, state)")
    p.add_argument("--prefix", default="swb", help="namespace name prefix (namespaces PREFIX-* are replaced)")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/fleet-STAMP.json)")
    p.add_argument("--on-disk", action="store_true", help="hosts' files on the disk, not on a tmpfs")
    p.add_argument(
        "--warm",
        action="store_true",
        help="the swarm's agents and the libtorrent clients run first; the clock starts when the release "
        "is handed to them (published and polled; torrent added), not at process start",
    )
    args = p.parse_args(argv)
    try:
        require_root()
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = ORDER if not args.scenario or "all" in args.scenario else tuple(args.scenario)
    only = set(args.contenders.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="swarmbench-"))
    if not args.on_disk:
        mount = ["mount", "-t", "tmpfs", "-o", "size=75%,mode=0700", "swarmbench", str(workdir)]
        subprocess.run(mount, check=True)
    rows: list[dict[str, Any]] = []
    failed = ""
    started = time.time()
    try:
        for name in names:
            print(f"== scenario {name}", flush=True)
            sc_dir = workdir / name
            sc_dir.mkdir()
            sc = SCENARIOS[name]
            if args.agents:
                ns = tuple(int(x) for x in args.agents.split(","))
                sc = dataclasses.replace(sc, swarm_n=ns, bt_n=ns, http_n=ns)
            rows += run_scenario(
                sc, sc_dir, only, lambda s: print(s, flush=True), args.prefix, args.warm, args.keep
            )
    except KeyboardInterrupt:
        print("interrupted: the testbed is torn down; partial results follow", file=sys.stderr)
    except Exception as exc:  # a run that fails must not take the finished runs' results with it
        failed = f"{type(exc).__name__}: {exc}"
        print(f"error: {failed}; the testbed is torn down; partial results follow", file=sys.stderr)
    finally:
        if args.keep:
            note = "" if args.on_disk else f" (a tmpfs: umount {workdir} when done)"
            print(f"work directory kept: {workdir}{note}")
        else:
            if not args.on_disk:
                subprocess.run(["umount", "--lazy", str(workdir)], check=False)
            shutil.rmtree(workdir, ignore_errors=True)
    stamp = utc_stamp()
    plot_dir = args.out.parent if args.out else RESULTS
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = [str(x) for s in names if (x := plot(rows, s, plot_dir / f"fleet-{s}-{stamp}.png"))]
    md = table(rows)
    print(md)
    doc = {
        "machine": machine_info(),
        "command": " ".join(["bench/fleet.py", *(argv if argv is not None else sys.argv[1:])]),
        "timestamp": stamp,
        "duration_s": time.time() - started,
        "runs": rows,
        "error": failed or None,
        "table": md,
        "plots": plots,
    }
    path = write_result("fleet", doc, args.out)
    print(f"results: {path}" + (f", plots: {', '.join(plots)}" if plots else ""))
    return 0 if rows and not failed and all(r["complete"] and r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

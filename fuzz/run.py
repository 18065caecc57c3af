"""Run every atheris harness in ``fuzz/`` in turn, each in its own process, and summarise.

    python fuzz/run.py --seconds 60 --out bench/results/fuzz.json
    python fuzz/run.py --runs 100000 --only manifest announce

Each harness starts from its seed corpus (generated in code by the harness itself), runs for
``--seconds`` or ``--runs`` executions, one at a time (the machine may be small and shared), and
records every distinct crash in its own directory (see ``_common.py``); libFuzzer's own findings
(a per-input timeout, running out of memory) count as crashes too. Prints a table of harness,
executions and crashes, writes the same as JSON to ``--out``, and exits 1 when anything crashed or a
harness did not run through. The work directory (corpora, crash inputs, logs) is kept when something crashed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: libFuzzer's names for what it saves: our own crash records, its crash, timeout and out-of-memory finds
_FINDING = re.compile(r"(crash|timeout|oom|leak)-[^.]+")
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_DONE = re.compile(r"Done (\d+) runs")
#: seconds a harness may take beyond its budget (start-up, instrumentation, a last slow input)
_GRACE = 120.0


@dataclass
class Result:
    """One harness's run."""

    harness: str
    executions: int
    crashes: int
    seconds: float
    exit_code: int
    corpus: int
    #: each crash: its input file and what it was (exception and place, or libFuzzer's kind)
    findings: list[dict[str, str]] = field(default_factory=list)


def harnesses() -> dict[str, Path]:
    """Harness name (``fuzz_manifest.py`` is ``manifest``) to its file."""
    return {p.stem.removeprefix("fuzz_"): p for p in sorted(HERE.glob("fuzz_*.py"))}


def executions(log: str) -> int:
    """Inputs run, from libFuzzer's final stats, else its last progress line."""
    for pattern in (_EXECUTED, _DONE):
        found = pattern.findall(log)
        if found:
            return int(found[-1])
    found = _PROGRESS.findall(log)
    return int(found[-1]) if found else 0


def run_one(name: str, path: Path, work: Path, seconds: float | None, runs: int | None) -> Result:
    corpus, crashes = work / name / "corpus", work / name / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SWARMUPDATE_FUZZ_CRASH_DIR": str(crashes),
        "SWARMUPDATE_FUZZ_SEEDS_DIR": str(corpus),
    }
    corpus.mkdir(parents=True, exist_ok=True)
    budget = [f"-max_total_time={max(1, round(seconds))}"] if seconds is not None else [f"-runs={runs}"]
    cmd = [
        sys.executable,
        str(path),
        *budget,
        "-print_final_stats=1",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={crashes}/",
        str(corpus),
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=None if seconds is None else seconds + _GRACE,
        )
        output, code = proc.stdout.decode("utf-8", "replace"), proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = (exc.output or b"").decode("utf-8", "replace") + "\n[run.py: killed, too slow]", -9
    elapsed = time.monotonic() - started
    (work / name / "log.txt").write_text(output)
    findings = sorted(p for p in crashes.iterdir() if _FINDING.fullmatch(p.name))
    details = []
    for p in findings:
        note = p.with_name(p.name + ".txt")
        first = note.read_text().splitlines()[0] if note.exists() else p.name.split("-", 1)[0]
        details.append({"file": str(p), "what": first})
    return Result(
        name, executions(output), len(findings), round(elapsed, 1), code, len(list(corpus.iterdir())), details
    )


def table(rows: list[Result]) -> str:
    head = f"{'harness':<16} {'executions':>12} {'exec/s':>8} {'crashes':>8} {'corpus':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rate = r.executions / max(r.seconds, 0.1)
        lines.append(f"{r.harness:<16} {r.executions:>12,} {rate:>8,.0f} {r.crashes:>8} {r.corpus:>7}")
    total = sum(r.executions for r in rows)
    crashes = sum(r.crashes for r in rows)
    lines += ["-" * len(head), f"{'total':<16} {total:>12,} {'':>8} {crashes:>8}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="time per harness (default 60)")
    budget.add_argument("--runs", type=int, help="executions per harness")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these harnesses only")
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    parser.add_argument("--work", type=Path, help="corpora, crashes and logs (default: a temporary one)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.runs is None else None
    if seconds is None and args.runs is None:
        seconds = 60.0
    try:
        atheris_version = metadata.version("atheris")
    except metadata.PackageNotFoundError:
        print("atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    found = harnesses()
    names = args.only or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)}; there are {', '.join(found)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="swarmupdate-fuzz-"))
    rows: list[Result] = []
    for name in names:
        print(f"fuzzing {name} ...", file=sys.stderr, flush=True)
        rows.append(run_one(name, found[name], work, seconds, args.runs))
    print(table(rows))
    crashed = sum(r.crashes for r in rows)
    # ran nothing, or ended badly without saying why (killed, or failed before fuzzing)
    idle = [r.harness for r in rows if not r.executions or (r.exit_code and not r.crashes)]
    summary = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "atheris": atheris_version,
        "seconds_per_harness": seconds,
        "runs_per_harness": args.runs,
        "total_executions": sum(r.executions for r in rows),
        "total_crashes": crashed,
        "harnesses": [asdict(r) for r in rows],
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for r in rows:
        for f in r.findings:
            print(f"{r.harness}: {f['what']} ({f['file']})", file=sys.stderr)
    if idle:
        print(f"did not run through: {', '.join(idle)} (see the logs in {work})", file=sys.stderr)
    if crashed or idle:
        print(f"work directory kept: {work}", file=sys.stderr)
        return 1
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

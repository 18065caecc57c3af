"""Helpers shared by the benchmarks: the test file, the page-cache warm-up, machine facts, results."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import swarmupdate

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
MIB = 1024 * 1024
_BLOCK = 8 * MIB


def create_random_file(path: Path, size: int) -> Path:
    """Write ``size`` bytes from ``os.urandom`` (incompressible, so no filesystem shortcut helps)."""
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(_BLOCK, left)
            f.write(os.urandom(n))
            left -= n
    return path


def warm_page_cache(path: Path) -> float:
    """Read ``path`` once so that every timed step starts from the page cache; returns seconds."""
    buf = bytearray(_BLOCK)
    start = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "swarmupdate")
    modified = bool(status) if status is not None else None
    return {"commit": git("rev-parse", "HEAD"), "swarmupdate_modified": modified}


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare two result files."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pyfastcdc": _package_version("pyfastcdc"),
        "fastcdc": _package_version("fastcdc"),
        "loadavg_start": list(os.getloadavg()),
        "git": _git_state(),
        "swarmupdate_from": str(Path(swarmupdate.__file__).parent),
    }


@dataclass
class Series:
    """The timings of one measured step over all rounds."""

    name: str
    seconds: list[float] = field(default_factory=list)
    #: user + system CPU seconds of this process and its children: the work, less the waiting
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_seconds)

    def mb_per_s(self, size: int) -> float:
        return size / self.median_s / MB

    def to_json(self, size: int) -> dict[str, Any]:
        return {
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median_s, 4),
            "cpu_seconds": [round(s, 4) for s in self.cpu_seconds],
            "median_cpu_s": round(self.median_cpu_s, 4),
            "mb_per_s_median": round(self.mb_per_s(size), 1),
            "mb_per_s_rounds": [round(size / s / MB, 1) for s in self.seconds],
        }


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``fn`` once and return (wall seconds, CPU seconds, its result)."""
    cpu = _cpu_now()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    return wall, _cpu_now() - cpu, result


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_result(kind: str, doc: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``doc`` to ``path`` or ``bench/results/<kind>-<UTC timestamp>.json`` (temp name, then rename)."""
    if path is None:
        path = RESULTS_DIR / f"{kind}-{doc['timestamp']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path


def prepare_file(existing: Path | None, size: int, workdir: Path) -> tuple[Path, bool]:
    """Return (path, created): ``existing`` as is, or a new random file of ``size`` bytes in ``workdir``."""
    if existing is not None:
        if not existing.is_file():
            raise SystemExit(f"--file {existing}: no such file")
        return existing.resolve(), False
    path = workdir / "artifact.bin"
    print(f"creating {size / MB:.0f} MB of random data in {path} ...", flush=True)
    create_random_file(path, size)
    return path, True


def make_workdir() -> Path:
    """A fresh directory under /tmp for the test file and the throw-away repositories."""
    return Path(tempfile.mkdtemp(prefix="swarmupdate-bench-", dir="/tmp"))


def cleanup(workdir: Path, keep_file: Path | None) -> None:
    """Remove ``workdir``, or with ``keep_file`` everything in it except that file."""
    if keep_file is None:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    for entry in workdir.iterdir():
        if entry == keep_file:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    print(f"kept {keep_file}")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table: first column left-aligned, the others right-aligned."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


class NoSwarms:
    """A peer server's swarm directory that knows no swarm: the benches only serve chunks."""

    def bitfield(self, swarm: str) -> Any:
        return None

    def pulling(self, swarm: str) -> list[int]:
        return []

    def known_peers(self, swarm: str) -> Any:
        return None

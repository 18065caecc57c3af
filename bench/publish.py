"""How fast is a publish compared with just hashing the file?

Measures, on one incompressible file, interleaved over ``--repeat`` rounds:

* ``sha256sum FILE`` (the coreutils binary, as a subprocess): the yardstick;
* chunk + hash only: ``swarmupdate.chunker.chunk_stream`` with no sink;
* a full publish: ``Repository.init`` in a fresh repository, ``add_app``, ``add_release``
  (chunk, hash, write chunk files, ``os.sync()``, sign, commit);
* for reference, one pass of Python's ``hashlib.sha256`` (OpenSSL) over the file.

Conditions, the same for every step: the file is read once before any timing, so every step
reads from a warm page cache (the disk's read speed is not measured); ``os.sync()`` runs before
each timed step, so no step pays for the dirty pages of another; the order of the steps rotates
each round so that drift on a shared machine does not favour one of them. MB = 10^6 bytes.

Quick smoke run: ``.venv/bin/python bench/publish.py --size-mb 64 --repeat 1``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    MB,
    MIB,
    Series,
    cleanup,
    machine_info,
    make_workdir,
    markdown_table,
    prepare_file,
    timed,
    utc_stamp,
    warm_page_cache,
    write_result,
)

from swarmupdate.chunker import ChunkedFile, chunk_stream
from swarmupdate.publisher.release import PublishedRelease, add_release
from swarmupdate.publisher.repository import Repository

SHA256SUM = "sha256sum"
CHUNK = "chunk+hash"
PUBLISH = "publish"
HASHLIB = "hashlib sha256 (reference)"
STEPS = (SHA256SUM, CHUNK, PUBLISH, HASHLIB)


def run_sha256sum(path: Path) -> str:
    proc = subprocess.run([SHA256SUM, str(path)], capture_output=True, text=True, check=True)
    return proc.stdout.split()[0]


def run_chunk(path: Path) -> ChunkedFile:
    with path.open("rb") as f:
        return chunk_stream(f)


def run_hashlib(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run_publish(artifact: Path, repo_dir: Path) -> PublishedRelease:
    """Everything ``repo init``, ``app add`` and ``release add`` do, in one process."""
    Repository.init(repo_dir)
    repo = Repository(repo_dir)
    repo.add_app("bench", repo.keys.generate("app-bench"))
    repo.commit()
    return add_release(Repository(repo_dir), "bench", "1.0", artifact)


def step(name: str, path: Path, artifact: Path, repo_dir: Path) -> Callable[[], Any]:
    """The function that runs one measured step."""
    if name == SHA256SUM:
        return lambda: run_sha256sum(path)
    if name == CHUNK:
        return lambda: run_chunk(path)
    if name == PUBLISH:
        return lambda: run_publish(artifact, repo_dir)
    return lambda: run_hashlib(path)


def publish_name(path: Path, workdir: Path) -> Path:
    """``add_release`` wants a plain file name; give a foreign ``--file`` one through a symlink."""
    if path.parent == workdir:
        return path
    link = workdir / "artifact.bin"
    link.symlink_to(path)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the created file in MiB (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (3)")
    parser.add_argument("--file", type=Path, help="use this file instead of creating one (never deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the created file")
    parser.add_argument(
        "--output", type=Path, help="JSON result file (bench/results/publish-<UTC timestamp>.json)"
    )
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.repeat <= 0:
        parser.error("--size-mb and --repeat must be positive")

    machine = machine_info()
    workdir = make_workdir()
    keep: Path | None = None
    try:
        path, created = prepare_file(args.file, args.size_mb * MIB, workdir)
        if created and args.keep:
            keep = path
        artifact = publish_name(path, workdir)
        size = path.stat().st_size
        warm_s = warm_page_cache(path)
        print(
            f"file {path}: {size / MB:.1f} MB; page cache warmed by one read ({size / warm_s / MB:.0f} MB/s)"
        )

        series = {name: Series(name) for name in STEPS}
        digests: dict[str, set[str]] = {name: set() for name in STEPS}
        chunk_counts: set[int] = set()
        release: PublishedRelease | None = None

        for rnd in range(args.repeat):
            order = STEPS[rnd % len(STEPS) :] + STEPS[: rnd % len(STEPS)]
            for name in order:
                repo_dir = workdir / f"repo-{rnd}"
                os.sync()  # nobody pays for another step's dirty pages
                seconds, cpu, result = timed(step(name, path, artifact, repo_dir))
                series[name].seconds.append(seconds)
                series[name].cpu_seconds.append(cpu)
                if isinstance(result, str):
                    digests[name].add(result)
                elif isinstance(result, ChunkedFile):
                    digests[name].add(result.sha256)
                    chunk_counts.add(len(result.chunks))
                else:
                    assert isinstance(result, PublishedRelease)
                    release = result
                    digests[name].add(result.sha256)
                    chunk_counts.add(result.chunks)
                    shutil.rmtree(repo_dir)
                rate = size / seconds / MB
                print(
                    f"round {rnd + 1}/{args.repeat}  {name:<28} {seconds:7.3f} s  {rate:8.1f} MB/s",
                    flush=True,
                )

        all_digests = set().union(*digests.values())
        if len(all_digests) != 1 or len(chunk_counts) != 1:
            print(f"MISMATCH: digests {digests}, chunk counts {chunk_counts}", file=sys.stderr)
            return 1
        assert release is not None

        base = series[SHA256SUM].mb_per_s(size)
        rows = []
        for name in STEPS:
            s = series[name]
            lo, hi = (size / max(s.seconds) / MB, size / min(s.seconds) / MB)
            rows.append(
                [
                    name,
                    f"{s.median_s:.3f}",
                    f"{s.mb_per_s(size):.0f}",
                    f"{lo:.0f}-{hi:.0f}",
                    f"{s.mb_per_s(size) / base:.2f}",
                    f"{s.median_cpu_s:.2f}",
                ]
            )
        header = ["step", "median s", "MB/s (median)", "MB/s range", "÷ sha256sum MB/s", "CPU s (median)"]
        machine["loadavg_end"] = list(os.getloadavg())
        print()
        print(
            f"{size / MB:.1f} MB random file, {args.repeat} round(s) interleaved, median shown; "
            f"warm page cache (file read once before timing), os.sync() before each step; "
            f"{release.chunks} chunks; {machine['nproc']} CPU(s) {machine['cpu_model']}; "
            f"load average {machine['loadavg_start'][0]:.2f} at start, {machine['loadavg_end'][0]:.2f} at end"
        )
        print()
        print(markdown_table(header, rows))
        ratios = {
            "publish/sha256sum": round(series[PUBLISH].mb_per_s(size) / base, 3),
            "chunk/sha256sum": round(series[CHUNK].mb_per_s(size) / base, 3),
        }
        print()
        print(", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()) + " (ratios of MB/s)")

        stamp = utc_stamp()
        doc = {
            "benchmark": "publish",
            "timestamp": stamp,
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "machine": machine,
            "conditions": {
                "size_bytes": size,
                "file": str(args.file) if args.file else None,
                "repeat": args.repeat,
                "page_cache": "warm: file read once before timing",
                "sync_before_each_step": True,
                "order": "rotated each round",
                "mb": "10^6 bytes",
            },
            "sha256": all_digests.pop(),
            "chunks": release.chunks,
            "results": {name: series[name].to_json(size) for name in STEPS},
            "ratios_mb_per_s": ratios,
            "table_markdown": markdown_table(header, rows),
        }
        print(f"\nwrote {write_result('publish', doc, args.output)}")
    finally:
        cleanup(workdir, keep)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.1f} s in all)", file=sys.stderr)
    sys.exit(code)

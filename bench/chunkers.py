"""Compare the FastCDC implementations on PyPI, each with a sha256 of every chunk.

Candidates (each skipped with a message when it cannot be imported):

* ``pyfastcdc``: ``FastCDC(avg, min_size=, max_size=).cut_stream(file)`` (what swarmupdate uses);
* ``fastcdc``: ``fastcdc.fastcdc(path, min_size, avg_size, max_size, fat=True)``.

Same file, same parameters (min 256 KiB, avg 1 MiB, max 4 MiB), one thread, interleaved over
``--repeat`` rounds, warm page cache (the file is read once before timing). Reported: MB/s
(MB = 10^6 bytes), chunk count and mean chunk size; and a dedup check: a copy of the file with
100 bytes inserted in the middle is chunked too, and the chunks shared with the original counted.
The two libraries read "avg" differently, so their chunk counts differ at the same parameters.

Quick smoke run: ``.venv/bin/python bench/chunkers.py --size-mb 64 --repeat 1``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024
INSERT = b"\xa5" * 100
#: A chunking: (sha256 hex, length) of every chunk, in order.
Chunks = list[tuple[str, int]]


@dataclass(frozen=True)
class Candidate:
    name: str
    call: str
    run: Callable[[Path], Chunks]


def _pyfastcdc(module: Any) -> Callable[[Path], Chunks]:
    cdc = module.FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)

    def run(path: Path) -> Chunks:
        with path.open("rb") as f:
            return [(hashlib.sha256(c.data).hexdigest(), c.length) for c in cdc.cut_stream(f)]

    return run


def _fastcdc(module: Any) -> Callable[[Path], Chunks]:
    def run(path: Path) -> Chunks:
        chunks: Iterator[Any] = module.fastcdc(str(path), MIN_SIZE, AVG_SIZE, MAX_SIZE, fat=True)
        return [(hashlib.sha256(c.data).hexdigest(), c.length) for c in chunks]

    return run


def load_candidates() -> list[Candidate]:
    found = []
    specs: list[tuple[str, str, Callable[[Any], Callable[[Path], Chunks]]]] = [
        (
            "pyfastcdc",
            "FastCDC(avg, min_size=, max_size=).cut_stream(f)",
            _pyfastcdc,
        ),
        ("fastcdc", "fastcdc.fastcdc(path, min, avg, max, fat=True)", _fastcdc),
    ]
    for name, call, make in specs:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            print(f"skipping {name}: cannot import it ({exc}); install it in the venv to compare it")
            continue
        found.append(Candidate(name, call, make(module)))
    return found


def insert_in_middle(src: Path, dest: Path) -> int:
    """Copy ``src`` to ``dest`` with :data:`INSERT` at the middle; return the insertion offset."""
    size = src.stat().st_size
    middle = size // 2
    with src.open("rb") as fin, dest.open("wb") as fout:
        left = middle
        while left > 0:
            block = fin.read(min(8 * MIB, left))
            fout.write(block)
            left -= len(block)
        fout.write(INSERT)
        while block := fin.read(8 * MIB):
            fout.write(block)
    return middle


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the created file in MiB (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (3)")
    parser.add_argument("--file", type=Path, help="use this file instead of creating one (never deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the created file")
    parser.add_argument(
        "--output", type=Path, help="JSON result file (bench/results/chunkers-<UTC timestamp>.json)"
    )
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.repeat <= 0:
        parser.error("--size-mb and --repeat must be positive")

    candidates = load_candidates()
    if not candidates:
        print("no candidate could be imported", file=sys.stderr)
        return 1
    machine = machine_info()
    workdir = make_workdir()
    keep: Path | None = None
    try:
        path, created = prepare_file(args.file, args.size_mb * MIB, workdir)
        if created and args.keep:
            keep = path
        size = path.stat().st_size
        edited = workdir / "edited.bin"
        offset = insert_in_middle(path, edited)
        os.sync()
        for p in (path, edited):
            warm_page_cache(p)
        print(f"file {path}: {size / MB:.1f} MB; edited copy with {len(INSERT)} bytes at offset {offset}")

        series = {c.name: Series(c.name) for c in candidates}
        results: dict[str, Chunks] = {}
        for rnd in range(args.repeat):
            order = candidates[rnd % len(candidates) :] + candidates[: rnd % len(candidates)]
            for cand in order:
                seconds, cpu, chunks = timed(functools.partial(cand.run, path))
                series[cand.name].seconds.append(seconds)
                series[cand.name].cpu_seconds.append(cpu)
                results[cand.name] = chunks
                rate = size / seconds / MB
                print(
                    f"round {rnd + 1}/{args.repeat}  {cand.name:<10} {seconds:7.3f} s  {rate:8.1f} MB/s",
                    flush=True,
                )

        rows = []
        doc_results: dict[str, Any] = {}
        for cand in candidates:
            chunks = results[cand.name]
            if sum(n for _, n in chunks) != size:
                print(f"{cand.name}: chunks do not cover the file", file=sys.stderr)
                return 1
            after = cand.run(edited)
            before = {h for h, _ in chunks}
            shared = [(h, n) for h, n in after if h in before]
            new = len(after) - len(shared)
            new_bytes = sum(n for h, n in after if h not in before)
            s = series[cand.name]
            mean = size / len(chunks)
            rows.append(
                [
                    cand.name,
                    f"{s.mb_per_s(size):.0f}",
                    f"{size / max(s.seconds) / MB:.0f}-{size / min(s.seconds) / MB:.0f}",
                    str(len(chunks)),
                    f"{mean / MIB:.2f}",
                    f"{len(shared)}/{len(after)}",
                    f"{new} ({new_bytes / MIB:.2f} MiB)",
                ]
            )
            doc_results[cand.name] = {
                "version": _version(cand.name),
                "call": cand.call,
                **s.to_json(size),
                "chunks": len(chunks),
                "mean_chunk_bytes": round(mean),
                "min_chunk_bytes": min(n for _, n in chunks),
                "max_chunk_bytes": max(n for _, n in chunks),
                "after_insert": {
                    "chunks": len(after),
                    "shared": len(shared),
                    "new": new,
                    "new_bytes": new_bytes,
                },
            }
        header = [
            "library",
            "MB/s (median)",
            "MB/s range",
            "chunks",
            "mean chunk MiB",
            "shared after +100 B",
            "new chunks (bytes)",
        ]
        table = markdown_table(header, rows)
        machine["loadavg_end"] = list(os.getloadavg())
        print()
        print(
            f"{size / MB:.1f} MB random file; min/avg/max {MIN_SIZE // 1024}/{AVG_SIZE // 1024}/"
            f"{MAX_SIZE // 1024} KiB; sha256 of every chunk; {args.repeat} round(s) interleaved, "
            f"median shown; warm page cache; one thread; {machine['nproc']} CPU(s) {machine['cpu_model']}"
        )
        print()
        print(table)
        stamp = utc_stamp()
        doc = {
            "benchmark": "chunkers",
            "timestamp": stamp,
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "machine": machine,
            "conditions": {
                "size_bytes": size,
                "file": str(args.file) if args.file else None,
                "repeat": args.repeat,
                "min_size": MIN_SIZE,
                "avg_size": AVG_SIZE,
                "max_size": MAX_SIZE,
                "insert": {"offset": offset, "bytes": len(INSERT)},
                "page_cache": "warm: files read once before timing",
                "mb": "10^6 bytes",
            },
            "results": doc_results,
            "table_markdown": table,
        }
        print(f"\nwrote {write_result('chunkers', doc, args.output)}")
    finally:
        cleanup(workdir, keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

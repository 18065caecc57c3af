"""A burst of tracker announces: ``--announces`` over ``--swarms`` swarms from ``--concurrency``
keep-alive connections, as fast as the tracker answers. Prints one JSON line: answers by status,
latency percentiles and the burst's rate. Standard library only, so it runs inside a namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time


def _swarm(i: int) -> str:
    return hashlib.sha256(f"swarm-{i}".encode()).hexdigest()


async def client(args: argparse.Namespace, queue: asyncio.Queue[int], out: dict[str, list[float]]) -> None:
    host, port = args.tracker.removeprefix("http://").rstrip("/").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = json.dumps(
                {
                    "swarm": _swarm(i % args.swarms),
                    "peer_id": f"load-{i:06d}",
                    "url": f"http://10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:7071",
                    "site": f"site-{i % 7}",
                    "complete": i % 3 == 0,
                    "left": 0 if i % 3 == 0 else 1 << 20,
                    "event": "started",
                }
            ).encode()
            head = (
                f"POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.monotonic()
            writer.write(head + body)
            await writer.drain()
            resp = await reader.readuntil(b"\r\n\r\n")
            status = resp.split(b" ", 2)[1].decode()
            length = 0
            for line in resp.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.setdefault(status, []).append(time.monotonic() - started)
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.announces):
        queue.put_nowait(i)
    out: dict[str, list[float]] = {}
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(client(args, queue, out) for _ in range(args.concurrency)), return_exceptions=True
    )
    wall = time.monotonic() - t0
    lat = sorted(x for v in out.values() for x in v)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "announces": args.announces,
        "swarms": args.swarms,
        "concurrency": args.concurrency,
        "answers": {k: len(v) for k, v in out.items()},
        "connection_errors": errors[:5],
        "connection_error_count": len(errors),
        "seconds": round(wall, 3),
        "per_second": round(len(lat) / wall, 1) if wall else None,
        "latency_ms": {
            "p50": round(1000 * statistics.median(lat), 2),
            "p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
            "max": round(1000 * lat[-1], 2),
        }
        if lat
        else {},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("tracker", help="the tracker's URL, http://host:port")
    p.add_argument("--announces", type=int, default=10_000)
    p.add_argument("--swarms", type=int, default=1_000)
    p.add_argument("--concurrency", type=int, default=200)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A load generator against one agent's peer server: many concurrent connections of four kinds.

- ``idle``: connect and send nothing (reconnect when the server closes);
- ``slowloris``: send a request head one byte every ``--drip`` seconds, never finishing it;
- ``slowread``: ask for a chunk, then read ``--read-rate`` bytes a second;
- ``poller``: a keep-alive client asking for the swarm's bitfield once a second, as a big fleet's
  peers do (its answer times are the server's responsiveness under the load).

Runs for ``--seconds`` (or until SIGTERM) and prints one JSON line of counters. Standard library
only (asyncio), so it runs anywhere, also inside a network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    opened: int = 0
    refused: int = 0
    closed_by_server: int = 0
    bytes_read: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        lat = sorted(self.latencies)
        out: dict[str, object] = {
            "opened": self.opened,
            "refused": self.refused,
            "closed_by_server": self.closed_by_server,
            "bytes_read": self.bytes_read,
            "answers": self.answers,
        }
        if lat:
            out["latency_ms"] = {
                "n": len(lat),
                "p50": round(1000 * statistics.median(lat), 1),
                "p99": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
                "max": round(1000 * lat[-1], 1),
            }
        return out


class Attack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host, port = args.target.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.port = int(port)
        self.args = args
        self.stats = {k: Stats() for k in ("idle", "slowloris", "slowread", "poller")}
        self.live = dict.fromkeys(self.stats, 0)
        self.peak = 0
        self.end = 0.0

    async def connect(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
        except (TimeoutError, OSError):
            self.stats[kind].refused += 1
            await asyncio.sleep(0.2)
            return None
        self.stats[kind].opened += 1
        return conn

    async def worker(self, kind: str, index: int) -> None:
        await asyncio.sleep(random.random() * self.args.ramp)
        while time.monotonic() < self.end:
            conn = await self.connect(kind)
            if conn is None:
                continue
            reader, writer = conn
            self.live[kind] += 1
            self.peak = max(self.peak, sum(self.live.values()))
            try:
                await getattr(self, kind)(reader, writer, index)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                self.stats[kind].closed_by_server += 1
            finally:
                self.live[kind] -= 1
                writer.close()
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1)

    async def _until_closed(self, reader: asyncio.StreamReader, kind: str, read: int = 65536) -> bool:
        """Wait (up to the end of the run) for the server to close; True when it did."""
        left = self.end - time.monotonic()
        if left <= 0:
            return False
        try:
            data = await asyncio.wait_for(reader.read(read), left)
        except TimeoutError:
            return False
        self.stats[kind].bytes_read += len(data)
        if not data:
            self.stats[kind].closed_by_server += 1
            return True
        return await self._until_closed(reader, kind, read)

    async def idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await self._until_closed(reader, "idle")

    async def slowloris(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        head = f"GET /v1/swarms/{self.args.swarm}/bitfield HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode()
        head += b"a" * 4000
        for byte in head:
            if time.monotonic() >= self.end or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), self.args.drip)
            except TimeoutError:
                continue
            self.stats["slowloris"].bytes_read += len(data)
            self.stats["slowloris"].closed_by_server += 1
            return

    async def slowread(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        chunk = self.args.chunk[index % len(self.args.chunk)]
        writer.write(f"GET /v1/chunks/{chunk} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        step = max(1, self.args.read_rate // 10)
        while time.monotonic() < self.end:
            data = await reader.read(step)
            if not data:
                self.stats["slowread"].closed_by_server += 1
                return
            self.stats["slowread"].bytes_read += len(data)
            await asyncio.sleep(0.1)

    async def poller(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        request = f"GET /v1/swarms/{self.args.swarm}/bitfield HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        stats = self.stats["poller"]
        while time.monotonic() < self.end:
            started = time.monotonic()
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b" ", 2)[1].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            stats.latencies.append(time.monotonic() - started)
            stats.answers[status] = stats.answers.get(status, 0) + 1
            stats.bytes_read += len(head) + len(body)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)) * (0.5 + random.random()))

    async def run(self) -> dict[str, object]:
        a = self.args
        self.end = time.monotonic() + a.seconds
        mix = {"idle": a.idle, "slowloris": a.slowloris, "slowread": a.slowread, "poller": a.pollers}
        tasks = [
            asyncio.create_task(self.worker(kind, i)) for kind, count in mix.items() for i in range(count)
        ]

        async def sample() -> None:
            while time.monotonic() < self.end:
                self.peak = max(self.peak, sum(self.live.values()))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())

        def stop() -> None:  # SIGTERM: end now, and still report
            self.end = time.monotonic()
            for t in tasks:
                t.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        await asyncio.gather(*tasks, return_exceptions=True)
        sampler.cancel()
        return {
            "target": a.target,
            "seconds": a.seconds,
            "mix": mix,
            "peak_open": self.peak,
            "kinds": {k: s.to_json() for k, s in self.stats.items()},
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="the agent's peer URL, http://host:port")
    p.add_argument("--swarm", required=True, help="the swarm id (64 hex) whose bitfield pollers ask for")
    p.add_argument("--chunk", action="append", required=True, help="a chunk id the slow readers ask for")
    p.add_argument("--idle", type=int, default=400)
    p.add_argument("--slowloris", type=int, default=300)
    p.add_argument("--slowread", type=int, default=100)
    p.add_argument("--pollers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ramp", type=float, default=2.0, help="connections open over this many seconds")
    p.add_argument("--drip", type=float, default=2.0, help="slowloris: seconds between bytes")
    p.add_argument("--read-rate", type=int, default=1024, help="slow readers: bytes per second")
    args = p.parse_args(argv)
    result = asyncio.run(Attack(args).run())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

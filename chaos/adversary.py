"""A hostile peer for the chaos scenarios: it announces itself as a complete seed and lies in every way
the peer protocol allows, on a raw asyncio server (so that it can break HTTP as it likes).

- bitfield: claims every chunk (a false bitfield), and with ``--claim`` says it is pulling every chunk
  from the origin (``X-Swarmupdate-Pulling``), which it never does;
- chunks: each request answered by one of ``--modes`` at random: ``corrupt`` (random bytes of the right
  length), ``truncated`` (half, then close), ``endless`` (no length, bytes until the client gives up),
  ``stall`` (headers, then nothing), ``missing`` (404 for a chunk its bitfield claims), ``trickle``
  (100 bytes a second);
- peer exchange: a list of peers that point at nothing and one that points at the origin;
- metadata and targets: random bytes with 200;
- ``--grind``: picks a peer id that ranks among the swarm's origin pullers (lowest sha256(swarm, id)),
  so that honest agents leave chunks to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

from swarmupdate.manifest import Manifest
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.policy import peer_chunk_hash

MODES = ("corrupt", "truncated", "endless", "stall", "missing", "trickle")


def grind(swarm: str, prefix: str, tries: int = 200_000) -> str:
    """The id ``prefix-N`` with the lowest (swarm, id) hash among ``tries``: first in the puller ranking."""
    return min((f"{prefix}-{i}" for i in range(tries)), key=lambda p: peer_chunk_hash(swarm, p))


class Adversary:
    def __init__(self, args: argparse.Namespace, manifest: Manifest) -> None:
        self.args = args
        self.n = len(manifest.chunks)
        self.lengths = {c.sha256: c.length for c in manifest.chunks}
        self.rng = random.Random(args.seed)
        self.served: dict[str, int] = {}
        self.peer_id = grind(args.swarm, args.peer_id) if args.grind else args.peer_id

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                path = head.split(b" ", 2)[1].decode("latin-1")
                if not await self.answer(path, writer):
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, IndexError):
            return
        finally:
            writer.close()

    async def send(self, writer: asyncio.StreamWriter, status: str, body: bytes, extra: str = "") -> bool:
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
        await writer.drain()
        return True

    async def answer(self, path: str, writer: asyncio.StreamWriter) -> bool:
        if path == "/healthz":
            body = json.dumps({"status": "ok", "peer_id": self.peer_id, "url": self.args.url, "site": "evil"})
            return await self.send(writer, "200 OK", body.encode())
        if path.endswith("/bitfield"):
            extra = ""
            if self.args.claim:
                extra = "X-Swarmupdate-Pulling: " + ",".join(map(str, range(min(self.n, 64)))) + "\r\n"
            return await self.send(writer, "200 OK", Bitfield.full(self.n).encode(), extra)
        if path.endswith("/peers"):
            lies = [
                {
                    "peer_id": f"ghost-{i}",
                    "url": f"http://10.77.250.{i + 1}:7071",
                    "site": "",
                    "complete": True,
                }
                for i in range(20)
            ]
            lies.append({"peer_id": "origin-as-peer", "url": self.args.origin, "site": "", "complete": True})
            return await self.send(writer, "200 OK", json.dumps(lies).encode())
        if path.startswith("/v1/metadata/") or path.startswith("/v1/targets/"):
            return await self.send(writer, "200 OK", os.urandom(2048))
        if path.startswith("/v1/chunks/"):
            sha = path.rsplit("/", 1)[1]
            length = self.lengths.get(sha, 1024)
            mode = self.rng.choice(self.args.modes)
            self.served[mode] = self.served.get(mode, 0) + 1
            return await self.chunk(mode, length, writer)
        return await self.send(writer, "404 Not Found", b"")

    async def chunk(self, mode: str, length: int, writer: asyncio.StreamWriter) -> bool:
        ok = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
        if mode == "corrupt":
            writer.write(ok + os.urandom(length))
            await writer.drain()
            return True
        if mode == "truncated":
            writer.write(ok + os.urandom(length // 2))
            await writer.drain()
            return False
        if mode == "endless":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            block = os.urandom(65536)
            for _ in range(4096):
                writer.write(block)
                await writer.drain()
            return False
        if mode == "stall":
            writer.write(ok)
            await writer.drain()
            await asyncio.sleep(3600)
            return False
        if mode == "missing":
            return await self.send(writer, "404 Not Found", b"no such chunk\n")
        # trickle
        writer.write(ok)
        for _ in range(length // 100):
            writer.write(os.urandom(100))
            await writer.drain()
            await asyncio.sleep(1)
        return False

    async def announce_loop(self) -> None:
        host, port = self.args.tracker.removeprefix("http://").rstrip("/").rsplit(":", 1)
        while True:
            for swarm in (self.args.swarm, self.args.fleet_swarm):
                if not swarm:
                    continue
                body = json.dumps(
                    {
                        "swarm": swarm,
                        "peer_id": self.peer_id,
                        "url": self.args.url,
                        "site": "evil",
                        "complete": True,
                        "left": 0,
                        "event": "completed",
                    }
                ).encode()
                with contextlib.suppress(OSError, TimeoutError):
                    r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
                    w.write(
                        f"POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n".encode()
                        + body
                    )
                    await w.drain()
                    await asyncio.wait_for(r.read(), 5)
                    w.close()
            await asyncio.sleep(2)

    async def run(self) -> None:
        host, port = self.args.listen.rsplit(":", 1)
        server = await asyncio.start_server(self.handle, host, int(port))
        print(json.dumps({"ready": True, "peer_id": self.peer_id}), flush=True)
        tasks = [asyncio.create_task(server.serve_forever())]
        if self.args.tracker:
            tasks.append(asyncio.create_task(self.announce_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            print(json.dumps({"peer_id": self.peer_id, "served": self.served, "at": time.time()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="ip:port")
    p.add_argument("--url", required=True, help="the URL it announces")
    p.add_argument("--peer-id", required=True)
    p.add_argument("--swarm", required=True, help="the release's swarm id")
    p.add_argument(
        "--fleet-swarm", default="", help="the fleet swarm id (sha256 of root.json) to announce in"
    )
    p.add_argument("--manifest", type=Path, required=True, help="the release's manifest (chunk lengths)")
    p.add_argument("--tracker", default="", help="tracker URL to announce to")
    p.add_argument(
        "--origin", default="http://127.0.0.1:9", help="the origin URL (named in its lying peer lists)"
    )
    p.add_argument("--modes", default=",".join(MODES), type=lambda s: s.split(","))
    p.add_argument("--grind", action="store_true", help="choose a peer id that ranks first as a puller")
    p.add_argument("--claim", action="store_true", help="claim to be pulling every chunk from the origin")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    bad = set(args.modes) - set(MODES)
    if bad:
        p.error(f"--modes: unknown {sorted(bad)}")
    manifest = Manifest.decode(args.manifest.read_bytes(), source=str(args.manifest))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Adversary(args, manifest).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loopback micro-benchmark: one agent's peer server serving verified chunks to another.

Measures MB/s of chunks fetched with the agent's own PeerClient from the agent's own PeerServer
(both real, over a real loopback socket), each chunk hashed by the receiving store writer before
it counts. Compares write block sizes of the server (the "large writes" choice), and with ``--tls``
the agent's setting over peer mutual TLS (a fleet CA made for the run). Run:

    .venv/bin/python bench/peer_serve.py [--chunks 64] [--concurrency 4] [--tls]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import anyio
from _common import NoSwarms

from swarmupdate.fleetca import init_ca, issue
from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net.httpserver import ServerLimits
from swarmupdate.net.peer_client import PeerClient, chunk_url
from swarmupdate.net.peer_server import PeerServer
from swarmupdate.net.tls import PeerTLS, PeerTLSConfig
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.store.memory import MemoryChunkStore


async def _run(
    store: DiskChunkStore, refs: list[ChunkRef], block: int, concurrency: int, tls: PeerTLS | None = None
) -> float:
    server = PeerServer(
        self_info=PeerInfo("bench", "http://127.0.0.1:0"),
        swarms=NoSwarms(),
        store=store,
        metadata_dir=Path("/nonexistent"),
        manifests_dir=Path("/nonexistent"),
        max_upload_slots=64,
        limits=ServerLimits(max_header_bytes=8192, max_body_bytes=0, write_block=block),
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            functools.partial(server.serve, ssl_context=tls.server if tls else None), "127.0.0.1", 0
        )
        client = PeerClient(tls=tls.client if tls else None)
        sink = MemoryChunkStore()
        base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        queue = list(refs)
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                ref = queue.pop()
                await client.fetch_chunk(chunk_url(base, ref.sha256, origin=False), ref, sink)

        async with anyio.create_task_group() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
        elapsed = time.perf_counter() - started
        await client.aclose()
        tg.cancel_scope.cancel()
    return sum(r.length for r in refs) / elapsed / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=64)
    p.add_argument("--chunk-kib", type=int, default=1024)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tls", action="store_true", help="also 256 KiB writes over peer mutual TLS")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tls = None
        if args.tls:
            init_ca(Path(tmp) / "ca")
            issue(Path(tmp) / "ca", "peer", Path(tmp))
            tls = PeerTLS(
                PeerTLSConfig(Path(tmp) / "ca/ca.pem", Path(tmp) / "peer.pem", Path(tmp) / "peer.key")
            )
        store = DiskChunkStore(Path(tmp) / "store")
        refs = []
        for _ in range(args.chunks):
            data = os.urandom(args.chunk_kib * 1024)
            ref = ChunkRef(hashlib.sha256(data).hexdigest(), len(data))
            store.put(ref, data)
            refs.append(ref)
        results: dict[str, list[float]] = {}
        for _ in range(args.repeat):  # interleaved rounds: fair on a noisy machine
            for block in (64 * 1024, 256 * 1024, 1024 * 1024):
                mbps = anyio.run(_run, store, refs, block, args.concurrency)
                results.setdefault(f"{block // 1024} KiB writes", []).append(mbps)
            if tls is not None:
                mbps = anyio.run(_run, store, refs, 256 * 1024, args.concurrency, tls)
                results.setdefault("256 KiB writes, mutual TLS", []).append(mbps)
        store.close()
    print(f"| server write block | MB/s of verified chunks (median of {args.repeat}) |")
    print("|---|---|")
    summary = {}
    for name, values in results.items():
        med = sorted(values)[len(values) // 2]
        summary[name] = med
        print(f"| {name} | {med:.0f} |")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(__file__).parent / "results" / f"peer-serve-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "mb_per_s": summary, "nproc": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()

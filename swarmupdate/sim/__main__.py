"""``python -m swarmupdate.sim``: simulate a fleet downloading one release and print a summary."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from swarmupdate.sim.fleet import MBIT, MIB, SimConfig, simulate
from swarmupdate.swarm.download import DownloadConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swarmupdate.sim", description=__doc__)
    p.add_argument("--agents", type=int, default=100, help="honest agents (default 100)")
    p.add_argument("--size-mb", type=float, default=64, help="artifact size in MiB (default 64)")
    p.add_argument("--chunks", type=int, default=0, help="number of chunks (default: one per MiB)")
    p.add_argument(
        "--cdc",
        type=int,
        metavar="SEED",
        default=None,
        help="cut the chunks as the publisher would (FastCDC) from random bytes of this seed, instead of "
        "equal parts (the testbed's artifact is seed 1)",
    )
    p.add_argument("--up-mbit", type=float, default=100, help="each agent's uplink, Mbit/s (default 100)")
    p.add_argument("--down-mbit", type=float, default=1000, help="each agent's downlink (default 1000)")
    p.add_argument("--origin-up-mbit", type=float, default=1000, help="origin uplink, Mbit/s (default 1000)")
    p.add_argument("--latency-ms", type=float, default=10, help="one-way latency (default 10)")
    p.add_argument("--adversaries", type=float, default=0, help="fraction of the swarm serving garbage")
    p.add_argument("--jitter", type=float, default=0, help="agents start within this many seconds")
    p.add_argument("--upload-slots", type=int, default=2, help="uploads an agent accepts at once (default 2)")
    p.add_argument(
        "--shared-uploads",
        action="store_true",
        help="accepted uploads share the agent's uplink (default: sent one at a time, as the agent does)",
    )
    p.add_argument("--fallback-delay", type=float, default=10.0, help="origin fallback delay, seconds")
    p.add_argument("--origin-pullers", type=float, default=1.5, help="k, origin pullers per chunk")
    p.add_argument(
        "--origin-max-inflight", type=int, default=0, help="origin requests per agent (default: core's)"
    )
    p.add_argument("--no-fleet-swarm", action="store_true", help="no fleet-size floor for the swarm size")
    p.add_argument("--no-peer-hints", action="store_true", help="servers do not learn their requesters")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def cdc_sizes(size: int, seed: int) -> tuple[int, ...]:
    """The chunk lengths the publisher's chunker cuts from ``size`` random bytes of ``seed``."""
    import io
    import random

    from swarmupdate.chunker import chunk_stream

    data = random.Random(seed).randbytes(size)
    return tuple(c.length for c in chunk_stream(io.BytesIO(data)).chunks)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    size = int(args.size_mb * MIB)
    chunks = args.chunks or max(1, round(args.size_mb))
    sizes: tuple[int, ...] = ()
    if args.cdc is not None:
        sizes = cdc_sizes(size, args.cdc)
        chunks = len(sizes)
    if not 0 <= args.adversaries < 1:
        print("--adversaries must be a fraction in [0, 1)", file=sys.stderr)
        return 2
    adversaries = round(args.agents * args.adversaries / (1 - args.adversaries))
    try:
        config = SimConfig(
            agents=args.agents,
            size=size,
            chunks=chunks,
            chunk_sizes=sizes,
            up=args.up_mbit * MBIT,
            down=args.down_mbit * MBIT,
            origin_up=args.origin_up_mbit * MBIT,
            latency=args.latency_ms / 1000,
            adversaries=adversaries,
            start_jitter=args.jitter,
            upload_slots=args.upload_slots,
            serial_uploads=not args.shared_uploads,
            download=DownloadConfig(
                origin_fallback_delay=args.fallback_delay,
                origin_pullers=args.origin_pullers,
                **({"origin_max_inflight": args.origin_max_inflight} if args.origin_max_inflight else {}),
            ),
            fleet_swarm=not args.no_fleet_swarm,
            peer_hints=not args.no_peer_hints,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = simulate(config)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

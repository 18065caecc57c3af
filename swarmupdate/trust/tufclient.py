"""``swarmupdate-tuf-client``: the standard TUF client-under-test command line.

Built on the same :class:`~swarmupdate.trust.client.TrustClient` and
:class:`~swarmupdate.trust.fetcher.HttpxFetcher` the agent runs, so outside conformance
suites test the fleet's code::

    swarmupdate-tuf-client --metadata-dir D init ROOT
    swarmupdate-tuf-client --metadata-dir D --metadata-url U refresh
    swarmupdate-tuf-client --metadata-dir D --metadata-url U --target-name P [--target-name P2 ...] \\
        --target-base-url B --target-dir T download

Exit 0 on full success, 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarmupdate.errors import RemoteDataError, SwarmUpdateError
from swarmupdate.trust.client import TrustClient, translate_tuf_errors

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarmupdate-tuf-client", description=__doc__.split("\n\n")[0])
    p.add_argument("--metadata-dir", required=True, type=Path)
    p.add_argument("--metadata-url")
    p.add_argument("--target-name", action="append", default=[])
    p.add_argument("--target-base-url")
    p.add_argument("--target-dir", type=Path)
    p.add_argument("command", choices=["init", "refresh", "download"])
    p.add_argument("root", nargs="?", type=Path, help="trusted root file (init only)")
    return p


def run(argv: list[str] | None = None) -> None:
    """Run one command; raises SwarmUpdateError or SystemExit on failure."""
    args = _parser().parse_args(argv)
    if args.command == "init":
        if args.root is None:
            raise SystemExit("init needs the trusted root file")
        TrustClient.init(args.metadata_dir, args.root)
        return
    if not args.metadata_url:
        raise SystemExit(f"{args.command} needs --metadata-url")
    if args.command == "refresh":
        TrustClient(args.metadata_dir, args.metadata_url).refresh()
        return
    if not args.target_name or not args.target_base_url or args.target_dir is None:
        raise SystemExit("download needs --target-name, --target-base-url and --target-dir")
    args.target_dir.mkdir(parents=True, exist_ok=True)
    client = TrustClient(args.metadata_dir, args.metadata_url, args.target_base_url)
    with client.session(args.target_dir, args.target_base_url) as updater:
        for name in args.target_name:
            with translate_tuf_errors(f"target {name}"):
                info = updater.get_targetinfo(name)
                if info is None:
                    raise RemoteDataError(f"target {name}: not found in trusted metadata")
                if updater.find_cached_target(info) is None:
                    updater.download_target(info)


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except SwarmUpdateError as exc:
        print(f"swarmupdate-tuf-client: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:
        if exc.code not in (0, None):
            if isinstance(exc.code, str):
                print(f"swarmupdate-tuf-client: {exc.code}", file=sys.stderr)
            return 1
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

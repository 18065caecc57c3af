"""A lying tracker for the chaos scenarios: every announce is answered with the adversaries only
(``--peer id=url``, repeated), never an honest peer, and with a swarm size of its choosing."""

from __future__ import annotations

import argparse
import sys

import anyio

from swarmupdate.model import PeerInfo
from swarmupdate.net.httpserver import Request, Response, serve
from swarmupdate.tracker.wire import AnnounceReply, encode_reply


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="ip:port")
    p.add_argument("--peer", action="append", default=[], help="id=url of an adversary to hand out")
    p.add_argument("--swarm-size", type=int, default=5000)
    args = p.parse_args(argv)
    peers = tuple(PeerInfo(pid, url, "evil", True) for pid, url in (x.split("=", 1) for x in args.peer))
    reply = encode_reply(AnnounceReply(5.0, args.swarm_size, peers))

    async def handle(request: Request) -> Response:
        if request.path == "/v1/announce":
            return Response(200, reply, content_type="application/json")
        return Response(404, b"not found\n", content_type="text/plain")

    host, port = args.listen.rsplit(":", 1)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: serve(handle, host, int(port), task_status=task_status))
            print(f"evil tracker on http://{host}:{port}", flush=True)

    anyio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

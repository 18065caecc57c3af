"""Fuzz the HTTP/1.1 server at the byte level: whatever a client sends on one connection, in pieces
of any size, through the server's connection loop (``httpserver._Connection``) with the peer
server's and the tracker's handlers and limits. The socket is an in-memory stream: no network.

Input: byte 0 picks the handler (even: peer server, odd: tracker), byte 1 the piece size the bytes
arrive in (0: all at once), the rest is what the client sends before closing its side.
Contract: the connection ends without an exception, and no answer is a 5xx (a 500 is the server's
mark of a handler that raised) except h11's 501 to a transfer coding other than chunked, which is
what RFC 9112 section 6.1 asks of a server.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import _common
import atheris
import h11

with atheris.instrument_imports(include=_common.INSTRUMENT):
    import anyio
    from fuzz_peer_request import SHA, SWARM, _server
    from prometheus_client import CollectorRegistry

    from swarmupdate.net import httpserver
    from swarmupdate.tracker.app import TRACKER_LIMITS, TrackerApp
    from swarmupdate.tracker.config import TrackerConfig
    from swarmupdate.tracker.store import PeerStore

_tracker = TrackerApp(PeerStore(TrackerConfig(), rng=random.Random(1)), registry=CollectorRegistry())
_loop = asyncio.new_event_loop()


class _Stream:
    """The client's bytes in pieces, then end of stream; collects what the server sends."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.pieces = [data[i : i + piece] for i in range(0, len(data), piece)] if piece else [data]
        self.sent = bytearray()

    def extra(self, attribute: Any, default: Any = None) -> Any:
        return ("127.0.0.1", 1)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while self.pieces:
            piece = self.pieces.pop(0)
            if piece:
                return piece
        raise anyio.EndOfStream

    async def send(self, item: bytes) -> None:
        self.sent += item


class _Recording(h11.Connection):
    """h11's server side, noting the status of every answer the server sends."""

    def __init__(self, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self.statuses: list[int] = []

    def send(self, event: Any) -> bytes | None:
        if isinstance(event, h11.Response):
            self.statuses.append(event.status_code)
        return super().send(event)


async def _serve(data: bytes, piece: int, tracker: bool) -> tuple[list[int], bytes]:
    stream = _Stream(data, piece)
    limits = TRACKER_LIMITS if tracker else _server.limits
    handler = _tracker.handle if tracker else _server.handle
    conn = httpserver._Connection(stream, handler, limits, None)  # type: ignore[arg-type]
    recording = _Recording(limits.max_header_bytes)
    conn.conn = recording
    await conn.run()
    return recording.statuses, bytes(stream.sent)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    statuses, sent = _loop.run_until_complete(_serve(data[2:], data[1], bool(data[0] & 1)))
    assert all(s < 500 or s == 501 for s in statuses), (statuses, sent[:300])


def seeds() -> list[bytes]:
    good = [
        f"GET /v1/chunks/{SHA} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"HEAD /v1/swarms/{SWARM}/bitfield HTTP/1.1\r\nHost: x\r\nX-Swarmupdate-Peer: n http://h:1 s\r\n\r\n",
        f"GET /v1/swarms/{SWARM}/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /v1/metadata/1.root.json HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/chunks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]
    announce = '{"swarm":"' + SWARM + '","peer_id":"a","url":"http://10.0.0.1:1","complete":false,"left":5}'
    tracker = [
        f"POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Length: {len(announce)}\r\n\r\n{announce}",
        "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n",
    ]
    out = [bytes([0, piece]) + g.encode() for g in good for piece in (0, 1, 7)]
    out += [bytes([1, piece]) + t.encode() for t in tracker for piece in (0, 3)]
    return out


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

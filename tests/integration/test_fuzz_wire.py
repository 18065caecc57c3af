"""Arbitrary bytes on a real socket: the peer server and the tracker answer 4xx (or close), never
5xx, and serve the next good request as before. (``fuzz/fuzz_http_wire.py`` fuzzes the same
connection loop in memory, coverage-guided.)"""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import anyio
import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net.httpserver import Request, Response, ServerLimits, serve
from swarmupdate.net.peer_server import PeerServer
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.tracker.app import TRACKER_LIMITS, TrackerApp
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.store import PeerStore

SWARM = "ab" * 32
CHUNK = b"chunk-bytes" * 100
SHA = hashlib.sha256(CHUNK).hexdigest()
WIRE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Swarms:
    def pulling(self, swarm: str) -> list[int]:
        return [2]

    def bitfield(self, swarm: str) -> Bitfield | None:
        return Bitfield(10, [0, 3, 9]) if swarm == SWARM else None

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [PeerInfo("p1", "http://127.0.0.1:1", "x", True)] if swarm == SWARM else None


@dataclass
class Server:
    """A server on a loopback port, and the status of every answer its handler gave."""

    host: str
    port: int
    statuses: list[int] = field(default_factory=list)

    def note(self, request: Request, response: Response, seconds: float) -> None:
        self.statuses.append(response.status)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    root = tmp_path_factory.mktemp("wire")
    store = DiskChunkStore(root / "store")
    store.put(ChunkRef(SHA, len(CHUNK)), CHUNK)
    (root / "md" / "root_history").mkdir(parents=True)
    (root / "md" / "root_history" / "1.root.json").write_text('{"signed": {"version": 1}}')
    (root / "manifests").mkdir()
    peer = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0"),
        swarms=_Swarms(),
        store=store,
        metadata_dir=root / "md",
        manifests_dir=root / "manifests",
    )
    tracker = TrackerApp(PeerStore(TrackerConfig(), rng=random.Random(1)), registry=CollectorRegistry())
    # short timeouts: an example that leaves a request unfinished costs a second at most
    peer_limits = ServerLimits(max_header_bytes=8192, max_body_bytes=0, request_timeout=1.0, idle_timeout=1.0)
    tracker_limits = ServerLimits(
        max_header_bytes=TRACKER_LIMITS.max_header_bytes,
        max_body_bytes=TRACKER_LIMITS.max_body_bytes,
        request_timeout=1.0,
        idle_timeout=1.0,
    )
    out: dict[str, Server] = {}
    with anyio.from_thread.start_blocking_portal() as portal:
        futures = []
        for name, handler, limits in (
            ("peer", peer.handle, peer_limits),
            ("tracker", tracker.handle, tracker_limits),
        ):
            record = Server("127.0.0.1", 0)
            future, record.port = portal.start_task(
                partial(serve, handler, "127.0.0.1", 0, limits=limits, on_response=record.note)
            )
            futures.append(future)
            out[name] = record
        yield out
        for future in futures:
            future.cancel()


def _exchange(server: Server, payload: bytes) -> bytes:
    """Send ``payload``, close our side, read until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: allowed
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def _mostly(valid: list[bytes], wild: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``valid`` three times in four, else ``wild``: a request with one odd part is more
    telling than one with nothing right."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), wild)


_METHODS = _mostly([b"GET", b"HEAD", b"POST", b"PUT", b"get"], st.binary(max_size=8))
_TARGETS = _mostly(
    [
        f"/v1/chunks/{SHA}".encode(),
        f"/v1/swarms/{SWARM}/bitfield".encode(),
        f"/v1/swarms/{SWARM}/peers".encode(),
        b"/v1/metadata/1.root.json",
        b"/v1/announce",
        b"/healthz",
        b"/metrics",
        b"*",
        b"http://x/healthz",
    ],
    st.binary(max_size=40),
)
_HEADER = st.tuples(
    _mostly(
        [b"Content-Length", b"Transfer-Encoding", b"Connection", b"X-Swarmupdate-Peer", b"Expect"],
        st.binary(max_size=12),
    ),
    _mostly(
        [b"0", b"5", b"99999", b"-1", b"chunked", b"close", b"gzip, chunked", b"n http://h:1"],
        st.binary(max_size=30),
    ),
).map(b": ".join)
_REQUESTS = st.builds(
    lambda method, target, version, host, headers, newline, body, cut: (
        method
        + b" "
        + target
        + b" "
        + version
        + newline
        + newline.join([b"Host: x"] * host + headers)
        + newline
        + newline
        + body
    )[:cut],
    _METHODS,
    _TARGETS,
    _mostly([b"HTTP/1.1", b"HTTP/1.0"], st.sampled_from([b"HTTP/2", b"HTTP/1.1x", b""])),
    st.integers(0, 3).map(bool),  # HTTP/1.1 requires Host
    st.lists(_HEADER, max_size=3),
    _mostly([b"\r\n", b"\n"], st.just(b"\r")),
    _mostly([b""], st.binary(max_size=50)),
    st.none() | st.integers(0, 400),  # None: the whole request
)
#: several requests back to back, or bytes with no shape at all
_PAYLOADS = st.lists(_REQUESTS, min_size=1, max_size=3).map(b"".join) | st.binary(max_size=600)


@WIRE
@given(st.sampled_from(["peer", "tracker"]), _PAYLOADS)
def test_arbitrary_bytes_get_4xx_or_close_and_the_server_keeps_serving(
    servers: dict[str, Server], which: str, payload: bytes
) -> None:
    server = servers[which]
    server.statuses.clear()
    reply = _exchange(server, payload)
    if reply:
        assert reply.startswith(b"HTTP/1.1 "), reply[:200]
        status = int(reply[9:12])
        # 501: h11's answer to a transfer coding other than chunked (RFC 9112 section 6.1)
        assert status < 500 or status == 501, reply[:300]
        event(f"{which} answered {status}")  # pytest --hypothesis-show-statistics: what was reached
    else:
        event(f"{which} closed without an answer")
    assert all(s < 500 for s in server.statuses), (server.statuses, payload[:200])
    with httpx.Client(base_url=f"http://{server.host}:{server.port}", timeout=5) as client:
        assert client.get("/healthz").status_code == 200


def test_good_requests_after_the_fuzzing(servers: dict[str, Server]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{servers['peer'].port}", timeout=5) as client:
        assert client.get(f"/v1/chunks/{SHA}").content == CHUNK
        assert client.get(f"/v1/swarms/{SWARM}/bitfield").content == Bitfield(10, [0, 3, 9]).encode()
    with httpx.Client(base_url=f"http://127.0.0.1:{servers['tracker'].port}", timeout=5) as client:
        body = {"swarm": SWARM, "peer_id": "a", "url": "http://10.0.0.1:1", "complete": False, "left": 1}
        assert client.post("/v1/announce", json=body).status_code == 200

"""The peer client and its lean HTTP/1.1 pool, against the real peer server and against hostile servers.

Real sockets on loopback. The hostile servers are raw TCP servers that answer each request with bytes
chosen by the test: wrong lengths, truncated or endless bodies, chunked encoding, garbage heads, a
connection that the server closes between two requests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from swarmupdate.errors import FetchError
from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net import peer_server
from swarmupdate.net.http1 import Http1Pool, HttpConnectError, HttpError, HttpProtocolError, HttpUrlError
from swarmupdate.net.peer_client import MIN_RATE, PeerClient, _check_status, chunk_url
from swarmupdate.net.peer_server import PULLING_HEADER, PeerServer, parse_pulling
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.store.memory import MemoryChunkStore
from swarmupdate.swarm.bitfield import Bitfield

pytestmark = pytest.mark.anyio

SWARM = "ab" * 32
DATA = bytes(range(256)) * 4000
REF = ChunkRef(hashlib.sha256(DATA).hexdigest(), len(DATA))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Directory:
    def __init__(self) -> None:
        self.bf = Bitfield(10, [0, 3, 9])

    def bitfield(self, swarm: str) -> Bitfield | None:
        return self.bf if swarm == SWARM else None

    def pulling(self, swarm: str) -> list[int]:
        return [4, 7] if swarm == SWARM else []

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [PeerInfo("p1", "http://127.0.0.1:1", "x", True)] if swarm == SWARM else None


#: request number on the connection, request head -> bytes to send and whether to close afterwards;
#: None closes at once
Reply = Callable[[int, bytes], tuple[bytes, bool] | None]


async def raw_server(tg: anyio.abc.TaskGroup, reply: Reply) -> tuple[str, list[int]]:
    """A TCP server answering request number ``k`` on a connection (from 0) with ``reply(k, head)``.
    Returns its base URL and a list that counts connections."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    connections: list[int] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        connections.append(1)
        async with stream:
            buf = b""
            k = 0
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        buf += await stream.receive()
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    out = reply(k, head)
                    k += 1
                    if out is None:
                        return
                    await stream.send(out[0])
                    if out[1]:
                        return
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                return

    async def serve() -> None:
        async with listener:
            await listener.serve(handle)

    tg.start_soon(serve)
    return f"http://127.0.0.1:{port}", connections


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def with_raw(reply: Reply, check: Callable[[str, list[int]], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:
        base, connections = await raw_server(tg, reply)
        await check(base, connections)
        tg.cancel_scope.cancel()


async def test_chunks_bitfields_and_peers_from_the_real_server(tmp_path: Path) -> None:
    store = DiskChunkStore(tmp_path / "store")
    store.put(REF, DATA)
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0"),
        swarms=Directory(),
        store=store,
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path / "mf",
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        client = PeerClient(me=PeerInfo("asker", "http://127.0.0.1:9"))
        sink = MemoryChunkStore()
        for _ in range(3):  # kept-alive connections are used again
            assert await client.fetch_chunk(chunk_url(base, REF.sha256, origin=False), REF, sink) == len(DATA)
        assert sink.read(REF.sha256) == DATA
        bf, pulling = await client.bitfield(base, SWARM, 10)
        assert list(bf) == [0, 3, 9] and pulling == {4, 7}
        assert [p.peer_id for p in await client.peers(base, SWARM)] == ["p1"]
        assert (await client.info(base)).peer_id == "me"
        missing = "cd" * 32
        with pytest.raises(FetchError) as err:
            await client.fetch_chunk(chunk_url(base, missing, origin=False), ChunkRef(missing, 5), sink)
        assert err.value.kind == "missing"
        with pytest.raises(FetchError) as err:
            await client.bitfield(base, "ef" * 32, 10)
        assert err.value.kind == "missing"
        await client.aclose()
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (ok(DATA[:-1] + b"x"), "corrupt", "sha256 mismatch"),
        (ok(DATA + b"more"), "corrupt", "Content-Length"),
        (
            # cut short: the peer stopped or took its slot back, which is no proof of forgery
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode() + DATA[:1000],
            "error",
            "body ended",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "corrupt",
            "Transfer-Enc",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + DATA, "corrupt", "missing or bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "corrupt", "bad Content-Length"),
        (b"SMTP ready\r\n\r\n", "corrupt", "malformed response head"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000 + b"\r\n\r\n", "corrupt", "head larger than"),
        (b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 5\r\n\r\nbusy\n", "busy", "429"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "missing", "404"),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "error", "HTTP 500"),
    ],
)
async def test_bad_chunk_answers_are_named_and_nothing_is_stored(
    answer: bytes, kind: str, message: str
) -> None:
    async def check(base: str, _: list[int]) -> None:
        client = PeerClient()
        sink = MemoryChunkStore()
        with pytest.raises(FetchError, match=message) as err:
            await client.fetch_chunk(chunk_url(base, REF.sha256, origin=False), REF, sink)
        assert err.value.kind == kind
        assert not sink.has(REF.sha256)
        if kind == "busy":
            assert err.value.retry_after == 3.0
        await client.aclose()

    # a server that answers and then closes (a truncated body is only seen as such at the close)
    await with_raw(lambda k, head: (answer, True), check)


async def test_an_endless_body_is_cut_off_at_the_signed_length() -> None:
    async def check(base: str, _: list[int]) -> None:
        client = PeerClient(request_timeout=5)
        with pytest.raises(FetchError) as err:
            await client.fetch_chunk(chunk_url(base, REF.sha256, origin=False), REF, MemoryChunkStore())
        assert err.value.kind == "corrupt"
        await client.aclose()

    # a Content-Length far beyond the signed length is refused before any byte is read
    big = f"HTTP/1.1 200 OK\r\nContent-Length: {10 * len(DATA)}\r\n\r\n".encode() + DATA * 3
    await with_raw(lambda k, head: (big, False), check)


async def test_a_stalled_body_times_out_and_the_connection_is_not_reused() -> None:
    async def check(base: str, connections: list[int]) -> None:
        client = PeerClient(request_timeout=0.5)
        url = chunk_url(base, REF.sha256, origin=False)
        with pytest.raises(FetchError) as err:
            await client.fetch_chunk(url, REF, MemoryChunkStore())
        assert err.value.kind == "timeout"
        assert await client.fetch_chunk(url, REF, MemoryChunkStore()) == len(DATA)
        assert len(connections) == 2  # the stalled one was closed, not handed out again
        await client.aclose()

    stall = f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode() + DATA[:100]
    calls: list[int] = []

    def reply(k: int, head: bytes) -> tuple[bytes, bool] | None:
        calls.append(k)
        return (stall if len(calls) == 1 else ok(DATA)), False

    await with_raw(reply, check)


async def test_a_connection_the_server_closed_while_idle_is_retried_once_on_a_fresh_one() -> None:
    async def check(base: str, connections: list[int]) -> None:
        pool = Http1Pool()
        for _ in range(3):
            async with pool.get(f"{base}/x") as response:
                assert response.status == 200 and await response.read(100) == b"hello"
        # each connection answered one request then closed: every later request found its kept-alive
        # connection dead and went to a fresh one, without an error reaching the caller
        assert len(connections) == 3
        await pool.aclose()

    await with_raw(lambda k, head: (ok(b"hello"), False) if k == 0 else None, check)


async def test_connection_close_and_unread_bodies_are_not_kept() -> None:
    async def check(base: str, connections: list[int]) -> None:
        pool = Http1Pool()
        async with pool.get(f"{base}/a") as response:
            assert response.headers["connection"] == "close"
            await response.read(100)
        async with pool.get(f"{base}/b") as response:
            pass  # body left unread
        async with pool.get(f"{base}/c") as response:
            assert await response.read(100) == b"hello"
        assert len(connections) == 3
        await pool.aclose()

    await with_raw(
        lambda k, head: (ok(b"hello", "Connection: close\r\n" if b"/a" in head else ""), False), check
    )


async def test_requests_carry_host_and_headers_and_refuse_bad_urls() -> None:
    seen: list[bytes] = []

    def reply(k: int, head: bytes) -> tuple[bytes, bool] | None:
        seen.append(head)
        return ok(b"{}"), False

    async def check(base: str, _: list[int]) -> None:
        pool = Http1Pool(headers={"User-Agent": "t/1"})
        async with pool.get(f"{base}/v1/x?y=1", {"X-Swarmupdate-Peer": "a b"}) as response:
            await response.read(10)
        for bad in (
            "https://127.0.0.1/x",
            "ftp://h/x",
            "http:///x",
            "http://h/a b",
            "http://h:99999/x",
            "http://hĀst/x",
        ):
            with pytest.raises(HttpUrlError):
                async with pool.get(bad):
                    pass
        with pytest.raises(HttpProtocolError, match="more than 1"):
            async with pool.get(f"{base}/y") as response:
                await response.read(1)
        await pool.aclose()

    await with_raw(reply, check)
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET /v1/x?y=1 HTTP/1.1"
    assert lines[1].startswith("Host: 127.0.0.1:")
    assert "User-Agent: t/1" in lines and "X-Swarmupdate-Peer: a b" in lines


async def test_nobody_listening_is_a_connect_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    pool = Http1Pool(connect_timeout=1)
    with pytest.raises(HttpConnectError, match="cannot connect"):
        async with pool.get(f"http://127.0.0.1:{port}/x"):
            pass
    client = PeerClient(connect_timeout=1)
    with pytest.raises(FetchError) as err:
        await client.bitfield(f"http://127.0.0.1:{port}", SWARM, 10)
    assert err.value.kind == "error"
    await client.aclose()
    await pool.aclose()


def test_pulling_header_parsing_keeps_only_valid_indexes() -> None:
    assert parse_pulling(None, 10) == frozenset()
    assert parse_pulling("", 10) == frozenset()
    assert parse_pulling("1, 3,9", 10) == {1, 3, 9}
    assert parse_pulling("1,10,-2,x,99999999999,3", 10) == {1, 3}
    assert parse_pulling("\u00b2,\u0663,4", 10) == {4}  # digits that int() or a check would choke on
    assert parse_pulling(",".join(str(i) for i in range(500)), 1000) == set(range(64))
    assert PULLING_HEADER == "x-swarmupdate-pulling"


async def test_a_slow_transfer_that_keeps_coming_is_not_cut_off_a_trickle_is() -> None:
    small = DATA[:32768]
    small_ref = ChunkRef(hashlib.sha256(small).hexdigest(), len(small))

    async def serve_slowly(stream: anyio.abc.SocketStream, data: bytes, piece: int, pause: float) -> None:
        async with stream:
            while b"\r\n\r\n" not in await stream.receive():
                pass
            await stream.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            for i in range(0, len(data), piece):
                await stream.send(data[i : i + piece])
                await anyio.sleep(pause)

    cases = ((DATA, REF, len(DATA) // 8, 0.1, True), (small, small_ref, 1, 0.05, False))
    for data, ref, piece, pause, ok_expected in cases:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:

            async def handle(
                stream: anyio.abc.SocketStream, data: bytes = data, piece: int = piece, pause: float = pause
            ) -> None:
                with contextlib.suppress(anyio.BrokenResourceError, ConnectionError, anyio.EndOfStream):
                    await serve_slowly(stream, data, piece, pause)

            async def serve(listener: anyio.abc.SocketListener = listener, handle: Any = handle) -> None:
                async with listener:
                    await listener.serve(handle)

            tg.start_soon(serve)
            # 0.3 s without a byte would be a stall; the 1 MB chunk takes about 0.8 s in 8 pieces
            client = PeerClient(request_timeout=0.3)
            url = chunk_url(f"http://127.0.0.1:{port}", ref.sha256, origin=False)
            if ok_expected:
                assert await client.fetch_chunk(url, ref, MemoryChunkStore()) == len(data)
            else:
                # a byte every 50 ms never stalls but would take half an hour: cut off at length / MIN_RATE
                assert len(small) / MIN_RATE == 2.0
                with anyio.fail_after(5), pytest.raises(FetchError, match="slower than") as err:
                    await client.fetch_chunk(url, ref, MemoryChunkStore())
                assert err.value.kind == "timeout"
            await client.aclose()
            tg.cancel_scope.cancel()


async def test_a_peer_that_trickles_a_large_chunk_is_cut_after_the_grace_not_at_the_cap() -> None:
    """A liar claims a chunk and sends 400 B/s: length / MIN_RATE would let it hold the request for a
    minute (and its bitfield keeps the chunk from the origin meanwhile); a peer is cut once it falls
    below MIN_RATE after the grace (here request_timeout, 1 s)."""
    assert len(DATA) / MIN_RATE > 60

    async def check(base: str, _: list[int]) -> None:
        client = PeerClient(request_timeout=1.0)
        started = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(FetchError, match="slower than") as err:
            await client.fetch_chunk(chunk_url(base, REF.sha256, origin=False), REF, MemoryChunkStore())
        assert err.value.kind == "timeout"
        assert anyio.current_time() - started < 3
        await client.aclose()

    async def trickle(stream: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, ConnectionError, anyio.EndOfStream):
            async with stream:
                while b"\r\n\r\n" not in await stream.receive():
                    pass
                await stream.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode())
                for i in range(0, len(DATA), 20):
                    await stream.send(DATA[i : i + 20])
                    await anyio.sleep(0.05)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:

        async def serve() -> None:
            async with listener:
                await listener.serve(trickle)

        tg.start_soon(serve)
        await check(f"http://127.0.0.1:{port}", [])
        tg.cancel_scope.cancel()


async def test_idle_connections_are_swept_after_the_idle_timeout() -> None:
    async def check(base: str, connections: list[int]) -> None:
        pool = Http1Pool(idle_timeout=0.2)
        async with pool.get(f"{base}/a") as response:
            await response.read(100)
        assert sum(len(c) for c in pool._idle.values()) == 1
        await anyio.sleep(0.3)
        # the next request (to any peer) sweeps: the old connection is closed, not reused
        async with pool.get(f"{base}/b") as response:
            await response.read(100)
        assert len(connections) == 2
        assert sum(len(c) for c in pool._idle.values()) == 1
        await pool.aclose()
        assert pool._idle == {}

    await with_raw(lambda k, head: (ok(b"hello"), False), check)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "corrupt"),
        (b"HTTP/1.1 \xb2\xb2\xb2 OK\r\nContent-Length: 0\r\n\r\n", "corrupt"),
        (b"HTTP/1.1 429 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n", "busy"),
        (b"HTTP/1.1 200 OK\r\nX-Swarmupdate-Pulling: \xb2,1\r\nContent-Length: 2\r\n\r\n\x00\x00", "ok"),
    ],
)
async def test_odd_digits_in_answers_are_named_errors_or_ignored(answer: bytes, outcome: str) -> None:
    """Characters that str.isdigit() accepts and int() refuses must not escape as a crash."""

    async def check(base: str, _: list[int]) -> None:
        client = PeerClient()
        try:
            _, pulling = await client.bitfield(base, SWARM, 10)
        except FetchError as exc:
            assert exc.kind == outcome
            if outcome == "busy":
                assert exc.retry_after is None
        else:
            assert outcome == "ok" and pulling == {1}
        await client.aclose()

    await with_raw(lambda k, head: (answer, True), check)


async def test_peer_lists_drop_urls_the_client_could_not_request() -> None:
    from swarmupdate.net.peer_client import parse_peer_list

    doc = (
        b'[{"peer_id": "a", "url": "http://h:99999"}, {"peer_id": "b", "url": "http://h/a b"},'
        b' {"peer_id": "c", "url": "http://h\\u0100st"}, {"peer_id": "d", "url": "http://10.0.0.1:7070"}]'
    )
    assert [p.peer_id for p in parse_peer_list(doc, "test")] == ["d"]
    assert issubclass(HttpUrlError, HttpError) and issubclass(HttpUrlError, ValueError)


async def test_a_url_the_client_cannot_request_is_an_error_not_a_forgery() -> None:
    client = PeerClient()
    for base in ("http://h:99999", "http://h\u0100st"):
        with pytest.raises(FetchError) as err:
            await client.bitfield(base, SWARM, 10)
        assert err.value.kind == "error"  # "corrupt" would ban the peer
        with pytest.raises(FetchError) as err:
            await client.fetch_chunk(chunk_url(base, REF.sha256, origin=False), REF, MemoryChunkStore())
        assert err.value.kind == "error"
    await client.aclose()


class VersionedDirectory(Directory):
    """A directory whose bitfield has a version that tests bump, as SwarmRuntime does."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 7
        self.changed = anyio.Event()

    def bitfield_version(self, swarm: str) -> int | None:
        return self.version if swarm == SWARM else None

    async def wait_bitfield_change(self, swarm: str, version: int) -> None:
        while version == self.version:
            await self.changed.wait()
            self.changed = anyio.Event()

    def bump(self, chunk: int) -> None:
        self.bf.add(chunk)
        self.version += 1
        self.changed.set()


async def test_bitfield_long_poll_answers_at_the_change_or_after_wait(tmp_path: Path) -> None:
    swarms = VersionedDirectory()
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0"),
        swarms=swarms,
        store=DiskChunkStore(tmp_path / "store"),
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path / "mf",
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        client = PeerClient()
        # a plain poll carries the version
        bf, _, version = await client.bitfield_versioned(base, SWARM, 10)
        assert version == 7 and list(bf) == [0, 3, 9]
        # an old version is answered at once
        started = anyio.current_time()
        _, _, version = await client.bitfield_versioned(base, SWARM, 10, after=3, wait=5)
        assert version == 7 and anyio.current_time() - started < 1.0
        # the current version waits for the change, which comes within the wait
        tg.start_soon(_bump_later, swarms, 5, 0.3)
        started = anyio.current_time()
        bf, _, version = await client.bitfield_versioned(base, SWARM, 10, after=7, wait=5)
        took = anyio.current_time() - started
        assert version == 8 and 5 in bf and 0.25 <= took < 2.0, took
        # no change: the answer comes after ``wait`` with the same version
        started = anyio.current_time()
        _, _, version = await client.bitfield_versioned(base, SWARM, 10, after=8, wait=1)
        took = anyio.current_time() - started
        assert version == 8 and 0.9 <= took < 2.0, took
        # one address holds at most MAX_HELD_PER_ADDRESS polls; past it the answer comes at once and
        # without a version, which ends the asker's watch
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(peer_server, "MAX_HELD_PER_ADDRESS", 1)
            async with anyio.create_task_group() as holders:
                holders.start_soon(
                    functools.partial(client.bitfield_versioned, after=8, wait=2), base, SWARM, 10
                )
                await anyio.sleep(0.2)
                other = PeerClient()
                started = anyio.current_time()
                _, _, version = await other.bitfield_versioned(base, SWARM, 10, after=8, wait=2)
                assert version is None and anyio.current_time() - started < 1.0
                await other.aclose()
                # malformed long-poll arguments are a plain poll, answered at once
        for query in ("after=8&wait=x", "after=-1&wait=1", "after=8&wait=999", "after=8"):
            started = anyio.current_time()
            data = await client._get_small(f"{base}/v1/swarms/{SWARM}/bitfield?{query}")
            assert Bitfield.decode(data, 10) == swarms.bf
            assert anyio.current_time() - started < 1.0, query
        await client.aclose()
        tg.cancel_scope.cancel()


async def _bump_later(swarms: VersionedDirectory, chunk: int, delay: float) -> None:
    await anyio.sleep(delay)
    swarms.bump(chunk)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "1", "x-swarmupdate-retry-after": "0.25"}, 0.25),
        ({"x-swarmupdate-retry-after": "0.05"}, 0.05),
        ({"x-swarmupdate-retry-after": "0.001"}, 0.05),  # never sooner than the server's least
        ({"x-swarmupdate-retry-after": ".5"}, 0.5),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "0."}, 2.0),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "soon"}, 2.0),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "0"}, 2.0),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "61"}, 2.0),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "1e3"}, 2.0),
        ({"retry-after": "2", "x-swarmupdate-retry-after": "0.1.2"}, 2.0),
        ({"x-swarmupdate-retry-after": "\u00b2"}, None),
        ({}, None),
    ],
)
def test_a_429s_wait_prefers_the_agents_decimal_estimate(headers: dict[str, str], wait: float | None) -> None:
    with pytest.raises(FetchError) as err:
        _check_status(429, headers, "http://peer/v1/chunks/x")
    assert err.value.kind == "busy" and err.value.retry_after == wait


@pytest.mark.parametrize("blocks", [True, False])
async def test_a_chunk_is_committed_in_a_worker_thread_only_when_its_commit_may_wait_for_a_disk(
    tmp_path: Path, blocks: bool
) -> None:
    import threading

    store = DiskChunkStore(tmp_path / "store")
    store.put(REF, DATA)
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0"),
        swarms=Directory(),
        store=store,
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path / "mf",
    )
    sink = MemoryChunkStore()
    committed_in: list[int] = []

    class Sink:
        def writer(self, ref: ChunkRef) -> Any:
            w = sink.writer(ref)
            w.commit_blocks = blocks
            commit = w.commit

            def spy() -> None:
                committed_in.append(threading.get_ident())
                commit()

            w.commit = spy  # type: ignore[method-assign]
            return w

    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve, "127.0.0.1", 0)
        client = PeerClient()
        url = chunk_url(f"http://127.0.0.1:{port}", REF.sha256, origin=False)
        assert await client.fetch_chunk(url, REF, Sink()) == len(DATA)
        tg.cancel_scope.cancel()
    assert sink.read(REF.sha256) == DATA
    assert (committed_in == [threading.get_ident()]) is not blocks


def test_a_store_in_memory_commits_in_the_callers_thread(tmp_path: Path) -> None:
    """tmpfs and ramfs have no disk to wait for; any other file system may."""
    import os

    from swarmupdate.fsutil import in_memory

    assert MemoryChunkStore().writer(REF).commit_blocks is False
    with DiskChunkStore(tmp_path / "store") as on_disk:
        assert on_disk.writer(REF).commit_blocks is (not in_memory(os.stat(tmp_path).st_dev))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = shm / f"swarmupdate-test-{os.getpid()}"
        try:
            with DiskChunkStore(root) as in_shm:
                assert in_shm.writer(REF).commit_blocks is False
        finally:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


async def test_chunk_requests_say_when_this_machine_uploads_nothing() -> None:
    """The agent tells its client whether its peer server uploads anything; chunk requests to peers
    then carry X-Swarmupdate-Idle: 1 (and only then, and never to the origin)."""
    heads: list[bytes] = []

    def reply(k: int, head: bytes) -> tuple[bytes, bool]:
        heads.append(head)
        return ok(DATA), False

    async def check(base: str, _: list[int]) -> None:
        client = PeerClient()
        url = chunk_url(base, REF.sha256, origin=False)
        assert await client.fetch_chunk(url, REF, MemoryChunkStore()) == len(DATA)  # no idle() set
        uploading = True
        client.idle = lambda: not uploading
        assert await client.fetch_chunk(url, REF, MemoryChunkStore()) == len(DATA)
        uploading = False
        assert await client.fetch_chunk(url, REF, MemoryChunkStore()) == len(DATA)
        origin = chunk_url(base, REF.sha256, origin=True)
        assert await client.fetch_chunk(origin, REF, MemoryChunkStore(), origin=True) == len(DATA)
        await client.aclose()

    await with_raw(reply, check)
    said = [b"x-swarmupdate-idle: 1" in h.lower() for h in heads]
    assert said == [False, False, True, False]

"""The peer server on a real socket: the protocol, its limits, and hostile requests."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
import pytest

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net.httpserver import Response, ServerLimits
from swarmupdate.net.peer_server import PeerServer
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.swarm.bitfield import Bitfield

SWARM = "ab" * 32


class Directory:
    def __init__(self) -> None:
        self.bf = Bitfield(10, [0, 3, 9])

    def pulling(self, swarm: str) -> list[int]:
        return []

    def bitfield(self, swarm: str) -> Bitfield | None:
        return self.bf if swarm == SWARM else None

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [PeerInfo("p1", "http://127.0.0.1:1", "x", True)] if swarm == SWARM else None


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[str, PeerServer, str]]:
    store = DiskChunkStore(tmp_path / "store")
    data = b"chunk-bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    store.put(ChunkRef(sha, len(data)), data)
    md = tmp_path / "md"
    (md / "root_history").mkdir(parents=True)
    (md / "root_history/1.root.json").write_text('{"signed": {"version": 1}}')
    (md / "timestamp.json").write_text('{"signed": {"version": 7}}')
    (md / "snapshot.json").write_text('{"signed": {"version": 5}}')
    (tmp_path / "secret.json").write_text("secret")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / ("cd" * 32)).write_text('{"m": 1}')
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0", "site-a"),
        swarms=Directory(),
        store=store,
        metadata_dir=md,
        manifests_dir=manifests,
        max_upload_slots=2,
        limits=ServerLimits(max_header_bytes=8192, max_body_bytes=0, request_timeout=1.0, idle_timeout=2.0),
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        future, port = portal.start_task(server.serve, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}", server, sha
        future.cancel()


def _raw(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_protocol(peer: tuple[str, PeerServer, str]) -> None:
    url, _, sha = peer
    with httpx.Client(base_url=url) as c:
        assert c.get(f"/v1/chunks/{sha}").content == b"chunk-bytes" * 1000
        assert c.get(f"/v1/chunks/{'0' * 64}").status_code == 404
        assert c.get(f"/v1/swarms/{SWARM}/bitfield").content == Bitfield(10, [0, 3, 9]).encode()
        assert c.get(f"/v1/swarms/{'00' * 32}/bitfield").status_code == 404
        assert c.get(f"/v1/swarms/{SWARM}/peers").json() == [
            {"peer_id": "p1", "url": "http://127.0.0.1:1", "site": "x", "complete": True}
        ]
        assert c.get("/v1/metadata/1.root.json").json() == {"signed": {"version": 1}}
        assert c.get("/v1/metadata/timestamp.json").json()["signed"]["version"] == 7
        assert c.get("/v1/metadata/5.snapshot.json").status_code == 200
        assert c.get("/v1/metadata/4.snapshot.json").status_code == 404
        assert c.get(f"/v1/targets/web/1.0/{'cd' * 32}.app.bin.manifest.json").json() == {"m": 1}
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["peer_id"] == "me"


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/v1/chunks/../../secret.json", (400, 404)),
        ("/v1/chunks/%2e%2e%2fsecret.json", (400, 404)),
        ("/v1/chunks/" + "A" * 64, (400,)),
        ("/v1/chunks/" + "a" * 63, (400,)),
        ("/v1/chunks/" + "g" * 64, (400,)),
        ("/v1/metadata/../secret.json", (400, 404)),
        ("/v1/metadata/..%2Fsecret.json", (400, 404)),
        ("/v1/metadata/root.json", (404,)),
        ("/v1/targets/../../secret.json", (400, 404)),
        ("/v1/targets/" + "cd" * 32, (404,)),
        ("/v1/swarms/../bitfield", (400, 404)),
        ("/v1/swarms/" + SWARM + "/../../x", (404,)),
        ("/etc/passwd", (404,)),
    ],
)
def test_hostile_paths(peer: tuple[str, PeerServer, str], path: str, codes: tuple[int, ...]) -> None:
    url, _, _ = peer
    reply = _raw(url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status = int(reply.split(b" ", 2)[1])
    assert status in codes, (path, reply[:200])
    assert b"secret" not in reply


def test_malformed_requests(peer: tuple[str, PeerServer, str]) -> None:
    url, _, sha = peer
    assert _raw(url, b"\x00\x01\x02 garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 50_000 + b"\r\n\r\n"
    assert _raw(url, big).split(b" ")[1] in (b"431", b"400")
    assert _raw(url, b"POST /v1/chunks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").split(b" ")[
        1
    ] in (
        b"405",
        b"413",
    )
    # still serving
    assert httpx.get(f"{url}/v1/chunks/{sha}").status_code == 200


def test_slow_clients_are_cut_and_others_served(peer: tuple[str, PeerServer, str]) -> None:
    url, _, sha = peer
    host, port = url.removeprefix("http://").split(":")
    slow = []
    for _ in range(20):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        slow.append(s)
    try:
        assert httpx.get(f"{url}/v1/chunks/{sha}", timeout=5).status_code == 200
        start = time.monotonic()
        for s in slow:
            data = s.recv(1024)
            assert data.startswith(b"HTTP/1.1 408") or data == b""
        assert time.monotonic() - start < 8
    finally:
        for s in slow:
            s.close()


def test_accepted_uploads_are_sent_one_after_another(peer: tuple[str, PeerServer, str]) -> None:
    url, server, sha = peer
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        bodies = list(pool.map(lambda _: httpx.get(f"{url}/v1/chunks/{sha}").content, range(2)))
    assert all(hashlib.sha256(b).hexdigest() == sha for b in bodies)
    deadline = time.monotonic() + 5
    while server.uploads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.uploads == 0
    assert server._sending.value == 1, "the sending turn is handed back after each upload"
    assert hashlib.sha256(httpx.get(f"{url}/v1/chunks/{sha}").content).hexdigest() == sha


def test_requesters_turned_away_together_are_told_to_come_back_apart(
    peer: tuple[str, PeerServer, str],
) -> None:
    url, server, sha = peer
    moving = [Response(200, progressed=float("inf")) for _ in range(server.max_upload_slots)]
    server.active.update(dict.fromkeys(moving, "127.0.0.1"))
    try:
        # uploads take 0.4 s, the one being sent has just begun: the first back in 0.4 s, then each
        # an upload time after the one before, up to the longest wait (Retry-After: whole seconds, up)
        server._upload_time, server._sending_since = 0.4, time.monotonic()
        waits = [
            float(httpx.get(f"{url}/v1/chunks/{sha}").headers["x-swarmupdate-retry-after"]) for _ in range(8)
        ]
        assert 0.3 <= waits[0] <= 0.4, waits
        for before, after in itertools.pairwise(waits[:3]):
            assert 0.3 <= after - before <= 0.4, waits  # (less the time between the two requests)
        assert waits[6:] == [2.0, 2.0], waits
        assert httpx.get(f"{url}/v1/chunks/{sha}").headers["retry-after"] == "2"
        # once the promised times have passed, the next one is told when the slot frees, as before
        server._promised = time.monotonic() - 1
        assert float(httpx.get(f"{url}/v1/chunks/{sha}").headers["x-swarmupdate-retry-after"]) <= 0.4
    finally:
        server._sending_since = None
        for m in moving:
            server.active.pop(m)


def test_upload_slots_give_429(peer: tuple[str, PeerServer, str]) -> None:
    url, server, sha = peer
    # as if two uploads were in progress and moving (a block just went out): nobody to preempt
    moving = [Response(200, progressed=float("inf")) for _ in range(server.max_upload_slots)]
    server.active.update(dict.fromkeys(moving, "127.0.0.1"))
    try:
        r = httpx.get(f"{url}/v1/chunks/{sha}")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        # no upload time measured yet: the estimate is the longest one
        assert r.headers["x-swarmupdate-retry-after"] == "1.00"
        # uploads take 0.4 s here, and the one being sent began 0.1 s ago: about 0.3 s to wait
        server._upload_time, server._sending_since = 0.4, time.monotonic() - 0.1
        r = httpx.get(f"{url}/v1/chunks/{sha}")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert 0.05 <= float(r.headers["x-swarmupdate-retry-after"]) <= 0.3
        # one sending far longer than usual (a slow reader): the shortest wait, not a negative one
        # (nobody turned away just before: see the next test)
        server._sending_since, server._promised = time.monotonic() - 5, -math.inf
        assert httpx.get(f"{url}/v1/chunks/{sha}").headers["x-swarmupdate-retry-after"] == "0.05"
    finally:
        server._sending_since = None
        for m in moving:
            server.active.pop(m)
    assert httpx.get(f"{url}/v1/chunks/{sha}").status_code == 200
    deadline = time.monotonic() + 5
    while server.uploads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.uploads == 0, "the slot is released once the response is done"
    assert json.loads(httpx.get(f"{url}/healthz").content)["site"] == "site-a"


BIG = 24 * 1024 * 1024  # more than the kernel's socket buffers of both ends take in


@contextlib.contextmanager
def _big_server(
    tmp_path: Path, slots: int, preempt_after: float, send_timeout: float
) -> Iterator[tuple[str, PeerServer, str, anyio.from_thread.BlockingPortal]]:
    """A server holding one chunk too large to vanish into socket buffers."""
    store = DiskChunkStore(tmp_path / "store")
    data = bytes(range(256)) * (BIG // 256)
    sha = hashlib.sha256(data).hexdigest()
    store.put(ChunkRef(sha, len(data)), data)
    (tmp_path / "md").mkdir()
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0", "site-a"),
        swarms=Directory(),
        store=store,
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path,
        max_upload_slots=slots,
        preempt_after=preempt_after,
        limits=ServerLimits(
            max_header_bytes=8192, max_body_bytes=0, max_connections=8, send_timeout=send_timeout
        ),
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        future, port = portal.start_task(server.serve, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}", server, sha, portal
        future.cancel()


@pytest.fixture
def big(tmp_path: Path) -> Iterator[tuple[str, PeerServer, str]]:
    """One upload slot, taken back from a stalled upload after 0.5 s."""
    with _big_server(tmp_path, 1, 0.5, 3.0) as (url, server, sha, _):
        yield url, server, sha


@pytest.fixture
def turns(tmp_path: Path) -> Iterator[tuple[str, PeerServer, str, anyio.from_thread.BlockingPortal]]:
    """Two upload slots, one large chunk, no taking back of stalled uploads."""
    with _big_server(tmp_path, 2, 60.0, 2.0) as server:
        yield server


def test_an_accepted_upload_waits_for_its_turn_and_a_429_if_taken_back(
    turns: tuple[str, PeerServer, str, anyio.from_thread.BlockingPortal],
) -> None:
    url, server, sha, portal = turns
    sender = _stop_reading(url, sha)  # has the turn, and keeps it while its reader is stuck
    waiter = _stop_reading(url, sha)
    try:
        deadline = time.monotonic() + 5
        while (server.uploads < 2 or not server._waiting_turn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.uploads == 2 and len(server._waiting_turn) == 1
        waiter.settimeout(0.3)
        with pytest.raises(TimeoutError):
            waiter.recv(1)  # not even a status line before its turn
        assert httpx.get(f"{url}/v1/chunks/{sha}", timeout=5).status_code == 429  # slots full
        # its slot goes to another peer while it waits: it hears 429, not a body cut short
        portal.call(server._take_back, next(iter(server._waiting_turn)))
        waiter.settimeout(5)
        assert waiter.recv(12) == b"HTTP/1.1 429"
        assert server.uploads == 1
    finally:
        sender.close()
        waiter.close()
    # the stuck sender's connection ends (send timeout): its turn is handed on
    r = httpx.get(f"{url}/v1/chunks/{sha}", timeout=10)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
    assert server._sending.value == 1


def test_an_idle_requester_takes_the_slot_of_a_waiting_upload_for_a_busy_one(
    turns: tuple[str, PeerServer, str, anyio.from_thread.BlockingPortal],
) -> None:
    """A requester that uploads nothing says so; with the slots full it goes before an accepted upload
    still waiting for its turn, whose requester did not say so (that one hears 429). It never takes a
    slot that is sending, nor one that another idle requester holds."""
    url, server, sha, _ = turns
    sender = _stop_reading(url, sha)  # has the turn, and keeps it while its reader is stuck
    busy = _stop_reading(url, sha)  # waits for its turn; did not say it is idle
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 5
        while (server.uploads < 2 or not server._waiting_turn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.uploads == 2 and len(server._waiting_turn) == 1
        # a requester that does not say it is idle: slots full
        assert httpx.get(f"{url}/v1/chunks/{sha}", timeout=5).status_code == 429
        idle.append(_stop_reading(url, sha, idle=True))
        busy.settimeout(5)
        assert busy.recv(12) == b"HTTP/1.1 429", "the busy requester's waiting upload gave way"
        deadline = time.monotonic() + 5
        while not (server.uploads == 2 and server._waiting_turn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.uploads == 2 and server.bumped == 1
        # the slots now hold the sending upload and an idle requester's: a second idle one is refused
        r = httpx.get(f"{url}/v1/chunks/{sha}", headers={"X-Swarmupdate-Idle": "1"}, timeout=5)
        assert r.status_code == 429 and server.bumped == 1
    finally:
        for s in (sender, busy, *idle):
            s.close()


def _stop_reading(url: str, sha: str, *, idle: bool = False) -> socket.socket:
    """A client that asks for the chunk and then reads nothing."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    hint = "X-Swarmupdate-Idle: 1\r\n" if idle else ""
    s.sendall(f"GET /v1/chunks/{sha} HTTP/1.1\r\nHost: x\r\n{hint}\r\n".encode())
    return s


def _closed_after_draining(s: socket.socket) -> bool:
    """Read what the server had sent; True when the server then closed the connection."""
    s.settimeout(5)
    try:
        while s.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_a_client_that_stops_reading_gives_its_slot_to_the_next(big: tuple[str, PeerServer, str]) -> None:
    url, server, sha = big
    stalled = _stop_reading(url, sha)
    try:
        deadline = time.monotonic() + 5
        while server.uploads == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.uploads == 1
        # the slot is taken, but by an upload that stopped moving: the next reader gets it
        time.sleep(1.0)
        r = httpx.get(f"{url}/v1/chunks/{sha}", timeout=30)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == sha
        assert server.preempted == 1
        assert _closed_after_draining(stalled), "the stalled upload's connection was closed"
    finally:
        stalled.close()


def test_one_address_cannot_hold_every_slot(peer: tuple[str, PeerServer, str]) -> None:
    url, server, sha = peer
    aborted: list[int] = []
    # both slots moving, and both held by one other address
    greedy = [Response(200, progressed=float(1e12 + i)) for i in range(server.max_upload_slots)]
    for i, g in enumerate(greedy):
        g.abort = lambda i=i: aborted.append(i)  # type: ignore[misc]
    server.active.update(dict.fromkeys(greedy, "10.9.9.9"))
    try:
        r = httpx.get(f"{url}/v1/chunks/{sha}")
        assert r.status_code == 200  # this address held no slot: it takes the newest of the greedy one's
        assert aborted == [server.max_upload_slots - 1]
        assert server.preempted == 1
        assert greedy[0] in server.active and greedy[-1] not in server.active
        # now both addresses hold one: no more taking back, slots full
        server.active[Response(200, progressed=float("inf"))] = "127.0.0.1"
        assert httpx.get(f"{url}/v1/chunks/{sha}").status_code == 429
    finally:
        server.active.clear()


def test_a_moving_upload_keeps_its_slot(big: tuple[str, PeerServer, str]) -> None:
    url, server, sha = big
    with httpx.stream("GET", f"{url}/v1/chunks/{sha}", timeout=30) as first:
        it = first.iter_raw(65536)
        got = len(next(it))
        r = httpx.get(f"{url}/v1/chunks/{sha}", timeout=5)
        assert r.status_code == 429  # the first upload is being read: it is not preempted
        for piece in it:
            got += len(piece)
    assert got == BIG
    assert server.preempted == 0


def test_a_client_that_never_reads_is_cut_after_send_timeout(big: tuple[str, PeerServer, str]) -> None:
    url, server, sha = big
    stalled = _stop_reading(url, sha)
    try:
        started = time.monotonic()
        deadline = started + 10
        while (server.uploads == 0 or time.monotonic() - started < 0.2) and time.monotonic() < deadline:
            time.sleep(0.01)
        while server.uploads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.uploads == 0, "no slot is held by a reader that stopped"
        assert 2.5 < time.monotonic() - started < 8  # send_timeout is 3 s
        assert server.preempted == 0
    finally:
        stalled.close()


def test_over_the_connection_limit_the_longest_waiting_gives_way(big: tuple[str, PeerServer, str]) -> None:
    url, _, _ = big
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(8)]  # the limit
    try:
        time.sleep(0.7)  # older than EVICT_AFTER
        clients = [httpx.Client(timeout=5) for _ in range(3)]
        for c in clients:  # newcomers that stay are served, each in the place of an idle connection
            assert c.get(f"{url}/healthz").status_code == 200
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed == 3, closed
        for c in clients:
            c.close()
    finally:
        for s in idle:
            s.close()


def test_when_every_connection_is_busy_a_newcomer_is_turned_away(
    big: tuple[str, PeerServer, str],
) -> None:
    url, _, _ = big
    host, port = url.removeprefix("http://").split(":")
    fresh = [socket.create_connection((host, int(port)), timeout=5) for _ in range(8)]
    try:
        # all 8 just arrived (younger than EVICT_AFTER): nobody gives way to a ninth
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        for s in fresh:
            s.close()
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_an_error_answer_to_a_head_request_still_has_its_status_line(
    peer: tuple[str, PeerServer, str],
) -> None:
    url, _, _ = peer
    out = _raw(url, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413"), out
    assert out.endswith(b"\r\n\r\n"), out  # and no body


def test_out_of_descriptors_the_server_sheds_idle_connections_and_keeps_serving(tmp_path: Path) -> None:
    """A tracker process limited to 64 open files, held by 100 idle connections: accept fails with EMFILE
    (which used to end the server); it sheds the longest-waiting connections and answers a newcomer."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmupdate.cli", "tracker", "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "tracker.log").open("wb"),
        text=True,
        preexec_fn=limit,
    )
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1].rstrip("/")
        host, port = url.removeprefix("http://").split(":")
        for _ in range(100):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        time.sleep(1.0)  # older than EVICT_AFTER
        r = httpx.get(f"{url}/healthz", timeout=10)
        assert r.status_code == 200
        assert proc.poll() is None, "the server is still running"
        assert b"accept_failed" in (tmp_path / "tracker.log").read_bytes()
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(10)


def test_file_blocks_are_read_from_memory_and_disk_alike(tmp_path: Path) -> None:
    """The block reader of the HTTP server: tmpfs directly, RWF_NOWAIT from the page cache, a thread
    otherwise; each gives the same bytes, also at an offset and at the end of the file."""
    import os

    from swarmupdate.fsutil import in_memory
    from swarmupdate.net.httpserver import _read_block, _read_mode

    data = os.urandom(700_000)
    shm = Path("/dev/shm")
    places = [tmp_path / "blocks.bin"]
    if shm.is_dir():
        assert in_memory(shm.stat().st_dev)
        places.append(shm / f"swarmupdate-test-{os.getpid()}.bin")
    for path in places:
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            modes = {_read_mode(os.fstat(fd).st_dev), "thread"}
            assert ("direct" in modes) == (path.parent == shm)
            for how in modes:
                for pos, size in ((0, 262144), (300_000, 262144), (600_000, 100_000)):
                    got = anyio.run(_read_block, fd, pos, size, how)
                    assert got == data[pos : pos + size], (path, how, pos)
        finally:
            os.close(fd)
            if path.parent == shm:
                path.unlink()


def test_a_chunk_path_that_is_no_file_is_404_and_no_descriptor_stays_open(
    peer: tuple[str, PeerServer, str],
) -> None:
    """The chunk file is opened in the event loop with os.open, which also opens a directory: that is a
    404 (not a 200 head and a cut body), and every path closes what it opened."""
    url, server, sha = peer
    fds = len(os.listdir("/proc/self/fd"))
    assert httpx.get(f"{url}/v1/chunks/{sha}").status_code == 200
    assert httpx.head(f"{url}/v1/chunks/{sha}").status_code == 200
    path = server.store.path(sha)
    path.unlink()
    path.mkdir()
    try:
        reply = _raw(url, f"GET /v1/chunks/{sha} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 404"), reply[:80]
    finally:
        path.rmdir()
    path.touch()  # gone from under the index: a 404 too, not a crash
    path.unlink()
    assert httpx.get(f"{url}/v1/chunks/{sha}").status_code == 404
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= fds


@pytest.mark.parametrize("unsent_limit", [True, False])
def test_an_upload_is_written_only_as_fast_as_it_leaves(tmp_path: Path, unsent_limit: bool) -> None:
    """The sending turn passes on when an upload's last block is written, so a block must be written
    when it is nearly on the wire, not when it fits in the kernel's 1 MiB send buffer: with the peer
    server's limits, a client that reads nothing has been "sent" little more than its own receive
    buffer and the unsent limit (without that limit, the control: the whole send buffer more)."""
    from swarmupdate.net import peer_server

    store = DiskChunkStore(tmp_path / "store")
    data = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    sha = hashlib.sha256(data).hexdigest()
    store.put(ChunkRef(sha, len(data)), data)
    (tmp_path / "md").mkdir()
    limits = peer_server._LIMITS
    assert limits.unsent_limit == peer_server.UNSENT_LIMIT
    if not unsent_limit:
        limits = dataclasses.replace(limits, unsent_limit=None)
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:0", "site-a"),
        swarms=Directory(),
        store=store,
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path,
        limits=limits,
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        future, port = portal.start_task(server.serve, "127.0.0.1", 0)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # (the kernel doubles it)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET /v1/chunks/{sha} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.5)  # the server writes what the kernel takes, then waits
            sent = max((r.sent for r in server.active), default=0)
            bound = 128 * 1024 + peer_server.UNSENT_LIMIT + peer_server.UPLOAD_BLOCK
            if unsent_limit:
                assert sent <= bound
            else:
                assert sent > bound
            s.settimeout(10)
            got = b""
            while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < len(data):
                piece = s.recv(1 << 20)
                assert piece, "the server closed the connection before the whole body"
                got += piece
            assert hashlib.sha256(got.partition(b"\r\n\r\n")[2]).hexdigest() == sha
        finally:
            s.close()
            future.cancel()

"""The peer protocol server: what an agent serves to the other agents of its fleet.

=========================================  ==========================================================
``GET /v1/chunks/{sha256}``                200 bytes / 404 / 429 + ``Retry-After`` when upload slots are
                                           full; only lowercase 64-hex ids (anything else 400); one
                                           accepted upload is sent at a time, the others wait their turn
                                           before their status line
``GET /v1/swarms/{swarm}/bitfield``        200 raw bitfield / 404 unknown swarm; header
                                           ``X-Swarmupdate-Pulling: 3,17`` lists the chunks (manifest
                                           indexes) this agent is fetching from the origin right now;
                                           ``X-Swarmupdate-Version: 7`` counts its changes. With
                                           ``?after=7&wait=5`` the answer waits (at most ``wait``, at
                                           most 10 s) until the version is no longer 7: a long poll
``GET /v1/swarms/{swarm}/peers``           200 JSON list of peers known in that swarm (peer exchange)
``GET /v1/metadata/{name}``                verified TUF metadata this agent trusts (``N.root.json``,
                                           ``timestamp.json``, ``N.snapshot.json``, ``N.<role>.json``)
``GET /v1/targets/{path}``                 a manifest target this agent verified (consistent-snapshot name)
``GET /healthz``                           200 JSON ``{"status": "ok", "peer_id", "url", "site"}``
=========================================  ==========================================================

Nothing here trusts the requester; everything served was verified before it was stored, and
the receiver verifies again. Upload slots go to readers: when they are full, a request takes the
slot of the upload that has sent nothing for ``preempt_after`` seconds (a client that stopped or
slowed to a trickle), or, from an address holding no slot, the latest-moving slot of an address holding
more than half of them; it only gets 429 when neither applies. Chunk connections have a small
kernel send buffer, so that a client that stops reading is seen to stop within a block or two.
The ``/healthz`` body (peer id) is an addition to DESIGN.md's contract: it lets an agent learn the
id of a static peer it only knows by URL.
"""

from __future__ import annotations

import json
import math
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, cast

import anyio
from anyio.abc import TaskStatus

from swarmupdate.model import PeerInfo, is_sha256_hex
from swarmupdate.net.httpserver import FileBody, Request, Response, ServerLimits, ServerStats, serve
from swarmupdate.obs.logging import get_logger
from swarmupdate.swarm.bitfield import Bitfield

__all__ = [
    "PEER_HEADER",
    "IDLE_HEADER",
    "PULLING_HEADER",
    "PeerServer",
    "SwarmDirectory",
    "parse_peer_header",
    "parse_pulling",
    "peer_header",
    "preempt_after",
]

_METADATA_NAME = re.compile(r"(?:(\d{1,10})\.)?([a-z0-9][a-z0-9_-]{0,62})\.json")
_TARGET_BASENAME = re.compile(r"([0-9a-f]{64})\.[A-Za-z0-9][A-Za-z0-9._+~-]{0,300}")


class SwarmDirectory(Protocol):
    """What the agent knows about its swarms, for serving. A directory may also offer
    ``bitfield_version(swarm) -> int | None`` and ``async wait_bitfield_change(swarm, version)``
    (see :class:`VersionedSwarms`): then bitfield requests can wait for a change (long polls)."""

    def bitfield(self, swarm: str) -> Bitfield | None: ...

    def pulling(self, swarm: str) -> list[int]: ...

    def known_peers(self, swarm: str) -> list[PeerInfo] | None: ...


class VersionedSwarms(Protocol):
    """A :class:`SwarmDirectory` whose bitfields carry a change counter, which can be waited on."""

    def bitfield_version(self, swarm: str) -> int | None: ...

    async def wait_bitfield_change(self, swarm: str, version: int) -> None: ...


class ChunkSource(Protocol):
    """The part of the chunk store the server needs."""

    def has(self, sha256: str) -> bool: ...

    def path(self, sha256: str) -> Path: ...


log = get_logger("swarmupdate.net.peer_server")

#: a 429's estimate of when an upload slot frees up, in decimal seconds (see PeerServer._busy), and
#: its bounds
RETRY_HEADER = "x-swarmupdate-retry-after"
RETRY_MIN = 0.05
RETRY_MAX = 2.0
#: a 429's wait before any upload time has been measured here
RETRY_UNKNOWN = 1.0
#: requesters turned away one after another are told to come back this many upload times apart
RETRY_SPACING = 1.0

#: the longest a bitfield long poll is held (seconds), and how many may be held at once
MAX_HOLD = 10.0
MAX_HELD = 256
MAX_HELD_PER_ADDRESS = 32
#: an upload that sent nothing for this long may lose its slot to a waiting peer
PREEMPT_AFTER = 2.0
#: longest an accepted upload waits for its turn to send (seconds); then it is sent alongside. Well
#: below the client's PEER_GRACE (10 s): a requester whose turn is held by a slow reader must get bytes
#: before it gives up on this (honest) peer and drops it
MAX_TURN_WAIT = 3.0
#: the peer server writes file bodies in blocks of this size
UPLOAD_BLOCK = 256 * 1024
#: at most about this many bytes of an upload wait unsent in the kernel (TCP_NOTSENT_LOWAT). Uploads are
#: sent one at a time (see PeerServer), and the turn passes on when the last block is written: with
#: the kernel's own limit (the whole send buffer, 1 MiB here) a chunk of up to 1 MiB was "written" at
#: once, so every upload was in fact sent alongside the others, each at a share of the uplink
UNSENT_LIMIT = 128 * 1024


_LIMITS = ServerLimits(
    max_header_bytes=8192,
    max_body_bytes=0,
    write_block=UPLOAD_BLOCK,
    send_buffer=2 * UPLOAD_BLOCK,
    unsent_limit=UNSENT_LIMIT,
)


def preempt_after(slots: int, upload_limit: int) -> float:
    """Seconds an upload may go without sending a block before its slot can go to another peer:
    ``PREEMPT_AFTER``, or the time two blocks take at one slot's share of ``upload_limit`` (bytes/s,
    0 for none) when that is longer, so that the agent's own rate limit never looks like a stall."""
    if upload_limit <= 0:
        return PREEMPT_AFTER
    return max(PREEMPT_AFTER, 2 * UPLOAD_BLOCK * slots / upload_limit)


class PeerServer:
    """Serve chunks, bitfields, peers, metadata and manifests to other agents."""

    def __init__(
        self,
        *,
        self_info: PeerInfo,
        swarms: SwarmDirectory,
        store: ChunkSource,
        metadata_dir: Path,
        manifests_dir: Path,
        max_upload_slots: int = 4,
        preempt_after: float = PREEMPT_AFTER,
        upload_pace: Callable[[int], Awaitable[None]] | None = None,
        on_upload: Callable[[int], None] | None = None,
        on_peer_hint: Callable[[str, PeerInfo], None] | None = None,
        limits: ServerLimits = _LIMITS,
    ) -> None:
        self.self_info = self_info
        self.swarms = swarms
        self.store = store
        self.metadata_dir = metadata_dir
        self.manifests_dir = manifests_dir
        self.max_upload_slots = max_upload_slots
        self.preempt_after = preempt_after
        # One accepted upload is sent at a time, at the whole uplink; the others wait for their turn (in
        # arrival order) before their status line. The first requester has the chunk, and can pass it
        # on, after one chunk time instead of after as many as there are uploads sharing the uplink
        # (see docs/architecture.md). Waiting for the turn is not a stall; an upload taken back while
        # it waits is answered 429, as if it had come a moment later.
        # (a semaphore, not a lock: whoever finishes an upload hands the turn on, whichever task it is)
        self._sending = anyio.Semaphore(1)
        self._waiting_turn: dict[Response, anyio.CancelScope] = {}
        #: when the upload holding the turn began sending (None: no upload is being sent), and how
        #: long one upload takes to send, lately: a 429 says when a slot should free up
        self._sending_since: float | None = None
        self._upload_time = 0.0
        #: the latest time a 429 told a requester to come back (see _busy)
        self._promised = -math.inf
        #: the chunk responses holding an upload slot, and the address of the client of each
        self.active: dict[Response, str] = {}
        #: accepted uploads whose requester said it uploads nothing (see IDLE_HEADER)
        self._idle_requests: set[Response] = set()
        #: waiting uploads whose slot went to an idle requester (also counted in ``preempted``)
        self.bumped = 0
        #: uploads whose slot went to another peer
        self.preempted = 0
        #: bitfield long polls waiting now, in all and per client address
        self._held = 0
        self._held_by: Counter[str] = Counter()
        self.stats = ServerStats()
        self.upload_pace = upload_pace
        self.on_upload = on_upload
        self.on_peer_hint = on_peer_hint
        self.limits = limits

    # ------------------------------------------------------------------ handlers

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed")
        parts = request.path.split("/")
        # ['', 'v1', 'chunks', id] etc.
        if request.path == "/healthz":
            info = {
                "status": "ok",
                "peer_id": self.self_info.peer_id,
                "url": self.self_info.url,
                "site": self.self_info.site,
            }
            return Response(200, json.dumps(info).encode(), content_type="application/json")
        if len(parts) < 4 or parts[0] != "" or parts[1] != "v1":
            return _text(404, "not found")
        kind = parts[2]
        if kind == "chunks" and len(parts) == 4:
            return await self._chunk(parts[3], _host(request.client), request.headers.get(IDLE_HEADER) == "1")
        if kind == "swarms" and len(parts) == 5:
            self._hint(parts[3], request.headers.get(PEER_HEADER))
            if parts[4] == "bitfield" and not await self._hold(
                parts[3], request.target, _host(request.client)
            ):
                return self._swarm(parts[3], parts[4], versioned=False)
            return self._swarm(parts[3], parts[4])
        if kind == "metadata" and len(parts) == 4:
            return await self._metadata(parts[3])
        if kind == "targets":
            return await self._target(parts[3:])
        return _text(404, "not found")

    async def _chunk(self, sha: str, client: str, idle: bool = False) -> Response:
        if not is_sha256_hex(sha):
            return _text(400, "chunk id must be 64 lowercase hex digits")
        if not self.store.has(sha):  # an in-memory index: no need for a thread
            return _text(404, "no such chunk")
        if (
            len(self.active) >= self.max_upload_slots
            and not self._preempt(client)
            and not (idle and self._bump_busy_waiter())
        ):
            log.debug("upload_refused", client=client, chunk=sha[:12])
            return self._busy()
        try:
            path = self.store.path(sha)
        except KeyError:  # evicted since has(): the same as never held
            return _text(404, "no such chunk")
        response = Response(200, FileBody(path, pace=self.upload_pace))
        response.progressed = anyio.current_time()
        self.active[response] = client
        if idle:
            self._idle_requests.add(response)
        sending = False

        def done() -> None:
            nonlocal sending
            log.debug("upload_done", client=client, chunk=sha[:12], sent=sending)
            self.active.pop(response, None)
            self._idle_requests.discard(response)
            if sending:
                sending = False
                if self._sending_since is not None and response.sent:
                    # a whole body sent (not a HEAD); one taken back from a stalled reader, or slowed
                    # by one, counts at most twice the typical time, or one such would stretch the
                    # estimate for several uploads to come
                    took = anyio.current_time() - self._sending_since
                    if self._upload_time:
                        took = min(took, 2 * self._upload_time)
                        self._upload_time = 0.7 * self._upload_time + 0.3 * took
                    else:
                        self._upload_time = took
                self._sending_since = None
                self._sending.release()

        try:
            with anyio.move_on_after(MAX_TURN_WAIT) as wait:
                self._waiting_turn[response] = wait
                try:
                    await self._sending.acquire()
                    sending = True
                finally:
                    del self._waiting_turn[response]
        except BaseException:  # the connection ended while it waited
            done()
            raise
        if response not in self.active:  # its slot went to another peer while it waited
            done()
            return self._busy()
        response.progressed = anyio.current_time()
        if sending:  # (not one sent alongside after waiting MAX_TURN_WAIT for the turn)
            self._sending_since = response.progressed
        log.debug("upload_start", client=client, chunk=sha[:12])
        response.on_done = done
        return response

    def _busy(self) -> Response:
        """429, with when to come back: when a slot should be free for this requester.

        ``Retry-After`` counts whole seconds, and at 100 Mbit/s a chunk is sent in a tenth of one:
        a requester told 1 s came back long after the slot was free, and the uploader sat idle.
        ``X-Swarmupdate-Retry-After`` gives the estimate in decimal seconds; other clients read the
        standard header. The first requester turned away is told when the upload being sent should be
        done (the typical time one upload takes here, less the time the current one has been sending);
        each one turned away after it, ``RETRY_SPACING`` upload times later than the one before:
        all told the same instant, the requesters came back together, one got the slot and the others
        429 again (testbed, 20 Mbit/s, N = 16: eleven 429s per chunk sent, as many requests as the
        bitfield long polls). Between RETRY_MIN and RETRY_MAX.
        """
        wait = RETRY_UNKNOWN
        if self._upload_time and self._sending_since is not None:
            now = anyio.current_time()
            free = self._sending_since + self._upload_time
            at = max(free, self._promised + RETRY_SPACING * self._upload_time)
            wait = min(RETRY_MAX, max(RETRY_MIN, at - now))
            self._promised = now + wait
        headers = {"retry-after": str(math.ceil(wait)), RETRY_HEADER: f"{wait:.2f}"}
        return Response(429, b"upload slots full\n", headers, "text/plain")

    @property
    def uploads(self) -> int:
        """Upload slots in use."""
        return len(self.active)

    def _preempt(self, client: str) -> bool:
        """Free a slot for ``client`` (an address), if one can be taken back; its connection is closed
        (that client sees a body cut short and asks elsewhere). Taken back, in this order:

        - the upload that has sent nothing the longest, if that is over ``preempt_after`` seconds
          (a reader that stopped or slowed to a trickle; not one waiting for its turn to send);
        - when ``client`` holds no slot, the upload that moved last of an address that holds more than half of
          them: one address cannot keep the others out by asking for every slot.
        """
        stalled = min(
            (r for r in self.active if r not in self._waiting_turn), key=lambda r: r.progressed, default=None
        )
        if stalled is not None and anyio.current_time() - stalled.progressed >= self.preempt_after:
            return self._take_back(stalled)
        held = Counter(self.active.values())
        if held[client] == 0 and held:
            greedy, count = held.most_common(1)[0]
            if count > self.max_upload_slots // 2:
                newest = max((r for r, c in self.active.items() if c == greedy), key=lambda r: r.progressed)
                return self._take_back(newest)
        return False

    def _bump_busy_waiter(self) -> bool:
        """Free a slot for an idle requester: the accepted upload that waits for its turn (it has sent
        nothing) for a requester that did not say it is idle, the latest first. False when none."""
        waiting = [r for r in self._waiting_turn if r in self.active and r not in self._idle_requests]
        if not waiting:
            return False
        self.bumped += 1
        return self._take_back(max(waiting, key=lambda r: r.progressed))

    def _take_back(self, response: Response) -> bool:
        self.active.pop(response, None)
        self.preempted += 1
        waiting = self._waiting_turn.get(response)
        if waiting is not None:  # it has sent nothing, not even its status line: it gets a 429
            waiting.cancel()
            return True
        if response.abort is not None:
            response.abort()
        return True

    def _hint(self, swarm: str, header: str | None) -> None:
        """A requester that says who it is joins our view of the swarm (a hint, like PEX)."""
        if header is None or self.on_peer_hint is None or not is_sha256_hex(swarm):
            return
        info = parse_peer_header(header)
        if info is not None and info.peer_id != self.self_info.peer_id:
            self.on_peer_hint(swarm, info)

    async def _hold(self, swarm: str, target: str, client: str) -> bool:
        """A long poll: ``?after=V&wait=S`` waits until the swarm's bitfield version is not V (at most S
        seconds, at most MAX_HOLD). Anything malformed is a plain poll, answered at once. False when a
        long poll was asked for and refused: MAX_HELD requests wait already, or MAX_HELD_PER_ADDRESS from
        this address (held requests cannot be evicted, so one client must not hold them all); the answer
        then carries no version, which ends the asker's watch (it polls again at its own pace)."""
        _, _, query = target.partition("?")
        if not query or not is_sha256_hex(swarm):
            return True
        args = dict(part.partition("=")[::2] for part in query.split("&")[:4])
        after, wait = args.get("after", ""), args.get("wait", "")
        if not (0 < len(after) <= 18 and after.isdecimal() and 0 < len(wait) <= 2 and wait.isdecimal()):
            return True
        if not hasattr(self.swarms, "wait_bitfield_change"):
            return True
        if self._held >= MAX_HELD or self._held_by[client] >= MAX_HELD_PER_ADDRESS:
            return False
        versioned = cast(VersionedSwarms, self.swarms)
        self._held += 1
        self._held_by[client] += 1
        try:
            with anyio.move_on_after(min(float(wait), MAX_HOLD)):
                await versioned.wait_bitfield_change(swarm, int(after))
        finally:
            self._held -= 1
            self._held_by[client] -= 1
            if not self._held_by[client]:
                del self._held_by[client]
        return True

    def _swarm(self, swarm: str, what: str, *, versioned: bool = True) -> Response:
        if not is_sha256_hex(swarm):
            return _text(400, "swarm id must be 64 lowercase hex digits")
        if what == "bitfield":
            bf = self.swarms.bitfield(swarm)
            if bf is None:
                return _text(404, "unknown swarm")
            pulling = self.swarms.pulling(swarm)
            headers = {PULLING_HEADER: ",".join(map(str, pulling[:MAX_PULLING]))} if pulling else {}
            version = getattr(self.swarms, "bitfield_version", None) if versioned else None
            v = version(swarm) if version is not None else None
            if v is not None:
                headers[VERSION_HEADER] = str(v)
            return Response(200, bf.encode(), headers)
        if what == "peers":
            peers = self.swarms.known_peers(swarm)
            if peers is None:
                return _text(404, "unknown swarm")
            body = [
                {"peer_id": p.peer_id, "url": p.url, "site": p.site, "complete": p.complete} for p in peers
            ]
            return Response(200, json.dumps(body).encode(), content_type="application/json")
        return _text(404, "not found")

    async def _metadata(self, name: str) -> Response:
        m = _METADATA_NAME.fullmatch(name)
        if m is None:
            return _text(400, "bad metadata name")
        version, role = m.group(1), m.group(2)
        if role == "root":
            if version is None:
                return _text(404, "ask for N.root.json")
            path = self.metadata_dir / "root_history" / f"{int(version)}.root.json"
        elif role == "timestamp":
            if version is not None:
                return _text(404, "timestamp is unversioned")
            path = self.metadata_dir / "timestamp.json"
        else:
            path = self.metadata_dir / f"{role}.json"
        data = await anyio.to_thread.run_sync(_read_or_none, path)
        if data is None:
            return _text(404, "not held")
        if version is not None and role != "root" and _signed_version(data) != int(version):
            return _text(404, "not held at that version")
        return Response(200, data, content_type="application/json")

    async def _target(self, segments: list[str]) -> Response:
        if not segments or any(s in ("", ".", "..") for s in segments):
            return _text(400, "bad target path")
        m = _TARGET_BASENAME.fullmatch(segments[-1])
        if m is None:
            return _text(404, "only hash-prefixed manifest targets are served")
        path = self.manifests_dir / m.group(1)
        data = await anyio.to_thread.run_sync(_read_or_none, path)
        if data is None:
            return _text(404, "not held")
        return Response(200, data, content_type="application/json")

    async def serve(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the bound port. ``ssl_context``: TLS only (peer mutual TLS)."""

        def count(request: Request, response: Response, seconds: float) -> None:
            if (
                self.on_upload is not None
                and request.path.startswith("/v1/chunks/")
                and response.status == 200
            ):
                self.on_upload(response.sent)

        await serve(
            self.handle,
            host,
            port,
            limits=self.limits,
            on_response=count,
            stats=self.stats,
            ssl_context=ssl_context,
            task_status=task_status,
        )


#: ``X-Swarmupdate-Idle: 1`` on a chunk request: the requester uploads nothing right now. When the upload
#: slots are full, it takes the slot of an accepted upload still waiting for its turn whose requester did
#: not say so (that one gets a 429): a chunk given to a peer with an idle uplink is passed on at once,
#: one given to a busy peer waits behind its other uploads. A hint: a requester that always says it
#: is idle can only go before requesters that upload, never take a slot that is sending
IDLE_HEADER = "x-swarmupdate-idle"
#: ``X-Swarmupdate-Peer: <peer id> <url> [<site>]`` on swarm requests: who is asking, so the
#: answering agent learns of newcomers at once instead of at its next tracker announce
PEER_HEADER = "x-swarmupdate-peer"
#: on bitfield answers: how many times the answering agent's bitfield (or its origin pulls) changed
VERSION_HEADER = "x-swarmupdate-version"
#: on bitfield answers: the chunks the answering agent is fetching from the origin (see swarm/policy.py)
PULLING_HEADER = "x-swarmupdate-pulling"
#: at most this many listed (an agent has a few origin requests in flight)
MAX_PULLING = 64


def parse_pulling(value: str | None, n: int) -> frozenset[int]:
    """The chunk indexes of a pulling header; malformed parts are ignored (it is only a hint)."""
    if not value:
        return frozenset()
    out = set()
    for part in value.split(",")[:MAX_PULLING]:
        part = part.strip()
        if part.isascii() and part.isdecimal() and len(part) <= 9 and int(part) < n:
            out.add(int(part))
    return frozenset(out)


def peer_header(info: PeerInfo) -> str:
    return f"{info.peer_id} {info.url} {info.site}".strip()


def parse_peer_header(value: str) -> PeerInfo | None:
    """Parse and check a peer header; None when malformed (it is only a hint)."""
    from swarmupdate.tracker.wire import AnnounceFieldError, check_peer_id, check_site, check_url

    parts = value.split(" ")
    if len(parts) not in (2, 3):
        return None
    try:
        return PeerInfo(
            check_peer_id(parts[0]),
            check_url(parts[1]).rstrip("/"),
            check_site(parts[2] if len(parts) == 3 else ""),
        )
    except AnnounceFieldError:
        return None


def _host(client: str) -> str:
    """The address part of a server's ``host:port`` client string."""
    return client.rsplit(":", 1)[0]


def _text(status: int, message: str) -> Response:
    return Response(status, f"{message}\n".encode(), content_type="text/plain")


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _signed_version(data: bytes) -> int | None:
    try:
        doc = json.loads(data)
        version = doc["signed"]["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return version if isinstance(version, int) else None

"""One release's swarm inside the agent: the I/O driver around the sans-I/O ``Download`` core.

The core decides (which chunk from whom, when to fall back to the origin, whom to ban); this
module only carries its actions out — HTTP requests in tasks of one task group — and feeds the
results back as events. Announces to the trackers and peer exchange run beside it, and keep
running after the download completes, so the agent seeds.

Chunks that appear several times in a manifest are fetched once: the core works on the unique
chunks, and bitfields are translated between manifest indexes and unique indexes here.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from swarmupdate.agent.metrics import AgentMetrics
from swarmupdate.errors import FetchError, StoreError
from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net.peer_client import PeerClient, chunk_url
from swarmupdate.obs.logging import get_logger
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.download import (
    BanPeer,
    BitfieldUpdate,
    CancelChunk,
    ChunkArrived,
    ChunkFailed,
    Download,
    DownloadConfig,
    PeerGone,
    PeerSeen,
    RequestBitfield,
    RequestChunk,
    SwarmSize,
)
from swarmupdate.swarm.events import Event
from swarmupdate.trust.client import Release

__all__ = ["SwarmRuntime"]

log = get_logger("swarmupdate.agent.swarm")

#: how many peers one swarm remembers (peer exchange answers are bounded by this too)
MAX_KNOWN_PEERS = 200


#: the longest this agent asks a peer to hold a bitfield long poll (seconds; at most request_timeout / 2)
LONG_POLL_WAIT = 5
#: at least this long between two bitfield requests to one peer (a peer changing all the time is asked
#: ten times a second at most)
MIN_POLL_GAP = 0.1
#: at most about this many bitfield answers per second come to one swarm of this agent, whatever the
#: number of peers watched: the gap between two requests to one peer is at least (peers watched) /
#: POLL_BUDGET. Each answer costs both ends a request, a response and a decision of the core; at
#: 100 Mbit/s a peer changes ten times a second, and 24 agents each watching 23 peers every 0.1 s spent
#: more CPU on bitfields than on chunks (testbed, N = 24: 19-20 s with 0.1 s, 14.7 s with 0.5 s). 20,
#: not 40, once 429s stopped sending requesters back in herds: cpu N = 24 19.2 / 20.2 -> 17.8 / 17.5 s,
#: network N = 16 33.9 / 33.6 -> 33.8 / 33.9 s; then they were still five answers per chunk sent.
POLL_BUDGET = 20.0


def poll_gap(watched: int) -> float:
    """The least time between two bitfield requests to one peer, with ``watched`` peers watched."""
    return max(MIN_POLL_GAP, watched / POLL_BUDGET)


@dataclass
class SwarmRuntime:
    """Everything the agent holds for one release's swarm."""

    release: Release
    self_info: PeerInfo
    store: Any
    client: PeerClient
    metrics: AgentMetrics
    origin_chunks_url: str
    config: DownloadConfig
    clock: Callable[[], float] = anyio.current_time
    rng: random.Random = field(default_factory=random.Random)
    peers: dict[str, PeerInfo] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    swarm_size: int = 0
    error: str = ""
    started_at: float = 0.0
    completed_at: float | None = None
    bytes_by_source: dict[str, int] = field(default_factory=lambda: {"peer": 0, "origin": 0, "local": 0})
    #: cancels everything this swarm runs (download, announces, peer exchange)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def __post_init__(self) -> None:
        chunks = self.release.manifest.chunks
        self.have = Bitfield(len(chunks))
        first: dict[str, int] = {}
        self.unique: list[ChunkRef] = []
        self.members: list[list[int]] = []  # unique index -> manifest indexes
        self.unique_of: list[int] = []  # manifest index -> unique index
        for i, ref in enumerate(chunks):
            u = first.get(ref.sha256)
            if u is None:
                u = first[ref.sha256] = len(self.unique)
                self.unique.append(ref)
                self.members.append([])
            self.members[u].append(i)
            self.unique_of.append(u)
        #: no chunk appears twice: unique indexes are manifest indexes (bitfields need no translating)
        self._identity = len(self.unique) == len(chunks)
        self._events: MemoryObjectSendStream[Event] | None = None
        #: unique chunks being fetched from the origin right now (told to peers with the bitfield)
        self.origin_pulling: set[int] = set()
        #: counts changes of ``have`` and ``origin_pulling``: peers long-poll the bitfield on it
        self.version = 0
        self._change: anyio.Event | None = None
        #: peers whose bitfield this agent is long-polling now, and when the core last asked for each
        self._watching: dict[str, float] = {}

    @property
    def swarm(self) -> str:
        return self.release.swarm_id

    @property
    def complete(self) -> bool:
        return self.have.complete

    @property
    def left(self) -> int:
        chunks = self.release.manifest.chunks
        return sum(chunks[i].length for i in range(len(chunks)) if i not in self.have)

    def to_unique(self, bf: Bitfield) -> Bitfield:
        """A peer's bitfield over manifest indexes, as one over unique chunks (the core's indexes)."""
        if self._identity:
            return bf
        return Bitfield(len(self.unique), (u for u in range(len(self.unique)) if self.members[u][0] in bf))

    def pulling(self) -> list[int]:
        """Manifest indexes of the chunks being fetched from the origin right now."""
        return [self.members[u][0] for u in self.origin_pulling]

    def changed(self) -> None:
        """The bitfield or the origin pulls changed: wake the peers waiting on the version."""
        self.version += 1
        if self._change is not None:
            self._change.set()
            self._change = None

    async def wait_change(self, version: int) -> None:
        """Return when :attr:`version` is not ``version`` any more (the caller bounds the wait)."""
        if version != self.version:
            return
        if self._change is None:
            self._change = anyio.Event()
        await self._change.wait()

    def known_peers(self) -> list[PeerInfo]:
        return [p for pid, p in self.peers.items() if pid not in self.banned]

    # ------------------------------------------------------------------ peers in

    def add_peers(self, peers: list[PeerInfo]) -> None:
        """Peers from a tracker, peer exchange or static config (a hint only)."""
        for p in peers:
            if p.peer_id == self.self_info.peer_id or p.url == self.self_info.url or p.peer_id in self.banned:
                continue
            if p.peer_id not in self.peers and len(self.peers) >= MAX_KNOWN_PEERS:
                continue
            if not self.client.accepts_peer(p.url):  # a plain-HTTP peer in a fleet with peer TLS
                continue
            self.peers[p.peer_id] = p
            self._send(PeerSeen(p))

    def set_swarm_size(self, n: int) -> None:
        self.swarm_size = n
        self._send(SwarmSize(n))

    def _send(self, event: Event) -> None:
        if self._events is not None:
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._events.send_nowait(event)

    # ------------------------------------------------------------------ local chunks

    def scan_local(self) -> None:
        """Mark what the store already holds (earlier releases, or a resumed download)."""
        for u, ref in enumerate(self.unique):
            if self.store.has(ref.sha256):
                for i in self.members[u]:
                    if i not in self.have:
                        self.have.add(i)
                        self._count("local", self.release.manifest.chunks[i].length)

    def _count(self, source: str, nbytes: int) -> None:
        self.bytes_by_source[source] += nbytes
        self.metrics.download_bytes.labels(source).inc(nbytes)

    # ------------------------------------------------------------------ the download

    async def download(self) -> None:
        """Run the core until every chunk is stored and verified."""
        self.started_at = self.clock()
        await anyio.to_thread.run_sync(self.scan_local)
        self.changed()
        if self.complete:
            self.completed_at = self.clock()
            return
        have_unique = [u for u in range(len(self.unique)) if self.members[u][0] in self.have]
        core = Download(
            self.unique,
            have_unique,
            self.self_info.peer_id,
            self.config,
            now=self.clock(),
            rng=self.rng,
            peers=self.known_peers(),
            swarm_size=self.swarm_size,
            salt=self.swarm,
        )
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        self._events = send
        inflight: dict[tuple[int, str | None], anyio.CancelScope] = {}
        try:
            async with anyio.create_task_group() as tg:
                while not core.done:
                    now = self.clock()
                    self._execute(core.poll(now), tg, inflight)
                    wake = core.next_wakeup(now)
                    wait = 1.0 if wake is None else min(1.0, max(0.0, wake - now))
                    with anyio.move_on_after(wait):
                        event = await receive.receive()
                        self._execute(core.handle(event, self.clock()), tg, inflight)
                        while True:
                            try:
                                event = receive.receive_nowait()
                            except anyio.WouldBlock:
                                break
                            self._execute(core.handle(event, self.clock()), tg, inflight)
                tg.cancel_scope.cancel()
        finally:
            self._events = None
            send.close()
            receive.close()
        self.completed_at = self.clock()

    def _execute(
        self, actions: list[Any], tg: TaskGroup, inflight: dict[tuple[int, str | None], anyio.CancelScope]
    ) -> None:
        for action in actions:
            if isinstance(action, RequestChunk):
                scope = anyio.CancelScope()
                inflight[(action.index, action.peer_id)] = scope
                tg.start_soon(self._fetch_chunk, action.index, action.peer_id, scope, inflight)
            elif isinstance(action, CancelChunk):
                cancelled = inflight.pop((action.index, action.peer_id), None)
                if cancelled is not None:
                    cancelled.cancel()
                    if action.peer_id is None:
                        self.origin_pulling.discard(action.index)
                        self.changed()
            elif isinstance(action, RequestBitfield):
                tg.start_soon(self._fetch_bitfield, action.peer_id)
            elif isinstance(action, BanPeer) and action.peer_id not in self.banned:
                self.banned.add(action.peer_id)
                log.warning("peer_banned", swarm=self.swarm[:12], peer=action.peer_id, reason=action.reason)

    async def _fetch_chunk(
        self,
        u: int,
        peer_id: str | None,
        scope: anyio.CancelScope,
        inflight: dict[tuple[int, str | None], anyio.CancelScope],
    ) -> None:
        ref = self.unique[u]
        source = "origin" if peer_id is None else "peer"
        started = self.clock()
        if peer_id is None:
            self.origin_pulling.add(u)
            self.changed()
        try:
            await self._fetch_chunk_in(u, ref, peer_id, source, started, scope)
        finally:
            # a late finisher must not drop the books of a newer request for the same chunk and source
            if inflight.get((u, peer_id)) is scope:
                del inflight[(u, peer_id)]
                if peer_id is None:
                    self.origin_pulling.discard(u)
                    self.changed()

    async def _fetch_chunk_in(
        self,
        u: int,
        ref: ChunkRef,
        peer_id: str | None,
        source: str,
        started: float,
        scope: anyio.CancelScope,
    ) -> None:
        event: Event
        with scope:
            try:
                if self.store.has(ref.sha256):  # an in-memory index: no need for a thread
                    nbytes = 0  # an endgame twin or another swarm stored it meanwhile
                else:
                    if peer_id is None:
                        url = chunk_url(self.origin_chunks_url, ref.sha256, origin=True)
                    else:
                        peer = self.peers.get(peer_id)
                        if peer is None:
                            raise FetchError("error", f"peer {peer_id} is gone")
                        url = chunk_url(peer.url, ref.sha256, origin=False)
                    nbytes = await self.client.fetch_chunk(url, ref, self.store, origin=peer_id is None)
            except FetchError as exc:
                if exc.kind == "corrupt":
                    self.metrics.verification_failures.labels(source).inc()
                log.info(
                    "chunk_failed",
                    swarm=self.swarm[:12],
                    peer=peer_id or "origin",
                    kind=exc.kind,
                    error=str(exc),
                )
                event = ChunkFailed(u, peer_id, exc.kind, exc.retry_after)  # type: ignore[arg-type]
            except StoreError as exc:
                # our disk, not the peer's fault: back off and try again once there is room
                self.error = str(exc)
                log.error("store_failed", swarm=self.swarm[:12], error=str(exc))
                event = ChunkFailed(u, peer_id, "busy", 5.0)
            else:
                self.error = ""
                self._mark(u, source, nbytes)
                took = self.clock() - started
                log.debug(
                    "chunk_arrived", swarm=self.swarm[:12], peer=peer_id or "origin", bytes=nbytes, took=took
                )
                event = ChunkArrived(u, peer_id, nbytes, took)
            self._send(event)

    def _mark(self, u: int, source: str, nbytes: int) -> None:
        chunks = self.release.manifest.chunks
        first = True
        for i in self.members[u]:
            if i in self.have:
                continue
            self.have.add(i)
            if first and nbytes:
                self._count(source, nbytes)
            else:
                self._count("local", chunks[i].length)
            first = False
        if not first:
            self.changed()

    async def _fetch_bitfield(self, peer_id: str) -> None:
        """Ask ``peer_id`` for its bitfield, then keep asking with long polls while the core keeps asking.

        A peer whose answers carry a version is asked again at once with ``?after=<version>``: its next
        answer comes when its bitfield changes, so a chunk it gets is known here within a round trip,
        not at the next poll round (a chunk crosses the swarm in several hops; each used to wait for a
        round). The watch ends when the peer is complete, when the core has not asked for this peer for
        two rounds (it asks the pullers of a large swarm only now and then), or with the download.
        """
        now = self.clock()
        if peer_id in self._watching:
            self._watching[peer_id] = now  # the core still wants it: the watch goes on
            return
        self._watching[peer_id] = now
        n = len(self.release.manifest.chunks)
        # a hold must fit well inside the request's time limit: with a very short one, plain polls only
        wait = min(LONG_POLL_WAIT, int(self.client.request_timeout / 2))
        version: int | None = None
        last = -math.inf
        try:
            while True:
                peer = self.peers.get(peer_id)
                if peer is None:
                    self._send(PeerGone(peer_id))
                    return
                gap = last + poll_gap(len(self._watching)) - self.clock()
                if gap > 0:
                    await anyio.sleep(gap)
                last = self.clock()
                try:
                    bf, pulling, version = await self.client.bitfield_versioned(
                        peer.url, self.swarm, n, after=version, wait=wait
                    )
                except FetchError as exc:
                    if exc.kind == "missing":
                        # the peer does not know this release yet: an empty bitfield, ask again later
                        self._send(BitfieldUpdate(peer_id, Bitfield(len(self.unique)), in_swarm=False))
                    else:
                        self._send(PeerGone(peer_id))
                    return
                unique = self.to_unique(bf)
                self._send(BitfieldUpdate(peer_id, unique, frozenset(self.unique_of[i] for i in pulling)))
                asked = self._watching.get(peer_id, -math.inf)
                if (
                    version is None
                    or wait < 1
                    or unique.complete
                    or self.clock() - asked > 2 * self.config.bitfield_interval
                ):
                    return
        finally:
            self._watching.pop(peer_id, None)

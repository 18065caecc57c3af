"""A fleet of agents, an origin and a tracker on a simulated network, each agent running the real core.

Every agent holds a real :class:`~swarmupdate.swarm.download.Download` and this module plays its I/O
layer (``swarmupdate/agent/swarm.py`` and ``service.py`` in the real agent): it turns actions into
messages and flows, and their outcomes back into events.

- Tracker: an agent announces one latency after it starts and hears back one latency later with a random
  subset of up to ``tracker_peers`` announced peers and the swarm size; announces arriving at the same
  instant are all registered before any is answered. Like the real agent it announces again every
  ``announce_interval`` while downloading and every ``seed_announce_interval`` once complete, and
  gives the core ``max(swarm size, fleet size)``: with ``fleet_swarm``, every agent has been announcing
  to the fleet swarm (every ``seed_announce_interval``) since long before the release, so the fleet
  size (all agents) is known from the start. Announces are counted per second (tracker load).
- Peer hints: a bitfield request names the requester, and the answering agent adds it to its view of
  the swarm (as the real peer server does), up to ``max_known_peers`` peers.
- Chunk request: reaches the server after one latency. The origin always serves, sharing its uplink among
  every request. An agent serves a chunk it holds when fewer than ``upload_slots`` uploads are accepted,
  answers 429 with ``busy_retry_after`` otherwise, and 404 for a chunk it lacks. As the real peer server,
  it sends one accepted upload at a time at its whole uplink, the others waiting in arrival order
  (``serial_uploads``; otherwise they all share the uplink). The answer or the last byte reaches the
  requester one latency after it leaves.
- Bitfield request: answered with the peer's state one round trip later.
- Adversaries announce at once, claim every chunk and serve garbage under the same slot limit; the
  requester sees ``ChunkFailed(kind="corrupt")`` after the whole transfer.
- Agents keep seeding after they finish; the run ends when every honest agent has finished.

Not modelled: peer exchange (``/peers``), request timeouts, rate limits.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from dataclasses import dataclass, field

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.sim.engine import EventQueue, Flow, Host, Network
from swarmupdate.sim.result import SimResult, kumar_ross_bound, tracker_load
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.download import Download, DownloadConfig
from swarmupdate.swarm.events import (
    Action,
    BanPeer,
    BitfieldUpdate,
    CancelChunk,
    ChunkArrived,
    ChunkFailed,
    Event,
    FailureKind,
    PeerSeen,
    RequestBitfield,
    RequestChunk,
    SwarmSize,
)
from swarmupdate.swarm.policy import peer_chunk_hash

__all__ = ["MBIT", "MIB", "SimConfig", "Simulator", "simulate"]

MIB = 1 << 20
#: the simulated release's swarm id (it picks the swarm's origin pullers)
SWARM = "sim-swarm"
#: one megabit per second, in bytes per second
MBIT = 1_000_000 / 8


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated fleet. Rates in bytes/s, times in seconds."""

    agents: int = 100
    size: int = 64 * MIB
    chunks: int = 64
    #: the chunks' lengths (they then set ``size`` and ``chunks``); empty: ``chunks`` equal parts
    chunk_sizes: tuple[int, ...] = ()
    #: every agent's uplink and downlink
    up: float = 100 * MBIT
    down: float = 1000 * MBIT
    origin_up: float = 1000 * MBIT
    #: one-way latency of every message
    latency: float = 0.010
    #: extra peers that claim every chunk and serve garbage
    adversaries: int = 0
    #: agents start uniformly at random in [0, start_jitter]
    start_jitter: float = 0.0
    #: uploads an agent accepts at once (the agent's max_upload_slots)
    upload_slots: int = 2
    #: an agent sends its accepted uploads one at a time, the others waiting in arrival order (as the
    #: real peer server); False: they all share its uplink
    serial_uploads: bool = True
    busy_retry_after: float = 1.0
    tracker_peers: int = 50
    #: the real agent announces every min(tracker interval, 10 s) while downloading, and every tracker
    #: interval (30 s by default) once complete and to the fleet swarm
    announce_interval: float = 10.0
    seed_announce_interval: float = 30.0
    #: agents know the fleet's size from the fleet swarm before the release (the real agent's floor)
    fleet_swarm: bool = True
    #: bitfield requests name the requester, and the answering agent adds it to its view
    peer_hints: bool = True
    #: peers one agent's swarm remembers (MAX_KNOWN_PEERS in swarmupdate/agent/swarm.py)
    max_known_peers: int = 200
    download: DownloadConfig = field(default_factory=DownloadConfig)
    seed: int = 1
    #: give up at this simulated time
    time_limit: float = 3600.0

    def __post_init__(self) -> None:
        if self.chunk_sizes and (
            min(self.chunk_sizes) < 1
            or len(self.chunk_sizes) != self.chunks
            or sum(self.chunk_sizes) != self.size
        ):
            raise ValueError("chunk_sizes: positive lengths, as many as chunks, adding up to size")
        if self.agents < 1 or self.chunks < 1 or self.size < self.chunks:
            raise ValueError("need at least one agent, one chunk and one byte per chunk")
        if self.upload_slots < 1 or self.tracker_peers < 1 or self.max_known_peers < 1:
            raise ValueError("upload_slots, tracker_peers and max_known_peers must be >= 1")
        if self.latency < 0 or self.start_jitter < 0:
            raise ValueError("latency and start_jitter must be >= 0")
        if self.announce_interval <= 0 or self.seed_announce_interval <= 0:
            raise ValueError("announce intervals must be > 0")


class _Agent:
    __slots__ = (
        "adversary",
        "banned",
        "dl",
        "done_at",
        "host",
        "info",
        "known",
        "poll_at",
        "poll_token",
        "requests",
        "seed",
        "snap",
        "snap_count",
        "start",
        "upload_active",
        "upload_waiting",
        "uploads",
    )

    def __init__(self, peer_id: str, host: Host, start: float, seed: int, adversary: bool) -> None:
        self.info = PeerInfo(peer_id, f"sim://{peer_id}")
        self.host = host
        self.start = start
        self.seed = seed
        self.adversary = adversary
        self.dl: Download | None = None
        self.done_at: float | None = None
        self.poll_at: float | None = None
        self.poll_token = 0
        self.requests: dict[tuple[int, str | None], _Request] = {}
        self.uploads = 0
        #: with SimConfig.serial_uploads: the upload being sent, and the accepted ones waiting their turn
        self.upload_active: _Request | None = None
        self.upload_waiting: list[_Request] = []
        self.snap: Bitfield | None = None
        self.snap_count = -1
        self.banned: list[str] = []
        #: peer ids in this agent's view of the swarm (bounded like the real agent's)
        self.known: set[str] = set()


class _Request:
    __slots__ = ("agent", "cancelled", "flow", "index", "peer_id", "sent", "src")

    def __init__(self, agent: _Agent, index: int, src: _Agent | None, sent: float) -> None:
        self.agent = agent
        self.index = index
        self.src = src
        self.peer_id = None if src is None else src.info.peer_id
        self.sent = sent
        self.cancelled = False
        self.flow: Flow | None = None


class Simulator:
    """Builds the fleet of a SimConfig; :meth:`run` plays it to the end."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._queue = EventQueue()
        self._net = Network(self._queue)
        base, extra = divmod(config.size, config.chunks)
        lengths = config.chunk_sizes or tuple(base + (1 if i < extra else 0) for i in range(config.chunks))
        self.chunks = tuple(
            ChunkRef(hashlib.sha256(f"sim-{config.seed}-{i}".encode()).hexdigest(), length)
            for i, length in enumerate(lengths)
        )
        n = len(self.chunks)
        self._full = Bitfield.full(n)
        self._empty = Bitfield(n)
        self._origin = Host("origin", config.origin_up, math.inf)
        self._agents: list[_Agent] = []
        for i in range(config.agents):
            start = self._rng.uniform(0, config.start_jitter) if config.start_jitter else 0.0
            host = Host(f"a{i}", config.up, config.down)
            self._agents.append(_Agent(f"agent-{i:05d}", host, start, config.seed * 1_000_003 + i, False))
        self._adversaries = [
            _Agent(f"mallory-{i:05d}", Host(f"x{i}", config.up, config.down), 0.0, 0, True)
            for i in range(config.adversaries)
        ]
        self._by_id = {a.info.peer_id: a for a in (*self._agents, *self._adversaries)}
        self._registered: list[_Agent] = []
        #: registered agents by their (swarm, agent) hash: the first ones are the swarm's origin pullers
        self._ranked: list[tuple[float, str, _Agent]] = []
        self._registered_ids: set[str] = set()
        self._unfinished = config.agents
        self._fleet_size = config.agents + config.adversaries if config.fleet_swarm else 0
        #: simulated time of every announce to the release swarm
        self.announces: list[float] = []
        self.bytes_by_source = {"origin": 0.0, "peer": 0.0, "corrupt": 0.0, "cancelled": 0.0}
        self.origin_sent = 0.0

    # --- running ------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        cfg = self.config
        for adv in self._adversaries:
            self._register(adv)
        for agent in self._agents:
            self._queue.push(agent.start + cfg.latency, self._announce, agent)
        self._queue.run(cfg.time_limit, lambda: self._unfinished == 0)
        return self._result()

    def _result(self) -> SimResult:
        cfg = self.config
        completion = tuple(math.inf if a.done_at is None else a.done_at - a.start for a in self._agents)
        adversary_ids = {a.info.peer_id for a in self._adversaries}
        bans = sum(len(a.banned) for a in self._agents)
        honest_banned = sum(1 for a in self._agents for b in a.banned if b not in adversary_ids)
        return SimResult(
            agents=cfg.agents,
            adversaries=cfg.adversaries,
            artifact_size=cfg.size,
            completion=completion,
            origin_bytes=self.origin_sent,
            bytes_by_source=dict(self.bytes_by_source),
            bans=bans,
            agents_that_banned=sum(1 for a in self._agents if a.banned),
            honest_banned=honest_banned,
            t_min=kumar_ross_bound(cfg.size, cfg.agents, cfg.origin_up, cfg.down, cfg.agents * cfg.up),
            sim_time=self._queue.now,
            events=self._queue.events,
            tracker=tracker_load(
                self.announces,
                self._queue.now,
                self._fleet_size / cfg.seed_announce_interval if cfg.fleet_swarm else 0.0,
            ),
        )

    # --- tracker ------------------------------------------------------------------------------------

    def _register(self, agent: _Agent) -> None:
        if agent.info.peer_id not in self._registered_ids:
            self._registered_ids.add(agent.info.peer_id)
            self._registered.append(agent)
            rank = peer_chunk_hash(SWARM, agent.info.peer_id)
            bisect.insort(self._ranked, (rank, agent.info.peer_id, agent), key=lambda e: (e[0], e[1]))

    def _announce(self, agent: _Agent) -> None:
        self.announces.append(self._queue.now)
        self._register(agent)
        # Answer after every announce that arrives at this same instant has been registered.
        self._queue.push(self._queue.now, self._tracker_answer, agent)

    def _tracker_answer(self, agent: _Agent) -> None:
        want = self.config.tracker_peers
        pool = self._registered
        # the swarm's origin pullers first, as the real tracker hands them out, then a random sample
        count = self.config.download.origin_puller_count
        firsts = [a for _, _, a in self._ranked[: count + 1] if a is not agent][:count]
        picked = firsts + self._rng.sample(pool, min(want + 1, len(pool)))
        unique = {p.info.peer_id: p.info for p in picked if p is not agent}
        peers = tuple(unique.values())[: max(want, len(firsts))]
        self._queue.push(self._queue.now + self.config.latency, self._on_tracker, agent, peers, len(pool))

    def _on_tracker(self, agent: _Agent, peers: tuple[PeerInfo, ...], size: int) -> None:
        now = self._queue.now
        cfg = self.config
        if agent.dl is None:
            agent.dl = Download(
                self.chunks,
                (),
                agent.info.peer_id,
                cfg.download,
                now=now,
                rng=random.Random(agent.seed),
                salt=SWARM,
            )
        # the real agent's floor: a release's swarm grows to about the fleet's size
        events: list[Event] = [SwarmSize(max(size, self._fleet_size))]
        events.extend(PeerSeen(p) for p in peers if self._learn(agent, p.peer_id))
        self._act(agent, agent.dl.handle_all(events, now))
        interval = cfg.announce_interval if not agent.dl.done else cfg.seed_announce_interval
        self._queue.push(now + interval, self._reannounce, agent)

    def _learn(self, agent: _Agent, peer_id: str) -> bool:
        """Add a peer to an agent's bounded view; True when it is new there."""
        known = agent.known
        if peer_id in known or len(known) >= self.config.max_known_peers:
            return False
        known.add(peer_id)
        return True

    def _reannounce(self, agent: _Agent) -> None:
        self._queue.push(self._queue.now + self.config.latency, self._announce, agent)

    # --- the agent's I/O layer ----------------------------------------------------------------------

    def _act(self, agent: _Agent, actions: list[Action]) -> None:
        dl = agent.dl
        assert dl is not None
        now = self._queue.now
        bitfields: list[str] = []
        for action in actions:
            if isinstance(action, RequestChunk):
                self._send(agent, action.index, action.peer_id)
            elif isinstance(action, CancelChunk):
                self._cancel(agent, action.index, action.peer_id)
            elif isinstance(action, RequestBitfield):
                bitfields.append(action.peer_id)
            elif isinstance(action, BanPeer):
                agent.banned.append(action.peer_id)
        if bitfields:
            self._queue.push(now + 2 * self.config.latency, self._bitfields, agent, bitfields)
        if agent.done_at is None and dl.done:
            agent.done_at = now
            self._unfinished -= 1
        wake = dl.next_wakeup(now)
        if wake is None:
            agent.poll_at = None
            return
        wake = max(wake, now)
        if agent.poll_at is not None and now <= agent.poll_at <= wake:
            return  # the poll already queued comes first
        agent.poll_token += 1
        agent.poll_at = wake
        self._queue.push(wake, self._poll, agent, agent.poll_token)

    def _poll(self, agent: _Agent, token: int) -> None:
        if token != agent.poll_token or agent.dl is None:
            return
        agent.poll_at = None
        self._act(agent, agent.dl.poll(self._queue.now))

    def _bitfields(self, agent: _Agent, peer_ids: list[str]) -> None:
        assert agent.dl is not None
        now = self._queue.now
        by_id = self._by_id
        if self.config.peer_hints:
            me = agent.info.peer_id
            for p in peer_ids:
                server = by_id[p]
                dl = server.dl
                if dl is not None and not dl.done and me not in server.known and self._learn(server, me):
                    self._act(server, dl.handle(PeerSeen(agent.info), now))
        events: list[Event] = [
            BitfieldUpdate(p, self._snapshot(by_id[p]), self._pulling(by_id[p])) for p in peer_ids
        ]
        self._act(agent, agent.dl.handle_all(events, now))

    @staticmethod
    def _pulling(peer: _Agent) -> frozenset[int]:
        """What the peer is fetching from the origin (the real agent's pulling header)."""
        return frozenset(i for i, src in peer.requests if src is None)

    def _snapshot(self, peer: _Agent) -> Bitfield:
        if peer.adversary:
            return self._full
        if peer.dl is None:
            return self._empty
        have = peer.dl.have
        if peer.snap is None or peer.snap_count != len(have):
            peer.snap = Bitfield.decode(have.encode(), have.n)
            peer.snap_count = len(have)
        return peer.snap

    def _send(self, agent: _Agent, index: int, peer_id: str | None) -> None:
        src = None if peer_id is None else self._by_id[peer_id]
        request = _Request(agent, index, src, self._queue.now)
        agent.requests[(index, peer_id)] = request
        self._queue.push(self._queue.now + self.config.latency, self._serve, request)

    def _cancel(self, agent: _Agent, index: int, peer_id: str | None) -> None:
        request = agent.requests.pop((index, peer_id), None)
        if request is None:
            return
        request.cancelled = True
        src = request.src
        if src is not None and request in src.upload_waiting:  # accepted, not started: nothing sent
            src.upload_waiting.remove(request)
            src.uploads -= 1
            return
        flow = request.flow
        if flow is not None and flow.token != -1:  # still running
            sent = self._net.cancel(flow)
            self.bytes_by_source["cancelled"] += sent
            if src is None:
                self.origin_sent += sent
            else:
                src.uploads -= 1
                if src.upload_active is request:
                    self._next_upload(src)

    # --- servers ------------------------------------------------------------------------------------

    def _serve(self, request: _Request) -> None:
        if request.cancelled:
            return
        size = self.chunks[request.index].length
        dst = request.agent.host
        src = request.src
        if src is None:
            request.flow = self._net.start(self._origin, dst, size, request, self._sent)
            return
        if not src.adversary and (src.dl is None or request.index not in src.dl.have):
            self._answer(request, "missing", None)
            return
        if src.uploads >= self.config.upload_slots:
            self._answer(request, "busy", self.config.busy_retry_after)
            return
        src.uploads += 1
        if not self.config.serial_uploads:
            request.flow = self._net.start(src.host, dst, size, request, self._sent)
        elif src.upload_active is None:
            src.upload_active = request
            request.flow = self._net.start(src.host, dst, size, request, self._sent)
        else:
            src.upload_waiting.append(request)

    def _next_upload(self, src: _Agent) -> None:
        """The upload being sent ended: send the next one waiting, if any."""
        src.upload_active = None
        if src.upload_waiting:
            request = src.upload_active = src.upload_waiting.pop(0)
            size = self.chunks[request.index].length
            request.flow = self._net.start(src.host, request.agent.host, size, request, self._sent)

    def _answer(self, request: _Request, kind: FailureKind, retry_after: float | None) -> None:
        self._queue.push(self._queue.now + self.config.latency, self._failed, request, kind, retry_after)

    def _sent(self, flow: Flow) -> None:
        request: _Request = flow.payload
        src = request.src
        if src is None:
            self.origin_sent += flow.size
        else:
            src.uploads -= 1
            if src.upload_active is request:
                self._next_upload(src)
        self._queue.push(self._queue.now + self.config.latency, self._arrived, request)

    def _arrived(self, request: _Request) -> None:
        size = self.chunks[request.index].length
        if request.cancelled:
            self.bytes_by_source["cancelled"] += size
            return
        agent = request.agent
        assert agent.dl is not None
        agent.requests.pop((request.index, request.peer_id), None)
        now = self._queue.now
        event: Event
        if request.src is not None and request.src.adversary:
            self.bytes_by_source["corrupt"] += size
            event = ChunkFailed(request.index, request.peer_id, "corrupt")
        else:
            self.bytes_by_source["origin" if request.src is None else "peer"] += size
            event = ChunkArrived(request.index, request.peer_id, size, now - request.sent)
        self._act(agent, agent.dl.handle(event, now))

    def _failed(self, request: _Request, kind: FailureKind, retry_after: float | None) -> None:
        if request.cancelled:
            return
        agent = request.agent
        assert agent.dl is not None
        agent.requests.pop((request.index, request.peer_id), None)
        now = self._queue.now
        self._act(agent, agent.dl.handle(ChunkFailed(request.index, request.peer_id, kind, retry_after), now))


def simulate(config: SimConfig) -> SimResult:
    """Run one simulation."""
    return Simulator(config).run()

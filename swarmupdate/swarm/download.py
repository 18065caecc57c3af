"""The download state machine of one release on one agent. Pure: takes ``now``, returns actions.

The I/O layer feeds events (:mod:`swarmupdate.swarm.events`) into :meth:`Download.handle`, calls
:meth:`Download.poll` at :meth:`Download.next_wakeup`, and carries out the actions both return. The
simulator (:mod:`swarmupdate.sim`) drives the very same class.

Each step, after applying the event:

1. Origin. A chunk no live peer holds may go to the origin: at once when this agent owns it (it is the
   puller of the swarm that ranks first for the chunk, :mod:`swarmupdate.swarm.policy`) or when it is
   alone in its swarm; otherwise after the wait of its rank (:func:`~swarmupdate.swarm.policy.fallback_wait`,
   at least ``origin_fallback_delay``). The owners of the chunks pull them in one order shared by the
   whole fleet (:func:`~swarmupdate.swarm.policy.origin_order`), with a few chunks on their way from the
   origin at once (see ``_origin_pipeline``), and nobody pulls before ``origin_start_delay``. A fallback wait
   counts from when the chunk's turn in that order came and it was held by no live peer: making
   progress on other chunks does not postpone a chunk nobody has, and losing the only holder restarts
   the clock instead of sending everyone to the origin at once.
2. Peers. Rarest first over the live peers' bitfields (ties in a random order fixed per download), each
   chunk from the best-scored peer that holds it and has a free slot and is not backing off.
3. Endgame. When every missing chunk is in flight, chunks with fewer than ``endgame_duplicates`` copies in
   flight are also asked of other peers; the first copy to arrive cancels the rest.

All requests respect ``per_peer_inflight``, ``origin_max_inflight`` and ``max_inflight``. Requests to
peers also stay within a window that each 429 shrinks (down to ``per_peer_inflight``) and each delivery
grows back (up to ``max_inflight``): when the swarm's upload slots are full, asking more peers at once
only draws more 429s.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Sequence

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.config import DownloadConfig
from swarmupdate.swarm.events import (
    Action,
    BanPeer,
    BitfieldUpdate,
    CancelChunk,
    ChunkArrived,
    ChunkFailed,
    Event,
    FailureKind,
    PeerGone,
    PeerSeen,
    RequestBitfield,
    RequestChunk,
    SwarmSize,
)
from swarmupdate.swarm.peers import BAN_AFTER_STRIKES, PeerState, PeerTable
from swarmupdate.swarm.picker import Availability, MaskCodec, random_priorities, rarest_first
from swarmupdate.swarm.policy import chunk_owner, fallback_wait, origin_order, peer_chunk_hash, pullers

__all__ = [
    "Action",
    "BanPeer",
    "BitfieldUpdate",
    "CancelChunk",
    "ChunkArrived",
    "ChunkFailed",
    "Download",
    "DownloadConfig",
    "Event",
    "FailureKind",
    "PeerGone",
    "PeerSeen",
    "RequestBitfield",
    "RequestChunk",
    "SwarmSize",
]

#: longest pause after repeated origin failures, seconds
MAX_ORIGIN_BACKOFF = 30.0
#: the window of peer requests shrinks by this factor at each 429 (down to per_peer_inflight) and grows
#: by this much at each delivery (up to max_inflight)
WINDOW_SHRINK = 0.9
WINDOW_GROWTH = 1.0
#: the remembered origin chunk time decays by this factor at each origin arrival (see _origin_busy_until)
ORIGIN_TIME_DECAY = 0.8
#: in a swarm of N agents, its origin pullers are asked for their bitfield in a share PULLER_POLL_VIEW / N
#: of the rounds (about as often as any peer in views of that many peers)
PULLER_POLL_VIEW = 200
#: a chunk a live peer says it is pulling from the origin is pulled here only after this many fallback delays
CLAIM_PATIENCE = 6.0
#: the longest a dropped peer is kept out before a PeerSeen may bring it back (see Download._rejoin_wait)
MAX_REJOIN_WAIT = 60.0
#: a 429's wait is stretched by up to this fraction at random
BUSY_JITTER = 0.5
#: bitfield rounds come every interval, give or take half this fraction
ROUND_JITTER = 0.2


_DEFAULT_CONFIG = DownloadConfig()


class Download:
    """Downloads one release: decides what to fetch from whom, never fetches anything itself."""

    def __init__(
        self,
        chunks: Sequence[ChunkRef],
        have: Iterable[int],
        self_id: str,
        config: DownloadConfig = _DEFAULT_CONFIG,
        *,
        now: float,
        rng: random.Random | None = None,
        peers: Iterable[PeerInfo] = (),
        swarm_size: int = 0,
        salt: str = "",
    ) -> None:
        """Start a download of ``chunks``, already holding the indexes in ``have``.

        ``salt`` is the swarm id: it picks the swarm's origin pullers (the same on every agent).
        ``peers`` and ``swarm_size`` seed the peer table as PeerSeen and SwarmSize events would; the
        first :meth:`poll` (due at once) asks them for their bitfields. Give what the tracker said
        here, or through :meth:`handle_all`, before the first poll: a download that knows no peer at
        all sends its first requests to the origin.
        """
        self._chunks = tuple(chunks)
        self._self_id = self_id
        self._salt = salt
        self._config = config
        rng = rng if rng is not None else random.Random(self_id)
        n = len(self._chunks)
        self._codec = codec = MaskCodec(n)
        self._rng = rng
        self._prio = random_priorities(n, rng)
        self._peers = PeerTable(config.site, rng)
        self._avail = Availability(codec, now)

        # Chunks with the same digest are one download: the store holds them once.
        by_sha: dict[str, list[int]] = {}
        for i, ref in enumerate(self._chunks):
            by_sha.setdefault(ref.sha256, []).append(i)
        self._same = {i: idxs for idxs in by_sha.values() if len(idxs) > 1 for i in idxs}

        self._have = Bitfield(n)
        self._missing = codec.full
        for i in codec.indexes(codec.mask(have)):
            self._set_have(i)

        # chunk -> {source: time requested}; source None = origin
        self._requests: dict[int, dict[str | None, float]] = {}
        self._inflight_mask = 0
        #: the chunks requested from the origin, in flight
        self._origin_mask = 0
        self._inflight = 0
        self._origin_inflight = 0
        #: moving average of the time one chunk takes to arrive (0 until the first arrives)
        self._chunk_time = 0.0
        #: the longest an origin chunk took to arrive lately (0 until one arrives): how busy the origin is
        self._origin_time = 0.0
        self._last_origin_done = -math.inf
        #: the origin's rate in bytes/s as this agent measured it (0 until one of its origin chunks
        #: arrived), and per origin request in flight how many chunks were coming from the origin
        #: when it was sent, itself included (the origin shares its uplink among them)
        self._origin_rate = 0.0
        self._origin_sharing: dict[int, int] = {}
        self._mean_chunk = max(1.0, sum(c.length for c in self._chunks) / max(n, 1))
        self._origin_backoff_until = -math.inf
        self._origin_failures = 0
        # How many requests to peers may be in flight. When the swarm's upload slots are full (429s),
        # asking more peers at once only draws more 429s: back off like TCP's congestion window.
        self._window = float(config.max_inflight)

        self._swarm_size = max(swarm_size, 0)
        self._view_version = 0
        self._pullers_cache: tuple[int, list[str]] | None = None
        #: (swarm, peer) hash of every peer seen, and of this agent (see swarm.policy.pullers)
        self._swarm_rank: dict[str, float] = {}
        #: chunk owners among a list of pullers (that very list object)
        self._owners: tuple[list[str] | None, dict[int, str | None]] = (None, {})
        self._own_hash: list[float | None] = [None] * n
        self._wait_cache: dict[int, tuple[int, float]] = {}
        #: no origin pull before this: time to learn who else is pulling (see _origin_pipeline)
        self._origin_start = now + config.origin_start_delay
        #: every agent's order of origin pulls (see _origin_pipeline)
        self._origin_order = [0] * n
        for pos, i in enumerate(origin_order(self._chunks)):
            self._origin_order[i] = pos
        self._owned_cache: tuple[int, int] | None = None
        #: when each chunk's turn in the origin pipeline came (see _origin_pipeline)
        self._origin_turn: dict[int, float] = {}
        #: bumped whenever a peer's ``pulling`` changes
        self._claims_version = 0
        self._origin_memo: tuple[int, int, float, int, int] | None = None
        self._origin_memo_at = math.inf

        self._next_round = now + config.bitfield_interval
        self._wakeup: float | None = now  # poll once at the start
        for info in peers:
            if info.peer_id != self_id and self._peers.seen(info):
                state = self._peers.get(info.peer_id)
                assert state is not None
                state.seen_at = now
                self._next_round = now  # the first poll asks them for bitfields

    # --- read-only state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._missing == 0

    @property
    def have(self) -> Bitfield:
        """The chunks stored so far (the live object: read it, do not change it)."""
        return self._have

    @property
    def inflight(self) -> int:
        """Requests in flight, to peers and origin."""
        return self._inflight

    @property
    def origin_inflight(self) -> int:
        return self._origin_inflight

    @property
    def peers(self) -> PeerTable:
        """The peer table (read-only use: counts, scores, bans)."""
        return self._peers

    @property
    def missing_count(self) -> int:
        return self._codec.n - len(self._have)

    @property
    def swarm_estimate(self) -> int:
        """N in the origin-first threshold: the tracker's count, or the known live peers + 1 if larger."""
        return max(self._swarm_size, self._peers.active_count + 1, 1)

    @property
    def in_endgame(self) -> bool:
        return self._missing != 0 and not self._missing & ~self._inflight_mask

    def requested_from(self, index: int) -> frozenset[str | None]:
        """Where chunk ``index`` is in flight from (None = origin)."""
        return frozenset(self._requests.get(index, ()))

    # --- driving ------------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event and return what to do now."""
        actions: list[Action] = []
        self._apply(event, now, actions)
        self._step(now, actions)
        return actions

    def handle_all(self, events: Iterable[Event], now: float) -> list[Action]:
        """Apply several events that arrived together (a tracker answer), then decide once.

        Deciding once matters at the start: an agent designated for a chunk pulls it at once only if it
        knows no live peer designated before it, which it can only tell after seeing all of them.
        """
        actions: list[Action] = []
        for event in events:
            self._apply(event, now, actions)
        self._step(now, actions)
        return actions

    def poll(self, now: float) -> list[Action]:
        """Time-driven work: bitfield refresh, origin fallback, retries after a backoff."""
        actions: list[Action] = []
        self._step(now, actions)
        return actions

    def next_wakeup(self, now: float) -> float | None:
        """When :meth:`poll` next has something to do (may be <= now: poll at once); None when done."""
        if self.done:
            return None
        if self._wakeup is None:
            return self._next_round
        return min(self._wakeup, self._next_round)

    # --- events -------------------------------------------------------------------------------------

    def _apply(self, event: Event, now: float, actions: list[Action]) -> None:
        if isinstance(event, PeerSeen):
            self._on_seen(event, now, actions)
        elif isinstance(event, BitfieldUpdate):
            self._on_bitfield(event, now)
        elif isinstance(event, ChunkArrived):
            self._on_arrived(event, now, actions)
        elif isinstance(event, ChunkFailed):
            self._on_failed(event, now, actions)
        elif isinstance(event, PeerGone):  # it left (not a failure): it may come back at once
            self._drop(event.peer_id, now, actions, failed=False)
        elif isinstance(event, SwarmSize):
            if max(event.n, 0) != self._swarm_size:
                self._swarm_size = max(event.n, 0)
                self._view_version += 1
        else:  # pragma: no cover - exhaustive over Event
            raise TypeError(f"not an event: {event!r}")

    def _on_seen(self, event: PeerSeen, now: float, actions: list[Action]) -> None:
        peer_id = event.peer.peer_id
        if peer_id == self._self_id:
            return
        known = self._peers.get(peer_id)
        if (
            known is not None
            and known.status == "dropped"
            and now < known.dropped_at + self._rejoin_wait(known)
        ):
            return  # dropped not long ago: a tracker or a liar's peer list naming it is no news
        if self._peers.seen(event.peer):
            self._view_version += 1
            state = self._peers.get(peer_id)
            assert state is not None
            state.seen_at = now
            if not self.done:
                state.bitfield_asked = now
                actions.append(RequestBitfield(peer_id))

    def _on_bitfield(self, event: BitfieldUpdate, now: float) -> None:
        state = self._peers.get(event.peer_id)
        if state is None or state.status != "live":
            return
        new = self._codec.from_bitfield(event.bitfield)
        old = state.mask
        if new != old:
            self._avail.add(new & ~old)
            self._avail.remove(old & ~new, now)
            state.mask = new
        if not state.known or state.in_swarm != event.in_swarm:
            state.known = True
            state.in_swarm = event.in_swarm
            self._view_version += 1  # origin decisions waiting for this answer may proceed
        state.complete = new == self._codec.full
        pulling = self._codec.mask(i for i in event.pulling if 0 <= i < self._codec.n) & ~new
        if pulling != state.pulling:
            state.pulling = pulling
            self._claims_version += 1

    def _on_arrived(self, event: ChunkArrived, now: float, actions: list[Action]) -> None:
        index, source = event.index, event.peer_id
        self._check_index(index)
        sharing = self._origin_sharing.get(index, 1) if source is None else 1
        if self._forget(index, source) is not None:
            # typical time of one chunk, for the endgame's patience
            self._chunk_time = (
                0.8 * self._chunk_time + 0.2 * event.seconds if self._chunk_time else event.seconds
            )
            if source is None:
                self._origin_failures = 0
                self._origin_time = max(event.seconds, ORIGIN_TIME_DECAY * self._origin_time)
                self._last_origin_done = now
                # the origin sent this chunk while sharing its uplink among about that many
                sample = sharing * event.nbytes / max(event.seconds, 1e-6)
                self._origin_rate = 0.5 * (self._origin_rate + sample) if self._origin_rate else sample
            else:
                state = self._peers.get(source)
                if state is not None and state.status == "live":
                    self._peers.record_success(state, event.nbytes, event.seconds)
                self._window = min(float(self._config.max_inflight), self._window + WINDOW_GROWTH)
        if not self._missing & self._codec.bit[index]:
            return
        for j in self._same.get(index, (index,)):
            self._set_have(j)
            for other in list(self._requests.get(j, ())):
                self._forget(j, other)
                actions.append(CancelChunk(j, other))

    def _on_failed(self, event: ChunkFailed, now: float, actions: list[Action]) -> None:
        index, source, kind = event.index, event.peer_id, event.kind
        self._check_index(index)
        was_requested = self._forget(index, source) is not None
        cfg = self._config
        if source is None:
            if was_requested:
                self._origin_failures += 1
                if kind == "busy":
                    wait = event.retry_after if event.retry_after is not None else cfg.busy_backoff
                else:
                    wait = min(cfg.busy_backoff * 2 ** (self._origin_failures - 1), MAX_ORIGIN_BACKOFF)
                self._origin_backoff_until = max(self._origin_backoff_until, now + wait)
            return
        if kind == "corrupt":  # even for a cancelled request: those bytes were forged all the same
            self._ban(source, f"chunk {index} failed verification", now, actions)
            return
        state = self._peers.get(source)
        if not was_requested or state is None or state.status != "live":
            return  # a stale answer (cancelled request, dropped peer): nothing to learn
        if kind == "missing":
            bit = self._codec.bit[index]
            denied = bool(state.mask & bit)  # its bitfield claimed the chunk: a strike
            if denied:
                state.mask &= ~bit
                state.complete = False
                self._avail.remove(bit, now)
                state.strikes += 1
            self._peers.record_missing(state)
            if denied and not state.delivered:
                # it never delivered, and denies what its bitfield claims: it may be lying to keep
                # chunks from the origin fallback; drop it (and on the last strike, ban it)
                self._drop(source, now, actions)
        elif kind == "busy":
            wait = event.retry_after if event.retry_after is not None else cfg.busy_backoff
            # Never sooner than asked, and spread out so that the peers turned away together do not
            # all come back in the same instant.
            if self._peers.record_busy(state, now, wait * (1.0 + BUSY_JITTER * self._rng.random())):
                floor = float(min(cfg.per_peer_inflight, cfg.max_inflight))
                self._window = max(floor, self._window * WINDOW_SHRINK)
        elif kind == "timeout":
            state.strikes += 1
            # a peer that never delivered gets no second wait: its bitfield may be a lie that keeps
            # these chunks from the origin fallback
            if (
                self._peers.record_timeout(state, now, cfg.busy_backoff, cfg.drop_after_timeouts)
                or not state.delivered
            ):
                self._drop(source, now, actions)
        elif self._peers.record_error(state, now, cfg.busy_backoff, cfg.drop_after_errors):
            self._drop(source, now, actions)

    def _rejoin_wait(self, state: PeerState) -> float:
        """How long a dropped peer stays dropped whoever names it: doubling with each drop (one that
        never answers, a ghost in a liar's peer list, costs less and less), at most ``MAX_REJOIN_WAIT``."""
        return min(self._config.busy_backoff * 2.0 ** min(state.drops, 16), MAX_REJOIN_WAIT)

    def _drop(self, peer_id: str, now: float, actions: list[Action], *, failed: bool = True) -> None:
        state = self._peers.drop(peer_id, failed=failed, now=now)
        if state is not None:
            self._release_peer(state, now, actions)
            if state.strikes >= BAN_AFTER_STRIKES and not state.delivered:
                reason = f"{state.strikes} timeouts or denied chunks, and not one chunk delivered"
                self._ban(peer_id, reason, now, actions)

    def _ban(self, peer_id: str, reason: str, now: float, actions: list[Action]) -> None:
        state = self._peers.get(peer_id)
        if state is not None and state.status == "live":
            self._peers.drop(peer_id)
            self._release_peer(state, now, actions)
        if self._peers.ban(peer_id, reason):
            self._view_version += 1
            actions.append(BanPeer(peer_id, reason))

    def _release_peer(self, state: PeerState, now: float, actions: list[Action]) -> None:
        """A peer left the live set: forget what it holds and cancel what was asked of it."""
        self._view_version += 1
        self._avail.remove(state.mask, now)
        state.mask = 0
        state.known = state.complete = False
        if state.pulling:
            state.pulling = 0
            self._claims_version += 1
        for index in sorted(state.inflight):
            self._forget(index, state.peer_id)
            actions.append(CancelChunk(index, state.peer_id))

    # --- deciding -----------------------------------------------------------------------------------

    def _step(self, now: float, actions: list[Action]) -> None:
        if self.done:
            self._wakeup = None
            return
        if now >= self._next_round:
            self._bitfield_round(now, actions)
        self._schedule(now, actions)

    def _bitfield_round(self, now: float, actions: list[Action]) -> None:
        interval = self._config.bitfield_interval
        # Every agent of the swarm knows its origin pullers (the tracker hands them to everyone): in a
        # swarm larger than one agent's view, asking them every round would pile the whole swarm's
        # polls on 16 agents. Ask them as often as an ordinary peer gets asked.
        share = min(1.0, PULLER_POLL_VIEW / self.swarm_estimate)
        pullers = self._pullers() if share < 1.0 else ()
        for state in self._peers.live():
            # a complete peer will not change; one asked less than half an interval ago is answering
            if not state.complete and now - state.bitfield_asked >= interval / 2:
                if state.peer_id in pullers and state.known and self._rng.random() >= share:
                    continue
                state.bitfield_asked = now
                actions.append(RequestBitfield(state.peer_id))
        # spread rounds a little so that agents started together do not poll in lockstep
        self._next_round = now + interval * (1.0 + ROUND_JITTER * (self._rng.random() - 0.5))

    def _schedule(self, now: float, actions: list[Action]) -> None:
        cfg = self._config
        wake = math.inf
        free = cfg.max_inflight - self._inflight
        if free > 0:
            want = self._missing & ~self._inflight_mask
            if want and self._origin_inflight < cfg.origin_max_inflight:
                free, want, wake = self._schedule_origin(now, free, want, actions)
            peer_room = int(self._window) - (self._inflight - self._origin_inflight)
            if want and free > 0 and peer_room > 0:
                used = min(free, peer_room)
                left, wake = self._schedule_peers(now, used, want, wake, actions)
                free -= used - left
                peer_room -= used - left
            if free > 0 and peer_room > 0 and self.in_endgame:
                wake = self._schedule_endgame(now, min(free, peer_room), wake, actions)
        self._wakeup = None if wake == math.inf else wake

    def _schedule_origin(
        self, now: float, free: int, want: int, actions: list[Action]
    ) -> tuple[int, int, float]:
        """Ask the origin for chunks no live peer holds, when their wait is over."""
        lonely = self._peers.active_count == 0 and self._swarm_size <= 1
        candidates = want if lonely else want & ~self._avail.visible
        if not candidates:
            return free, want, math.inf
        if now < self._origin_backoff_until:
            return free, want, self._origin_backoff_until
        if now < self._origin_start:
            # even alone: agents started together each see an empty swarm at first
            return free, want, self._origin_start
        busy = -math.inf if lonely else self._origin_busy_until()
        # Nothing to do before the earliest wait ends, unless the candidates, the view or how busy
        # the origin is changed. (A chunk's clock only ever restarts later, so a stale memo can only
        # wake us too early.)
        # (the requests in flight change what the origin pipeline holds up: when one of several arrives,
        # the candidates, the view and the busy time may all stay the same)
        memo = (candidates, self._view_version, busy, self._claims_version, self._origin_mask)
        if memo == self._origin_memo and now < self._origin_memo_at:
            return free, want, self._origin_memo_at
        wake = math.inf
        ready: list[tuple[float, int]] = []
        unseen_since = self._avail.unseen_since
        settle = -math.inf if lonely else self._settle_until(now)
        claimed = 0 if lonely else self._claimed()
        ahead = None if lonely else self._origin_pipeline(claimed)
        window = self._origin_window()
        for i in self._codec.indexes(candidates):
            if lonely:
                at = now
            else:
                wait = self._origin_wait(i)
                if claimed & self._codec.bit[i]:
                    # A live peer says it is fetching this one from the origin: leave it to that one. On a
                    # slow origin that takes long, and a second request would only slow both; a peer that
                    # claims and never delivers delays the chunk by CLAIM_PATIENCE fallback delays at most.
                    wait = max(wait, CLAIM_PATIENCE * self._config.origin_fallback_delay)
                at = max(unseen_since[i] + wait, settle, busy if wait > 0 else -math.inf)
                if ahead is not None and ahead(i) >= window:
                    continue  # the fleet's origin pipeline is full: an arrival or a view change reopens it
                # a fallback waits from when the chunk's turn came, not from the start
                turn = self._origin_turn.setdefault(i, now)
                at = max(at, turn + wait)
            if at <= now:
                ready.append((at, i))
            elif at < wake:
                wake = at
        if not ready:
            self._origin_memo, self._origin_memo_at = memo, wake
            return free, want, wake
        order = self._origin_order
        ready.sort(key=lambda e: (e[0], order[e[1]]))
        room = self._config.origin_max_inflight - self._origin_inflight
        for _, i in ready:
            if room <= 0 or free <= 0:
                break
            self._request(i, None, now, actions)
            want &= ~self._codec.bit[i]
            room -= 1
            free -= 1
        return free, want, wake

    def _schedule_peers(
        self, now: float, free: int, want: int, wake: float, actions: list[Action]
    ) -> tuple[int, float]:
        """Rarest first over the live peers that have a free slot."""
        if not want & self._avail.visible:
            return free, wake  # no live peer holds anything wanted (nor do those backing off)
        cap = self._config.per_peer_inflight
        live = self._peers.live()
        # (PeerState.slots inlined: this is the hottest line of a simulated fleet)
        ready = [
            p
            for p in live
            if p.backoff_until <= now
            and p.mask & want
            and len(p.inflight) < ((cap if p.limit >= cap else int(p.limit)) if p.delivered else 1)
        ]
        if ready:
            union = 0
            for p in ready:
                union |= p.mask
            ranked = self._peers.ranked(ready)
            bit = self._codec.bit
            for i in rarest_first(self._codec, want & union, self._avail.count, self._prio):
                b = bit[i]
                for p in ranked:
                    if p.mask & b:
                        self._request(i, p.peer_id, now, actions)
                        want &= ~b
                        free -= 1
                        if len(p.inflight) >= p.slots(cap):
                            ranked.remove(p)
                        break
                if free <= 0 or not ranked:
                    break
        if free > 0 and want:
            # Chunks still wanted may be held by peers backing off: come back when the first is free.
            for p in live:
                if p.backoff_until > now and p.backoff_until < wake and p.mask & want:
                    wake = p.backoff_until
        return free, wake

    def _schedule_endgame(self, now: float, free: int, wake: float, actions: list[Action]) -> float:
        """Every missing chunk is in flight: ask other peers for the least-covered ones too."""
        cfg = self._config
        patience = max(cfg.endgame_min_wait, cfg.endgame_patience * self._chunk_time)
        candidates = []
        for i, srcs in self._requests.items():
            if len(srcs) >= cfg.endgame_duplicates or not self._missing & self._codec.bit[i]:
                continue
            since = min(srcs.values())
            due = since + patience
            # compare with the very time we would wake at: ``now - since < patience`` can hold while
            # ``since + patience <= now`` in floating point, and the caller would poll again at once
            if now < due:
                wake = min(wake, due)  # not slow yet: look again when it would be
                continue
            candidates.append((len(srcs), since, i))
        if not candidates:
            return wake
        need = 0
        for _, _, i in candidates:
            need |= self._codec.bit[i]
        ready: list[PeerState] = []
        for p in self._peers.live():
            if not p.mask & need or len(p.inflight) >= p.slots(cfg.per_peer_inflight):
                continue
            if p.backoff_until > now:
                wake = min(wake, p.backoff_until)
                continue
            ready.append(p)
        if not ready:
            return wake
        ranked = self._peers.ranked(ready)
        candidates.sort()
        for _, _, i in candidates:
            b = self._codec.bit[i]
            srcs = self._requests[i]
            for p in list(ranked):
                if len(srcs) >= cfg.endgame_duplicates or free <= 0:
                    break
                if p.mask & b and p.peer_id not in srcs:
                    self._request(i, p.peer_id, now, actions)
                    free -= 1
                    if len(p.inflight) >= p.slots(cfg.per_peer_inflight):
                        ranked.remove(p)
            if free <= 0 or not ranked:
                break
        return wake

    # --- origin policy ------------------------------------------------------------------------------

    def _origin_wait(self, i: int) -> float:
        """How long chunk ``i`` must have been held by no live peer before this agent asks the origin:
        0 when this agent owns it (see :mod:`swarmupdate.swarm.policy`), else its fallback wait."""
        cached = self._wait_cache.get(i)
        if cached is not None and cached[0] == self._view_version:
            return cached[1]
        cfg = self._config
        sha = self._chunks[i].sha256
        group = self._pullers()
        owners = self._owners
        if owners[0] is not group:
            owners = self._owners = (group, {})
        owner = owners[1].get(i, "")
        if owner == "":
            owner = owners[1][i] = chunk_owner(sha, group)
        if owner == self._self_id:
            wait = 0.0
        else:
            own = self._own_hash[i]
            if own is None:
                own = self._own_hash[i] = peer_chunk_hash(sha, self._self_id)
            rank = own * self.swarm_estimate / cfg.origin_pullers
            wait = fallback_wait(rank, cfg.origin_fallback_delay)
        self._wait_cache[i] = (self._view_version, wait)
        return wait

    def _pullers(self) -> list[str]:
        """The swarm's origin pullers as far as this agent knows: the lowest swarm hashes among
        itself and the live peers that have answered a bitfield of this swarm. A peer that never
        answered (a ghost that a liar's peer list points at, or one gone), or answered that it does not
        know the swarm (any web server answers 404, the origin too), could not pull anything: counting
        it would leave its chunks to the fallback wait. Until peers just seen answer, origin requests wait
        anyway (``_settle_until``)."""
        cached = self._pullers_cache
        if cached is not None and cached[0] == self._view_version:
            return cached[1]
        ids = [p.peer_id for p in self._peers.live() if p.known and p.in_swarm]
        ids.append(self._self_id)
        found = pullers(self._salt, ids, self._config.origin_puller_count, self._swarm_rank)
        if self._pullers_cache is not None and self._pullers_cache[1] == found:
            found = self._pullers_cache[1]  # the same object: the chunk owners stay cached
        self._pullers_cache = (self._view_version, found)
        return found

    def _claimed(self) -> int:
        """The chunks live peers say they are fetching from the origin."""
        mask = 0
        for p in self._peers.live():
            mask |= p.pulling
        return mask

    def _origin_pipeline(self, claimed: int) -> Callable[[int], int] | None:
        """How many chunks ahead of a chunk are on their way from the origin to the swarm.

        Every agent orders the chunks the same way (by digest) and pulls the ones it owns in that
        order; a chunk "ahead" of chunk ``i`` comes before it, no live peer holds it yet, and this
        agent or a known live peer owns it or says it is fetching it. The origin shares its uplink
        among every request in flight, so when the whole fleet asked at once, every chunk would
        arrive at the very end and nothing could be passed on before: keeping only a few chunks
        ahead (:meth:`_origin_window`) makes the origin send them one after another, each passed on
        while the next one comes.
        """
        on_their_way = self._missing & ~self._avail.visible & (self._owned_by_peers() | claimed)
        blocking = on_their_way | self._origin_mask
        if blocking.bit_count() < self._origin_window():
            return None
        order = self._origin_order
        ahead = sorted(order[j] for j in self._codec.indexes(blocking))
        return lambda i: bisect.bisect_left(ahead, order[i])

    def _origin_window(self) -> int:
        """How many chunks may be on their way from the origin ahead of a designated pull.

        Agents learn that a chunk reached the swarm from the next bitfield poll, so the window must
        cover what the origin sends meanwhile, or it idles; every chunk more in the window is one more
        sharing the origin's uplink, and each of them reaches the swarm that much later. A slow origin
        (20 Mbit/s: a 1 MiB chunk takes 0.4 s) wants ``origin_window`` (4), a fast one (1 Gbit/s: 8 ms)
        what it sends in ``origin_lead`` seconds: once this agent has measured the origin's rate, the
        window grows to that, up to ``origin_window_max``.
        """
        cfg = self._config
        if cfg.origin_lead <= 0 or not self._origin_rate:
            return cfg.origin_window
        fits = int(self._origin_rate * cfg.origin_lead / self._mean_chunk)
        return max(cfg.origin_window, min(cfg.origin_window_max, fits))

    def _owned_by_peers(self) -> int:
        """The missing chunks that a known live peer, not this agent, pulls from the origin."""
        cached = self._owned_cache
        if cached is not None and cached[0] == self._view_version:
            return cached[1]
        mask = 0
        bit = self._codec.bit
        for i in self._codec.indexes(self._missing):
            if self._origin_wait(i) > 0:
                mask |= bit[i]
        self._owned_cache = (self._view_version, mask)
        return mask

    def _origin_busy_until(self) -> float:
        """Until when fallback pulls wait because the origin is slow for everyone.

        The origin shares its uplink among every agent pulling from it, so when this agent's own
        origin chunks take longer than the fallback delay, so do those of the agents designated for
        the chunks it misses: pulling them too would only slow everyone down. A fallback pull thus
        waits while an origin request of this agent is in flight, and for twice the time its recent
        origin chunks took. Designated pulls never wait for this.
        """
        if self._origin_inflight:
            return math.inf  # an arrival or failure of that request comes back through handle()
        return self._last_origin_done + 2.0 * self._origin_time

    def _settle_until(self, now: float) -> float:
        """Until when to hold origin requests for the bitfields of peers just seen.

        Which chunks no peer holds is only known once the peers have answered: a late joiner would
        otherwise pull from the origin what its peers already have, and an agent fed the tracker's
        answer one event at a time would decide before it knows the whole list. A peer that does not
        answer within a bitfield interval is not waited for.
        """
        interval = self._config.bitfield_interval
        until = -math.inf
        for p in self._peers.live():
            # a peer that was dropped before (gone, or never answering) holds nothing up again
            if p.drops:
                continue
            if not p.known and now < p.seen_at + interval and p.seen_at + interval > until:
                until = p.seen_at + interval
        return until

    # --- bookkeeping --------------------------------------------------------------------------------

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._codec.n:
            raise IndexError(f"chunk index {index} out of range for {self._codec.n} chunks")

    def _set_have(self, i: int) -> None:
        bit = self._codec.bit[i]
        if self._missing & bit:
            self._missing &= ~bit
            self._have.add(i)

    def _request(self, index: int, source: str | None, now: float, actions: list[Action]) -> None:
        self._requests.setdefault(index, {})[source] = now
        self._inflight_mask |= self._codec.bit[index]
        self._inflight += 1
        if source is None:
            self._origin_inflight += 1
            self._origin_mask |= self._codec.bit[index]
            self._origin_sharing[index] = (self._claimed() | self._origin_mask).bit_count()
        else:
            state = self._peers.get(source)
            assert state is not None
            state.inflight.add(index)
        actions.append(RequestChunk(index, source))

    def _forget(self, index: int, source: str | None) -> float | None:
        """Remove one request from the books; returns when it was sent, or None if it was not in flight."""
        srcs = self._requests.get(index)
        if srcs is None or source not in srcs:
            return None
        sent = srcs.pop(source)
        if not srcs:
            del self._requests[index]
            self._inflight_mask &= ~self._codec.bit[index]
        self._inflight -= 1
        if source is None:
            self._origin_inflight -= 1
            self._origin_mask &= ~self._codec.bit[index]
            self._origin_sharing.pop(index, None)
        else:
            state = self._peers.get(source)
            if state is not None:
                state.inflight.discard(index)
        return sent

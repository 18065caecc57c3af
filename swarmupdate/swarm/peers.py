"""The peer table of one download: what each peer holds, how well it serves, bans. Pure.

A peer is ``live`` (used), ``dropped`` (gone or failing; a later PeerSeen brings it back) or ``banned``
(it sent a chunk that failed verification, or earned ``BAN_AFTER_STRIKES`` strikes without ever
delivering a chunk; never used again, whatever the tracker says). A strike is a timeout, or a 404 for
a chunk its bitfield claimed: what a peer does whose bitfield lies. A peer that is down (connection
refused) or stops mid-chunk gets none: honest peers restart.

Score: an exponentially weighted moving average of measured throughput (bytes/s), times a penalty that
429s and 404s shrink and the next success restores. A timeout counts as a zero-throughput sample.
Peers never measured borrow the typical throughput seen so far, so each gets a fair first try.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from swarmupdate.model import PeerInfo

__all__ = ["PeerState", "PeerStatus", "PeerTable"]

PeerStatus: TypeAlias = Literal["live", "dropped", "banned"]

#: weight of a new throughput sample in the moving average
EWMA_ALPHA = 0.3
#: score multiplier after a 429 and after a 404 for a chunk the bitfield claimed
BUSY_PENALTY = 0.75
MISSING_PENALTY = 0.5
#: a peer with this many strikes that never delivered a verified chunk is banned: a liar whose bitfield
#: claims chunks it does not send (stalls, trickles, 404s) would otherwise come back with every
#: tracker answer and hide those chunks from the origin fallback again
BAN_AFTER_STRIKES = 3
#: a peer's learned ``limit`` grows by this much at each of its deliveries (one more request at once
#: every two deliveries, to find out whether it has room again)
LIMIT_GROWTH = 0.5


@dataclass(slots=True, eq=False)
class PeerState:
    """What one download knows about one peer. Mutated only by PeerTable and Download."""

    info: PeerInfo
    same_site: bool
    tiebreak: float
    status: PeerStatus = "live"
    #: chunks it holds, in the download's mask encoding (see Download); 0 until a bitfield arrives
    mask: int = 0
    #: chunks it said it is fetching from the origin (same encoding)
    pulling: int = 0
    #: a bitfield arrived since the peer was (re)seen
    known: bool = False
    #: its last answer was a bitfield of this swarm (not "unknown swarm"): it may pull from the origin
    in_swarm: bool = False
    #: its last bitfield was complete: no need to ask again
    complete: bool = False
    #: chunk indexes requested from it and not yet answered
    inflight: set[int] = field(default_factory=set)
    #: how many of our requests it takes at once, as learned from a 429 that came while others of ours
    #: were in flight there (its upload slots held our own requests); grows back with its deliveries
    limit: float = math.inf
    throughput: float | None = None
    #: chunks it delivered (and that verified)
    delivered: int = 0
    penalty: float = 1.0
    backoff_until: float = 0.0
    timeouts: int = 0
    errors: int = 0
    #: timeouts and 404s for chunks its bitfield claimed, over its whole history (kept across drops)
    strikes: int = 0
    #: times it was dropped, and when last
    drops: int = 0
    dropped_at: float = -math.inf
    ban_reason: str = ""
    #: when its bitfield was last asked for
    bitfield_asked: float = -math.inf
    #: when it last became live (first seen, or seen again after a drop)
    seen_at: float = -math.inf

    @property
    def peer_id(self) -> str:
        return self.info.peer_id

    def slots(self, cap: int) -> int:
        """Requests it may have in flight: one until it has delivered a chunk, then ``cap`` (or what
        it was seen to take at once, when fewer: see ``limit``).

        A peer that serves garbage or nothing thus ties up one request slot, not ``cap``.
        """
        if not self.delivered:
            return 1
        return cap if self.limit >= cap else int(self.limit)

    def score(self, typical: float) -> float:
        """Expected throughput in bytes/s, after penalties; ``typical`` stands in when never measured."""
        base = typical if self.throughput is None else self.throughput
        return base * self.penalty


class PeerTable:
    """All peers one download has heard of, live or not."""

    def __init__(self, own_site: str, rng: random.Random) -> None:
        self._own_site = own_site
        self._rng = rng
        self._peers: dict[str, PeerState] = {}
        self._live: dict[str, PeerState] = {}
        self._banned = 0
        #: moving average over every peer's samples: the prior for unmeasured peers
        self.typical = 1.0
        self._measured = False

    # --- read-only views ----------------------------------------------------------------------------

    def get(self, peer_id: str) -> PeerState | None:
        return self._peers.get(peer_id)

    def live(self) -> Iterable[PeerState]:
        """Live peers, in the order first seen (a view: do not mutate the table while iterating)."""
        return self._live.values()

    def is_live(self, peer_id: str) -> bool:
        return peer_id in self._live

    @property
    def active_count(self) -> int:
        return len(self._live)

    @property
    def banned_count(self) -> int:
        return self._banned

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerState]:
        return iter(self._peers.values())

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def ranked(self, states: Iterable[PeerState]) -> list[PeerState]:
        """Best first: higher score (in factor-of-two bands), same site first among equals, then random."""
        typical = self.typical

        def key(p: PeerState) -> tuple[float, int, float, float]:
            s = p.score(typical)
            band = math.floor(math.log2(s)) if s > 0 else -math.inf
            return (-band, 0 if p.same_site else 1, -s, p.tiebreak)

        return sorted(states, key=key)

    # --- changes ------------------------------------------------------------------------------------

    def seen(self, info: PeerInfo) -> bool:
        """Record a PeerSeen; True when the peer became live (new, or dropped and back)."""
        state = self._peers.get(info.peer_id)
        if state is None:
            state = PeerState(
                info=info,
                same_site=bool(self._own_site) and info.site == self._own_site,
                tiebreak=self._rng.random(),
            )
            self._peers[info.peer_id] = state
            self._live[info.peer_id] = state
            return True
        if state.status == "banned":
            return False
        state.info = info
        state.same_site = bool(self._own_site) and info.site == self._own_site
        if state.status == "live":
            return False
        state.status = "live"
        state.timeouts = state.errors = 0
        state.penalty = 1.0
        state.backoff_until = 0.0
        state.limit = math.inf  # it may have restarted, or been given more upload slots
        self._live[info.peer_id] = state
        return True

    def drop(self, peer_id: str, *, failed: bool = True, now: float = -math.inf) -> PeerState | None:
        """Stop using a live peer until it is seen again; returns it, or None when it was not live.

        ``failed``: it failed (counted in ``drops``, from ``now``); else it left, and may come back at once.
        """
        state = self._live.pop(peer_id, None)
        if state is not None:
            state.status = "dropped"
            if failed:
                state.drops += 1
                state.dropped_at = now
        return state

    def ban(self, peer_id: str, reason: str) -> bool:
        """Ban a peer for good; True the first time (known to the table or not)."""
        state = self._peers.get(peer_id)
        if state is None:
            state = PeerState(info=PeerInfo(peer_id, ""), same_site=False, tiebreak=0.0)
            self._peers[peer_id] = state
        elif state.status == "banned":
            return False
        self._live.pop(peer_id, None)
        state.status = "banned"
        state.ban_reason = reason
        self._banned += 1
        return True

    def record_success(self, state: PeerState, nbytes: int, seconds: float) -> None:
        sample = nbytes / max(seconds, 1e-6)
        state.throughput = (
            sample if state.throughput is None else (1 - EWMA_ALPHA) * state.throughput + EWMA_ALPHA * sample
        )
        self.typical = sample if not self._measured else (1 - EWMA_ALPHA) * self.typical + EWMA_ALPHA * sample
        self._measured = True
        state.delivered += 1
        state.limit += LIMIT_GROWTH
        state.penalty = 1.0
        state.timeouts = state.errors = 0

    def record_timeout(self, state: PeerState, now: float, backoff: float, drop_after: int) -> bool:
        """A zero-throughput sample and a short pause; True when the peer should be dropped."""
        state.throughput = 0.0 if state.throughput is None else (1 - EWMA_ALPHA) * state.throughput
        state.backoff_until = max(state.backoff_until, now + backoff)
        state.timeouts += 1
        return state.timeouts >= drop_after

    def record_error(self, state: PeerState, now: float, backoff: float, drop_after: int) -> bool:
        """True when the peer should be dropped (consecutive errors reached ``drop_after``)."""
        state.backoff_until = max(state.backoff_until, now + backoff)
        state.errors += 1
        return state.errors >= drop_after

    def record_busy(self, state: PeerState, now: float, wait: float) -> bool:
        """A 429. While others of our requests are in flight there, its slots hold our own requests:
        it is not busy with others, so no pause (it would idle as soon as ours are sent); we only ask
        it for no more than it took. Else it serves others: pause for ``wait``. True when it paused."""
        if state.inflight:
            state.limit = float(len(state.inflight))
            return False
        state.penalty *= BUSY_PENALTY
        state.backoff_until = max(state.backoff_until, now + wait)
        return True

    def record_missing(self, state: PeerState) -> None:
        state.penalty *= MISSING_PENALTY

"""Peers per swarm with a TTL and bounded memory. Pure: takes ``now``, randomness injected.

Each swarm keeps its peers in announce order (oldest first), so expiry and eviction pop from
the front in O(1) per peer, and swarms are kept in announce order too (least recent first).
Per swarm, peers are also indexed by kind (complete or not) and by (kind, site) so a handout
draws its candidates in O(numwant), not O(swarm size).

Every handout starts with the swarm's origin pullers (:mod:`swarmupdate.swarm.policy`): the
``pullers`` peers with the lowest (swarm, peer id) hash, kept in a sorted list per swarm (insert and
remove by bisection). Agents that all know them agree on who pulls each chunk from the origin, so
the origin sends about one copy whatever the swarm's size.
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from dataclasses import dataclass

from swarmupdate.model import PeerInfo
from swarmupdate.swarm.policy import peer_chunk_hash
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.policy import HandoutPolicy, MixedHandoutPolicy
from swarmupdate.tracker.wire import MAX_NUMWANT, check_numwant, validate_announce

__all__ = ["PeerStore"]


class _IndexedSet:
    """Strings with O(1) add and remove and O(k) random samples."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        i = self._pos.pop(item, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._pos[last] = i

    def sample(self, rng: random.Random, k: int) -> list[str]:
        return rng.sample(self._items, min(k, len(self._items)))


@dataclass(slots=True)
class _Entry:
    peer: PeerInfo
    left: int
    seen: float


class _Swarm:
    __slots__ = ("by_kind", "by_site", "id", "peers", "ranked", "seen")

    def __init__(self, swarm_id: str, now: float) -> None:
        self.id = swarm_id
        #: (swarm hash, peer id) of every peer, lowest first: the first ones are the origin pullers
        self.ranked: list[tuple[float, str]] = []
        #: peer id -> entry, least recently announced first
        self.peers: OrderedDict[str, _Entry] = OrderedDict()
        self.by_kind: dict[bool, _IndexedSet] = {True: _IndexedSet(), False: _IndexedSet()}
        #: (complete, site) -> peer ids; peers with no site are not indexed here
        self.by_site: dict[tuple[bool, str], _IndexedSet] = {}
        self.seen = now

    def add(self, entry: _Entry) -> None:
        peer = entry.peer
        self.peers[peer.peer_id] = entry
        bisect.insort(self.ranked, (peer_chunk_hash(self.id, peer.peer_id), peer.peer_id))
        self.by_kind[peer.complete].add(peer.peer_id)
        if peer.site:
            self.by_site.setdefault((peer.complete, peer.site), _IndexedSet()).add(peer.peer_id)

    def remove(self, peer_id: str) -> bool:
        entry = self.peers.pop(peer_id, None)
        if entry is None:
            return False
        self._unindex(entry.peer)
        return True

    def pop_oldest(self) -> _Entry:
        _, entry = self.peers.popitem(last=False)
        self._unindex(entry.peer)
        return entry

    def expire(self, cutoff: float) -> int:
        """Drop peers last seen at or before ``cutoff``; returns how many."""
        n = 0
        while self.peers and next(iter(self.peers.values())).seen <= cutoff:
            self.pop_oldest()
            n += 1
        return n

    def _unindex(self, peer: PeerInfo) -> None:
        key = (peer_chunk_hash(self.id, peer.peer_id), peer.peer_id)
        i = bisect.bisect_left(self.ranked, key)
        if i < len(self.ranked) and self.ranked[i] == key:
            del self.ranked[i]
        self.by_kind[peer.complete].discard(peer.peer_id)
        if peer.site:
            key = (peer.complete, peer.site)
            index = self.by_site.get(key)
            if index is not None:
                index.discard(peer.peer_id)
                if not index:
                    del self.by_site[key]


class PeerStore:
    """Which peers are in which swarm, for how long, and whom to hand out.

    ``now`` is any monotonic clock in seconds; a ``now`` earlier than one already seen is
    taken as that one, so a clock step back cannot break the announce order.
    """

    def __init__(
        self,
        config: TrackerConfig | None = None,
        *,
        rng: random.Random | None = None,
        policy: HandoutPolicy | None = None,
    ) -> None:
        self.config = config if config is not None else TrackerConfig()
        self.rng = rng if rng is not None else random.Random()
        self.policy: HandoutPolicy = policy if policy is not None else MixedHandoutPolicy()
        #: swarm id -> swarm, least recently announced first
        self._swarms: OrderedDict[str, _Swarm] = OrderedDict()
        self._count = 0
        self._now = float("-inf")

    @property
    def peer_count(self) -> int:
        """Peers remembered over all swarms (live after ``expire(now)``)."""
        return self._count

    @property
    def swarm_count(self) -> int:
        return len(self._swarms)

    def announce(
        self, swarm: str, peer: PeerInfo, left: int, event: str, now: float, *, numwant: int | None = None
    ) -> list[PeerInfo]:
        """Record one announce and return the peers to hand out (never the asker).

        ``event`` ``"stopped"`` removes the peer and hands out nothing; ``""``, ``"started"``
        and ``"completed"`` add or refresh it with what it reports now.

        Raises:
            AnnounceFieldError: a field is invalid (names it).
        """
        validate_announce(swarm, peer, left, event)
        want = self.config.numwant if numwant is None else check_numwant(numwant)
        now = self._tick(now)
        cutoff = now - self.config.peer_ttl
        s = self._swarms.get(swarm)
        if event == "stopped":
            if s is not None:
                self._count -= s.expire(cutoff) + s.remove(peer.peer_id)
                if not s.peers:
                    del self._swarms[swarm]
            return []
        if s is None:
            if len(self._swarms) >= self.config.max_swarms:
                _, evicted = self._swarms.popitem(last=False)
                self._count -= len(evicted.peers)
            s = self._swarms[swarm] = _Swarm(swarm, now)
        else:
            self._swarms.move_to_end(swarm)
            s.seen = now
            self._count -= s.expire(cutoff)
        if s.remove(peer.peer_id):
            self._count -= 1
        else:
            if len(s.peers) >= self.config.max_peers_per_swarm:
                s.pop_oldest()
                self._count -= 1
            if self._count >= self.config.max_peers:
                self._evict_one(keep=swarm)
        s.add(_Entry(peer, left, now))
        self._count += 1
        return self._handout(s, peer, min(want, MAX_NUMWANT))

    def swarm_size(self, swarm: str, now: float) -> int:
        """Live peers in ``swarm`` (the asker included)."""
        s = self._swarms.get(swarm)
        if s is None:
            return 0
        self._count -= s.expire(self._tick(now) - self.config.peer_ttl)
        return len(s.peers)

    def peers(self, swarm: str) -> list[PeerInfo]:
        """Every peer remembered in ``swarm``, least recently announced first."""
        s = self._swarms.get(swarm)
        return [] if s is None else [e.peer for e in s.peers.values()]

    def expire(self, now: float) -> int:
        """Forget every peer whose TTL has run out, and empty swarms; returns peers removed."""
        cutoff = self._tick(now) - self.config.peer_ttl
        removed = 0
        for swarm_id in list(self._swarms):
            s = self._swarms[swarm_id]
            if s.seen <= cutoff:
                removed += len(s.peers)
                del self._swarms[swarm_id]
                continue
            removed += s.expire(cutoff)
            if not s.peers:
                del self._swarms[swarm_id]
        self._count -= removed
        return removed

    def _tick(self, now: float) -> float:
        self._now = max(self._now, now)
        return self._now

    def _evict_one(self, keep: str) -> None:
        """Make room for one peer: the oldest of the least recently announced swarm."""
        for swarm_id, s in self._swarms.items():
            if s.peers and (swarm_id != keep or len(self._swarms) == 1):
                s.pop_oldest()
                self._count -= 1
                if not s.peers and swarm_id != keep:
                    del self._swarms[swarm_id]
                return

    def pullers(self, swarm: str) -> list[PeerInfo]:
        """The swarm's origin pullers, lowest hash first."""
        s = self._swarms.get(swarm)
        if s is None:
            return []
        return [s.peers[pid].peer for _, pid in s.ranked[: self.config.pullers]]

    def _handout(self, s: _Swarm, asker: PeerInfo, numwant: int) -> list[PeerInfo]:
        if numwant <= 0:
            return []
        # the origin pullers first, whatever numwant: agents must agree on them
        firsts = [pid for _, pid in s.ranked[: self.config.pullers + 1] if pid != asker.peer_id]
        firsts = firsts[: self.config.pullers]
        k = numwant + 1  # the asker may be drawn
        ids: dict[str, None] = {}
        for kind in (True, False):
            if asker.site:
                index = s.by_site.get((kind, asker.site))
                if index is not None:
                    ids.update(dict.fromkeys(index.sample(self.rng, k)))
            ids.update(dict.fromkeys(s.by_kind[kind].sample(self.rng, k)))
        ids.pop(asker.peer_id, None)
        for pid in firsts:
            ids.pop(pid, None)
        candidates = [s.peers[i].peer for i in ids]
        rest = self.policy.choose(asker, candidates, max(numwant - len(firsts), 0), self.rng)
        return [s.peers[pid].peer for pid in firsts] + rest[: max(numwant - len(firsts), 0)]

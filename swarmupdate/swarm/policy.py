"""Who pulls a chunk from the origin, and when: keeps origin egress near one copy with no coordinator. Pure.

**Pullers.** Every agent hashes (swarm id, agent id) to a number in [0, 1); the ``count`` agents of a
swarm with the lowest numbers are its *pullers*, and each chunk is pulled by the puller with the
lowest hash of (chunk, agent id). Every agent that knows the same pullers computes the same owner for
every chunk, so each chunk leaves the origin once. Trackers make that knowledge common: every answer
to an announce carries the swarm's pullers (:mod:`swarmupdate.tracker.store`), whatever else it
samples. A tracker that lies about them, or an agent that has not heard of them yet, can only make a
chunk come twice or late, never make anyone accept a byte that is not signed.

Rendezvous over the peers an agent merely *happens* to know would not do: with 50 known peers out of
thousands, many agents believe they rank first, and the origin sends many copies.

**Fallback.** A chunk that its owner does not bring (dead, slow, or a puller nobody heard of) is pulled
by the other agents in rank order, ``rank = hash(chunk, agent) * N / k``: about ``k`` agents have a
rank below 1, ``2k`` below 2, and so on; the agent of rank ``r`` waits ``delay * max(1, 1 + log2 r)``
(so a swarm size reported too large costs a logarithmic, not linear, wait). As soon as one of them has
the chunk the others see it in bitfields and stop waiting, so a lost owner costs about one more copy,
never one per agent.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Sequence

from swarmupdate.model import ChunkRef

__all__ = [
    "ORIGIN_OPENERS",
    "ORIGIN_PULLERS",
    "chunk_owner",
    "fallback_wait",
    "origin_order",
    "origin_rank",
    "peer_chunk_hash",
    "pullers",
]

_SCALE = float(1 << 64)

#: how many origin pullers a swarm has (agents' ``origin_puller_count``, trackers' ``pullers``)
ORIGIN_PULLERS = 16
#: how many of the smallest chunks open the origin order (see origin_order)
ORIGIN_OPENERS = 2


def peer_chunk_hash(chunk_sha: str, peer_id: str) -> float:
    """A uniform number in [0, 1) fixed by (chunk or swarm id, peer); the same on every agent."""
    digest = hashlib.sha256(f"{chunk_sha}\0{peer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def pullers(
    swarm: str, peer_ids: Iterable[str], count: int, cache: dict[str, float] | None = None
) -> list[str]:
    """The ``count`` ids with the lowest (swarm, id) hash, lowest first: the swarm's origin pullers.

    ``cache`` (optional) keeps each id's hash for the next call with the same ``swarm``.
    """
    hashes = {} if cache is None else cache
    ids = list(peer_ids)
    for p in ids:
        if p not in hashes:
            hashes[p] = peer_chunk_hash(swarm, p)
    return heapq.nsmallest(count, ids, key=lambda p: (hashes[p], p))


def chunk_owner(chunk_sha: str, puller_ids: Iterable[str]) -> str | None:
    """The puller that pulls this chunk from the origin (None when there are no pullers)."""
    return min(puller_ids, key=lambda p: (peer_chunk_hash(chunk_sha, p), p), default=None)


def origin_order(chunks: Sequence[ChunkRef]) -> list[int]:
    """The order in which the whole fleet pulls chunks from the origin: the same on every agent.

    The ``ORIGIN_OPENERS`` smallest chunks first (the swarm has something to pass on a moment after
    the first pull), then the others from the largest to the smallest, ties by digest. The swarm
    spreads a chunk in a time proportional to its size, and the origin's last chunks are the ones
    still spreading when it is done: with content-defined chunks of 0.3 to 3.2 MB, ending on the
    large ones left the whole swarm waiting for a 3 MB chunk to go round (the digest order's tail).
    """
    by_size = sorted(range(len(chunks)), key=lambda i: (chunks[i].length, chunks[i].sha256))
    openers = by_size[:ORIGIN_OPENERS]
    rest = sorted(by_size[ORIGIN_OPENERS:], key=lambda i: (-chunks[i].length, chunks[i].sha256))
    return openers + rest


def origin_rank(chunk_sha: str, peer_id: str, swarm_size: int, k: float) -> float:
    """``hash * N / k``: below 1 for about ``k`` of the ``N`` agents of a swarm, below ``x`` for ``k*x``."""
    if k <= 0:
        return math.inf
    return peer_chunk_hash(chunk_sha, peer_id) * max(swarm_size, 1) / k


def fallback_wait(rank: float, delay: float) -> float:
    """How long an agent of this rank waits for a chunk its owner did not bring before asking the origin."""
    return delay * max(1.0, 1.0 + math.log2(rank)) if rank > 0 else delay

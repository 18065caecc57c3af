"""Who pulls a chunk from the origin, and when: keeps origin egress near one copy with no coordinator. Pure.

Every agent hashes (chunk, agent id) to a number ``h`` in [0, 1). With ``N`` agents in the swarm, the
hashes of one chunk are N independent uniform draws, so ``h < k/N`` holds for about ``k`` of them
whatever each agent's partial view of the swarm: those agents are *designated* and pull the chunk from
the origin at once. Rendezvous ranking over the peers an agent happens to know would not do: with 50
known peers out of thousands, many agents believe they rank first.

``rank = h * N / k`` extends this to everyone: about ``k`` agents have a rank below 1, about ``2k`` below 2,
and so on. A chunk that no designated agent brings (probability ``exp(-k)``) is pulled by the agents in
rank order, the agent of rank ``r >= 1`` waiting ``delay * (1 + log2 r)``: the first waits ``delay``,
the following ones come at a rate of about ``k`` per ``delay`` doubling every ``delay`` (so a swarm size
reported too large costs a logarithmic, not linear, wait). As soon as one of them has the chunk the
others see it in bitfields and stop waiting, so a lost designated puller costs about one more copy,
never one per agent.
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["fallback_wait", "origin_first", "origin_rank", "peer_chunk_hash"]

_SCALE = float(1 << 64)


def peer_chunk_hash(chunk_sha: str, peer_id: str) -> float:
    """A uniform number in [0, 1) fixed by (chunk, peer); the same on every agent."""
    digest = hashlib.sha256(f"{chunk_sha}\0{peer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def origin_rank(chunk_sha: str, peer_id: str, swarm_size: int, k: float) -> float:
    """``hash * N / k``: below 1 for about ``k`` of the ``N`` agents of a swarm, below ``x`` for ``k*x``."""
    if k <= 0:
        return math.inf
    return peer_chunk_hash(chunk_sha, peer_id) * max(swarm_size, 1) / k


def origin_first(chunk_sha: str, peer_id: str, swarm_size: int, k: float) -> bool:
    """True when this agent is one of the ~``k`` that pull this chunk from the origin at once.

    ``swarm_size`` is the caller's best estimate of the swarm size (the tracker's count, or the known peers
    plus one when that is larger); values below 1 count as 1, so a lone agent is always designated.
    """
    return origin_rank(chunk_sha, peer_id, swarm_size, k) < 1.0


def fallback_wait(rank: float, delay: float) -> float:
    """How long an agent of this rank waits for a chunk to show up at a peer before asking the origin."""
    if rank < 1.0:
        return 0.0
    return delay * (1.0 + math.log2(rank))

"""Origin-first designation: about k pullers per chunk whatever the swarm size and each agent's view."""

from __future__ import annotations

import hashlib
import math
import random
import statistics

import pytest

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.download import (
    BitfieldUpdate,
    Download,
    DownloadConfig,
    PeerSeen,
    RequestChunk,
    SwarmSize,
)
from swarmupdate.swarm.policy import fallback_wait, origin_first, origin_rank, peer_chunk_hash


def sha(i: int) -> str:
    return hashlib.sha256(f"chunk {i}".encode()).hexdigest()


def test_hash_is_uniform_and_stable() -> None:
    values = [peer_chunk_hash(sha(0), f"peer-{i}") for i in range(5000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert statistics.fmean(values) == pytest.approx(0.5, abs=0.02)
    assert peer_chunk_hash(sha(0), "peer-1") == peer_chunk_hash(sha(0), "peer-1")
    assert peer_chunk_hash(sha(0), "peer-1") != peer_chunk_hash(sha(1), "peer-1")


@pytest.mark.parametrize(
    ("swarm", "k", "chunks"),
    [(5, 1.5, 400), (50, 1.0, 400), (50, 1.5, 400), (50, 3.0, 400), (500, 1.5, 200), (5000, 1.5, 100)],
)
def test_about_k_pullers_per_chunk(swarm: int, k: float, chunks: int) -> None:
    peers = [f"agent-{swarm}-{i}" for i in range(swarm)]
    counts = [sum(origin_first(sha(c), p, swarm, k) for p in peers) for c in range(chunks)]
    mean = statistics.fmean(counts)
    # Binomial(N, k/N) per chunk: the mean of 200 chunks is within 5 standard errors of k
    assert abs(mean - k) < 5 * math.sqrt(k / chunks)


def test_a_lone_agent_is_always_designated() -> None:
    assert all(origin_first(sha(c), "solo", 1, 1.5) for c in range(50))
    assert all(origin_first(sha(c), "solo", 0, 1.5) for c in range(50))


def test_partial_views_still_give_about_k_pullers() -> None:
    """1000 agents, each knowing 50 random peers and the tracker's swarm size: ~k pull each chunk.

    Rendezvous ranking over each agent's 50 peers would have ~N/51 = 20 agents pulling every chunk.
    """
    swarm, k, view, n = 1000, 1.5, 50, 100
    refs = [ChunkRef(sha(i), 1 << 20) for i in range(n)]
    ids = [f"agent-{i:04d}" for i in range(swarm)]
    rng = random.Random(7)
    pulls = [0] * n
    for me in ids:
        dl = Download(refs, (), me, DownloadConfig(origin_pullers=k), now=0.0, rng=random.Random(me))
        known = rng.sample([p for p in ids if p != me], view)
        dl.handle_all([SwarmSize(swarm), *(PeerSeen(PeerInfo(p, "")) for p in known)], 0.0)
        actions = dl.handle_all([BitfieldUpdate(p, Bitfield(n)) for p in known], 0.1)
        for a in actions:
            if isinstance(a, RequestChunk) and a.peer_id is None:
                pulls[a.index] += 1
    mean = statistics.fmean(pulls)
    # at most k on average (an agent that knows a lower designated peer leaves the chunk to it)
    assert k - 5 * math.sqrt(k / n) < mean <= k + 5 * math.sqrt(k / n)
    assert max(pulls) <= 8


def test_rank_and_fallback_wait() -> None:
    assert fallback_wait(0.3, 10.0) == 0.0
    assert fallback_wait(1.0, 10.0) == 10.0
    assert fallback_wait(2.0, 10.0) == 20.0
    assert fallback_wait(8.0, 10.0) == 40.0
    r = origin_rank(sha(3), "p", 100, 1.5)
    assert r == pytest.approx(peer_chunk_hash(sha(3), "p") * 100 / 1.5)
    assert origin_first(sha(3), "p", 100, 1.5) == (r < 1)

"""Origin pullers: the swarm's lowest-hash agents, one owner per chunk, whatever the swarm size."""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter

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
from swarmupdate.swarm.policy import (
    ORIGIN_OPENERS,
    chunk_owner,
    fallback_wait,
    origin_order,
    origin_rank,
    peer_chunk_hash,
    pullers,
)

SWARM = "ab" * 32


def sha(i: int) -> str:
    return hashlib.sha256(f"chunk {i}".encode()).hexdigest()


def test_hash_is_uniform_and_stable() -> None:
    values = [peer_chunk_hash(sha(0), f"peer-{i}") for i in range(5000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert statistics.fmean(values) == pytest.approx(0.5, abs=0.02)
    assert peer_chunk_hash(sha(0), "peer-1") == peer_chunk_hash(sha(0), "peer-1")
    assert peer_chunk_hash(sha(0), "peer-1") != peer_chunk_hash(sha(1), "peer-1")


def test_pullers_are_the_lowest_swarm_hashes_in_any_order_of_input() -> None:
    ids = [f"agent-{i}" for i in range(500)]
    got = pullers(SWARM, ids, 16)
    assert got == sorted(ids, key=lambda p: peer_chunk_hash(SWARM, p))[:16]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert pullers(SWARM, shuffled, 16) == got
    # another swarm picks other agents: no machine is the origin's puller for every release
    assert set(pullers("cd" * 32, ids, 16)) != set(got)
    assert pullers(SWARM, ids[:3], 16) == sorted(ids[:3], key=lambda p: peer_chunk_hash(SWARM, p))


def test_chunks_spread_evenly_over_the_pullers_with_one_owner_each() -> None:
    group = pullers(SWARM, [f"agent-{i}" for i in range(1000)], 16)
    owners = Counter(chunk_owner(sha(c), group) for c in range(3200))
    assert set(owners) == set(group)
    # 200 per puller on average; Multinomial spread stays well within half of it
    assert min(owners.values()) > 100 and max(owners.values()) < 300
    assert chunk_owner(sha(1), []) is None
    assert chunk_owner(sha(1), ["solo"]) == "solo"


def test_a_thousand_agents_that_know_the_pullers_pull_each_chunk_once() -> None:
    """1000 agents, each knowing the pullers (from the tracker) and 50 random peers: one pull per chunk.

    Rendezvous ranking over each agent's 50 peers alone would have ~N/51 = 20 agents pulling every chunk.
    """
    swarm, view, n = 1000, 50, 100
    refs = [ChunkRef(sha(i), 1 << 20) for i in range(n)]
    ids = [f"agent-{i:04d}" for i in range(swarm)]
    group = pullers(SWARM, ids, 16)
    rng = random.Random(7)
    pulls = [0] * n
    cfg = DownloadConfig(origin_max_inflight=n, max_inflight=n, origin_window=n, origin_start_delay=0)
    for me in ids:
        dl = Download(refs, (), me, cfg, now=0.0, rng=random.Random(me), salt=SWARM)
        known = {p for p in rng.sample(ids, view) + group if p != me}
        dl.handle_all([SwarmSize(swarm), *(PeerSeen(PeerInfo(p, "")) for p in known)], 0.0)
        actions = dl.handle_all([BitfieldUpdate(p, Bitfield(n)) for p in known], 0.1)
        for a in actions:
            if isinstance(a, RequestChunk) and a.peer_id is None:
                pulls[a.index] += 1
    assert pulls == [1] * n


def test_rank_and_fallback_wait() -> None:
    assert fallback_wait(0.3, 10.0) == 10.0  # never sooner than the delay: the owner comes first
    assert fallback_wait(1.0, 10.0) == 10.0
    assert fallback_wait(2.0, 10.0) == 20.0
    assert fallback_wait(8.0, 10.0) == 40.0
    r = origin_rank(sha(3), "p", 100, 1.5)
    assert r == pytest.approx(peer_chunk_hash(sha(3), "p") * 100 / 1.5)
    assert origin_rank(sha(3), "p", 100, 0) == float("inf")


def test_origin_order_opens_with_the_smallest_then_goes_from_the_largest_down() -> None:
    lengths = [700, 300, 3200, 1200, 500, 1200, 2900, 400]
    refs = [ChunkRef(sha(i), n) for i, n in enumerate(lengths)]
    order = origin_order(refs)
    assert sorted(order) == list(range(len(refs)))
    assert ORIGIN_OPENERS == 2 and order[:2] == [1, 7]  # 300, 400
    rest = [lengths[i] for i in order[2:]]
    assert rest == sorted(rest, reverse=True) and rest[-1] == 500  # the release ends on a small chunk
    # equal lengths go by digest, so every agent has the same order, whatever the manifest order
    ties = [i for i in order if lengths[i] == 1200]
    assert ties == sorted((3, 5), key=lambda i: refs[i].sha256)
    rev = refs[::-1]
    assert [rev[i] for i in origin_order(rev)] == [refs[i] for i in order]

"""The tracker's peer store and handout policy: pure, driven with explicit ``now`` and seeded rngs."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from swarmupdate.errors import ConfigError, RemoteDataError
from swarmupdate.model import PeerInfo
from swarmupdate.swarm.policy import peer_chunk_hash
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.policy import MixedHandoutPolicy
from swarmupdate.tracker.store import PeerStore
from swarmupdate.tracker.wire import AnnounceFieldError

A = "a" * 64
B = "b" * 64
C = "c" * 64
SWARM = A


def peer(name: str | int, *, complete: bool = False, site: str = "") -> PeerInfo:
    return PeerInfo(f"p{name}", f"http://peer-{name}.test:7000", site, complete)


def left_of(p: PeerInfo) -> int:
    return 0 if p.complete else 1000


def store(**config: object) -> PeerStore:
    """A store; without origin pullers unless asked, so that the policy's choices are seen alone."""
    config.setdefault("pullers", 0)
    return PeerStore(TrackerConfig(**config), rng=random.Random(7))  # type: ignore[arg-type]


def ann(s: PeerStore, swarm: str, p: PeerInfo, now: float, event: str = "", **kw: int) -> list[PeerInfo]:
    return s.announce(swarm, p, left_of(p), event, now, **kw)


def ids(peers: Sequence[PeerInfo]) -> set[str]:
    return {p.peer_id for p in peers}


# --- membership, events, TTL ---------------------------------------------------------------


def test_announce_hands_out_others_never_the_asker() -> None:
    s = store()
    assert ann(s, A, peer(1), 0) == []
    assert s.swarm_size(A, 0) == 1
    assert ann(s, A, peer(2), 1) == [peer(1)]
    assert ids(ann(s, A, peer(1), 2)) == {"p2"}
    assert s.swarm_size(A, 2) == 2 and s.peer_count == 2 and s.swarm_count == 1
    assert s.swarm_size(B, 2) == 0


def test_stopped_removes_the_peer_and_then_the_empty_swarm() -> None:
    s = store()
    ann(s, A, peer(1), 0)
    ann(s, A, peer(2), 0)
    assert ann(s, A, peer(2), 1, "stopped") == []
    assert ann(s, A, peer(3), 2) == [peer(1)]
    ann(s, A, peer(1), 3, "stopped")
    ann(s, A, peer(3), 3, "stopped")
    assert s.swarm_count == 0 and s.peer_count == 0
    # stopping in an unknown swarm is harmless and creates nothing
    assert ann(s, B, peer(9), 4, "stopped") == []
    assert s.swarm_count == 0


def test_completed_and_reannounce_update_the_peer() -> None:
    s = store()
    ann(s, A, peer(1), 0, "started")
    ann(s, A, peer(1, complete=True), 1, "completed")
    moved = PeerInfo("p1", "http://elsewhere.test:8000", "dc2", True)
    s.announce(A, moved, 0, "", 2)
    assert s.peers(A) == [moved]
    assert ann(s, A, peer(2), 3) == [moved]
    assert s.peer_count == 2


def test_ttl_defaults_to_three_intervals_and_expires_lazily_and_by_sweep() -> None:
    s = store(interval=10)
    assert s.config.peer_ttl == 30
    ann(s, A, peer(1), 0)
    ann(s, B, peer(3), 5)
    ann(s, A, peer(2), 20)
    # p1 was last seen 29.9 s ago: still listed
    assert ids(ann(s, A, peer(4), 29.9)) == {"p1", "p2"}
    # 30 s after its announce p1 is gone, even before any sweep
    assert ids(ann(s, A, peer(4), 30)) == {"p2"}
    assert s.swarm_size(A, 30) == 2
    # the sweep drops whole silent swarms and stale peers of live ones
    assert s.peer_count == 3 and s.swarm_count == 2
    assert s.expire(35) == 1
    assert s.swarm_count == 1 and s.peer_count == 2
    assert s.expire(60) == 2
    assert s.swarm_count == 0 and s.peer_count == 0


def test_explicit_ttl_and_a_clock_step_back_does_not_resurrect() -> None:
    s = store(interval=10, ttl=5)
    ann(s, A, peer(1), 100)
    # a now earlier than one already seen is taken as the latest one
    ann(s, A, peer(2), 50)
    assert s.expire(104.9) == 0
    assert s.expire(105) == 2


# --- bounds ---------------------------------------------------------------------------------


def test_max_peers_per_swarm_evicts_the_oldest_announced() -> None:
    s = store(max_peers_per_swarm=3)
    for i, t in ((0, 0), (1, 1), (2, 2)):
        ann(s, A, peer(i), t)
    ann(s, A, peer(0), 3)  # p0 refreshes: p1 is now the oldest
    ann(s, A, peer(3), 4)
    assert [p.peer_id for p in s.peers(A)] == ["p2", "p0", "p3"]
    assert s.peer_count == 3
    # a refresh of a known peer never evicts
    ann(s, A, peer(2), 5)
    assert ids(s.peers(A)) == {"p0", "p2", "p3"}


def test_max_swarms_evicts_the_least_recently_announced_swarm() -> None:
    s = store(max_swarms=2)
    ann(s, A, peer(1), 0)
    ann(s, A, peer(2), 0)
    ann(s, B, peer(3), 1)
    ann(s, A, peer(1), 2)  # A is now the most recent
    ann(s, C, peer(4), 3)
    assert s.swarm_count == 2
    assert s.peers(B) == [] and ids(s.peers(A)) == {"p1", "p2"} and s.peers(C) == [peer(4)]
    assert s.peer_count == 3


def test_max_peers_over_all_swarms() -> None:
    s = store(max_peers=3)
    ann(s, A, peer(1), 0)
    ann(s, A, peer(2), 1)
    ann(s, B, peer(3), 2)
    ann(s, C, peer(4), 3)  # takes A's oldest
    assert s.peer_count == 3
    assert ids(s.peers(A)) == {"p2"}
    ann(s, C, peer(5), 4)  # A's last peer goes, and A with it
    assert s.swarm_count == 2 and s.peer_count == 3
    # a lone swarm evicts its own oldest
    s2 = store(max_peers=2)
    for i in range(4):
        ann(s2, A, peer(i), i)
    assert [p.peer_id for p in s2.peers(A)] == ["p2", "p3"]


def test_counts_match_a_model_under_random_traffic() -> None:
    rng = random.Random(3)
    s = store(interval=1, ttl=3)
    model: dict[str, dict[str, float]] = {}
    now = 0.0
    for _ in range(3000):
        now += rng.random() * 0.2
        swarm = rng.choice([A, B, C])
        p = peer(rng.randrange(30), complete=rng.random() < 0.3)
        event = rng.choice(["", "", "", "started", "completed", "stopped"])
        handed = ann(s, swarm, p, now, event)
        live = model.setdefault(swarm, {})
        for pid, seen in list(live.items()):
            if seen + 3 <= now:
                del live[pid]
        if event == "stopped":
            live.pop(p.peer_id, None)
            assert handed == []
        else:
            live[p.peer_id] = now
            assert ids(handed) <= set(live) - {p.peer_id}
            assert len(handed) == min(50, len(live) - 1)
        assert s.swarm_size(swarm, now) == len(live)
    s.expire(now)
    expected = {sw: {k for k, v in live.items() if v + 3 > now} for sw, live in model.items()}
    assert s.peer_count == sum(map(len, expected.values()))
    assert s.swarm_count == sum(1 for v in expected.values() if v)


# --- handout policy -------------------------------------------------------------------------


def fill(s: PeerStore, swarm: str, n: int, *, complete: bool, site: str = "", start: int = 0) -> None:
    for i in range(start, start + n):
        ann(s, swarm, peer(f"{'s' if complete else 'l'}{i}", complete=complete, site=site), 0)


def kinds(peers: Sequence[PeerInfo]) -> tuple[int, int]:
    seeds = sum(p.complete for p in peers)
    return seeds, len(peers) - seeds


def test_downloading_asker_gets_seeds_first_with_a_share_of_leechers() -> None:
    s = store()
    fill(s, A, 100, complete=True)
    fill(s, A, 100, complete=False)
    got = ann(s, A, peer("me"), 1)
    assert len(got) == 50 and len(ids(got)) == 50
    # ceil(50 * 0.25) = 13 slots stay with leechers, seeds take the other 37, seeds listed first
    assert kinds(got) == (37, 13)
    assert all(p.complete for p in got[:37])


def test_short_kinds_give_their_slots_to_the_other() -> None:
    few_seeds = store()
    fill(few_seeds, A, 5, complete=True)
    fill(few_seeds, A, 100, complete=False)
    assert kinds(ann(few_seeds, A, peer("me"), 1)) == (5, 45)
    few_leechers = store()
    fill(few_leechers, A, 100, complete=True)
    fill(few_leechers, A, 3, complete=False)
    assert kinds(ann(few_leechers, A, peer("me"), 1)) == (47, 3)
    small = store()
    fill(small, A, 2, complete=True)
    fill(small, A, 2, complete=False)
    assert kinds(ann(small, A, peer("me"), 1)) == (2, 2)


def test_complete_asker_gets_leechers_first() -> None:
    s = store()
    fill(s, A, 100, complete=True)
    fill(s, A, 30, complete=False)
    got = ann(s, A, peer("me", complete=True), 1)
    assert kinds(got) == (20, 30)
    assert not any(p.complete for p in got[:30])


def test_same_site_first_within_each_kind() -> None:
    s = store()
    fill(s, A, 10, complete=True, site="dc1")
    fill(s, A, 100, complete=True, site="dc2", start=100)
    fill(s, A, 5, complete=False, site="dc1", start=200)
    fill(s, A, 100, complete=False, site="dc2", start=300)
    got = ann(s, A, peer("me", site="dc1"), 1)
    seeds = [p for p in got if p.complete]
    leechers = [p for p in got if not p.complete]
    assert (len(seeds), len(leechers)) == (37, 13)
    assert all(p.site == "dc1" for p in seeds[:10]) and all(p.site == "dc2" for p in seeds[10:])
    assert all(p.site == "dc1" for p in leechers[:5]) and all(p.site == "dc2" for p in leechers[5:])
    # an asker with no site has no preference: an empty site matches nothing
    blank = ann(s, A, peer("blank"), 1)
    assert {p.site for p in blank} == {"dc1", "dc2"}


def test_preferred_peers_are_found_in_a_large_swarm() -> None:
    # candidates are drawn per kind and per site, so rare seeds and rare site mates are not missed
    s = store(max_peers_per_swarm=20_000)
    fill(s, A, 5000, complete=False, site="dc2")
    fill(s, A, 7, complete=True, site="dc2", start=9000)
    fill(s, A, 4, complete=False, site="dc1", start=9100)
    got = ann(s, A, peer("me", site="dc1"), 1, numwant=20)
    assert kinds(got) == (7, 13)
    assert {p.peer_id for p in got if p.site == "dc1"} == {f"pl{i}" for i in range(9100, 9104)}


def test_random_among_equals_spreads_the_load() -> None:
    s = store()
    fill(s, A, 100, complete=True)
    counts: dict[str, int] = {}
    for i in range(300):
        for p in ann(s, A, peer(f"asker{i}"), 1, numwant=10):
            counts[p.peer_id] = counts.get(p.peer_id, 0) + 1
    seeds = {f"ps{i}" for i in range(100)}
    assert seeds <= set(counts)
    assert max(counts[x] for x in seeds) < 4 * min(counts[x] for x in seeds)


def test_numwant_bounds_and_a_swapped_policy() -> None:
    s = store(numwant=3)
    fill(s, A, 10, complete=True)
    assert len(ann(s, A, peer("me"), 1)) == 3
    assert ann(s, A, peer("me"), 1, numwant=0) == []
    assert len(ann(s, A, peer("me"), 1, numwant=200)) == 10
    with pytest.raises(AnnounceFieldError) as e:
        ann(s, A, peer("me"), 1, numwant=201)
    assert e.value.field == "numwant"

    class Newest:
        def choose(
            self, asker: PeerInfo, candidates: Sequence[PeerInfo], numwant: int, rng: random.Random
        ) -> list[PeerInfo]:
            return sorted(candidates, key=lambda p: p.peer_id)[:numwant]

    custom = PeerStore(TrackerConfig(pullers=0), rng=random.Random(1), policy=Newest())
    fill(custom, A, 5, complete=True)
    assert [p.peer_id for p in ann(custom, A, peer("me"), 1, numwant=4)] == ["ps0", "ps1", "ps2", "ps3"]


def test_policy_rejects_a_share_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="leecher_share"):
        MixedHandoutPolicy(leecher_share=1.5)


# --- validation -----------------------------------------------------------------------------

GOOD = PeerInfo("p1", "http://10.0.0.1:7000", "dc1", False)


@pytest.mark.parametrize(
    ("field", "swarm", "p", "left", "event"),
    [
        ("swarm", "A" * 64, GOOD, 1, ""),
        ("swarm", "a" * 63, GOOD, 1, ""),
        ("swarm", "g" * 64, GOOD, 1, ""),
        ("peer_id", A, PeerInfo("", GOOD.url), 1, ""),
        ("peer_id", A, PeerInfo("x" * 129, GOOD.url), 1, ""),
        ("peer_id", A, PeerInfo("a\nb", GOOD.url), 1, ""),
        ("url", A, PeerInfo("p", "ftp://host/"), 1, ""),
        ("url", A, PeerInfo("p", "http://"), 1, ""),
        ("url", A, PeerInfo("p", "host:7000"), 1, ""),
        ("url", A, PeerInfo("p", "http://user:pw@host:7000"), 1, ""),
        ("url", A, PeerInfo("p", "http://host:99999"), 1, ""),
        ("url", A, PeerInfo("p", "http://host:7000/?x=1"), 1, ""),
        ("url", A, PeerInfo("p", "http://ho st:7000"), 1, ""),
        ("url", A, PeerInfo("p", "http://h/" + "x" * 600), 1, ""),
        ("site", A, PeerInfo("p", GOOD.url, "s" * 65), 1, ""),
        ("site", A, PeerInfo("p", GOOD.url, "a\x00"), 1, ""),
        ("left", A, GOOD, -1, ""),
        ("left", A, GOOD, 1.5, ""),
        ("left", A, GOOD, True, ""),
        ("left", A, GOOD, 2**63, ""),
        ("left", A, PeerInfo("p", GOOD.url, complete=True), 5, ""),
        ("event", A, GOOD, 1, "paused"),
        ("complete", A, PeerInfo("p", GOOD.url, complete=1), 1, ""),  # type: ignore[arg-type]
    ],
)
def test_store_validates_every_field(field: str, swarm: str, p: PeerInfo, left: int, event: str) -> None:
    s = store()
    with pytest.raises(AnnounceFieldError) as e:
        s.announce(swarm, p, left, event, 0)
    assert e.value.field == field
    assert isinstance(e.value, RemoteDataError)
    assert s.peer_count == 0 and s.swarm_count == 0


def test_valid_edges_are_accepted() -> None:
    s = store()
    for p in (
        PeerInfo("x" * 128, "https://[::1]:8443/base", "s" * 64),
        PeerInfo("n", "http://h", ""),
        PeerInfo("émile 7", "http://10.0.0.1:1/", "forêt"),
    ):
        s.announce(A, p, 0, "started", 0)
    assert s.swarm_size(A, 0) == 3


@pytest.mark.parametrize(
    "kw",
    [{"interval": 0}, {"ttl": -1}, {"max_peers_per_swarm": 0}, {"max_swarms": 0}, {"numwant": 201}],
)
def test_config_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TrackerConfig(**kw)  # type: ignore[arg-type]


# --- origin pullers -----------------------------------------------------------------------------------


def test_every_handout_starts_with_the_swarms_origin_pullers() -> None:
    st = store(pullers=4, numwant=10)
    ids = [f"p{i:03d}" for i in range(300)]
    for i, pid in enumerate(ids):
        st.announce(SWARM, PeerInfo(pid, f"http://10.0.{i // 250}.{i % 250}:8700"), 1, "", float(i) / 100)
    expected = sorted(ids, key=lambda p: peer_chunk_hash(SWARM, p))[:5]
    assert [p.peer_id for p in st.pullers(SWARM)] == expected[:4]
    for asker in ("p100", "p200", expected[0]):
        got = [p.peer_id for p in st.announce(SWARM, PeerInfo(asker, "http://10.9.9.9:8700"), 1, "", 5.0)]
        firsts = [p for p in expected if p != asker][:4]
        assert got[:4] == firsts, asker
        assert len(got) == 10 and len(set(got)) == 10 and asker not in got


def test_pullers_follow_joins_and_departures() -> None:
    st = store(pullers=2, numwant=5)
    ids = [f"q{i}" for i in range(50)]
    ranked = sorted(ids, key=lambda p: peer_chunk_hash(SWARM, p))
    for pid in ranked[2:]:
        st.announce(SWARM, PeerInfo(pid, "http://10.0.0.1:8700"), 1, "", 0.0)
    assert [p.peer_id for p in st.pullers(SWARM)] == ranked[2:4]
    # a lower-hash peer joins: it becomes a puller at once
    st.announce(SWARM, PeerInfo(ranked[0], "http://10.0.0.2:8700"), 1, "", 1.0)
    assert [p.peer_id for p in st.pullers(SWARM)] == [ranked[0], ranked[2]]
    # it leaves: the next one takes its place
    st.announce(SWARM, PeerInfo(ranked[0], "http://10.0.0.2:8700"), 1, "stopped", 2.0)
    assert [p.peer_id for p in st.pullers(SWARM)] == ranked[2:4]
    # peers that expire leave the ranking too
    st.announce(SWARM, PeerInfo(ranked[1], "http://10.0.0.3:8700"), 1, "", 500.0)
    assert [p.peer_id for p in st.pullers(SWARM)] == [ranked[1]]
    assert st.pullers("ff" * 32) == []

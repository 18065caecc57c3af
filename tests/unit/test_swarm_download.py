"""The download state machine, driven event by event with a seeded RNG (no I/O, no clock)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pytest

from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.download import (
    CLAIM_PATIENCE,
    Action,
    BanPeer,
    BitfieldUpdate,
    CancelChunk,
    ChunkArrived,
    ChunkFailed,
    Download,
    DownloadConfig,
    Event,
    FailureKind,
    PeerGone,
    PeerSeen,
    RequestBitfield,
    RequestChunk,
    SwarmSize,
)
from swarmupdate.swarm.policy import (
    chunk_owner,
    fallback_wait,
    origin_order,
    origin_rank,
    peer_chunk_hash,
    pullers,
)

MIB = 1 << 20


def chunks(n: int) -> list[ChunkRef]:
    return [ChunkRef(hashlib.sha256(f"chunk {i}".encode()).hexdigest(), MIB) for i in range(n)]


def peer(name: str, site: str = "") -> PeerInfo:
    return PeerInfo(name, f"http://{name}:8700", site)


def requests(actions: Iterable[Action]) -> list[tuple[int, str | None]]:
    return [(a.index, a.peer_id) for a in actions if isinstance(a, RequestChunk)]


def cancels(actions: Iterable[Action]) -> list[tuple[int, str | None]]:
    return [(a.index, a.peer_id) for a in actions if isinstance(a, CancelChunk)]


def bitfield_asks(actions: Iterable[Action]) -> list[str]:
    return [a.peer_id for a in actions if isinstance(a, RequestBitfield)]


def not_puller(others: Iterable[str], prefix: str = "me") -> str:
    """An agent id whose swarm hash is above the lowest of ``others``: with one puller, it pulls nothing."""
    lowest = min(peer_chunk_hash("", p) for p in others)
    return next(f"{prefix}-{n}" for n in range(10_000) if peer_chunk_hash("", f"{prefix}-{n}") > lowest)


def owned(refs: Sequence[ChunkRef], me: str, others: Iterable[str], count: int = 16) -> set[int]:
    """The chunks that ``me`` pulls from the origin when it and ``others`` are all it knows."""
    group = pullers("", [me, *others], count)
    return {i for i, c in enumerate(refs) if chunk_owner(c.sha256, group) == me}


def with_peers(
    n: int,
    holdings: Mapping[str, Iterable[int]],
    config: DownloadConfig | None = None,
    *,
    swarm: int = 1000,
    have: Iterable[int] = (),
    seed: int = 1,
    sites: dict[str, str] | None = None,
) -> tuple[Download, list[Action]]:
    """A download whose peers have answered with their bitfields, and what it did first.

    The swarm has one origin puller, and the agent id is chosen not to be it: nothing goes to the origin.
    """
    refs = chunks(n)
    cfg = dataclasses.replace(config or DownloadConfig(), origin_puller_count=1)
    me = not_puller(holdings)
    dl = Download(refs, have, me, cfg, now=0.0, rng=random.Random(seed))
    events: list[Event] = [SwarmSize(swarm)]
    events += [PeerSeen(peer(p, (sites or {}).get(p, ""))) for p in holdings]
    events += [BitfieldUpdate(p, Bitfield(n, held)) for p, held in holdings.items()]
    return dl, dl.handle_all(events, 0.0)


def arrive(dl: Download, index: int, src: str | None, now: float, seconds: float = 0.1) -> list[Action]:
    return dl.handle(ChunkArrived(index, src, MIB, seconds), now)


# --- picking ----------------------------------------------------------------------------------------


def test_rarest_chunk_is_requested_first() -> None:
    # chunk 3 is held by one peer, the others by three
    holdings = {"a": [0, 1, 2, 3], "b": [0, 1, 2], "c": [0, 1, 2]}
    _, first = with_peers(4, holdings, DownloadConfig(max_inflight=1))
    assert requests(first) == [(3, "a")]


def test_rarest_first_orders_all_requests_by_availability() -> None:
    holdings = {"a": [0, 1, 2, 3, 4], "b": [0, 1, 2, 3], "c": [0, 1, 2], "d": [0, 1], "e": [0]}
    _, first = with_peers(5, holdings, DownloadConfig(max_inflight=5, per_peer_inflight=1))
    # one request per unproven peer: the rarest chunks go to the only peers that have them
    assert sorted(requests(first)) == [(0, "e"), (1, "d"), (2, "c"), (3, "b"), (4, "a")]


def test_ties_between_equally_rare_chunks_are_broken_at_random() -> None:
    firsts: Counter[int] = Counter()
    for seed in range(40):
        _, first = with_peers(4, {"a": [0, 1, 2, 3]}, DownloadConfig(max_inflight=1), seed=seed)
        ((index, _),) = requests(first)
        firsts[index] += 1
    assert set(firsts) == {0, 1, 2, 3}


def test_caps_per_peer_and_global_hold() -> None:
    cfg = DownloadConfig(per_peer_inflight=3, max_inflight=7)
    dl, first = with_peers(40, {p: range(40) for p in "abcd"}, cfg)
    # unproven peers get one request each until they deliver
    assert sorted(str(p) for _, p in requests(first)) == ["a", "b", "c", "d"]
    for index, src in requests(first):
        arrive(dl, index, src, 1.0)
    assert dl.inflight == 7
    in_flight = Counter(p for i in range(40) for p in dl.requested_from(i))
    assert sum(in_flight.values()) == 7 and max(in_flight.values()) == 3
    assert requests(dl.poll(2.0)) == []
    # every arrival frees exactly one slot, and the caps keep holding
    for step in range(20):
        index = next(i for i in range(40) if dl.requested_from(i))
        (src,) = dl.requested_from(index)
        assert len(requests(arrive(dl, index, src, 3.0 + step))) == 1
        in_flight = Counter(p for i in range(40) for p in dl.requested_from(i))
        assert dl.inflight == 7 and max(in_flight.values()) <= 3


def test_better_scored_peer_is_preferred_then_same_site() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=1, site="dc1", busy_backoff=1.0)
    holdings = {"far": range(20), "near": range(20)}
    dl, first = with_peers(20, holdings, cfg, sites={"far": "dc2", "near": "dc1"})
    # equal (unmeasured) scores: same site first
    ((index, src),) = requests(first)
    assert src == "near"
    # near is slow (0.1 MiB/s), and then busy for a moment: far gets a chance and is fast
    ((index, src),) = requests(dl.handle(ChunkArrived(index, "near", MIB, 10.0), 1.0))
    assert src == "near"
    ((index, src),) = requests(dl.handle(ChunkFailed(index, "near", "busy"), 2.0))
    assert src == "far"
    picks = []
    for step in range(3, 9):
        seconds = 0.01 if src == "far" else 10.0
        ((index, src),) = requests(dl.handle(ChunkArrived(index, src, MIB, seconds), float(step)))
        picks.append(src)
    assert picks == ["far"] * 6


def test_same_site_wins_among_peers_of_similar_speed() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=2, site="dc1")
    holdings = {"far": range(20), "near": range(20)}
    dl, first = with_peers(20, holdings, cfg, sites={"far": "dc2", "near": "dc1"})
    got = dict((src, index) for index, src in requests(first))
    assert set(got) == {"far", "near"}
    # far measures 1.25x faster than near: within a factor of two, so the same-site peer ranks first
    actions = dl.handle_all(
        [ChunkArrived(got["far"], "far", 3 * MIB, 2.0), ChunkArrived(got["near"], "near", 3 * MIB, 2.5)], 3.0
    )
    assert [p.peer_id for p in dl.peers.ranked(dl.peers.live())] == ["near", "far"]
    # much faster is another league
    far_index = next(i for i, p in requests(actions) if p == "far")
    dl.handle(ChunkArrived(far_index, "far", 12 * MIB, 1.0), 4.0)
    assert [p.peer_id for p in dl.peers.ranked(dl.peers.live())] == ["far", "near"]


# --- endgame ----------------------------------------------------------------------------------------


#: duplicate endgame requests at once (the mechanism under test), not only once they are slow
IMPATIENT = {"endgame_patience": 0.0, "endgame_min_wait": 0.0}


def test_endgame_waits_until_a_request_is_slow() -> None:
    cfg = DownloadConfig(per_peer_inflight=4, max_inflight=8, endgame_duplicates=2, endgame_min_wait=0.5)
    dl, first = with_peers(2, {"a": [0, 1], "b": [0, 1], "c": [0, 1]}, cfg)
    # both chunks are in flight, but not for long: no duplicate yet, and a wake-up when they would be slow
    assert len(requests(first)) == 2
    assert requests(dl.poll(0.1)) == []
    wake = dl.next_wakeup(0.1)
    assert wake is not None and wake <= 0.5 + 1e-9
    # past the patience, the slow requests get a second copy from the idle peer
    assert len(requests(dl.poll(0.6))) == 1


def test_endgame_duplicates_last_chunks_and_cancels_the_slower_copy() -> None:
    cfg = DownloadConfig(per_peer_inflight=4, max_inflight=8, endgame_duplicates=2, **IMPATIENT)
    dl, first = with_peers(2, {"a": [0, 1], "b": [0, 1], "c": [0, 1]}, cfg)
    # two chunks, three unproven peers with one slot each: both chunks go out, then the endgame
    # (every missing chunk in flight) sends the third request as a second copy
    assert dl.in_endgame
    by_chunk: dict[int, set[str | None]] = {}
    for index, src in requests(first):
        by_chunk.setdefault(index, set()).add(src)
    assert sorted(len(s) for s in by_chunk.values()) == [1, 2]
    assert len(requests(first)) == 3
    # chunk with one copy: the next free slot duplicates it
    single = next(i for i, s in by_chunk.items() if len(s) == 1)
    double = next(i for i, s in by_chunk.items() if len(s) == 2)
    fast, slow = sorted(by_chunk[double])  # type: ignore[type-var]
    actions = arrive(dl, double, fast, 1.0)
    assert cancels(actions) == [(double, slow)]
    assert dl.requested_from(double) == frozenset()
    # the freed slots go to a second copy of the last chunk, never to a peer already asked
    dup = requests(actions)
    assert len(dup) == 1 and dup[0][0] == single and dup[0][1] not in by_chunk[single]
    assert len(dl.requested_from(single)) == 2
    actions = arrive(dl, single, dup[0][1], 2.0)
    assert cancels(actions) == [(single, next(iter(by_chunk[single])))]
    assert dl.done and dl.inflight == 0


def test_endgame_respects_the_duplicate_limit() -> None:
    cfg = DownloadConfig(per_peer_inflight=4, max_inflight=16, endgame_duplicates=3, **IMPATIENT)
    dl, first = with_peers(1, {p: [0] for p in "abcdef"}, cfg)
    assert len(requests(first)) == 3
    assert requests(dl.poll(1.0)) == []
    # one copy fails: another peer takes its place, still three at most
    (_, src), *_ = requests(first)
    assert src is not None
    assert len(requests(dl.handle(ChunkFailed(0, src, "timeout"), 2.0))) == 1
    assert len(dl.requested_from(0)) == 3


# --- failures ---------------------------------------------------------------------------------------


def test_corrupt_peer_is_banned_once_and_never_asked_again() -> None:
    cfg = DownloadConfig(per_peer_inflight=2, max_inflight=4)
    dl, first = with_peers(8, {"evil": range(8), "good": range(8)}, cfg)
    evil_index = next(i for i, p in requests(first) if p == "evil")
    actions = dl.handle(ChunkFailed(evil_index, "evil", "corrupt"), 1.0)
    bans = [a for a in actions if isinstance(a, BanPeer)]
    assert [b.peer_id for b in bans] == ["evil"] and "verification" in bans[0].reason
    assert dl.peers.banned_count == 1
    assert not dl.peers.is_live("evil")
    # the chunk went back to the pool: the good peer (one slot, busy) gets it when it delivers
    good_index = next(i for i, p in requests(first) if p == "good")
    assert (evil_index, "good") in requests(arrive(dl, good_index, "good", 1.2))
    # whatever happens later, evil is never asked again and never banned twice
    all_actions = list(actions)
    all_actions += dl.handle(ChunkFailed(evil_index, "evil", "corrupt"), 1.5)
    all_actions += dl.handle(PeerSeen(peer("evil")), 2.0)
    all_actions += dl.handle(BitfieldUpdate("evil", Bitfield.full(8)), 2.0)
    now = 3.0
    while not dl.done:
        pending = [(i, p) for i in range(8) for p in dl.requested_from(i)]
        assert pending, "stalled"
        for index, src in pending:
            all_actions += arrive(dl, index, src, now)
        all_actions += dl.poll(now)
        now += 1
    assert all(p != "evil" for _, p in requests(all_actions))
    assert "evil" not in bitfield_asks(all_actions)
    assert sum(isinstance(a, BanPeer) for a in all_actions) == 1
    assert dl.peers.banned_count == 1


def test_busy_peer_is_left_alone_for_retry_after() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=1)
    dl, first = with_peers(4, {"a": range(4)}, cfg)
    ((index, _),) = requests(first)
    actions = dl.handle(ChunkFailed(index, "a", "busy", retry_after=5.0), 1.0)
    assert requests(actions) == []
    for t in (2.0, 4.0, 5.99):
        assert requests(dl.poll(t)) == []
    t, got = 5.99, list[tuple[int, str | None]]()
    while not got:
        wake = dl.next_wakeup(t)
        assert wake is not None
        t = wake
        got = requests(dl.poll(t))
    # honoured, and spread by at most half again so that turned-away peers do not return together
    assert got == [(index, "a")] and 6.0 <= t <= 1.0 + 5.0 * 1.5


def test_busy_without_retry_after_uses_the_default_backoff() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=1, busy_backoff=2.0)
    dl, first = with_peers(4, {"a": range(4)}, cfg)
    ((index, _),) = requests(first)
    dl.handle(ChunkFailed(index, "a", "busy"), 1.0)
    assert requests(dl.poll(2.9)) == []
    wake = dl.next_wakeup(2.9)
    assert wake is not None and 3.0 <= wake <= 4.0
    assert [src for _, src in requests(dl.poll(wake))] == ["a"]


def test_a_429_while_its_slots_hold_our_requests_is_a_limit_not_a_pause() -> None:
    cfg = DownloadConfig(per_peer_inflight=4, max_inflight=8, busy_backoff=1.0)
    dl, first = with_peers(20, {"a": range(20), "b": [19]}, cfg)
    ((i0, _),) = [r for r in requests(first) if r[1] == "a"]
    got = [r for r in requests(arrive(dl, i0, "a", 0.5)) if r[1] == "a"]
    assert len(got) == 4  # it delivered: four at once
    # it took three; the fourth came back 429 because its upload slots hold our own three
    window = dl._window
    refused = got[3][0]
    assert requests(dl.handle(ChunkFailed(refused, "a", "busy", retry_after=1.0), 0.6)) == []
    state = dl.peers.get("a")
    assert state is not None and state.backoff_until <= 0.6  # no pause: it is busy with us, not others
    assert dl._window == window  # nor is the swarm busy
    # one of ours arrives: the next goes at once (no Retry-After wait), and no more than it took
    nxt = requests(arrive(dl, got[0][0], "a", 0.7))
    assert [s for _, s in nxt] == ["a"] and len(state.inflight) == 3
    # deliveries let it grow again, one request more every two deliveries: the second makes it four
    index = next(iter(state.inflight))
    arrive(dl, index, "a", 0.8)
    assert len(state.inflight) == 4
    # a peer that left and came back (restarted, perhaps with more slots) starts with no limit
    dl.handle(ChunkFailed(next(iter(state.inflight)), "a", "busy", retry_after=1.0), 0.9)
    assert state.limit == 3.0
    dl.handle(PeerGone("a"), 1.0)
    dl.handle(PeerSeen(peer("a")), 1.1)
    assert state.limit == float("inf")


def test_a_429_with_nothing_of_ours_there_still_pauses_that_peer() -> None:
    cfg = DownloadConfig(per_peer_inflight=4, max_inflight=8, busy_backoff=1.0)
    dl, first = with_peers(4, {"a": range(4)}, cfg)
    ((index, _),) = requests(first)
    dl.handle(ChunkFailed(index, "a", "busy", retry_after=2.0), 1.0)
    state = dl.peers.get("a")
    assert state is not None and state.backoff_until >= 3.0 and state.limit == float("inf")


def test_busy_swarm_shrinks_the_request_window_and_deliveries_grow_it_back() -> None:
    cfg = DownloadConfig(per_peer_inflight=2, max_inflight=8)
    dl, first = with_peers(40, {f"p{i}": range(40) for i in range(8)}, cfg)
    assert len(requests(first)) == 8
    # every peer answers 429: asking eight at once only draws more 429s
    for index, src in requests(first):
        dl.handle(ChunkFailed(index, src, "busy", retry_after=0.1), 1.0)
    again = requests(dl.poll(2.0))
    assert 2 <= len(again) < 8  # never below per_peer_inflight
    # deliveries open the window again, one request per delivery on top of the freed slot
    now = 3.0
    while dl.inflight < 8:
        index = next(i for i in range(40) if dl.requested_from(i))
        (src,) = dl.requested_from(index)
        arrive(dl, index, src, now)
        now += 0.1
        assert now < 10, "window did not reopen"
    assert dl.inflight == 8


def test_missing_chunk_is_asked_of_another_peer_and_the_bit_cleared() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=1)
    dl, first = with_peers(1, {"liar": [0], "honest": [0]}, cfg)
    ((_, first_src),) = requests(first)
    assert first_src is not None
    other = "honest" if first_src == "liar" else "liar"
    actions = dl.handle(ChunkFailed(0, first_src, "missing"), 1.0)
    assert requests(actions) == [(0, other)]
    state = dl.peers.get(first_src)
    assert state is not None and state.mask == 0


def test_failed_chunk_is_never_lost() -> None:
    # two peers that have proven themselves (each delivered a chunk only it held), so that no failure
    # below drops them (an unproven peer is dropped at its first timeout or denied chunk)
    cfg = DownloadConfig(per_peer_inflight=2, max_inflight=2, drop_after_errors=100, drop_after_timeouts=100)
    dl, first = with_peers(4, {"a": [0, 1, 2], "b": [0, 1, 3]}, cfg)
    assert sorted(requests(first)) == [(2, "a"), (3, "b")]
    arrive(dl, 2, "a", 0.0)
    arrive(dl, 3, "b", 0.0)
    kinds: tuple[FailureKind, ...] = ("timeout", "error", "missing", "busy", "timeout")
    now = 0.0
    for kind in kinds:
        pending = [(i, p) for i in range(2) for p in dl.requested_from(i)]
        assert len(pending) == 2
        for index, src in pending:
            assert src is not None
            dl.handle(ChunkFailed(index, src, kind), now)
            if kind == "missing":  # the bit was cleared; the next bitfield claims the chunk again
                dl.handle(BitfieldUpdate(src, Bitfield(4, [0, 1, 2 if src == "a" else 3])), now)
        # both chunks go out again, once each, after the backoffs
        while dl.inflight < 2:
            wake = dl.next_wakeup(now)
            assert wake is not None
            now = wake
            dl.poll(now)
        assert all(len(dl.requested_from(i)) == 1 for i in range(2))
    for index, src in [(i, p) for i in range(2) for p in dl.requested_from(i)]:
        arrive(dl, index, src, now)
    assert dl.done


def test_an_unproven_peer_that_stalls_or_denies_is_dropped_at_once_and_banned_at_the_third_strike() -> None:
    """A false bitfield would hide chunks from the origin fallback: a peer that never delivered gets no
    second wait, and three strikes (timeouts, 404s for claimed chunks) ban it though the tracker
    keeps handing it out."""
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=4, drop_after_timeouts=3, busy_backoff=1.0)
    dl, first = with_peers(8, {"liar": range(8), "b": range(8)}, cfg)
    now = 1.0
    for strike, kind in enumerate(("timeout", "missing", "timeout"), 1):
        ((index, _),) = [r for r in requests(first) if r[1] == "liar"]
        actions = dl.handle(ChunkFailed(index, "liar", kind), now)
        assert not dl.peers.is_live("liar"), strike
        if strike < 3:
            assert not any(isinstance(a, BanPeer) for a in actions)
            # named again at once (tracker, peer exchange): no news, it stays out for 2, then 4 s
            back = now + cfg.busy_backoff * 2**strike
            dl.handle(PeerSeen(peer("liar")), back - 0.1)
            assert not dl.peers.is_live("liar")
            # named after that: it is live again, and asked again
            dl.handle(PeerSeen(peer("liar")), back)
            assert dl.peers.is_live("liar")
            first = dl.handle(BitfieldUpdate("liar", Bitfield(8, range(8))), back + 0.5)
            first += dl.poll(back + 2)
            now = back + 2
        else:
            assert [a.peer_id for a in actions if isinstance(a, BanPeer)] == ["liar"]
            dl.handle(PeerSeen(peer("liar")), now + 1000)
            assert not dl.peers.is_live("liar")


def test_a_proven_peer_survives_a_timeout() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=4, drop_after_timeouts=3)
    dl, first = with_peers(8, {"a": range(8), "b": range(8)}, cfg)
    ((index, _),) = [r for r in requests(first) if r[1] == "a"]
    after = arrive(dl, index, "a", 1.0) + dl.poll(1.1)
    index = next(r[0] for r in requests(after) if r[1] == "a")
    dl.handle(ChunkFailed(index, "a", "timeout"), 2.0)
    assert dl.peers.is_live("a")


def test_repeated_errors_drop_the_peer_and_peer_seen_brings_it_back() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=4, drop_after_errors=2, busy_backoff=1.0)
    dl, first = with_peers(8, {"a": range(8), "b": range(8)}, cfg)
    index = next(i for i, p in requests(first) if p == "a")
    dl.handle(ChunkFailed(index, "a", "error"), 1.0)
    assert dl.peers.is_live("a")
    retry = [r for r in requests(dl.poll(2.5)) if r[1] == "a"]
    assert len(retry) == 1
    dl.handle(ChunkFailed(retry[0][0], "a", "error"), 3.0)
    assert not dl.peers.is_live("a") and dl.peers.active_count == 1
    assert all(p == "b" for _, p in requests(dl.poll(10.0)))
    # seen again (tracker, peer exchange): asked for its bitfield and used again
    actions = dl.handle(PeerSeen(peer("a")), 11.0)
    assert bitfield_asks(actions) == ["a"]
    actions = dl.handle(BitfieldUpdate("a", Bitfield.full(8)), 11.1)
    assert [p for _, p in requests(actions)] == ["a"]


def test_peer_gone_then_seen_restores_a_dropped_peer_but_not_a_banned_one() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=4)
    dl, first = with_peers(8, {"a": range(8), "b": range(8), "c": range(8)}, cfg)
    a_index = next(i for i, p in requests(first) if p == "a")
    b_index = next(i for i, p in requests(first) if p == "b")
    actions = dl.handle(PeerGone("a"), 1.0)
    assert cancels(actions) == [(a_index, "a")]  # its request goes back to the pool
    assert not dl.peers.is_live("a")
    assert a_index not in {i for i in range(8) if "a" in dl.requested_from(i)}
    actions = dl.handle(ChunkFailed(b_index, "b", "corrupt"), 1.0)
    assert [x.peer_id for x in actions if isinstance(x, BanPeer)] == ["b"]
    assert dl.peers.active_count == 1
    actions = dl.handle_all([PeerSeen(peer("a")), PeerSeen(peer("b"))], 2.0)
    assert bitfield_asks(actions) == ["a"]
    actions = dl.handle_all(
        [BitfieldUpdate("a", Bitfield.full(8)), BitfieldUpdate("b", Bitfield.full(8))], 2.1
    )
    assert {p for _, p in requests(actions)} == {"a"}
    assert dl.peers.is_live("a") and not dl.peers.is_live("b")
    assert dl.peers.banned_count == 1


def test_a_peer_that_times_out_repeatedly_is_dropped_and_its_chunk_asked_elsewhere() -> None:
    cfg = DownloadConfig(per_peer_inflight=1, max_inflight=2, drop_after_timeouts=2, busy_backoff=1.0)
    dl, first = with_peers(10, {"slow": range(10), "ok": range(10)}, cfg)
    slow_index = next(i for i, p in requests(first) if p == "slow")
    ok_index = next(i for i, p in requests(first) if p == "ok")
    # slow proves itself with one chunk (an unproven peer is dropped at its first timeout)
    after = arrive(dl, slow_index, "slow", 0.5)
    slow_index = next(i for i, p in requests(after) if p == "slow")
    state = dl.peers.get("slow")
    assert state is not None and state.throughput is not None
    measured = state.throughput
    dl.handle(ChunkFailed(slow_index, "slow", "timeout"), 1.0)
    assert state.throughput < measured and dl.peers.is_live("slow")
    # ok delivers: the timed-out chunk is not lost, and ok (not the slow peer) gets the next request
    assert requests(arrive(dl, ok_index, "ok", 1.5)) == [(slow_index, "ok")]
    # slow is tried again only once its pause is over, and a second timeout drops it
    t, got = 1.5, list[tuple[int, str | None]]()
    while not got:
        wake = dl.next_wakeup(t)
        assert wake is not None
        t = wake
        got = requests(dl.poll(t))
    assert t >= 2.0 and [p for _, p in got] == ["slow"]
    dl.handle(ChunkFailed(got[0][0], "slow", "timeout"), t + 1)
    assert not dl.peers.is_live("slow")


# --- bitfields --------------------------------------------------------------------------------------


def test_bitfields_are_asked_when_seen_then_every_interval_until_done() -> None:
    refs = chunks(2)
    cfg = DownloadConfig(bitfield_interval=1.0)
    dl = Download(refs, (), "me", cfg, now=0.0, rng=random.Random(3))
    assert bitfield_asks(dl.handle(PeerSeen(peer("a")), 0.0)) == ["a"]
    assert bitfield_asks(dl.handle(PeerSeen(peer("a")), 0.1)) == []  # seen again: no new ask
    assert bitfield_asks(dl.handle(PeerSeen(peer("seed")), 0.2)) == ["seed"]
    dl.handle_all([BitfieldUpdate("a", Bitfield(2)), BitfieldUpdate("seed", Bitfield.full(2))], 0.3)
    asked: list[str] = []
    t = 0.3
    while t < 5:
        wake = dl.next_wakeup(t)
        assert wake is not None
        t = max(wake, t)
        asked += bitfield_asks(dl.poll(t))
    # about every second, and never the complete peer again
    assert 3 <= asked.count("a") <= 6 and "seed" not in asked
    while not dl.done:
        for index, src in [(i, p) for i in range(2) for p in dl.requested_from(i)]:
            arrive(dl, index, src, t)
    assert dl.next_wakeup(t) is None
    assert dl.poll(t + 10) == []
    assert bitfield_asks(dl.handle(PeerSeen(peer("new")), t + 11)) == []


def test_wrong_sized_bitfield_is_a_programming_error() -> None:
    dl, _ = with_peers(4, {"a": range(4)})
    with pytest.raises(ValueError, match="bitfield of 5 chunks"):
        dl.handle(BitfieldUpdate("a", Bitfield(5)), 1.0)


# --- origin -----------------------------------------------------------------------------------------


def test_with_no_peers_every_chunk_goes_to_the_origin_after_the_start_delay() -> None:
    refs = chunks(10)
    cfg = DownloadConfig(origin_max_inflight=4, origin_start_delay=0.5)
    dl = Download(refs, [2], "lonely", cfg, now=0.0)
    assert dl.next_wakeup(0.0) == 0.0
    assert requests(dl.poll(0.0)) == []  # others that started with it may show up
    assert dl.next_wakeup(0.0) == 0.5
    got = requests(dl.poll(0.5))
    assert len(got) == 4 and all(src is None for _, src in got)
    fetched = {i for i, _ in got}
    now = 0.0
    while not dl.done:
        now += 1.0
        index = next(i for i in range(10) if None in dl.requested_from(i))
        more = requests(arrive(dl, index, None, now))
        assert all(src is None for _, src in more)
        fetched |= {i for i, _ in more}
        assert dl.origin_inflight <= 4
    assert fetched == set(range(10)) - {2}


def test_the_owner_pulls_after_the_start_delay_others_wait() -> None:
    refs = chunks(30)
    cfg = DownloadConfig(origin_max_inflight=30, max_inflight=30, origin_window=30, origin_start_delay=1.0)
    me, other = "agent-7", "agent-8"
    mine = owned(refs, me, [other])
    assert mine and len(mine) < 30, "pick other ids"
    dl = Download(refs, (), me, cfg, now=0.0)
    # nothing goes to the origin before the peer has said what it holds ...
    assert requests(dl.handle_all([SwarmSize(10), PeerSeen(peer(other))], 0.0)) == []
    # ... nor before the start delay, to learn who else joined ...
    assert requests(dl.handle(BitfieldUpdate(other, Bitfield(30)), 0.05)) == []
    assert dl.next_wakeup(0.05) == pytest.approx(1.0)
    # ... then the chunks it owns do, and only those
    assert {i for i, src in requests(dl.poll(1.0)) if src is None} == mine


def test_origin_waits_for_the_bitfields_of_peers_just_seen_but_not_for_long() -> None:
    refs = chunks(16)
    cfg = DownloadConfig(
        bitfield_interval=1.0, origin_window=16, origin_max_inflight=4, origin_start_delay=0.5
    )
    dl = Download(refs, (), "late", cfg, now=0.0)
    # the tracker's answer, fed one event at a time as an I/O layer might: no decision before the
    # peers have said what they hold
    assert requests(dl.handle(PeerSeen(peer("early")), 0.0)) == []
    assert requests(dl.handle(PeerSeen(peer("mute")), 0.0)) == []
    assert requests(dl.handle(SwarmSize(3), 0.0)) == []
    # early holds half the chunks: those come from it; the others may go to the origin once mute has
    # had a bitfield interval to answer (the ones "late" owns among itself and early: mute never
    # answered, so it cannot be pulling anything and is no puller)
    actions = dl.handle(BitfieldUpdate("early", Bitfield(16, range(8))), 0.05)
    assert [src for _, src in requests(actions)] == ["early"]
    assert dl.next_wakeup(0.05) == pytest.approx(0.5)
    assert requests(dl.poll(0.5)) == []
    assert dl.next_wakeup(0.5) == pytest.approx(1.0)
    assert requests(dl.poll(0.99)) == []
    first = owned(refs, "late", ["early"]) - set(range(8))
    assert first, "pick other names"
    assert first != owned(refs, "late", ["early", "mute"]) - set(range(8)), "pick names where mute matters"
    assert sorted(requests(dl.poll(1.0))) == [(i, None) for i in sorted(first)]


def test_peers_given_to_the_constructor_are_asked_at_the_first_poll() -> None:
    refs = chunks(4)
    dl = Download(refs, (), "me", now=5.0, peers=[peer("a"), peer("b"), peer("me")], swarm_size=3)
    assert dl.peers.active_count == 2 and dl.swarm_estimate == 3
    assert dl.next_wakeup(5.0) == 5.0
    actions = dl.poll(5.0)
    assert sorted(bitfield_asks(actions)) == ["a", "b"]
    assert requests(actions) == []


def test_agents_that_know_each_other_pull_every_chunk_exactly_once() -> None:
    refs = chunks(40)
    ids = ["n0", "n1", "n2", "n3"]
    cfg = DownloadConfig(origin_max_inflight=40, max_inflight=40, origin_window=40, origin_start_delay=0)
    pulls: Counter[int] = Counter()
    for me in ids:
        dl = Download(refs, (), me, cfg, now=0.0, salt="swarm-x")
        others = [p for p in ids if p != me]
        events: list[Event] = [SwarmSize(len(ids)), *(PeerSeen(peer(p)) for p in others)]
        events += [BitfieldUpdate(p, Bitfield(40)) for p in others]
        got = requests(dl.handle_all(events, 0.0))
        assert all(src is None for _, src in got)
        pulls.update(i for i, _ in got)
        group = pullers("swarm-x", ids, 16)
        assert {i for i, _ in got} == {i for i, c in enumerate(refs) if chunk_owner(c.sha256, group) == me}
    assert pulls == Counter(range(40))


def test_the_owners_pull_in_one_fleet_wide_order_a_few_chunks_at_a_time() -> None:
    refs = chunks(40)
    order = sorted(range(40), key=lambda i: refs[i].sha256)
    cfg = DownloadConfig(origin_max_inflight=40, max_inflight=40, origin_window=3, origin_start_delay=0)
    me, other = "n0", "n1"
    mine = owned(refs, me, [other])
    theirs = set(range(40)) - mine
    dl = Download(refs, (), me, cfg, now=0.0)
    got = requests(
        dl.handle_all([SwarmSize(2), PeerSeen(peer(other)), BitfieldUpdate(other, Bitfield(40))], 0.0)
    )
    # only the chunks with fewer than 3 chunks ahead of them (by digest) that are still on their way
    # every chunk is someone's: the first three in the shared order are the ones on their way
    assert mine | theirs == set(range(40))
    expected = [i for i in order[:3] if i in mine]
    assert sorted(i for i, _ in got) == sorted(expected)
    # the peer shows the chunks it pulled: the pipeline moves on
    held = [i for i in order[:10] if i in theirs]
    got = requests(dl.handle(BitfieldUpdate(other, Bitfield(40, held)), 1.0))
    assert all(src is None or i in held for i, src in got)


def test_the_origin_window_grows_to_what_a_fast_origin_sends_in_the_lead_time() -> None:
    refs = chunks(60)
    pos = {i: p for p, i in enumerate(origin_order(refs))}
    cfg = DownloadConfig(origin_max_inflight=60, max_inflight=60, origin_start_delay=0)
    assert (cfg.origin_window, cfg.origin_lead, cfg.origin_window_max) == (4, 1.0, 16)
    me, other = "n0", "n1"
    mine = owned(refs, me, [other])
    theirs = set(range(60)) - mine

    def free(window: int, inflight: set[int]) -> set[int]:
        """My chunks with fewer than ``window`` chunks ahead on their way (theirs, or mine in flight)."""
        return {i for i in mine if sum(pos[j] < pos[i] for j in theirs | inflight) < window}

    def start() -> tuple[Download, set[int]]:
        dl = Download(refs, (), me, cfg, now=0.0)
        events = [SwarmSize(2), PeerSeen(peer(other)), BitfieldUpdate(other, Bitfield(60))]
        return dl, {i for i, _ in requests(dl.handle_all(events, 0.0))}

    # the origin's rate is not known yet: four chunks on their way at most
    dl, first = start()
    assert first == free(4, set())
    # one came alone from the origin, 1 MiB in 0.1 s: ten chunks a second, ten in the lead time of 1 s
    index = min(first, key=pos.__getitem__)
    got = {i for i, _ in requests(dl.handle(ChunkArrived(index, None, MIB, 0.1), 0.1))}
    assert got == free(10, first - {index}) - first
    assert got, "pick other names"
    # a slow origin (1 MiB in 2 s) keeps the window at four
    dl, _ = start()
    got = {i for i, _ in requests(dl.handle(ChunkArrived(index, None, MIB, 2.0), 2.0))}
    assert got == free(4, first - {index}) - first


def test_a_chunk_its_owner_does_not_bring_is_pulled_after_the_fallback_wait() -> None:
    refs = chunks(1)
    sha = refs[0].sha256
    swarm, k, delay = 10, 1.5, 10.0
    # "a" owns the chunk (its hash is below every rank-1 agent's) and never brings it
    a = next(f"a{n}" for n in range(1000) if origin_rank(sha, f"a{n}", swarm, k) < 0.5)
    me = next(f"m{n}" for n in range(1000) if 1.0 <= origin_rank(sha, f"m{n}", swarm, k) < 2.0)
    assert not owned(refs, me, [a, "b"])
    expected = fallback_wait(origin_rank(sha, me, swarm, k), delay)
    assert delay <= expected < 2 * delay
    cfg = DownloadConfig(origin_fallback_delay=delay, origin_start_delay=0)
    dl = Download(refs, (), me, cfg, now=100.0)
    dl.handle_all([SwarmSize(swarm), PeerSeen(peer(a)), PeerSeen(peer("b"))], 100.0)
    dl.handle_all([BitfieldUpdate(a, Bitfield(1)), BitfieldUpdate("b", Bitfield(1))], 100.1)
    t = 100.1
    while True:
        wake = dl.next_wakeup(t)
        assert wake is not None
        t = wake
        got = requests(dl.poll(t))
        if got:
            break
        assert t < 100.0 + expected + 1e-9
    assert got == [(0, None)]
    assert t == pytest.approx(100.0 + expected)


def test_fallback_clock_restarts_when_the_only_holder_leaves() -> None:
    refs = chunks(2)
    swarm, delay = 10, 10.0
    # "idle" owns both chunks (its hashes are below any rank-1 agent's) and never brings them
    idle = next(
        f"idle{n}"
        for n in range(10_000)
        if all(origin_rank(c.sha256, f"idle{n}", swarm, 1.5) < 1 for c in refs)
    )
    me = next(
        f"m{n}"
        for n in range(1000)
        if all(1.0 <= origin_rank(c.sha256, f"m{n}", swarm, 1.5) < 2.0 for c in refs)
    )
    assert not owned(refs, me, ["holder", idle]) and not owned(refs, me, [idle])
    waits = [fallback_wait(origin_rank(c.sha256, me, swarm, 1.5), delay) for c in refs]
    cfg = DownloadConfig(origin_fallback_delay=delay, per_peer_inflight=1, max_inflight=1)
    dl = Download(refs, (), me, cfg, now=0.0)
    dl.handle_all([SwarmSize(swarm), PeerSeen(peer("holder")), PeerSeen(peer(idle))], 0.0)
    dl.handle_all([BitfieldUpdate("holder", Bitfield(2, [0, 1])), BitfieldUpdate(idle, Bitfield(2))], 0.1)
    assert [src for i in range(2) for src in dl.requested_from(i)] == ["holder"]
    # the holder goes away at t=50: both chunks are unseen from then on
    dl.handle(PeerGone("holder"), 50.0)
    assert requests(dl.poll(50.0 + min(waits) - 0.01)) == []
    t = 50.0
    got: list[tuple[int, str | None]] = []
    while not got:
        wake = dl.next_wakeup(t)
        assert wake is not None
        t = wake
        got = requests(dl.poll(t))
    assert got[0][1] is None
    assert t == pytest.approx(50.0 + waits[got[0][0]])


def test_an_agent_that_knows_nobody_in_a_large_swarm_waits_the_start_delay() -> None:
    refs = chunks(4)
    cfg = DownloadConfig(origin_start_delay=1.0)
    dl = Download(refs, (), "early", cfg, now=0.0, swarm_size=500)
    # the tracker said the swarm is large, yet no peer is known yet: not alone, so no pull at once
    assert requests(dl.poll(0.0)) == []
    assert dl.next_wakeup(0.0) == pytest.approx(1.0)
    # by then nobody showed up: it is its swarm's only known puller and pulls, a window at a time
    got = requests(dl.poll(1.0))
    assert got and all(src is None for _, src in got) and len(got) <= cfg.origin_window


def test_origin_failures_back_off() -> None:
    dl = Download(chunks(1), (), "lonely", DownloadConfig(origin_start_delay=0), now=0.0)
    assert requests(dl.poll(0.0)) == [(0, None)]
    assert requests(dl.handle(ChunkFailed(0, None, "error"), 1.0)) == []
    assert requests(dl.poll(1.5)) == []
    wake = dl.next_wakeup(1.5)
    assert wake == pytest.approx(2.0)
    assert requests(dl.poll(2.0)) == [(0, None)]
    dl.handle(ChunkFailed(0, None, "busy", retry_after=7.0), 3.0)
    assert requests(dl.poll(9.9)) == []
    assert requests(dl.poll(10.0)) == [(0, None)]


def test_done_stops_all_requests() -> None:
    dl, _ = with_peers(3, {"a": range(3)}, DownloadConfig(per_peer_inflight=4))
    now = 1.0
    while not dl.done:
        for index, src in [(i, p) for i in range(3) for p in dl.requested_from(i)]:
            arrive(dl, index, src, now)
        dl.poll(now)
        now += 1
    assert dl.next_wakeup(now) is None
    after: list[Action] = []
    after += dl.poll(now + 100)
    after += dl.handle(PeerSeen(peer("z")), now)
    after += dl.handle(BitfieldUpdate("a", Bitfield.full(3)), now)
    after += dl.handle(SwarmSize(5), now)
    after += dl.handle(PeerGone("a"), now)
    assert after == []
    assert dl.have.complete


def test_local_chunks_and_duplicate_digests_count_as_held() -> None:
    refs = chunks(3)
    refs.append(refs[0])  # chunk 3 has the same bytes as chunk 0
    dl = Download(refs, [1], "lonely", now=0.0)
    got = requests(dl.poll(0.0))
    assert 1 not in {i for i, _ in got}
    actions = arrive(dl, 0, None, 1.0)
    assert 0 in dl.have and 3 in dl.have
    assert (3, None) in cancels(actions) or 3 not in {i for i, _ in got}


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="per_peer_inflight"):
        DownloadConfig(per_peer_inflight=0)
    with pytest.raises(ValueError, match="origin_pullers"):
        DownloadConfig(origin_pullers=0)


# --- invariants under random traffic ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_invariants_hold_under_random_answers(seed: int) -> None:
    rng = random.Random(seed)
    n = 24
    refs = chunks(n)
    cfg = DownloadConfig(per_peer_inflight=3, max_inflight=8, origin_max_inflight=2, endgame_duplicates=2)
    dl = Download(refs, rng.sample(range(n), 3), "me", cfg, now=0.0, rng=random.Random(seed))
    names = [f"p{i}" for i in range(6)]
    holdings = {p: Bitfield(n, rng.sample(range(n), rng.randrange(n))) for p in names}
    evil = names[0]
    inflight: set[tuple[int, str | None]] = set()
    banned: set[str] = set()
    now = 0.0

    def run(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, RequestChunk):
                key = (a.index, a.peer_id)
                assert key not in inflight, "asked the same source twice at once"
                assert a.index not in dl.have
                assert a.peer_id not in banned
                inflight.add(key)
            elif isinstance(a, CancelChunk):
                inflight.discard((a.index, a.peer_id))
            elif isinstance(a, BanPeer):
                assert a.peer_id not in banned
                banned.add(a.peer_id)
        per_peer = Counter(p for _, p in inflight)
        assert len(inflight) == dl.inflight <= cfg.max_inflight
        assert per_peer.get(None, 0) == dl.origin_inflight <= cfg.origin_max_inflight
        assert all(c <= cfg.per_peer_inflight for p, c in per_peer.items() if p is not None)

    run(dl.handle_all([SwarmSize(8), *(PeerSeen(peer(p)) for p in names)], now))
    for _ in range(3000):
        if dl.done:
            break
        now += rng.uniform(0.0, 0.5)
        roll = rng.random()
        if inflight and roll < 0.6:
            index, src = rng.choice(sorted(inflight, key=str))
            inflight.discard((index, src))
            if src == evil:
                run(dl.handle(ChunkFailed(index, src, "corrupt"), now))
            elif rng.random() < 0.7:
                run(dl.handle(ChunkArrived(index, src, MIB, rng.uniform(0.01, 2)), now))
            else:
                kind = rng.choice(["missing", "busy", "timeout", "error"])
                retry = rng.choice([None, 0.5, 2.0]) if kind == "busy" else None
                run(dl.handle(ChunkFailed(index, src, kind, retry), now))  # type: ignore[arg-type]
        elif roll < 0.8:
            p = rng.choice(names)
            for i in rng.sample(range(n), 2):
                holdings[p].add(i)
            run(dl.handle(BitfieldUpdate(p, holdings[p]), now))
        elif roll < 0.85:
            run(dl.handle(PeerGone(rng.choice(names)), now))
            inflight = {(i, s) for (i, s) in inflight if s is None or dl.peers.is_live(s)}
        elif roll < 0.9:
            run(dl.handle(PeerSeen(peer(rng.choice(names))), now))
        else:
            run(dl.poll(now))
    assert dl.done, f"stuck with {dl.missing_count} missing"
    assert banned <= {evil}
    assert dl.next_wakeup(now) is None


# --- regressions found with the simulator -----------------------------------------------------------


def test_endgame_wakeup_is_never_due_without_work_when_time_rounds() -> None:
    # ``now - since < patience`` can hold while ``since + patience == now`` in floating point: the
    # core then asked to be polled at ``now`` again and again (a simulated fleet livelocked on it)
    t0 = next(t for t in (51.42317361209097 + i / 7 for i in range(1000)) if (t + 0.5) - t < 0.5)
    cfg = DownloadConfig(endgame_min_wait=0.5, endgame_patience=0.0)
    refs = chunks(1)
    dl = Download(refs, (), "me", cfg, now=t0)
    first = dl.handle_all([SwarmSize(1000), PeerSeen(peer("a")), BitfieldUpdate("a", Bitfield(1, [0]))], t0)
    assert requests(first) == [(0, "a")]
    wake = dl.next_wakeup(t0)
    assert wake == t0 + 0.5
    assert dl.poll(wake) == []
    again = dl.next_wakeup(wake)
    assert again is not None and again > wake


def test_fallback_waits_while_the_origin_is_slow_for_this_agent_too() -> None:
    refs = chunks(2)
    swarm, delay = 1000, 10.0
    other = "z-0"
    me = next(f"me-{n}" for n in range(100_000) if owned(refs, f"me-{n}", [other]) == {0})
    cfg = DownloadConfig(origin_fallback_delay=delay, origin_start_delay=1.0)
    dl = Download(refs, (), me, cfg, now=0.0)
    # chunk 1's turn comes with the start delay; its owner is the other peer
    wait1 = 1.0 + fallback_wait(origin_rank(refs[1].sha256, me, swarm, 1.5), delay)
    first = dl.handle_all([SwarmSize(swarm), PeerSeen(peer(other)), BitfieldUpdate(other, Bitfield(2))], 0.0)
    first += dl.poll(1.0)  # the start delay is over: the owner's pull goes at once
    assert requests(first) == [(0, None)]
    # chunk 0 takes 40 s to come from the origin: chunk 1's designated agent is as slow, so no fallback
    assert requests(dl.poll(wait1 + 1.0)) == []
    assert requests(arrive(dl, 0, None, 40.0, seconds=40.0)) == []
    assert requests(dl.poll(max(wait1 + 1.0, 41.0))) == []
    # then it waits twice that time after its own origin chunk arrived
    busy_until = max(wait1, 40.0 + 2 * 40.0)
    now, pulled = 41.0, []
    while not pulled:
        wake = dl.next_wakeup(now)
        assert wake is not None and wake > now
        now = wake
        pulled = requests(dl.poll(now))
    assert pulled == [(1, None)] and now == pytest.approx(busy_until)


def test_a_chunk_a_peer_says_it_is_pulling_is_left_to_it() -> None:
    refs = chunks(2)
    cfg = DownloadConfig(
        origin_start_delay=0, origin_fallback_delay=10.0, origin_window=8, origin_max_inflight=2
    )
    other = "n1"
    me = next(f"m{k}" for k in range(100) if owned(refs, f"m{k}", [other]))
    index = min(owned(refs, me, [other]))
    dl = Download(refs, (), me, cfg, now=0.0)
    # the other agent joined earlier, believed it owned this chunk, and is fetching it from the origin
    events: list[Event] = [
        SwarmSize(2),
        PeerSeen(peer(other)),
        BitfieldUpdate(other, Bitfield(2), frozenset({index})),
    ]
    got = requests(dl.handle_all(events, 0.0))
    assert (index, None) not in got
    # it stays with the claimer far beyond the usual fallback delay ...
    assert (index, None) not in requests(dl.poll(30.0))
    # ... until the claim ends without the chunk (its pull failed): then the owner pulls at once
    assert (index, None) in requests(dl.handle(BitfieldUpdate(other, Bitfield(2)), 31.0))


def test_a_claim_never_delivered_delays_a_chunk_by_a_bounded_time() -> None:
    refs = chunks(1)
    cfg = DownloadConfig(origin_start_delay=0, origin_fallback_delay=1.0)
    me, liar = "n0", "liar"
    dl = Download(refs, (), me, cfg, now=0.0)
    claim = BitfieldUpdate(liar, Bitfield(1), frozenset({0}))
    assert requests(dl.handle_all([SwarmSize(2), PeerSeen(peer(liar)), claim], 0.0)) == []
    t, got = 0.0, []
    while not got:
        dl.handle(claim, t)  # the claim is repeated at every poll
        wake = dl.next_wakeup(t)
        assert wake is not None and wake > t
        t = wake
        got = requests(dl.poll(t))
    assert got == [(0, None)]
    assert t <= CLAIM_PATIENCE * 1.0 + 1e-9


def test_in_a_large_swarm_the_pullers_are_polled_as_often_as_anyone_else() -> None:
    refs = chunks(4)
    cfg = DownloadConfig(bitfield_interval=1.0, origin_start_delay=1000.0)
    peers = [f"p{i}" for i in range(60)]
    group = set(pullers("", [*peers, "me"], 16)) - {"me"}
    for swarm, expect_pullers in ((50, (50, 70)), (10_000, (0, 5))):
        dl = Download(refs, (), "me", cfg, now=0.0, rng=random.Random(1))
        dl.handle_all([SwarmSize(swarm), *(PeerSeen(peer(p)) for p in peers)], 0.0)
        dl.handle_all([BitfieldUpdate(p, Bitfield(4)) for p in peers], 0.01)
        asked: Counter[str] = Counter()
        t = 0.01
        while t < 60:
            wake = dl.next_wakeup(t)
            assert wake is not None
            t = max(wake, t + 0.01)
            asked.update(bitfield_asks(dl.poll(t)))
            dl.handle_all([BitfieldUpdate(p, Bitfield(4)) for p in peers], t)
        per_puller = [asked[p] for p in group]
        others = [asked[p] for p in peers if p not in group]
        low, high = expect_pullers
        # other peers: about one ask a second either way
        assert min(others) >= 50
        # pullers: the same in a small swarm, 200/10,000 of it (about 1 in 60 s) in a large one
        assert low <= sum(per_puller) / len(per_puller) <= high, (swarm, per_puller)


def test_a_liar_named_by_a_lying_tracker_delays_the_origin_by_one_timeout_only() -> None:
    """The chaos `evil-only` case in the core: the only tracker names a liar (its id ground to rank first
    among the pullers, a full bitfield, claims to be pulling everything) and 20 ghosts where nothing
    answers, with a swarm size of 5,000. After the liar's first stall the agent fetches everything from
    the origin at once; it does not wait for the ghosts, nor for fallback delays scaled by 5,000."""
    n = 14
    salt = "ab" * 32
    refs = chunks(n)
    liar = min((f"evil-{i}" for i in range(5000)), key=lambda p: peer_chunk_hash(salt, p))
    dl = Download(refs, (), "me", DownloadConfig(origin_fallback_delay=10.0), now=0.0, salt=salt)
    named = [SwarmSize(5000), PeerSeen(peer(liar)), *(PeerSeen(peer(f"ghost-{i}")) for i in range(20))]
    actions = dl.handle_all(named, 0.0)
    assert liar in bitfield_asks(actions)
    full = Bitfield.full(n)
    actions = dl.handle(BitfieldUpdate(liar, full, pulling=tuple(range(n))), 0.01)
    asked = requests(actions)
    assert asked and all(src == liar for _, src in asked)  # it claims everything: it is asked first
    assert requests(dl.poll(9.0)) == []  # nothing from the origin while it holds every chunk
    (index, _) = asked[0]
    actions = dl.handle(ChunkFailed(index, liar, "timeout"), 10.0)  # it stalled
    assert not dl.peers.is_live(liar)
    now, origin = 10.0, set[int]()
    pending = [i for i, src in requests(actions + dl.poll(10.5)) if src is None]
    while pending and now < 30:
        i = pending.pop()
        origin.add(i)
        now += 0.3
        pending += [j for j, src in requests(dl.handle(ChunkArrived(i, None, MIB, 0.3), now)) if src is None]
    assert origin == set(range(n)), sorted(origin)
    assert now < 16


def test_a_peer_that_does_not_know_the_swarm_is_no_puller() -> None:
    """A liar's peer list can name any web server (the origin itself): its 404 for the swarm's bitfield
    reads as an empty bitfield, and must not make it the owner of chunks nobody then pulls."""
    n = 8
    salt = "cd" * 32
    refs = chunks(n)
    stranger = min((f"web-{i}" for i in range(5000)), key=lambda p: peer_chunk_hash(salt, p))
    assert peer_chunk_hash(salt, stranger) < peer_chunk_hash(salt, "me")
    cfg = DownloadConfig(origin_fallback_delay=10.0, origin_window=n, origin_max_inflight=n)
    dl = Download(refs, (), "me", cfg, now=0.0, salt=salt)
    dl.handle_all([SwarmSize(5000), PeerSeen(peer(stranger))], 0.0)
    actions = dl.handle(BitfieldUpdate(stranger, Bitfield(n), in_swarm=False), 0.05)
    actions += dl.poll(1.0)  # after the start delay: everything is this agent's to pull
    assert sorted(i for i, src in requests(actions) if src is None) == list(range(n))
    # the same peer answering a real (empty) bitfield of the swarm is a puller: it owns chunks then
    dl2 = Download(refs, (), "me", cfg, now=0.0, salt=salt)
    dl2.handle_all([SwarmSize(5000), PeerSeen(peer(stranger))], 0.0)
    actions = dl2.handle(BitfieldUpdate(stranger, Bitfield(n)), 0.05) + dl2.poll(1.0)
    assert len([i for i, src in requests(actions) if src is None]) < n

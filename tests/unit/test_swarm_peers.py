"""The peer table: scores, penalties, drops and bans."""

from __future__ import annotations

import random

from swarmupdate.model import PeerInfo
from swarmupdate.swarm.peers import PeerTable


def table(site: str = "") -> PeerTable:
    return PeerTable(site, random.Random(1))


def test_seen_drop_revive_and_ban() -> None:
    t = table()
    assert t.seen(PeerInfo("a", "u"))
    assert not t.seen(PeerInfo("a", "u2"))  # already live; info refreshed
    state = t.get("a")
    assert state is not None and state.info.url == "u2"
    assert t.drop("a") is state and state.status == "dropped"
    assert t.drop("a") is None
    assert t.seen(PeerInfo("a", "u")) and t.is_live("a")
    assert t.ban("a", "bad bytes") and not t.ban("a", "again")
    assert not t.seen(PeerInfo("a", "u")) and not t.is_live("a")
    assert t.banned_count == 1 and t.active_count == 0
    # a peer never seen can be banned too (an unsolicited bad chunk)
    assert t.ban("ghost", "bad bytes") and t.banned_count == 2 and "ghost" in t


def test_throughput_ewma_and_penalties_order_the_peers() -> None:
    t = table()
    for name in ("fast", "slow", "busy", "liar", "new"):
        t.seen(PeerInfo(name, ""))
    get = t.get
    t.record_success(get("fast"), 8_000_000, 1.0)  # type: ignore[arg-type]
    t.record_success(get("slow"), 1_000_000, 1.0)  # type: ignore[arg-type]
    t.record_success(get("busy"), 8_000_000, 1.0)  # type: ignore[arg-type]
    t.record_success(get("liar"), 8_000_000, 1.0)  # type: ignore[arg-type]
    t.record_busy(get("busy"), now=0.0, wait=1.0)  # type: ignore[arg-type]
    t.record_busy(get("busy"), now=0.0, wait=1.0)  # type: ignore[arg-type]
    t.record_missing(get("liar"))  # type: ignore[arg-type]
    order = [p.peer_id for p in t.ranked(t.live())]
    assert order[0] == "fast"
    assert order.index("busy") > order.index("fast") and order.index("liar") > order.index("fast")
    assert order[-1] == "slow"
    # a success restores the penalty
    t.record_success(get("busy"), 8_000_000, 1.0)  # type: ignore[arg-type]
    assert get("busy").penalty == 1.0  # type: ignore[union-attr]


def test_timeouts_count_as_zero_throughput_and_drop_after_a_few() -> None:
    t = table()
    t.seen(PeerInfo("p", ""))
    state = t.get("p")
    assert state is not None
    t.record_success(state, 1000, 1.0)
    assert not t.record_timeout(state, now=0.0, backoff=1.0, drop_after=3)
    assert state.throughput == 700.0 and state.backoff_until == 1.0
    assert not t.record_timeout(state, now=0.0, backoff=1.0, drop_after=3)
    assert t.record_timeout(state, now=0.0, backoff=1.0, drop_after=3)
    # errors count separately and a success resets both
    t.record_success(state, 1000, 1.0)
    assert not t.record_error(state, now=0.0, backoff=1.0, drop_after=2)
    assert t.record_error(state, now=0.0, backoff=1.0, drop_after=2)


def test_unproven_peers_get_one_slot() -> None:
    t = table()
    t.seen(PeerInfo("p", ""))
    state = t.get("p")
    assert state is not None and state.slots(4) == 1
    t.record_success(state, 1, 1.0)
    assert state.slots(4) == 4


def test_same_site_breaks_ties() -> None:
    t = table("dc1")
    for name, site in [("x", "dc2"), ("y", "dc1"), ("z", "")]:
        t.seen(PeerInfo(name, "", site))
    assert next(p.peer_id for p in t.ranked(t.live())) == "y"

"""TokenBucket arithmetic."""

from __future__ import annotations

import pytest

from swarmupdate.swarm.ratelimit import TokenBucket


def test_burst_goes_at_once_then_the_rate_applies() -> None:
    b = TokenBucket(rate=100.0, burst=300.0)
    assert b.take(300, now=0.0) == 0.0
    assert b.take(100, now=0.0) == pytest.approx(1.0)  # in debt by 100 bytes at 100 B/s
    assert b.take(100, now=0.0) == pytest.approx(2.0)
    # after 2 s the debt is paid: the next 50 bytes wait 0.5 s
    assert b.take(50, now=2.0) == pytest.approx(0.5)


def test_refill_is_capped_at_burst() -> None:
    b = TokenBucket(rate=10.0, burst=20.0)
    assert b.take(20, now=0.0) == 0.0
    assert b.available(1000.0) == pytest.approx(20.0)
    assert b.take(20, now=1000.0) == 0.0
    assert b.take(1, now=1000.0) == pytest.approx(0.1)


def test_partial_refill() -> None:
    b = TokenBucket(rate=1000.0, burst=1000.0)
    b.take(1000, now=5.0)
    assert b.available(5.25) == pytest.approx(250.0)
    assert b.take(500, now=5.25) == pytest.approx(0.25)


def test_larger_than_burst_waits_for_the_excess() -> None:
    b = TokenBucket(rate=1_000_000.0, burst=65536.0)
    assert b.take(1_065_536, now=0.0) == pytest.approx(1.0)


def test_zero_rate_is_unlimited() -> None:
    b = TokenBucket(rate=0, burst=0)
    assert b.take(10**12, now=0.0) == 0.0
    assert b.available(0.0) == float("inf")


def test_time_going_backwards_does_not_mint_tokens() -> None:
    b = TokenBucket(rate=10.0, burst=10.0)
    b.take(10, now=100.0)
    assert b.take(10, now=50.0) == pytest.approx(1.0)
    assert b.available(100.5) == pytest.approx(-5.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=-1, burst=1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1, burst=0)
    with pytest.raises(ValueError, match="n must be"):
        TokenBucket(rate=1, burst=1).take(-1, now=0.0)

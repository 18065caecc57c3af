"""Token bucket for per-agent byte limits (upload and download, across all swarms). Pure."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` bytes per second on average, bursts of up to ``burst`` bytes; ``rate`` 0 = unlimited.

    :meth:`take` always grants the bytes and answers how long the caller must wait before sending them;
    a grant larger than the tokens at hand leaves a debt that later callers wait out, so large chunks
    pass at the configured rate too and no caller starves.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        if rate > 0 and burst <= 0:
            raise ValueError("burst must be > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def available(self, now: float) -> float:
        """Bytes that may go now without waiting (negative while in debt)."""
        if self.rate == 0:
            return float("inf")
        self._refill(now)
        return self._tokens

    def take(self, n: int, now: float) -> float:
        """Reserve ``n`` bytes; returns the seconds to wait before sending them (0 = now)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if self.rate == 0:
            return 0.0
        self._refill(now)
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

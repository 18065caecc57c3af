"""What a simulation run measured, and the lower bound it is compared with. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SimResult", "kumar_ross_bound"]


def kumar_ross_bound(
    size: float, agents: int, origin_up: float, down_min: float, peer_up_sum: float
) -> float:
    """The least time any scheme needs to give ``agents`` machines a file of ``size`` bytes.

    Kumar and Ross (2006): the origin must send every byte at least once, the slowest downlink must
    receive the whole file, and all ``agents * size`` bytes must go out of some uplink.
    """
    if agents <= 0 or size <= 0:
        return 0.0
    return max(size / origin_up, size / down_min, agents * size / (origin_up + peer_up_sum))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[pos]


@dataclass(frozen=True, slots=True)
class SimResult:
    """Outcome of one run. Times in simulated seconds, sizes in bytes."""

    agents: int
    adversaries: int
    artifact_size: int
    #: per honest agent: completion time minus its start time (inf when it did not finish)
    completion: tuple[float, ...]
    #: bytes the origin sent, partial (cancelled) transfers included
    origin_bytes: float
    #: bytes received, by where they came from: origin, peer, corrupt (adversaries), cancelled (partial)
    bytes_by_source: dict[str, float]
    #: BanPeer actions over all honest agents; and how many honest agents banned at least one peer
    bans: int
    agents_that_banned: int
    #: peers banned that were honest (should be 0)
    honest_banned: int
    t_min: float
    sim_time: float
    events: int

    @property
    def all_complete(self) -> bool:
        return all(math.isfinite(t) for t in self.completion)

    @property
    def max_completion(self) -> float:
        return max(self.completion, default=0.0)

    @property
    def p50_completion(self) -> float:
        return _percentile(list(self.completion), 0.5)

    @property
    def origin_copies(self) -> float:
        """Origin egress in copies of the artifact."""
        return self.origin_bytes / self.artifact_size if self.artifact_size else 0.0

    def summary(self) -> str:
        mib = 1 << 20
        by = ", ".join(f"{k} {v / mib:,.0f} MiB" for k, v in self.bytes_by_source.items())
        done = sum(1 for t in self.completion if math.isfinite(t))
        ratio = self.max_completion / self.t_min if self.t_min > 0 else math.nan
        lines = [
            f"agents {self.agents} (+{self.adversaries} adversaries), "
            f"artifact {self.artifact_size / mib:g} MiB",
            f"complete {done}/{self.agents}: p50 {self.p50_completion:.2f} s, "
            f"max {self.max_completion:.2f} s, T_min {self.t_min:.2f} s (max/T_min {ratio:.2f})",
            f"origin egress {self.origin_copies:.3f} copies of the artifact",
            f"bytes received: {by}",
            f"bans {self.bans} by {self.agents_that_banned} agents, honest peers banned {self.honest_banned}",
            f"simulated {self.sim_time:.2f} s, {self.events:,} events",
        ]
        return "\n".join(lines)

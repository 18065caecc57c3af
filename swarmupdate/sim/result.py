"""What a simulation run measured, and the lower bound it is compared with. Pure."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SimResult", "TrackerLoad", "kumar_ross_bound", "tracker_load"]


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


@dataclass(frozen=True, slots=True)
class TrackerLoad:
    """Announces per second at the tracker: the release's swarm, plus the fleet swarm's steady rate."""

    #: announces to the release's swarm over the run
    announces: int = 0
    #: the busiest one-second window of release announces, and their mean over the run
    peak_per_s: float = 0.0
    mean_per_s: float = 0.0
    #: fleet swarm announces (every agent, every tracker interval): a constant background
    fleet_per_s: float = 0.0


def tracker_load(times: Iterable[float], duration: float, fleet_per_s: float) -> TrackerLoad:
    """Load from the times of the release's announces (per-second bins) and the fleet swarm's rate."""
    bins = Counter(math.floor(t) for t in times)
    total = sum(bins.values())
    return TrackerLoad(
        announces=total,
        peak_per_s=float(max(bins.values(), default=0)),
        mean_per_s=total / duration if duration > 0 else 0.0,
        fleet_per_s=fleet_per_s,
    )


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
    tracker: TrackerLoad = field(default_factory=TrackerLoad)

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

    @property
    def efficiency(self) -> float:
        """T_min / T for the slowest agent (1 = optimal)."""
        t = self.max_completion
        return self.t_min / t if t > 0 and math.isfinite(t) else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the per-agent completion times)."""
        done = [t for t in self.completion if math.isfinite(t)]
        return {
            "agents": self.agents,
            "adversaries": self.adversaries,
            "artifact_bytes": self.artifact_size,
            "complete": len(done),
            "p50_s": self.p50_completion,
            "max_s": self.max_completion,
            "t_min_s": self.t_min,
            "efficiency": self.efficiency,
            "origin_copies": self.origin_copies,
            "bytes_by_source": dict(self.bytes_by_source),
            "bans": self.bans,
            "agents_that_banned": self.agents_that_banned,
            "honest_banned": self.honest_banned,
            "tracker": asdict(self.tracker),
            "sim_time_s": self.sim_time,
            "events": self.events,
        }

    def summary(self) -> str:
        mib = 1 << 20
        by = ", ".join(f"{k} {v / mib:,.0f} MiB" for k, v in self.bytes_by_source.items())
        done = sum(1 for t in self.completion if math.isfinite(t))
        ratio = self.max_completion / self.t_min if self.t_min > 0 else math.nan
        lines = [
            f"agents {self.agents} (+{self.adversaries} adversaries), "
            f"artifact {self.artifact_size / mib:g} MiB",
            f"complete {done}/{self.agents}: p50 {self.p50_completion:.2f} s, "
            f"max {self.max_completion:.2f} s, T_min {self.t_min:.2f} s (max/T_min {ratio:.2f}, "
            f"efficiency {self.efficiency:.2f})",
            f"origin egress {self.origin_copies:.3f} copies of the artifact",
            f"tracker: {self.tracker.announces:,} release announces, peak {self.tracker.peak_per_s:,.0f}/s, "
            f"mean {self.tracker.mean_per_s:,.1f}/s; fleet swarm {self.tracker.fleet_per_s:,.1f}/s",
            f"bytes received: {by}",
            f"bans {self.bans} by {self.agents_that_banned} agents, honest peers banned {self.honest_banned}",
            f"simulated {self.sim_time:.2f} s, {self.events:,} events",
        ]
        return "\n".join(lines)

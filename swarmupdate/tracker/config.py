"""The tracker's settings: one frozen, documented dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from swarmupdate.errors import ConfigError
from swarmupdate.swarm.policy import ORIGIN_PULLERS
from swarmupdate.tracker.wire import MAX_NUMWANT

__all__ = ["TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """How a tracker remembers peers and hands them out.

    Memory: about 0.6 KiB per remembered peer, so the default ``max_peers`` bounds the store
    near 600 MiB whatever the announces; ``max_peers_per_swarm`` and ``max_swarms`` bound
    each dimension on its own.
    """

    #: seconds agents are told to wait between announces
    interval: float = 30.0
    #: seconds a peer stays listed after its last announce; None: three intervals, so one or two
    #: lost announces do not drop a live peer
    ttl: float | None = None
    #: peers remembered per swarm; a new peer evicts the one that announced least recently
    max_peers_per_swarm: int = 10_000
    #: swarms remembered; a new swarm evicts the one announced to least recently
    max_swarms: int = 10_000
    #: peers remembered over all swarms; a new peer evicts the oldest of the least recent swarm
    max_peers: int = 1_000_000
    #: peers handed out when the announce does not say (an announce may ask for up to 200)
    numwant: int = 50
    #: origin pullers at the head of every handout (the agents' ``origin_puller_count``): the peers
    #: with the lowest (swarm, peer id) hash; 0 hands out none
    pullers: int = ORIGIN_PULLERS

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ConfigError(f"tracker interval must be > 0 seconds, not {self.interval}")
        if self.ttl is not None and not self.ttl > 0:
            raise ConfigError(f"tracker ttl must be > 0 seconds, not {self.ttl}")
        for name in ("max_peers_per_swarm", "max_swarms", "max_peers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tracker {name} must be >= 1, not {getattr(self, name)}")
        if not 0 <= self.pullers <= MAX_NUMWANT:
            raise ConfigError(f"tracker pullers must be within 0..{MAX_NUMWANT}, not {self.pullers}")
        if not 0 <= self.numwant <= MAX_NUMWANT:
            raise ConfigError(f"tracker numwant must be within 0..{MAX_NUMWANT}, not {self.numwant}")

    @property
    def peer_ttl(self) -> float:
        """The TTL in effect."""
        return self.ttl if self.ttl is not None else 3 * self.interval

    @property
    def sweep_every(self) -> float:
        """Seconds between sweeps of expired peers: memory is returned within a TTL plus this."""
        return min(self.interval, self.peer_ttl)

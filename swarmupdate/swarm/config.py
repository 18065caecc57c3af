"""The download state machine's knobs. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from swarmupdate.swarm.policy import ORIGIN_PULLERS

__all__ = ["DownloadConfig"]


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    """Knobs of the download state machine. Times in seconds."""

    #: requests in flight to one peer
    per_peer_inflight: int = 4
    #: global cap over peers + origin
    max_inflight: int = 16
    #: requests in flight to the origin (one: an owner's next chunk would only share the origin's
    #: uplink with its previous one, and both would reach the swarm later)
    origin_max_inflight: int = 1
    #: chunks on their way from the origin to the swarm, fleet-wide, ahead of a designated pull
    #: (see Download._origin_pipeline), while the origin's rate is not known
    origin_window: int = 4
    #: once this agent has measured the origin's rate, the window holds what the origin sends in this
    #: many seconds (in mean-sized chunks), at most origin_window_max chunks (and never fewer than
    #: origin_window); 0 keeps it at origin_window
    origin_lead: float = 1.0
    origin_window_max: int = 16
    #: an agent waits this long before its first origin pull, to learn the peers that joined with it
    #: (and so who pulls what): agents started together each see an empty swarm at first
    origin_start_delay: float = 1.0
    #: how long the first non-designated agent waits for a chunk to show up at a peer (later ones in
    #: hash order wait longer: see swarmupdate.swarm.policy)
    origin_fallback_delay: float = 10.0
    #: agents of a swarm that pull from the origin: those with the lowest (swarm, agent) hash, each
    #: chunk by the one of them with the lowest (chunk, agent) hash (see swarmupdate.swarm.policy)
    origin_puller_count: int = ORIGIN_PULLERS
    #: k: agents per fallback rank, for a chunk its owner does not bring (about k fall back first,
    #: 2k after twice the delay, ...)
    origin_pullers: float = 1.5
    #: how often to re-ask a peer for its bitfield while downloading
    bitfield_interval: float = 1.0
    #: copies of each last chunk in flight during the endgame (original included)
    endgame_duplicates: int = 2
    #: a request is duplicated in the endgame only once it has been in flight this many times the
    #: typical chunk time (at least ``endgame_min_wait`` s): on a fast swarm, where the "endgame"
    #: starts early in a small release, duplicating everything would double the traffic for nothing
    endgame_patience: float = 2.0
    endgame_min_wait: float = 0.5
    #: wait after a 429 without Retry-After, and after a timeout or error
    busy_backoff: float = 1.0
    #: this agent's site: peers of the same site are preferred among equally good ones
    site: str = ""
    #: consecutive errors / timeouts after which a peer is dropped (until seen again)
    drop_after_errors: int = 2
    drop_after_timeouts: int = 3

    def __post_init__(self) -> None:
        for name in (
            "per_peer_inflight",
            "max_inflight",
            "origin_max_inflight",
            "origin_window",
            "origin_window_max",
            "origin_puller_count",
            "endgame_duplicates",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"DownloadConfig.{name} must be >= 1")
        for name in ("drop_after_errors", "drop_after_timeouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"DownloadConfig.{name} must be >= 1")
        if not self.origin_pullers > 0:
            raise ValueError("DownloadConfig.origin_pullers must be > 0")
        if not self.origin_lead >= 0:
            raise ValueError("DownloadConfig.origin_lead must be >= 0")
        if not self.bitfield_interval > 0:
            raise ValueError("DownloadConfig.bitfield_interval must be > 0")
        if self.origin_fallback_delay < 0 or self.busy_backoff < 0 or self.origin_start_delay < 0:
            raise ValueError("DownloadConfig delays must be >= 0")

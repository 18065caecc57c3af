"""Handout policies: which peers a tracker gives to a peer that announces. Pure.

A policy orders a small candidate pool the store has already drawn (see
``PeerStore.announce``); it never sees the whole swarm, so its cost does not grow with it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from swarmupdate.model import PeerInfo

__all__ = ["HandoutPolicy", "MixedHandoutPolicy"]


class HandoutPolicy(Protocol):
    """Choose up to ``numwant`` peers for ``asker`` from ``candidates``.

    ``candidates`` never contains the asker and holds, for complete and for incomplete peers
    each, up to ``numwant + 1`` peers of the asker's site and a uniform sample of up to
    ``numwant + 1`` of all of them (the same peer may be in both samples; the store de-duplicates).
    """

    def choose(
        self, asker: PeerInfo, candidates: Sequence[PeerInfo], numwant: int, rng: random.Random
    ) -> list[PeerInfo]: ...


@dataclass(frozen=True)
class MixedHandoutPolicy:
    """Seeds first for a downloading peer, but always some leechers; same site first.

    The rule, for an asker that is still downloading (``complete`` false):

    - up to ``numwant - ceil(numwant * leecher_share)`` complete peers (seeds), then incomplete
      peers (leechers) for the remaining slots; when one kind runs short the other fills its slots.
    - within each kind, peers of the asker's site before the others (an empty site matches
      nothing), in random order among equals.

    Why not only seeds: early in a rollout a handful of seeds would be handed to every leecher,
    their upload slots would fill (429) while the leechers, which rarest-first makes hold
    different chunks, sit idle to each other. Reserving a share of the slots for leechers uses
    the whole swarm's upload capacity; random order spreads each kind's load evenly.

    A complete asker downloads nothing, so it gets leechers first (they are who its peer
    exchange list helps), then seeds.
    """

    #: share of the slots kept for leechers when the asker is downloading
    leecher_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.leecher_share <= 1.0:
            raise ValueError("leecher_share must be within [0, 1]")

    def choose(
        self, asker: PeerInfo, candidates: Sequence[PeerInfo], numwant: int, rng: random.Random
    ) -> list[PeerInfo]:
        seeds = self._ranked(asker, [p for p in candidates if p.complete], rng)
        leechers = self._ranked(asker, [p for p in candidates if not p.complete], rng)
        if asker.complete:
            return (leechers + seeds)[:numwant]
        reserved = min(len(leechers), math.ceil(numwant * self.leecher_share))
        n_seeds = min(len(seeds), numwant - reserved)
        n_leechers = min(len(leechers), numwant - n_seeds)
        # leechers ran short of their share: give those slots back to seeds
        n_seeds = min(len(seeds), numwant - n_leechers)
        return seeds[:n_seeds] + leechers[:n_leechers]

    @staticmethod
    def _ranked(asker: PeerInfo, peers: list[PeerInfo], rng: random.Random) -> list[PeerInfo]:
        same = [p for p in peers if asker.site and p.site == asker.site]
        other = [p for p in peers if not (asker.site and p.site == asker.site)]
        rng.shuffle(same)
        rng.shuffle(other)
        return same + other

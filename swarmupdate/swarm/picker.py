"""Chunk sets as integers, chunk availability over the live peers, rarest-first order. Pure.

Sets of chunk indexes are Python ints: chunk ``i`` is bit ``width - 1 - i`` with ``width`` the bitfield's
size in bits, so the wire form of a Bitfield converts with one ``int.from_bytes``. Set algebra (what is
missing and not in flight and held by a free peer) is then a few machine-word operations per 64 chunks,
which is what keeps a thousand simulated agents fast.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from swarmupdate.swarm.bitfield import Bitfield

__all__ = ["Availability", "MaskCodec", "random_priorities", "rarest_first"]


class MaskCodec:
    """Converts between chunk indexes, Bitfields and int masks for a release of ``n`` chunks."""

    __slots__ = ("bit", "full", "n", "width")

    def __init__(self, n: int) -> None:
        self.n = n
        self.width = 8 * ((n + 7) // 8)
        self.bit = [1 << (self.width - 1 - i) for i in range(n)]
        self.full = sum(self.bit)

    def mask(self, indexes: Iterable[int]) -> int:
        m = 0
        for i in indexes:
            if not 0 <= i < self.n:
                raise IndexError(i)
            m |= self.bit[i]
        return m

    def from_bitfield(self, bitfield: Bitfield) -> int:
        if bitfield.n != self.n:
            raise ValueError(f"bitfield of {bitfield.n} chunks for a release of {self.n}")
        return int.from_bytes(bitfield.encode(), "big")

    def to_bitfield(self, mask: int) -> Bitfield:
        return Bitfield.decode(mask.to_bytes(self.width // 8, "big"), self.n)

    def indexes(self, mask: int) -> Iterator[int]:
        """The chunk indexes in ``mask``, ascending."""
        top = self.width - 1
        while mask:
            pos = mask.bit_length() - 1
            yield top - pos
            mask ^= 1 << pos


class Availability:
    """How many live peers hold each chunk, and since when a chunk has had no holder at all."""

    __slots__ = ("_codec", "count", "unseen_since", "visible")

    def __init__(self, codec: MaskCodec, now: float) -> None:
        self._codec = codec
        self.count = [0] * codec.n
        #: chunks held by at least one live peer
        self.visible = 0
        #: per chunk, when it last stopped being held by any live peer (valid while not visible)
        self.unseen_since = [now] * codec.n

    def add(self, mask: int) -> None:
        count, bit = self.count, self._codec.bit
        for i in self._codec.indexes(mask):
            if count[i] == 0:
                self.visible |= bit[i]
            count[i] += 1

    def remove(self, mask: int, now: float) -> None:
        count, bit = self.count, self._codec.bit
        for i in self._codec.indexes(mask):
            count[i] -= 1
            if count[i] == 0:
                self.visible &= ~bit[i]
                self.unseen_since[i] = now


def random_priorities(n: int, rng: random.Random) -> list[int]:
    """A random permutation: the tie-break between chunks equally rare, different on every agent."""
    prio = list(range(n))
    rng.shuffle(prio)
    return prio


def rarest_first(codec: MaskCodec, mask: int, count: list[int], prio: list[int]) -> list[int]:
    """The chunks of ``mask``, fewest holders first, ties in ``prio`` order."""
    n = codec.n
    return sorted(codec.indexes(mask), key=lambda i: count[i] * n + prio[i])

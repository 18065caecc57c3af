"""Bitfields: which chunks of a release a peer holds. Pure.

Wire form (``GET /v1/swarms/{swarm}/bitfield``): ``ceil(n / 8)`` bytes, bit i = chunk i of the
release's manifest, most significant bit first in each byte (as BitTorrent); spare bits are zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from swarmupdate.errors import RemoteDataError

__all__ = ["Bitfield"]


class Bitfield:
    """A fixed-size set of chunk indexes."""

    __slots__ = ("_bits", "_count", "n")

    def __init__(self, n: int, indexes: Iterable[int] = ()) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self._bits = bytearray((n + 7) // 8)
        self._count = 0
        for i in indexes:
            self.add(i)

    @classmethod
    def full(cls, n: int) -> Bitfield:
        """All ``n`` chunks."""
        return cls(n, range(n))

    @classmethod
    def decode(cls, data: bytes, n: int, *, source: str = "bitfield") -> Bitfield:
        """Parse the wire form for a release of ``n`` chunks.

        Raises:
            RemoteDataError: wrong length or spare bits set; names ``source``.
        """
        if len(data) != (n + 7) // 8:
            raise RemoteDataError(f"{source}: {len(data)} bytes, expected {(n + 7) // 8} for {n} chunks")
        spare = (8 - n % 8) % 8
        if spare and data and data[-1] & ((1 << spare) - 1):
            raise RemoteDataError(f"{source}: spare bits set past chunk {n - 1}")
        bf = cls(n)
        bf._bits[:] = data
        bf._count = sum(bin(b).count("1") for b in data)
        return bf

    def encode(self) -> bytes:
        """The wire form."""
        return bytes(self._bits)

    def add(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise IndexError(i)
        mask = 0x80 >> (i % 8)
        if not self._bits[i // 8] & mask:
            self._bits[i // 8] |= mask
            self._count += 1

    def __contains__(self, i: object) -> bool:
        return isinstance(i, int) and 0 <= i < self.n and bool(self._bits[i // 8] & (0x80 >> (i % 8)))

    def __len__(self) -> int:
        """How many chunks are set."""
        return self._count

    def __iter__(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte:
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield byte_index * 8 + bit

    @property
    def complete(self) -> bool:
        return self._count == self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitfield) and self.n == other.n and self._bits == other._bits

    def __hash__(self) -> int:
        return hash((self.n, bytes(self._bits)))

    def __repr__(self) -> str:
        return f"Bitfield({self._count}/{self.n})"

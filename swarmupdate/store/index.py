"""What a store holds: chunk sizes in least-recently-used order and their running total. Pure, not locked."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable

__all__ = ["ChunkIndex"]


class ChunkIndex:
    """Sizes of stored chunks, oldest use first, with the total kept as chunks come and go.

    The owning store serialises every call under its own lock.
    """

    def __init__(self, entries: Iterable[tuple[str, int]] = ()) -> None:
        """Start with ``entries`` (id, size), the least recently used first."""
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        for sha256, size in entries:
            self.add(sha256, size)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def total(self) -> int:
        """Sum of all sizes."""
        return self._total

    def size(self, sha256: str) -> int | None:
        """The size of ``sha256``, or None."""
        return self._sizes.get(sha256)

    def ids(self) -> list[str]:
        """All ids, least recently used first."""
        return list(self._sizes)

    def add(self, sha256: str, size: int) -> bool:
        """Record a new chunk as the most recently used; False (and only a touch) if already present."""
        if sha256 in self._sizes:
            self._sizes.move_to_end(sha256)
            return False
        self._sizes[sha256] = size
        self._total += size
        return True

    def touch(self, sha256: str) -> None:
        """Mark ``sha256`` as just used (no-op when absent)."""
        if sha256 in self._sizes:
            self._sizes.move_to_end(sha256)

    def remove(self, sha256: str) -> None:
        """Forget ``sha256`` (no-op when absent)."""
        size = self._sizes.pop(sha256, None)
        if size is not None:
            self._total -= size

    def victims(self, keep: Collection[str], max_bytes: int) -> list[str]:
        """The ids to delete, least recently used first, to bring the total to ``max_bytes`` or below.

        Chunks in ``keep`` are never chosen; the list is as long as needed, or every other chunk.
        """
        excess = self._total - max_bytes
        chosen: list[str] = []
        for sha256, size in self._sizes.items():
            if excess <= 0:
                break
            if sha256 in keep:
                continue
            chosen.append(sha256)
            excess -= size
        return chosen

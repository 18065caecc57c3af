"""Frozen value types shared by every component. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_CHUNKER", "ChunkRef", "ChunkerParams", "PeerInfo", "ReleaseRef", "is_sha256_hex"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """True for a lowercase 64-hex-digit string (the only digest form we accept)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of an artifact: its sha256 (lowercase hex) and its length in bytes."""

    sha256: str
    length: int


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """FastCDC parameters, recorded in every manifest so a chunking can be reproduced."""

    min: int = 256 * 1024
    avg: int = 1024 * 1024
    max: int = 4 * 1024 * 1024
    algorithm: str = "fastcdc"


DEFAULT_CHUNKER = ChunkerParams()


@dataclass(frozen=True, slots=True)
class ReleaseRef:
    """Names one release of one application."""

    app: str
    version: str
    filename: str

    @property
    def artifact_path(self) -> str:
        """The TUF target path of the artifact: ``A/V/F``."""
        return f"{self.app}/{self.version}/{self.filename}"

    @property
    def manifest_path(self) -> str:
        """The TUF target path of the chunk manifest: ``A/V/F.manifest.json``."""
        return f"{self.artifact_path}.manifest.json"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer as the tracker and peer exchange describe it. A hint only: never trusted."""

    peer_id: str
    url: str
    site: str = ""
    complete: bool = False

"""Frozen value types shared by every component. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CHANNEL_RE",
    "DEFAULT_CHUNKER",
    "TOP_LEVEL_ROLES",
    "ChunkRef",
    "ChunkerParams",
    "PeerInfo",
    "ReleaseRef",
    "is_app_name",
    "is_channel",
    "is_sha256_hex",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: channel names (a pattern, for validators that take one)
CHANNEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: TUF's top-level roles: no application may take one of these names
TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")


def is_app_name(name: str) -> bool:
    """1-63 lowercase letters, digits, ``-`` or ``_``, and not a top-level role (it names a TUF role)."""
    return _APP_NAME.fullmatch(name) is not None and name not in TOP_LEVEL_ROLES


def is_channel(name: str) -> bool:
    """1-63 lowercase letters, digits and ``. _ -``."""
    return CHANNEL_RE.fullmatch(name) is not None


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

    min: int = 128 * 1024
    avg: int = 512 * 1024
    max: int = 2 * 1024 * 1024
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

"""Paths inside the origin tree. Pure: computes names, touches nothing.

::

    origin/metadata/N.root.json N.targets.json N.<app>.json N.snapshot.json timestamp.json
    origin/targets/A/V/<sha256>.F.manifest.json          (consistent-snapshot names)
    origin/chunks/<first 2 hex>/<sha256>
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from swarmupdate.model import is_sha256_hex

__all__ = ["OriginLayout"]


@dataclass(frozen=True)
class OriginLayout:
    """Where each kind of file lives under one origin root."""

    root: Path

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.root / "targets"

    @property
    def chunks_dir(self) -> Path:
        return self.root / "chunks"

    def metadata(self, role: str, version: int | None) -> Path:
        """``N.role.json``, or ``timestamp.json`` when ``version`` is None."""
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        return self.metadata_dir / name

    def target(self, target_path: str, sha256: str) -> Path:
        """The consistent-snapshot file name of a target: ``dir/<sha256>.basename``."""
        directory, base = posixpath.split(target_path)
        return self.targets_dir / directory / f"{sha256}.{base}"

    def chunk(self, sha256: str) -> Path:
        """``chunks/ab/abcdef...``; only lowercase 64-hex ids are names."""
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.chunks_dir / sha256[:2] / sha256

    @staticmethod
    def chunk_url_path(sha256: str) -> str:
        """The URL path of a chunk relative to the origin base URL."""
        return f"chunks/{sha256[:2]}/{sha256}"

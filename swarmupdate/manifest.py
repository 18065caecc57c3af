"""Chunk manifest encoding, decoding and verification. Pure: takes bytes, returns values or raises.

The manifest is a TUF target, so its own hash is signed; everything here only checks
that its content is well formed and self-consistent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from swarmupdate.errors import ChunkVerificationError, RemoteDataError
from swarmupdate.model import ChunkerParams, ChunkRef, is_sha256_hex

__all__ = ["FORMAT", "MAX_MANIFEST_BYTES", "Manifest", "verify_chunk"]

FORMAT = 1
#: Hard cap on a manifest we accept: 64 MiB of manifest describes ~700 TiB of artifact.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Manifest:
    """The chunk list of one artifact, in order."""

    artifact: str
    length: int
    sha256: str
    chunker: ChunkerParams
    chunks: tuple[ChunkRef, ...]

    def encode(self) -> bytes:
        """Deterministic JSON bytes (sorted keys, no spaces), as published."""
        doc = {
            "format": FORMAT,
            "artifact": self.artifact,
            "length": self.length,
            "sha256": self.sha256,
            "chunker": {
                "algorithm": self.chunker.algorithm,
                "min": self.chunker.min,
                "avg": self.chunker.avg,
                "max": self.chunker.max,
            },
            "chunks": [[c.sha256, c.length] for c in self.chunks],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, *, source: str = "manifest") -> Manifest:
        """Parse and check a manifest.

        Raises:
            RemoteDataError: the bytes are not a well-formed, self-consistent manifest;
                the message names ``source`` and the offending field.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise RemoteDataError(f"{source}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            # ValueError also covers an integer past Python's int-from-text limit (4300 digits);
            # RecursionError: a few KiB of "[[[[" nest deeper than the decoder allows
            raise RemoteDataError(f"{source}: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise RemoteDataError(f"{source}: top level must be an object")
        if doc.get("format") != FORMAT:
            raise RemoteDataError(f"{source}: field 'format': expected {FORMAT}, got {doc.get('format')!r}")
        artifact = _field(doc, "artifact", str, source)
        length = _nonneg_int(doc, "length", source)
        sha256 = _field(doc, "sha256", str, source)
        if not is_sha256_hex(sha256):
            raise RemoteDataError(f"{source}: field 'sha256': not a lowercase sha256 hex digest")
        chunker_doc = _field(doc, "chunker", dict, source)
        chunker = ChunkerParams(
            algorithm=_field(chunker_doc, "algorithm", str, f"{source}: chunker"),
            min=_nonneg_int(chunker_doc, "min", f"{source}: chunker"),
            avg=_nonneg_int(chunker_doc, "avg", f"{source}: chunker"),
            max=_nonneg_int(chunker_doc, "max", f"{source}: chunker"),
        )
        raw_chunks = _field(doc, "chunks", list, source)
        chunks: list[ChunkRef] = []
        total = 0
        for i, item in enumerate(raw_chunks):
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not is_sha256_hex(item[0])
                or type(item[1]) is not int
                or item[1] <= 0
            ):
                raise RemoteDataError(
                    f"{source}: field 'chunks[{i}]': expected [sha256 hex, positive length]"
                )
            chunks.append(ChunkRef(item[0], item[1]))
            total += item[1]
        if total != length:
            raise RemoteDataError(f"{source}: chunk lengths add up to {total}, field 'length' says {length}")
        return cls(artifact, length, sha256, chunker, tuple(chunks))


def verify_chunk(data: bytes | memoryview, ref: ChunkRef) -> None:
    """Accept ``data`` as the chunk ``ref`` or raise.

    Raises:
        ChunkVerificationError: the length or sha256 does not match.
    """
    if len(data) != ref.length:
        raise ChunkVerificationError(f"chunk {ref.sha256}: length {len(data)}, expected {ref.length}")
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ChunkVerificationError(f"chunk {ref.sha256}: sha256 mismatch")


def _field(doc: dict[str, Any], key: str, typ: type, source: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, typ):
        raise RemoteDataError(f"{source}: field {key!r}: expected {typ.__name__}, got {type(value).__name__}")
    return value


def _nonneg_int(doc: dict[str, Any], key: str, source: str) -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise RemoteDataError(f"{source}: field {key!r}: expected a non-negative integer, got {value!r}")
    return value

"""The release pipeline: chunk, store chunks, publish the manifest and artifact targets, sign.

Order on disk: chunks, then target files, then ``os.sync()``, then the metadata commit
(app role, snapshot, timestamp last). Until ``timestamp.json`` is renamed into place the
previous release stays the live one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile

from swarmupdate.chunker import chunk_stream
from swarmupdate.errors import ConfigError, ReleaseExistsError
from swarmupdate.fsutil import atomic_writer
from swarmupdate.manifest import Manifest
from swarmupdate.model import ChunkRef, ReleaseRef, is_channel
from swarmupdate.publisher.repository import Repository, fault_point

__all__ = ["PublishedRelease", "ReleaseInfo", "add_release", "list_releases", "validate_version"]

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}")


def validate_version(version: str) -> str:
    """Return ``version`` or raise ConfigError (it becomes a path segment)."""
    if not _VERSION.fullmatch(version):
        raise ConfigError(f"--version {version!r}: use letters, digits and . _ + ~ - (no '/')")
    return version


@dataclass(frozen=True)
class PublishedRelease:
    """What ``release add`` published."""

    ref: ReleaseRef
    channel: str
    length: int
    sha256: str
    chunks: int
    new_chunks: int
    new_chunk_bytes: int
    timestamp_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.ref.app,
            "version": self.ref.version,
            "file": self.ref.filename,
            "channel": self.channel,
            "target": self.ref.artifact_path,
            "manifest": self.ref.manifest_path,
            "length": self.length,
            "sha256": self.sha256,
            "chunks": self.chunks,
            "new_chunks": self.new_chunks,
            "new_chunk_bytes": self.new_chunk_bytes,
            "timestamp_version": self.timestamp_version,
        }


@dataclass(frozen=True)
class ReleaseInfo:
    """One row of ``release list``."""

    app: str
    version: str
    channel: str
    target: str
    length: int
    sha256: str
    manifest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "version": self.version,
            "channel": self.channel,
            "target": self.target,
            "length": self.length,
            "sha256": self.sha256,
            "manifest": self.manifest,
        }


def add_release(
    repo: Repository,
    app: str,
    version: str,
    file: Path,
    *,
    channel: str = "stable",
    progress: Callable[[int], None] | None = None,
) -> PublishedRelease:
    """Publish ``file`` as ``app`` version ``version`` on ``channel``.

    Raises:
        UnknownAppError, ReleaseExistsError, ConfigError, SigningError, RepositoryStateError,
        StoreError: each before anything becomes live.
    """
    validate_version(version)
    if not is_channel(channel):
        raise ConfigError(f"--channel {channel!r}: use lowercase letters, digits and . _ -")
    if not _FILENAME.fullmatch(file.name):
        raise ConfigError(f"{file}: file name must be letters, digits and . _ + ~ -")
    app_md = repo.app(app)
    prefix = f"{app}/{version}/"
    if any(p.startswith(prefix) for p in app_md.signed.targets):
        raise ReleaseExistsError(f"app {app!r} version {version!r} is already published")
    repo.check_not_expired(["root", "targets"])
    repo.require_signers([app, "snapshot", "timestamp"])
    if not file.is_file():
        raise ConfigError(f"{file}: no such file")

    ref = ReleaseRef(app, version, file.name)
    layout = repo.layout
    new = [0, 0]

    def store_chunk(chunk: ChunkRef, data: memoryview) -> None:
        path = layout.chunk(chunk.sha256)
        if path.exists() and path.stat().st_size == chunk.length:
            return
        # written straight from the chunker's buffer: no copy (the view is valid during this call)
        with atomic_writer(path, durable=False) as out:
            out.write(data)
        new[0] += 1
        new[1] += chunk.length

    try:
        with file.open("rb") as f:
            chunked = chunk_stream(f, repo.settings.chunker, store_chunk, progress)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    fault_point("after-chunks")

    manifest = Manifest(
        ref.artifact_path, chunked.length, chunked.sha256, repo.settings.chunker, chunked.chunks
    )
    manifest_tf = repo.write_target_file(ref.manifest_path, manifest.encode())
    artifact_tf = TargetFile(
        chunked.length,
        {"sha256": chunked.sha256},
        ref.artifact_path,
        unrecognized_fields={
            "custom": {"swarmupdate": {"version": version, "channel": channel, "manifest": ref.manifest_path}}
        },
    )
    if repo.settings.store_artifacts:
        dest = layout.target(ref.artifact_path, chunked.sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(file, tmp)
        tmp.replace(dest)
    # chunks and targets must be durable before any metadata points at them
    os.sync()
    fault_point("after-targets")

    md = repo.stage(app)
    md.signed.targets[manifest_tf.path] = manifest_tf
    md.signed.targets[artifact_tf.path] = artifact_tf
    repo.commit()
    return PublishedRelease(
        ref,
        channel,
        chunked.length,
        chunked.sha256,
        len(chunked.chunks),
        new[0],
        new[1],
        repo.timestamp.signed.version,
    )


def list_releases(repo: Repository, app: str | None = None) -> list[ReleaseInfo]:
    """Every published release (artifact targets with a ``custom.swarmupdate`` field)."""
    rows = []
    if app is not None:
        repo.app(app)  # raises UnknownAppError
    for name in sorted(repo.apps) if app is None else [app]:
        for tf in repo.apps[name].signed.targets.values():
            info = release_custom(tf)
            if info is None:
                continue
            rows.append(
                ReleaseInfo(
                    name,
                    info["version"],
                    info["channel"],
                    tf.path,
                    tf.length,
                    tf.hashes["sha256"],
                    info["manifest"],
                )
            )
    return rows


def release_custom(tf: TargetFile) -> dict[str, str] | None:
    """The ``custom.swarmupdate`` dict of an artifact target, or None for other targets."""
    custom = tf.custom.get("swarmupdate") if isinstance(tf.custom, dict) else None
    if not isinstance(custom, dict):
        return None
    if not all(isinstance(custom.get(k), str) for k in ("version", "channel", "manifest")):
        return None
    return {k: custom[k] for k in ("version", "channel", "manifest")}

"""``repo verify``: check a repository as a client would, plus every published chunk.

Loading the repository already checks every live role's signatures against its delegator
(and the whole root chain). This adds expiry, every target file's length and hash, every
manifest's consistency with its artifact target, and every chunk's sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import Metadata

from swarmupdate.errors import RemoteDataError
from swarmupdate.manifest import Manifest
from swarmupdate.publisher.release import release_custom
from swarmupdate.publisher.repository import Repository

__all__ = ["VerifyReport", "verify_repository"]


@dataclass
class VerifyReport:
    """What ``repo verify`` found."""

    roles: int = 0
    releases: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "roles": self.roles,
            "releases": self.releases,
            "chunks": self.chunks,
            "chunk_bytes": self.chunk_bytes,
            "problems": self.problems,
        }


def verify_repository(repo: Repository, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check everything; problems are collected, not raised, so one run lists them all."""
    report = VerifyReport()
    live: dict[str, Metadata[Any]] = {
        "root": repo.root,
        "timestamp": repo.timestamp,
        "snapshot": repo.snapshot,
        "targets": repo.targets,
    }
    live.update(repo.apps)
    for name, md in live.items():
        report.roles += 1
        if md.signed.is_expired(repo.now):
            report.problems.append(f"role {name!r} (version {md.signed.version}) expired {md.signed.expires}")
    seen_chunks: set[str] = set()
    for app, md in sorted(repo.apps.items()):
        for path, tf in md.signed.targets.items():
            custom = release_custom(tf)
            file = repo.layout.target(path, tf.hashes.get("sha256", ""))
            if custom is None:
                if path.endswith(".manifest.json"):
                    continue  # checked with its artifact below
                if file.exists():
                    _check_file(report, tf, file.read_bytes(), path)
                continue
            report.releases += 1
            if file.exists():
                with file.open("rb") as f:
                    try:
                        tf.verify_length_and_hashes(f)
                    except LengthOrHashMismatchError as exc:
                        report.problems.append(f"{file}: {exc}")
            m_tf = md.signed.targets.get(custom["manifest"])
            if m_tf is None:
                report.problems.append(f"{app}: {path} names manifest {custom['manifest']}, not a target")
                continue
            m_file = repo.layout.target(m_tf.path, m_tf.hashes.get("sha256", ""))
            try:
                data = m_file.read_bytes()
            except OSError as exc:
                report.problems.append(f"{m_file}: {exc.strerror}")
                continue
            if not _check_file(report, m_tf, data, str(m_file)):
                continue
            try:
                manifest = Manifest.decode(data, source=str(m_file))
            except RemoteDataError as exc:
                report.problems.append(str(exc))
                continue
            if (
                manifest.artifact != path
                or manifest.length != tf.length
                or manifest.sha256 != tf.hashes["sha256"]
            ):
                report.problems.append(f"{m_file}: does not describe the signed target {path}")
            for ref in manifest.chunks:
                if ref.sha256 in seen_chunks:
                    continue
                seen_chunks.add(ref.sha256)
                chunk = repo.layout.chunk(ref.sha256)
                try:
                    blob = chunk.read_bytes()
                except OSError as exc:
                    report.problems.append(f"{chunk}: {exc.strerror} (chunk of {path})")
                    continue
                report.chunks += 1
                report.chunk_bytes += len(blob)
                if len(blob) != ref.length or hashlib.sha256(blob).hexdigest() != ref.sha256:
                    report.problems.append(f"{chunk}: content does not match its name (chunk of {path})")
                if progress is not None:
                    progress(len(blob))
    return report


def _check_file(report: VerifyReport, tf: Any, data: bytes, where: str) -> bool:
    try:
        tf.verify_length_and_hashes(data)
    except LengthOrHashMismatchError as exc:
        report.problems.append(f"{where}: {exc}")
        return False
    return True

"""Shared fixtures: a fresh repository with one app, and a real origin server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.from_thread
import pytest

from swarmupdate.net.httpserver import ServerLimits
from swarmupdate.origin.server import OriginServer
from swarmupdate.publisher.repository import Repository

BIN = Path(sys.executable).parent
STRICT = os.environ.get("SWARMUPDATE_STRICT") == "1"


def need_tool(name: str) -> str:
    """Path of a system tool, or skip (fail under SWARMUPDATE_STRICT=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"system tool {name!r} is not installed (make test installs it as root)"
        if STRICT:
            pytest.fail(f"SWARMUPDATE_STRICT=1: {message}")
        pytest.skip(message)
    return path


def need_netns(*tools: str) -> None:
    """Root, ``ip`` and ``tc`` (and ``tools``) for the namespace testbed, or skip (fail under
    SWARMUPDATE_STRICT=1)."""
    for name in ("ip", "tc", *tools):
        need_tool(name)
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("SWARMUPDATE_STRICT=1: the namespace testbed needs root")
        pytest.skip("the namespace testbed needs root")


def venv_tool(name: str) -> str:
    """Path of a tool installed in the project's venv, or skip (fail under SWARMUPDATE_STRICT=1) like
    ``need_tool``."""
    path = BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        message = f"{name!r} is not installed in {BIN} (pip install -e '.[ops]')"
        if STRICT:
            pytest.fail(f"SWARMUPDATE_STRICT=1: {message}")
        pytest.skip(message)
    return str(path)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (for servers that take a fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, check: bool = False, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``swarmupdate ARGS`` as a real process and capture its output."""
    cmd = [*(prefix or []), str(BIN / "swarmupdate"), "--log-format", "json", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def run_tuf_client(*args: str | Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``swarmupdate-tuf-client ARGS`` as a real process."""
    cmd = [*(prefix or []), str(BIN / "swarmupdate-tuf-client"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def tree_state(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: compare before and after to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """A repository with app ``web`` and no release."""
    d = tmp_path / "repo"
    repo = Repository.init(d)
    repo = Repository(d)
    repo.add_app("web", repo.keys.generate("app-web"))
    repo.commit()
    return d


def make_artifact(path: Path, size: int, seed: int = 1) -> Path:
    """Deterministic pseudo-random bytes (incompressible, chunkable)."""
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@dataclass
class Origin:
    """A running origin dev server."""

    server: OriginServer
    url: str

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/metadata/"

    @property
    def targets_url(self) -> str:
        return f"{self.url}/targets/"

    def sent_bytes(self) -> float:
        return float(self.server.sent_bytes._value.get())


@pytest.fixture
def serve_origin() -> Iterator[object]:
    """A factory: ``serve_origin(path)`` starts a real origin server on a loopback port."""
    with anyio.from_thread.start_blocking_portal() as portal:
        scopes = []

        def start(root: Path, limits: ServerLimits | None = None) -> Origin:
            server = OriginServer(root, limits=limits or ServerLimits())
            future, bound = portal.start_task(server.serve, "127.0.0.1", 0)
            scopes.append(future)
            return Origin(server, f"http://127.0.0.1:{bound}")

        yield start
        for future in scopes:
            future.cancel()


@pytest.fixture
def origin(repo_dir: Path, serve_origin: object) -> Origin:
    """The origin server for ``repo_dir``."""
    return serve_origin(repo_dir / "origin")  # type: ignore[operator,no-any-return]

"""What the chaos scenarios share: the namespace testbed of the benchmark (bench/netbed.py), a published
release, agents in hosts, and waiting for them."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import create_random_file, machine_info, utc_stamp  # noqa: E402
from contenders import Published, publish  # noqa: E402
from netbed import Host, Process, Testbed, TestbedError, require_root  # noqa: E402

__all__ = [
    "ORIGIN_PORT",
    "PEER_PORT",
    "TRACKER_PORT",
    "AgentHandle",
    "Host",
    "Process",
    "Published",
    "Testbed",
    "TestbedError",
    "cli",
    "create_random_file",
    "machine_info",
    "manifest_chunks",
    "publish",
    "require_root",
    "sha256_file",
    "utc_stamp",
    "wait_log",
    "wait_until",
    "write_json",
]

PY = sys.executable
ORIGIN_PORT = 8080
TRACKER_PORT = 7070
PEER_PORT = 7071
RESULTS = ROOT / "chaos" / "results"


def cli(*args: str) -> list[str]:
    return [PY, "-m", "swarmupdate.cli", "--log-format", "json", *args]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def wait_log(proc: Process, needle: str, timeout: float = 20.0) -> str:
    """Wait until ``needle`` is in the process's log; return the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        if needle in text:
            return text
        if not proc.alive():
            raise TestbedError(f"{proc.name} exited before it was ready:\n{text[-2000:]}")
        time.sleep(0.05)
    raise TestbedError(f"{proc.name} not ready within {timeout:.0f}s (log: {proc.log})")


def wait_until(
    what: str, done: Callable[[], bool], timeout: float, tick: Callable[[], None] = lambda: None
) -> float:
    """Call ``tick`` and poll ``done`` every 0.1 s; return the seconds it took, or raise after ``timeout``."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout:
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}")
        tick()
        time.sleep(0.1)
    return time.monotonic() - t0


@dataclass
class AgentHandle:
    """One agent: its host, directory and (while running) its process."""

    index: int
    host: Host
    dir: Path
    app: str
    proc: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host.ip}:{PEER_PORT}"

    def write_config(
        self,
        origin_url: str,
        root: Path,
        *,
        trackers: list[str] = (),  # type: ignore[assignment]
        static_peers: list[str] = (),  # type: ignore[assignment]
        extra: str = "",
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "agent.toml").write_text(
            f'node_id = "chaos-{self.index:03d}"\n'
            f'origin_url = "{origin_url}"\n'
            f'trusted_root = "{root}"\n'
            f'state_dir = "{self.dir / "state"}"\n'
            f'store_dir = "{self.dir / "store"}"\n'
            f"trackers = {json.dumps(list(trackers))}\n"
            f"static_peers = {json.dumps(list(static_peers))}\n"
            "poll_interval = 5.0\n"
            f'peer_listen = "{self.host.ip}:{PEER_PORT}"\n'
            f'metrics_listen = "{self.host.ip}:9100"\n'
            'log_level = "info"\n'
            f"{extra}"
            "\n[[app]]\n"
            f'name = "{self.app}"\n'
            f'install_dir = "{self.dir / "install"}"\n'
            "keep_releases = 2\n"
        )

    def start(self, logs: Path) -> Process:
        self.proc = self.host.run(
            f"agent{self.index}",
            cli("agent", "run", "--config", str(self.dir / "agent.toml")),
            logs / f"agent{self.index}.{int(time.time() * 1000)}.log",
        )
        return self.proc

    def current(self) -> str | None:
        link = self.dir / "install" / "current"
        return link.readlink().name if link.is_symlink() else None

    def installed_sha256(self) -> str | None:
        artifact = self.dir / "install" / "current" / "artifact"
        return sha256_file(artifact) if artifact.exists() else None

    def status(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.dir / "state/status.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return doc


def manifest_chunks(pub: Published, app: str) -> list[tuple[str, int]]:
    """The release's chunks (sha256, length) from its signed manifest in the origin tree."""
    from swarmupdate.manifest import Manifest

    path = next((pub.repo / "origin/targets" / app / pub.version).glob("*.manifest.json"))
    return [(c.sha256, c.length) for c in Manifest.decode(path.read_bytes()).chunks]


def write_json(kind: str, doc: dict[str, Any], out: Path | None) -> Path:
    """``out`` or chaos/results/<kind>-<UTC stamp>.json, written atomically."""
    path = out or RESULTS / f"{kind}-{utc_stamp()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path

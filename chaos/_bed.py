"""What the chaos scenarios share: the namespace testbed of the benchmark (bench/netbed.py), a published
release, agents in hosts, and waiting for them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import create_random_file, machine_info, utc_stamp  # noqa: E402
from contenders import Published, publish, sha256_file, wait_log  # noqa: E402
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
    "fetch_in",
    "finish",
    "need_root",
    "release",
    "start_origin",
    "start_tracker",
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


def start_origin(host: Host, pub: Published, logs: Path) -> tuple[Process, str]:
    """The dev origin serving ``pub`` in ``host``; returns it and its URL once it listens."""
    proc = host.run(
        "origin",
        cli("origin", "serve", str(pub.repo / "origin"), "--listen", f"{host.ip}:{ORIGIN_PORT}"),
        logs / "origin.log",
    )
    wait_log(proc, "http://")
    return proc, f"http://{host.ip}:{ORIGIN_PORT}"


def start_tracker(host: Host, logs: Path, *extra: str) -> tuple[Process, str]:
    """A tracker in ``host`` (announce interval 5 s); returns it and its URL once it listens."""
    proc = host.run(
        "tracker",
        cli(*extra, "tracker", "serve", "--listen", f"{host.ip}:{TRACKER_PORT}", "--interval", "5"),
        logs / "tracker.log",
    )
    wait_log(proc, "http://")
    return proc, f"http://{host.ip}:{TRACKER_PORT}"


def fetch_in(host: Host, url: str) -> str:
    """GET ``url`` from inside ``host``'s namespace (its addresses are not reachable from outside);
    empty when it fails."""
    fetch = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).read().decode())"
    proc = subprocess.run(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c", fetch],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else ""


@contextlib.contextmanager
def release(prefix: str, size_mib: int, app: str) -> Iterator[tuple[Path, Published]]:
    """A work directory on a tmpfs with a published release of ``size_mib`` MiB of random bytes."""
    with tempfile.TemporaryDirectory(prefix=f"swarmupdate-{prefix}-", dir="/dev/shm") as tmp:
        workdir = Path(tmp)
        artifact = workdir / "artifact.bin"
        create_random_file(artifact, size_mib * 1024 * 1024)
        yield workdir, publish(workdir, artifact, "1.0", app=app)


def need_root() -> bool:
    """True as root with ip and tc; otherwise says why on stderr (the caller exits 2)."""
    try:
        require_root()
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def finish(kind: str, doc: dict[str, Any], out: Path | None) -> Path:
    """Stamp ``doc`` (kind, time, command, machine), write it, say where."""
    doc = {
        "kind": kind,
        "timestamp": utc_stamp(),
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        **doc,
    }
    path = write_json(kind, doc, out)
    print(f"wrote {path}")
    return path


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

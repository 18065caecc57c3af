"""A real local fleet for the multi-process tests: publisher repo, origin, trackers and agents,
each a separate process on loopback ports. Everything is stopped by ``Fleet.close()``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from swarmupdate.publisher.release import PublishedRelease, add_release
from swarmupdate.publisher.repository import Repository
from tests.conftest import make_artifact

PY = sys.executable


def cli(*args: str) -> list[str]:
    return [PY, "-m", "swarmupdate.cli", "--log-format", "json", *args]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == x for k, x in labels.items())
    )


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log: Path
    popen: subprocess.Popen[str] | None = None
    url: str = ""

    def start(self, ready: str, env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log_file:
            self.popen = subprocess.Popen(
                self.cmd,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, **(env or {})},
            )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if ready not in line:
            self.popen.kill()
            raise AssertionError(f"{self.name} did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1].rstrip("/")

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=15)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Agent(Proc):
    dir: Path = Path()
    config: Path = Path()

    def status(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.dir / "state/status.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return doc

    def current(self, app: str = "web") -> str | None:
        link = self.dir / "install" / "current"
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def installed_bytes(self, app: str = "web") -> bytes:
        return (self.dir / "install" / "current" / "artifact").read_bytes()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.status()['metrics_port']}"

    @property
    def peer_url(self) -> str:
        return str(self.status()["peer_url"])


@dataclass
class Fleet:
    base: Path
    origin: Proc | None = None
    trackers: list[Proc] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    extra_config: str = ""

    def __post_init__(self) -> None:
        self.repo_dir = self.base / "repo"
        Repository.init(self.repo_dir)
        repo = Repository(self.repo_dir)
        repo.add_app("web", repo.keys.generate("app-web"))
        repo.commit()

    def publish(
        self, version: str, size: int = 8 * 1024 * 1024, seed: int = 1, data: bytes | None = None
    ) -> tuple[PublishedRelease, bytes]:
        """Publish ``data`` (or ``size`` seeded random bytes) as web ``version``; returns it and the bytes."""
        path = self.base / "artifacts" / version / "app.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            make_artifact(path, size, seed)
        else:
            path.write_bytes(data)
        rel = add_release(Repository(self.repo_dir), "web", version, path)
        return rel, path.read_bytes()

    def start_origin(self, port: int = 0, extra: tuple[str, ...] = ()) -> Proc:
        self.origin = Proc(
            "origin",
            cli("origin", "serve", str(self.repo_dir / "origin"), "--listen", f"127.0.0.1:{port}", *extra),
            self.base / "logs/origin.log",
        )
        self.origin.start("http://")
        return self.origin

    def start_tracker(self) -> Proc:
        t = Proc(
            f"tracker{len(self.trackers)}",
            cli("tracker", "serve", "--listen", "127.0.0.1:0", "--interval", "3"),
            self.base / f"logs/tracker{len(self.trackers)}.log",
        )
        t.start("http://")
        self.trackers.append(t)
        return t

    def write_agent(
        self,
        i: int,
        *,
        trackers: list[str] | None = None,
        static_peers: list[str] | None = None,
        origin_url: str | None = None,
        extra: str = "",
    ) -> Agent:
        d = self.base / f"agent{i}"
        d.mkdir(parents=True, exist_ok=True)
        assert self.origin is not None or origin_url
        trackers = [t.url for t in self.trackers] if trackers is None else trackers
        cfg = d / "agent.toml"
        cfg.write_text(
            f'node_id = "agent-{i}"\n'
            f'site = "site-{i % 2}"\n'
            f'origin_url = "{origin_url or self.origin.url}"\n'  # type: ignore[union-attr]
            f'trusted_root = "{self.repo_dir / "origin/metadata/1.root.json"}"\n'
            f'state_dir = "{d / "state"}"\n'
            f'store_dir = "{d / "store"}"\n'
            f"trackers = {json.dumps(trackers)}\n"
            f"static_peers = {json.dumps(static_peers or [])}\n"
            "poll_interval = 2.0\n"
            'peer_listen = "127.0.0.1:0"\n'
            'metrics_listen = "127.0.0.1:0"\n'
            "origin_fallback_delay = 3.0\n"
            "connect_timeout = 1.0\n"
            "request_timeout = 10.0\n"
            f"{self.extra_config}{extra}\n"
            "[[app]]\n"
            'name = "web"\n'
            f'install_dir = "{d / "install"}"\n'
            "keep_releases = 2\n"
        )
        agent = Agent(
            f"agent{i}",
            cli("agent", "run", "--config", str(cfg)),
            self.base / f"logs/agent{i}.log",
            dir=d,
            config=cfg,
        )
        return agent

    def start_agents(self, n: int, **kw: Any) -> list[Agent]:
        out = []
        for _ in range(n):
            agent = self.write_agent(len(self.agents), **kw)
            agent.start("serving peers")
            self.agents.append(agent)
            out.append(agent)
        return out

    def wait_installed(self, version: str, agents: list[Agent] | None = None, timeout: float = 60.0) -> None:
        agents = self.agents if agents is None else agents

        def done() -> bool:
            for a in agents:
                if not a.alive:
                    raise AssertionError(f"{a.name} died:\n{a.log.read_text()[-3000:]}")
            return all(a.current() == version for a in agents)

        wait_for(done, timeout, f"release {version} installed on {[a.name for a in agents]}", interval=0.2)

    def origin_sent(self) -> float:
        assert self.origin is not None
        return metric(scrape(self.origin.url), "swarmupdate_origin_sent_bytes_total")

    def close(self) -> None:
        for p in [*self.agents, *self.trackers, *([self.origin] if self.origin else [])]:
            p.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

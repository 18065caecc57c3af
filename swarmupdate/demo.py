"""``swarmupdate demo``: a real local swarm on this machine.

Starts the origin dev server, a tracker and N agents as separate processes on loopback ports,
publishes a signed release of a generated artifact, shows each agent's progress live, then a
summary (time, bytes from the origin, from peers and from the local store, bandwidth saved,
where the metrics are). Then publishes a second release that changes a small part of the
artifact and shows that only the changed chunks moved. Every process it started is stopped on
exit or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from swarmupdate.errors import SwarmUpdateError, TransferError
from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository

__all__ = ["run_demo"]


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[str]
    url: str = ""
    state_dir: Path | None = None
    log: Path | None = None


@dataclass
class _Fleet:
    base: Path
    procs: list[_Proc] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], ready_word: str, state_dir: Path | None = None) -> _Proc:
        log = self.base / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as log_file:
            popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
        proc = _Proc(name, popen, state_dir=state_dir, log=log)
        self.procs.append(proc)
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if ready_word not in line:
            raise TransferError(f"{name} did not start; see {log}")
        proc.url = line.strip().rsplit(" ", 1)[-1].rstrip("/")
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarmupdate.cli", "--log-format", "json", *args]


def _counter(url: str, name: str, **labels: str) -> float:
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _status(state_dir: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((state_dir / "status.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return doc


def _agent_config(base: Path, i: int, origin: str, tracker: str, root: Path) -> Path:
    d = base / f"agent{i}"
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "agent.toml"
    cfg.write_text(
        f"""node_id = "demo-agent-{i}"
site = "{"site-a" if i % 2 else "site-b"}"
origin_url = "{origin}"
trusted_root = "{root}"
state_dir = "{d / "state"}"
store_dir = "{d / "store"}"
trackers = ["{tracker}"]
poll_interval = 3.0
peer_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
origin_fallback_delay = 3.0

[[app]]
name = "demo"
install_dir = "{d / "install"}"
keep_releases = 2
"""
    )
    return cfg


def _table(agents: list[_Proc], version: str, started: float) -> Table:
    table = Table(title=f"rolling out demo {version}  ({time.monotonic() - started:.1f}s)")
    for col in ("agent", "progress", "peers", "from peers", "from origin", "local", "installed"):
        table.add_column(col, justify="right" if col not in ("agent", "progress") else "left")
    for a in agents:
        st = _status(a.state_dir) if a.state_dir else {}
        sw = next((s for s in st.get("swarms", []) if s.get("version") == version), None)
        installed = st.get("apps", {}).get("demo", {}).get("current") or "-"
        if sw:
            frac = sw["have"] / max(sw["chunks"], 1)
            bar = "█" * int(frac * 20) + "░" * (20 - int(frac * 20))
            progress = f"{bar} {frac:4.0%}"
            b = sw["bytes"]
            row = [
                a.name,
                progress,
                str(sw["peers"]),
                f"{b['peer'] / 1e6:.1f} MB",
                f"{b['origin'] / 1e6:.1f} MB",
                f"{b['local'] / 1e6:.1f} MB",
                installed,
            ]
        else:
            row = [a.name, "waiting for metadata", "-", "-", "-", "-", installed]
        table.add_row(*row)
    return table


def _installed(agents: list[_Proc], version: str) -> bool:
    for a in agents:
        st = _status(a.state_dir) if a.state_dir else {}
        if st.get("apps", {}).get("demo", {}).get("current") != version:
            return False
    return True


def _rollout(console: Console, agents: list[_Proc], version: str, timeout: float) -> float:
    started = time.monotonic()
    with Live(
        _table(agents, version, started),
        console=console,
        refresh_per_second=4,
        transient=not console.is_terminal,
    ) as live:
        while not _installed(agents, version):
            if time.monotonic() - started > timeout:
                raise TransferError(
                    f"release {version} not installed everywhere after {timeout:.0f}s; see logs"
                )
            for a in agents:
                if a.popen.poll() is not None:
                    raise TransferError(f"{a.name} exited with {a.popen.returncode}; see {a.log}")
            time.sleep(0.25)
            live.update(_table(agents, version, started))
        live.update(_table(agents, version, started))
    return time.monotonic() - started


@contextlib.contextmanager
def _workdir(workdir: Path | None, keep: bool) -> Iterator[Path]:
    base = workdir or Path(tempfile.mkdtemp(prefix="swarmupdate-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        yield base
    finally:
        if workdir is None and not keep:
            shutil.rmtree(base, ignore_errors=True)


def run_demo(size_mb: int = 64, workdir: Path | None = None, keep: bool = False, agents: int = 8) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    with _workdir(workdir, keep) as base:
        fleet = _Fleet(base)
        try:
            return _run(console, base, fleet, size_mb, agents, keep or workdir is not None)
        except SwarmUpdateError as exc:
            console.print(f"[red]demo failed: {exc}[/]")
            return 1
        except KeyboardInterrupt:
            console.print("interrupted: stopping every process")
            return 130
        finally:
            fleet.stop_all()


def _run(console: Console, base: Path, fleet: _Fleet, size_mb: int, n_agents: int, keep: bool) -> int:
    console.rule("[bold]swarmupdate demo")
    console.print(f"work directory: {base}")
    repo_dir = base / "repo"
    Repository.init(repo_dir)
    repo = Repository(repo_dir)
    repo.add_app("demo", repo.keys.generate("app-demo"))
    repo.commit()
    rng = random.Random(42)
    data = bytearray(rng.randbytes(size_mb * 1024 * 1024))
    artifact = base / "demo-app.bin"
    artifact.write_bytes(data)
    rel = add_release(Repository(repo_dir), "demo", "1.0", artifact)
    console.print(
        f"published [bold]{rel.ref.artifact_path}[/]: {rel.length / 1e6:.1f} MB in {rel.chunks} chunks, "
        "signed with TUF (root, targets, delegated role 'demo', snapshot, timestamp)"
    )
    # the origin's link is the expensive one: cap it (as a CDN bill or a WAN link would) so the swarm's
    # work shows; the tracker hands out a short announce interval so the fleet forms quickly
    origin = fleet.start(
        "origin",
        _cli("origin", "serve", str(repo_dir / "origin"), "--listen", "127.0.0.1:0", "--max-rate", "50MB/s"),
        "http://",
    )
    tracker = fleet.start(
        "tracker", _cli("tracker", "serve", "--listen", "127.0.0.1:0", "--interval", "5"), "http://"
    )
    console.print(f"origin {origin.url}/  tracker {tracker.url}/")
    agents = []
    root = repo_dir / "origin/metadata/1.root.json"
    for i in range(n_agents):
        cfg = _agent_config(base, i, origin.url, tracker.url, root)
        agents.append(
            fleet.start(
                f"agent{i}",
                _cli("agent", "run", "--config", str(cfg)),
                "serving peers",
                state_dir=base / f"agent{i}" / "state",
            )
        )
    console.print(f"{n_agents} agents started (each its own process, peer server and metrics endpoint)")

    seconds = _rollout(console, agents, "1.0", timeout=120 + size_mb * n_agents / 8)
    _summary(console, agents, origin, rel.length, "1.0", seconds)

    # a second release: change 2% of the artifact in one place
    span = max(1, len(data) // 50)
    start = len(data) // 3
    data[start : start + span] = rng.randbytes(span)
    artifact.write_bytes(data)
    origin_before = _counter(origin.url, "swarmupdate_origin_sent_bytes_total")
    before = {a.name: _status(a.state_dir or base).get("bytes", {}) for a in agents}
    rel2 = add_release(Repository(repo_dir), "demo", "1.1", artifact)
    console.print(
        f"\npublished [bold]demo 1.1[/]: {span / 1e6:.1f} MB changed; {rel2.new_chunks} of {rel2.chunks} "
        f"chunks are new ({rel2.new_chunk_bytes / 1e6:.1f} MB)"
    )
    for a in agents:
        a.popen.send_signal(signal.SIGHUP)  # poll now instead of waiting for the next cycle
    seconds = _rollout(console, agents, "1.1", timeout=120 + size_mb * n_agents / 8)
    moved_origin = _counter(origin.url, "swarmupdate_origin_sent_bytes_total") - origin_before
    moved_peer = sum(
        _status(a.state_dir or base).get("bytes", {}).get("peer", 0) - before[a.name].get("peer", 0)
        for a in agents
    )
    console.print(
        f"demo 1.1 installed on {len(agents)} agents in {seconds:.1f}s: over the network moved "
        f"{moved_origin / 1e6:.2f} MB from the origin and {moved_peer / 1e6:.2f} MB between peers "
        f"(the artifact is {rel2.length / 1e6:.1f} MB; only changed chunks travelled, the rest came from "
        "each agent's local store)"
    )
    if keep:
        console.print(f"logs and state kept in {base}")
    return 0


def _summary(
    console: Console, agents: list[_Proc], origin: _Proc, length: int, version: str, seconds: float
) -> None:
    totals = {"peer": 0, "origin": 0, "local": 0}
    metrics_urls = []
    for a in agents:
        st = _status(a.state_dir) if a.state_dir else {}
        for k in totals:
            totals[k] += int(st.get("bytes", {}).get(k, 0))
        if st.get("metrics_port"):
            metrics_urls.append(f"http://127.0.0.1:{st['metrics_port']}/metrics")
    sent = _counter(origin.url, "swarmupdate_origin_sent_bytes_total")
    delivered = totals["peer"] + totals["origin"] + totals["local"]
    saved = 1 - totals["origin"] / delivered if delivered else 0.0
    table = Table(title=f"demo {version}: {len(agents)} agents")
    for col in (
        "time",
        "delivered",
        "from origin",
        "from peers",
        "local store",
        "origin sent (its counter)",
        "bandwidth saved",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        f"{seconds:.1f}s",
        f"{delivered / 1e6:.1f} MB",
        f"{totals['origin'] / 1e6:.1f} MB",
        f"{totals['peer'] / 1e6:.1f} MB",
        f"{totals['local'] / 1e6:.1f} MB",
        f"{sent / 1e6:.1f} MB = {sent / length:.2f} copies",
        f"{saved:.0%}",
    )
    console.print(table)
    console.print(
        "metrics: "
        + f"{origin.url}/metrics (origin), "
        + ", ".join(metrics_urls[:3])
        + (f" … ({len(metrics_urls)} agents)" if len(metrics_urls) > 3 else "")
    )

"""The three ways a fleet gets a release, each run on a fresh testbed (bench/netbed.py) with the same
artifact and caps: swarmupdate (origin, tracker, agents), plain HTTP (every host fetches the artifact from
the origin) and BitTorrent (libtorrent: a seeder at the origin host and one leecher per host).

Each ``run_*`` starts every host's process at the same instant t0 and returns a :class:`Run`: when each
host had the verified artifact, what the origin host sent (interface counters), and what the processes used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netbed import CpuMeter, Host, Process, Testbed, TestbedError, Usage

HERE = Path(__file__).resolve().parent
PY = sys.executable
ORIGIN_PORT = 8080
TRACKER_PORT = 7070
PEER_PORT = 7071
BT_PORT = 6881


@dataclass
class Caps:
    """Link rates in Mbit/s; None = unshaped."""

    up_mbit: float
    origin_up_mbit: float
    down_mbit: float | None = None


@dataclass
class Run:
    contender: str
    agents: int
    size: int
    caps: Caps
    done_at: list[float | None]  # seconds after t0 per host; None: did not finish
    origin_tx: int
    rx_total: int  # bytes all hosts received on eth0
    usage: dict[str, Usage]
    cpu_util: float
    wall: float
    verified: bool
    notes: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds each process had used when the clock started (warm runs start the clients first: their
    #: start-up, imports and handshakes are not part of distributing the release)
    cpu_before: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        agents = [u for name, u in self.usage.items() if name.startswith("a")]
        done = [t for t in self.done_at if t is not None]
        complete = len(done) == self.agents
        t_all = max(done) if complete else None
        t_min = t_min_seconds(self.agents, self.size, self.caps)
        cpu = sum(u.cpu_s for u in self.usage.values())
        delivered = self.size * len(done)
        measured = cpu - sum(self.cpu_before.values())
        return {
            "contender": self.contender,
            "agents": self.agents,
            "size": self.size,
            "caps": vars(self.caps),
            "complete": complete,
            "verified": self.verified,
            "t_all_s": t_all,
            "t_p50_s": sorted(done)[len(done) // 2] if done else None,
            "done_at_s": self.done_at,
            "t_min_s": t_min,
            "efficiency": (t_min / t_all) if t_all else None,
            "origin_tx_bytes": self.origin_tx,
            "origin_copies": self.origin_tx / self.size,
            "rx_bytes_all_hosts": self.rx_total,
            "cpu_s": cpu,
            "cpu_s_agents": sum(u.cpu_s for u in agents),
            "cpu_s_per_gb": cpu / (delivered / 1e9) if delivered else None,
            "cpu_s_measured": measured,
            "cpu_s_per_gb_measured": measured / (delivered / 1e9) if delivered else None,
            "peak_rss_agent_mb": max((u.max_rss_bytes for u in agents), default=0) / 1e6,
            "median_rss_agent_mb": sorted(u.max_rss_bytes for u in agents)[len(agents) // 2] / 1e6
            if agents
            else None,
            "cpu_utilisation": self.cpu_util,
            "wall_s": self.wall,
            **self.notes,
        }


def t_min_seconds(n: int, size: int, caps: Caps) -> float:
    """Kumar & Ross: max(F/u_origin, F/d_min, N*F/(u_origin + sum of peer uplinks))."""
    bits = size * 8
    u_s = caps.origin_up_mbit * 1e6
    bounds = [bits / u_s, n * bits / (u_s + n * caps.up_mbit * 1e6)]
    if caps.down_mbit:
        bounds.append(bits / (caps.down_mbit * 1e6))
    return max(bounds)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def wait_log(proc: Process, needle: str, timeout: float = 20.0) -> str:
    """The first log line holding ``needle`` (a server's ready line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        if not proc.alive():
            raise TestbedError(f"{proc.name} exited before it was ready:\n{text[-2000:]}")
        time.sleep(0.05)
    raise TestbedError(f"{proc.name} not ready within {timeout:.0f}s (log: {proc.log})")


def _build(bed: Testbed, n: int, caps: Caps, extra: tuple[str, ...] = ()) -> tuple[Host, list[Host]]:
    origin = bed.add_host("origin", up_mbit=caps.origin_up_mbit)
    for name in extra:
        bed.add_host(name, up_mbit=None)
    agents = [bed.add_host(f"a{i:03d}", up_mbit=caps.up_mbit, down_mbit=caps.down_mbit) for i in range(n)]
    return origin, agents


def _poll_until(
    hosts: list[Host], done: Callable[[int], bool], t0: float, timeout: float, alive: Callable[[int], bool]
) -> list[float | None]:
    done_at: list[float | None] = [None] * len(hosts)
    deadline = t0 + timeout
    while time.monotonic() < deadline and None in done_at:
        for host in hosts:
            for proc in host.processes:
                proc.sample()
        for i in range(len(hosts)):
            if done_at[i] is None and done(i):
                done_at[i] = time.monotonic() - t0
        if all(done_at[i] is not None or not alive(i) for i in range(len(hosts))):
            break
        time.sleep(0.1)
    return done_at


def _counters(origin: Host, agents: list[Host]) -> tuple[int, int]:
    return origin.tx_bytes(), sum(h.rx_bytes() for h in agents)


# ------------------------------------------------------------------------------------------ swarmupdate


@dataclass
class Published:
    """A publisher repository holding the release(s) the swarm runs fetch."""

    repo: Path
    version: str
    sha256: str
    length: int
    new_chunk_bytes: int


def init_repo(workdir: Path, app: str = "bench") -> Published:
    """A repository with ``app`` and no release yet (for warm runs)."""
    from swarmupdate.publisher.repository import Repository

    repo = workdir / "repo"
    Repository.init(repo)
    r = Repository(repo)
    r.add_app(app, r.keys.generate(f"app-{app}"))
    r.commit()
    return Published(repo, "", "", 0, 0)


def publish(workdir: Path, artifact: Path, version: str, app: str = "bench") -> Published:
    from swarmupdate.publisher.release import add_release
    from swarmupdate.publisher.repository import Repository

    repo = workdir / "repo"
    if not repo.exists():
        Repository.init(repo)
        r = Repository(repo)
        r.add_app(app, r.keys.generate(f"app-{app}"))
        r.commit()
    rel = add_release(Repository(repo), app, version, artifact)
    return Published(repo, version, rel.sha256, rel.length, rel.new_chunk_bytes)


def _agent_toml(
    i: int, host: Host, origin_url: str, tracker_url: str, root: Path, d: Path, tls: Path | None = None
) -> str:
    peer_tls = ""
    if tls is not None:  # peer mutual TLS: the fleet CA and this agent's certificate, made by _fleet_pki
        peer_tls = (
            f'[peer_tls]\nca = "{tls / "ca" / "ca.pem"}"\n'
            f'cert = "{tls / f"bench-{i:03d}.pem"}"\nkey = "{tls / f"bench-{i:03d}.key"}"\n\n'
        )
    return (
        f'node_id = "bench-{i:03d}"\n'
        f'origin_url = "{origin_url}"\n'
        f'trusted_root = "{root}"\n'
        f'state_dir = "{d / "state"}"\n'
        f'store_dir = "{d / "store"}"\n'
        f'trackers = ["{tracker_url}"]\n'
        "poll_interval = 60.0\n"  # the first poll is at start; the delta run sends SIGHUP
        f'peer_listen = "{host.ip}:{PEER_PORT}"\n'
        'metrics_listen = ""\n'
        'log_level = "warning"\n'
        f"\n{peer_tls}[[app]]\n"
        'name = "bench"\n'
        f'install_dir = "{d / "install"}"\n'
        "keep_releases = 2\n"
    )


def run_swarmupdate(
    workdir: Path,
    pub: Published,
    n: int,
    caps: Caps,
    *,
    timeout: float,
    prefix: str,
    then: Callable[[], Published] | None = None,
    tls: bool = False,
    warm: bool = False,
) -> Run:
    """``n`` agents fetch ``pub``. With ``then``, that fetch is a warm-up: once every agent has installed
    ``pub``, ``then()`` publishes the next release and its distribution is measured (a delta: the chunks
    the releases share come from each agent's own store). ``tls``: peers speak mutual TLS (a fleet CA
    and one certificate per agent are made first, outside the measured time). ``warm`` (with ``then``):
    ``pub`` is a repository without the release; the agents run first, and the clock starts when
    ``then()`` has published the release and every agent is told to poll (a release to a running fleet)."""
    with Testbed(prefix) as bed:
        origin, agents = _build(bed, n, caps, extra=("tracker",))
        tracker = bed.hosts["tracker"]
        logs = workdir / "logs"
        cli = [PY, "-m", "swarmupdate.cli", "--log-format", "json"]
        origin_proc = origin.run(
            "origin",
            [*cli, "origin", "serve", str(pub.repo / "origin"), "--listen", f"{origin.ip}:{ORIGIN_PORT}"],
            logs / "origin.log",
        )
        tracker_proc = tracker.run(
            "tracker",
            [*cli, "tracker", "serve", "--listen", f"{tracker.ip}:{TRACKER_PORT}", "--interval", "5"],
            logs / "tracker.log",
        )
        wait_log(origin_proc, "http://")
        wait_log(tracker_proc, "http://")
        root = pub.repo / "origin/metadata/1.root.json"
        pki = _fleet_pki(workdir / "pki", n) if tls else None
        dirs = []
        for i, host in enumerate(agents):
            d = workdir / f"agent{i:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "agent.toml").write_text(
                _agent_toml(
                    i,
                    host,
                    f"http://{origin.ip}:{ORIGIN_PORT}",
                    f"http://{tracker.ip}:{TRACKER_PORT}",
                    root,
                    d,
                    pki,
                )
            )
            dirs.append(d)

        def current(i: int) -> str | None:
            link = dirs[i] / "install" / "current"
            return Path(os.readlink(link)).name if link.is_symlink() else None

        def start() -> list[Process]:
            return [
                h.run(
                    f"a{i:03d}",
                    [*cli, "agent", "run", "--config", str(dirs[i] / "agent.toml")],
                    logs / f"a{i}.log",
                )
                for i, h in enumerate(agents)
            ]

        procs: list[Process] = []
        if warm:
            assert then is not None
            procs = start()
            deadline = time.monotonic() + 60
            while not all((d / "state/status.json").exists() for d in dirs):
                if time.monotonic() > deadline or not all(p.alive() for p in procs):
                    raise TestbedError("agents not running within 60 s")
                time.sleep(0.05)
            time.sleep(
                2.0
            )  # a fleet-swarm announce round: the agents know each other, as a running fleet does
            pub = then()
        elif then is not None:
            procs = start()
            warm = _poll_until(
                agents,
                lambda i: current(i) == pub.version,
                time.monotonic(),
                timeout,
                lambda i: procs[i].alive(),
            )
            if None in warm:
                raise TestbedError(f"agents did not install {pub.version} before the delta run: {warm}")
            pub = then()  # the origin serves the repository directory: live at once
        size = pub.length
        tx0, rx0 = _counters(origin, agents)
        cpu = CpuMeter()
        cpu_before = {p.name: p.cpu_s() for p in (*procs, origin_proc, tracker_proc)}
        t0 = time.monotonic()
        if then is None:
            procs = start()
        else:
            for p in procs:
                os.kill(p.pid, signal.SIGHUP)  # poll the origin now, as `systemctl reload` does
        done_at = _poll_until(
            agents, lambda i: current(i) == pub.version, t0, timeout, lambda i: procs[i].alive()
        )
        wall = time.monotonic() - t0
        util = cpu.utilisation()
        tx1, rx1 = _counters(origin, agents)
        statuses = [_read_json(d / "state/status.json") for d in dirs]
        usage = {p.name: p.stop() for p in procs}
        usage["origin"] = origin_proc.stop()
        usage["tracker"] = tracker_proc.stop()
    verified = all(
        t is None or sha256_file(d / "install/current/artifact") == pub.sha256
        for t, d in zip(done_at, dirs, strict=True)
    )
    by_source = {
        s: sum(int(st.get("bytes", {}).get(s, 0)) for st in statuses) for s in ("peer", "origin", "local")
    }
    return Run(
        "swarmupdate+mtls" if tls else "swarmupdate",
        n,
        size,
        caps,
        done_at,
        tx1 - tx0,
        rx1 - rx0,
        usage,
        util,
        wall,
        verified,
        {"agent_bytes_by_source": by_source, "new_chunk_bytes": pub.new_chunk_bytes},
        cpu_before,
    )


def _fleet_pki(d: Path, n: int) -> Path:
    from swarmupdate.fleetca import init_ca, issue

    if not (d / "ca" / "ca.pem").exists():
        init_ca(d / "ca")
    for i in range(n):
        issue(d / "ca", f"bench-{i:03d}", d)
    return d


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc


# ------------------------------------------------------------------------------------------ plain HTTP


def run_http(workdir: Path, artifact: Path, n: int, caps: Caps, *, timeout: float, prefix: str) -> Run:
    """Every host downloads the artifact from the origin (the same dev server) and checks its sha256."""
    size = artifact.stat().st_size
    expected = sha256_file(artifact)
    serve = workdir / "http-origin"
    serve.mkdir(parents=True, exist_ok=True)
    served = serve / artifact.name
    if not served.exists():
        shutil.copyfile(artifact, served)
    with Testbed(prefix) as bed:
        origin, agents = _build(bed, n, caps)
        logs = workdir / "logs"
        origin_proc = origin.run(
            "origin",
            [
                PY,
                "-m",
                "swarmupdate.cli",
                "--log-format",
                "json",
                "origin",
                "serve",
                str(serve),
                "--listen",
                f"{origin.ip}:{ORIGIN_PORT}",
            ],
            logs / "origin.log",
        )
        wait_log(origin_proc, "http://")
        url = f"http://{origin.ip}:{ORIGIN_PORT}/{artifact.name}"
        outs = [workdir / f"http{i:03d}" / artifact.name for i in range(n)]
        for out in outs:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.unlink(missing_ok=True)
        tx0, rx0 = _counters(origin, agents)
        cpu = CpuMeter()
        cpu_before = {origin_proc.name: origin_proc.cpu_s()}
        t0 = time.monotonic()
        # curl itself, so its own peak RSS is sampled; the bench hashes each file once all are done (about
        # 0.2 s per 64 MiB, left out of the time: the other contenders verify while they download)
        procs = [
            h.run(
                f"a{i:03d}", ["curl", "-sf", "--retry", "3", "-o", str(outs[i]), url], logs / f"http{i}.log"
            )
            for i, h in enumerate(agents)
        ]

        def finished(i: int) -> bool:
            usage = procs[i].poll()
            return usage is not None and usage.returncode == 0

        done_at = _poll_until(agents, finished, t0, timeout, lambda i: procs[i].poll() is None)
        wall = time.monotonic() - t0
        util = cpu.utilisation()
        tx1, rx1 = _counters(origin, agents)
        usage = {p.name: p.stop() for p in procs}
        usage["origin"] = origin_proc.stop()
    verified = all(t is None or sha256_file(o) == expected for t, o in zip(done_at, outs, strict=True))
    for o in outs:
        o.unlink(missing_ok=True)
    return Run(
        "http",
        n,
        size,
        caps,
        done_at,
        tx1 - tx0,
        rx1 - rx0,
        usage,
        util,
        wall,
        verified,
        cpu_before=cpu_before,
    )


# ------------------------------------------------------------------------------------------ BitTorrent


def run_bittorrent(
    workdir: Path,
    artifact: Path,
    n: int,
    caps: Caps,
    *,
    timeout: float,
    prefix: str,
    old: Path | None = None,
    warm: bool = False,
) -> Run:
    """libtorrent: a seeder on the origin host, a leecher per host connected to the seeder and to every
    other leecher. With ``old``, each leecher starts with the old artifact in place under the new name,
    so libtorrent rechecks it and fetches only the pieces that differ (its best case for a delta).
    ``warm``: the clients run first, and the clock starts when the torrent is handed to all of them
    (the release comes to a running fleet, as it does for swarmupdate with ``warm``)."""
    size = artifact.stat().st_size
    expected = sha256_file(artifact)
    btnode = [PY, str(HERE / "btnode.py")]
    bt = workdir / "bt"
    bt.mkdir(parents=True, exist_ok=True)
    torrent = bt / f"{artifact.name}.torrent"
    seed_dir = bt / "seed"
    seed_dir.mkdir(exist_ok=True)
    seeded = seed_dir / artifact.name
    if not seeded.exists():
        shutil.copyfile(artifact, seeded)
    made = subprocess.run(
        [*btnode, "make-torrent", str(seeded), "--out", str(torrent)], capture_output=True, text=True
    )
    if made.returncode != 0:
        raise TestbedError(f"make-torrent failed: {made.stderr}")
    with Testbed(prefix) as bed:
        origin, agents = _build(bed, n, caps)
        logs = workdir / "logs"
        seeder = origin.run(
            "origin",
            [
                *btnode,
                "seed",
                "--torrent",
                str(torrent),
                "--dir",
                str(seed_dir),
                "--listen",
                f"{origin.ip}:{BT_PORT}",
                "--status",
                str(bt / "seed.json"),
            ],
            logs / "bt-seed.log",
        )
        deadline = time.monotonic() + 30
        while not (bt / "seed.json").exists():
            if time.monotonic() > deadline or not seeder.alive():
                raise TestbedError(f"seeder not ready: {seeder.log.read_text()[-2000:]}")
            time.sleep(0.05)
        addrs = [f"{origin.ip}:{BT_PORT}", *(f"{h.ip}:{BT_PORT}" for h in agents)]
        dirs = [bt / f"leech{i:03d}" for i in range(n)]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / "status.json").unlink(missing_ok=True)
            (d / artifact.name).unlink(missing_ok=True)
            if old is not None:
                shutil.copyfile(old, d / artifact.name)
        go = bt / "go" / "go"
        shutil.rmtree(go.parent, ignore_errors=True)
        go.parent.mkdir()
        tx0, rx0 = _counters(origin, agents)
        cpu = CpuMeter()
        cpu_before = {seeder.name: seeder.cpu_s()}
        t0 = time.monotonic()
        procs = [
            h.run(
                f"a{i:03d}",
                [
                    *btnode,
                    "leech",
                    "--torrent",
                    str(torrent),
                    "--dir",
                    str(dirs[i]),
                    "--listen",
                    f"{h.ip}:{BT_PORT}",
                    "--peers",
                    ",".join(a for a in addrs if a != f"{h.ip}:{BT_PORT}"),
                    "--status",
                    str(dirs[i] / "status.json"),
                    *(["--go", str(go)] if warm else []),
                ],
                logs / f"bt{i}.log",
            )
            for i, h in enumerate(agents)
        ]
        if warm:
            deadline = time.monotonic() + 60
            while len(list(go.parent.glob("*.ready"))) < n:
                if time.monotonic() > deadline or not all(p.alive() for p in procs):
                    raise TestbedError("libtorrent clients not ready within 60 s")
                time.sleep(0.02)
            tx0, rx0 = _counters(origin, agents)
            cpu = CpuMeter()
            cpu_before = {p.name: p.cpu_s() for p in (*procs, seeder)}
            t0 = time.monotonic()
            go.touch()
        done_at = _poll_until(
            agents,
            lambda i: bool(_read_json(dirs[i] / "status.json").get("complete")),
            t0,
            timeout,
            lambda i: procs[i].alive(),
        )
        wall = time.monotonic() - t0
        util = cpu.utilisation()
        tx1, rx1 = _counters(origin, agents)
        usage = {p.name: p.stop() for p in procs}
        usage["origin"] = seeder.stop()
        statuses = [_read_json(d / "status.json") for d in dirs]
    verified = all(t is None or st.get("sha256") == expected for t, st in zip(done_at, statuses, strict=True))
    for d in dirs:
        (d / artifact.name).unlink(missing_ok=True)
    return Run(
        "bittorrent",
        n,
        size,
        caps,
        done_at,
        tx1 - tx0,
        rx1 - rx0,
        usage,
        util,
        wall,
        verified,
        {"payload_downloaded": sum(int(st.get("downloaded_payload", 0)) for st in statuses)},
        cpu_before,
    )

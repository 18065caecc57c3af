"""Crash consistency of a real agent: SIGKILL at seeded random points while it stores chunks, assembles
the artifact and installs it, and check the invariants after every kill.

    .venv/bin/python chaos/crash.py --points 1000 --seed 7 --out crash-7.json

Each lane is a publisher repository, an origin (``--max-rate``, so the store phase lasts about a second)
and one ``swarmupdate agent run`` process with a slow install and health command (so the install phase
lasts a few hundred ms). A lane publishes a release per round, then strikes: it waits for the target phase
to start (seen from outside: a file in the store's ``tmp/``, the assembled ``.partial`` file changing, the
install journal changing), sleeps a random delay drawn from the seed, stops the agent (SIGSTOP) and reads
which phase it is really in from its open files and the journal, then SIGKILLs its whole session (the
install command too, as systemd would) and restarts it. A stop is not a crash point of its own: the
stopped process leaves exactly what a kill at that moment leaves.

Checked after every kill:

- every chunk file in the store hashes to its name (nothing unverified is visible); after the restart the
  temporary files are gone, and the peer server answers the chunks that were being written with 404 (or,
  if fetched again since, with bytes that hash to the id);
- ``current`` is absent only if nothing was ever installed, else it names the old or the new release,
  complete (marker, artifact with the signed sha256, the install command's output); every release
  directory under a final name is complete;
- the download resumes: a restarted agent counts the verified chunks it already holds as
  ``swarmupdate_download_bytes_total{source="local"}`` (exactly their length), the origin is never asked
  again for a chunk that was in the store at a kill, and each round ends with the new release installed.

tests/system/test_crash_points.py runs this with 100 points (in ``make test``); run it by hand for more.
The report (``--out``) lists every kill: lane, round, the phase aimed at and the phase hit, the delay.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from prometheus_client.parser import text_string_to_metric_families

from swarmupdate.manifest import Manifest
from swarmupdate.model import ChunkRef, is_sha256_hex
from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository

__all__ = ["PHASES", "CrashConfig", "Kill", "Report", "main", "run"]

KIB = 1024
MIB = 1024 * KIB
PHASES = ("store", "assembly", "install")
_JOURNAL = ".swarmupdate-install.json"
_BUSY_STATES = ("building", "activating", "rolling_back")
_INSTALL_SH = """#!/bin/sh
sleep 0.12
echo "$SWARMUPDATE_VERSION" > "$SWARMUPDATE_RELEASE_DIR/done"
"""
_HEALTH_SH = """#!/bin/sh
sleep 0.12
[ "$(cat "$SWARMUPDATE_RELEASE_DIR/done")" = "$SWARMUPDATE_VERSION" ]
"""


@dataclass(frozen=True)
class CrashConfig:
    """One crash run.

    Attributes:
        points: kills that must land inside one of the three phases.
        min_per_phase: and at least this many in each phase.
        seed: every random choice (artifacts, which phases, delays) comes from it.
        size: artifact bytes per release (a quarter is shared with the previous release).
        rate: the origin's bytes/s (sets how long the store phase lasts).
        lanes: independent repo + origin + agent sets, run side by side.
        chunker: FastCDC min, avg, max (small: many chunks in a small artifact).
        time_limit: seconds before the run gives up (reported as a violation).
        workdir: where everything goes (a temporary directory when None).
    """

    points: int = 100
    min_per_phase: int = 20
    seed: int = 1
    size: int = 4 * MIB
    rate: int = 4 * MIB
    lanes: int = 2
    chunker: tuple[int, int, int] = (16 * KIB, 64 * KIB, 256 * KIB)
    time_limit: float = 900.0
    workdir: Path | None = None


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: what was aimed at, what was hit, and the state left behind."""

    lane: int
    round: int
    version: str
    target: str
    #: store / assembly / install, or other (between phases) / installed (after the journal went idle)
    phase: str
    delay_ms: float
    at: float
    chunks_stored: int
    chunks: int
    current: str | None


@dataclass
class Report:
    """What a run did and every invariant it saw broken (there must be none)."""

    config: dict[str, Any]
    kills: list[Kill] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    rounds: int = 0
    #: restarts after a store-phase kill whose local bytes were checked against the store (all > 0)
    resume_checks: int = 0
    resumed_local_bytes: int = 0
    #: chunks the peer server was asked for after a restart: in flight at the kill, and stored
    served_checks: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {p: 0 for p in (*PHASES, "other", "installed")}
        for k in self.kills:
            out[k.phase] += 1
        return out

    def in_phases(self) -> int:
        counts = self.counts()
        return sum(counts[p] for p in PHASES)

    def to_json(self) -> dict[str, Any]:
        targets: dict[str, dict[str, int]] = {}
        for k in self.kills:
            row = targets.setdefault(k.target, {})
            row[k.phase] = row.get(k.phase, 0) + 1
        return {
            "config": self.config,
            "seconds": round(self.seconds, 1),
            "rounds": self.rounds,
            "kills": len(self.kills),
            "kills_in_phases": self.in_phases(),
            "by_phase": self.counts(),
            "by_target": targets,
            "resume_checks": self.resume_checks,
            "resumed_local_bytes": self.resumed_local_bytes,
            "served_checks": self.served_checks,
            "violations": self.violations,
            "kill_log": [asdict(k) for k in self.kills],
        }


@dataclass(frozen=True)
class _Release:
    version: str
    sha256: str
    length: int
    chunks: tuple[ChunkRef, ...]

    def local_bytes(self, stored: frozenset[str]) -> int:
        return sum(c.length for c in self.chunks if c.sha256 in stored)


class _Shared:
    """What the lanes share: the report, under a lock, and when to stop."""

    def __init__(self, cfg: CrashConfig, report: Report, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.report = report
        self.log = log
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + cfg.time_limit
        self.t0 = time.time()

    def add_kill(self, kill: Kill) -> None:
        with self.lock:
            self.report.kills.append(kill)

    def violation(self, lane: int, text: str) -> None:
        with self.lock:
            self.report.violations.append(f"lane {lane}: {text}")
        self.log(f"VIOLATION lane {lane}: {text}")

    def counts(self) -> dict[str, int]:
        with self.lock:
            return self.report.counts()

    def want_more(self) -> bool:
        with self.lock:
            counts = self.report.counts()
            short = self.report.in_phases() < self.cfg.points or any(
                counts[p] < self.cfg.min_per_phase for p in PHASES
            )
        return short and time.monotonic() < self.deadline


class _Stuck(Exception):
    """The lane cannot go on (the agent died on its own, or a phase never came)."""


@dataclass
class _Run:
    """One agent process run (from a start or a SIGHUP) and what it should find."""

    fresh: bool  # a new process: its metrics hold only this run's counts
    expected_local: int
    log_offset: int
    partial: tuple[int, int, int] | None
    final: tuple[int, int, int] | None
    journal: tuple[int, int, int] | None
    local_checked: bool = False


class _Lane:
    def __init__(self, index: int, base: Path, shared: _Shared) -> None:
        self.i = index
        self.cfg = shared.cfg
        self.shared = shared
        self.rng = random.Random(f"{self.cfg.seed}-{index}")
        self.base = base
        self.repo_dir = base / "repo"
        self.store = base / "agent/store"
        self.store_tmp = self.store / "tmp"
        self.state = base / "agent/state"
        self.install = base / "agent/install"
        self.assembly = self.state / "assembly"
        self.agent_log = base / "agent.log"
        self.origin_log = base / "origin.log"
        self.config = base / "agent/agent.toml"
        self.origin: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[str] | None = None
        self.peer_url = ""
        self.http = httpx.Client(timeout=10.0)
        self.releases: dict[str, _Release] = {}
        self.artifact = b""
        self.installed: str | None = None  # the release current names at the start of the round
        self.run_state: _Run | None = None
        self.round_runs: list[_Run] = []
        self.round_kills: list[tuple[float, frozenset[str]]] = []
        self.origin_offset = 0
        self.chunk_requests: dict[str, list[float]] = {}
        #: phase durations (s), learned from runs that went through a phase without a kill
        self.est = {"assembly": 0.015, "install": 0.35}

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        Repository.init(self.repo_dir)
        settings = self.repo_dir / "repo.json"
        doc = json.loads(settings.read_bytes())
        lo, avg, hi = self.cfg.chunker
        doc["chunker"] = {"min": lo, "avg": avg, "max": hi}
        settings.write_text(json.dumps(doc))
        repo = Repository(self.repo_dir)
        repo.add_app("web", repo.keys.generate("app-web"))
        repo.commit()
        origin = str(self.repo_dir / "origin")
        self.origin = _start(
            _cli("origin", "serve", origin, "--listen", "127.0.0.1:0", "--max-rate", str(self.cfg.rate)),
            self.origin_log,
        )
        line = self._ready_line(self.origin)
        if "http://" not in line:
            raise _Stuck(f"origin did not start: {line!r}\n{_tail(self.origin_log)}")
        origin_url = line.rsplit(" ", 1)[-1].rstrip("/")
        agent = self.base / "agent"
        agent.mkdir(parents=True, exist_ok=True)
        scripts = {}
        for name, body in (("install.sh", _INSTALL_SH), ("health.sh", _HEALTH_SH)):
            scripts[name] = agent / name
            scripts[name].write_text(body)
            scripts[name].chmod(0o755)
        self.config.write_text(
            f'node_id = "crash-{self.i}"\n'
            f'origin_url = "{origin_url}"\n'
            f'trusted_root = "{self.repo_dir / "origin/metadata/1.root.json"}"\n'
            f'state_dir = "{self.state}"\n'
            f'store_dir = "{self.store}"\n'
            f"store_max_bytes = {3 * self.cfg.size}\n"
            "poll_interval = 600.0\n"
            'peer_listen = "127.0.0.1:0"\n'
            'metrics_listen = "127.0.0.1:0"\n'
            "connect_timeout = 1.0\n"
            "request_timeout = 10.0\n"
            "[[app]]\n"
            'name = "web"\n'
            f'install_dir = "{self.install}"\n'
            f'install_command = ["{scripts["install.sh"]}"]\n'
            f'health_command = ["{scripts["health.sh"]}"]\n'
            "keep_releases = 2\n"
        )

    def publish(self, version: str) -> _Release:
        keep = self.artifact[: self.cfg.size // 4]
        self.artifact = keep + self.rng.randbytes(self.cfg.size - len(keep))
        path = self.base / "artifact.bin"
        path.write_bytes(self.artifact)
        pub = add_release(Repository(self.repo_dir), "web", version, path)
        manifest_file = next((self.repo_dir / "origin/targets/web" / version).glob("*.manifest.json"))
        manifest = Manifest.decode(manifest_file.read_bytes(), source=str(manifest_file))
        rel = _Release(version, pub.sha256, pub.length, manifest.chunks)
        self.releases[version] = rel
        return rel

    def close(self) -> None:
        for proc in (self.agent, self.origin):
            if proc is not None and proc.poll() is None:
                _kill_session(proc)
        self.http.close()

    # ------------------------------------------------------------------ the rounds

    def run(self) -> None:
        rnd = 0
        while self.shared.want_more():
            rnd += 1
            rel = self.publish(str(rnd))
            self.round_kills = []
            self.round_runs = []
            if self.agent is None:
                self._start_agent(rel)
            else:
                self._begin_run(rel, fresh=False)
                assert self.agent is not None
                self.agent.send_signal(signal.SIGHUP)
            plan = self._plan()
            while plan and self.shared.want_more():
                target = plan.pop(0)
                kill = self._strike(target, rel, rnd)
                if kill is not None and target == "assembly" and kill.phase != "assembly" and len(plan) < 6:
                    plan.insert(0, "assembly")  # a miss: assembly comes again after the restart
            self._finish_round(rel)
            with self.shared.lock:
                self.shared.report.rounds += 1

    def _plan(self) -> list[str]:
        """Kills to aim in this round, in phase order; one more at the phase that has the fewest."""
        counts = self.shared.counts()
        low = min(PHASES, key=lambda p: counts[p])
        n = {p: 1 + self.rng.randint(0, 1) + (p == low) for p in PHASES}
        return [p for p in PHASES for _ in range(n[p])]

    def _finish_round(self, rel: _Release) -> None:
        self._watch("done", rel)
        # the agent is alive (it may be pruning an old release): check only the one it just installed
        self._check_install_dir(rel, allow_absent=False, only=rel.version)
        if _current(self.install) != rel.version:
            self.shared.violation(self.i, f"round {rel.version} ended with current {_current(self.install)}")
        self.installed = rel.version
        self._check_run_log(rel)
        self._check_origin_log()

    # ------------------------------------------------------------------ one kill

    def _strike(self, target: str, rel: _Release, rnd: int) -> Kill | None:
        started = self._watch(target, rel)
        if started is None:
            return None  # the run went past the target phase (or finished)
        if target == "store":
            # the origin's token bucket lets a quarter second's worth through at once
            missing = rel.length - rel.local_bytes(_stored(self.store)) - max(self.cfg.rate // 4, 256 * KIB)
            window = 0.85 * max(missing, 0) / self.cfg.rate
        else:
            # the start is seen a little late (polling), so aim at the first three quarters
            window = 0.75 * self.est[target]
        delay = self.rng.random() * window
        time.sleep(max(0.0, started + delay - time.monotonic()))
        agent = self.agent
        assert agent is not None
        try:
            os.kill(agent.pid, signal.SIGSTOP)
        except ProcessLookupError:
            raise _Stuck(f"agent died on its own:\n{_tail(self.agent_log)}") from None
        _wait_stopped(agent.pid)
        phase = self._classify(agent.pid, rel)
        at = time.time()
        in_flight = _listdir(self.store_tmp)
        _kill_session(agent)
        stored = _stored(self.store)
        self._check_store(stored)
        current = self._check_install_dir(rel, allow_absent=self.installed is None)
        kill = Kill(
            self.i,
            rnd,
            rel.version,
            target,
            phase,
            round(1000 * delay, 2),
            round(at - self.shared.t0, 3),
            sum(1 for c in rel.chunks if c.sha256 in stored),
            len(rel.chunks),
            current,
        )
        self.shared.add_kill(kill)
        self.round_kills.append((at, stored))
        self._start_agent(rel)
        self._check_served(rel, stored, in_flight)
        return kill

    def _watch(self, target: str, rel: _Release) -> float | None:
        """Poll until the target phase starts in this run; its start time, or None once past it.

        ``done``: until the release is installed (None), learning how long the phases took.
        """
        run = self.run_state
        assert run is not None
        rank = {p: i for i, p in enumerate(("store", "assembly", "assembled", "install", "done"))}
        deadline = time.monotonic() + (90 if target == "done" else 60)
        partial = self.assembly / f"{rel.sha256}.partial"
        final = self.assembly / rel.sha256
        journal = self.install / _JOURNAL
        seen: dict[str, float] = {}
        n = 0
        while time.monotonic() < deadline:
            n += 1
            now = time.monotonic()
            if "store" not in seen and _listdir(self.store_tmp):
                seen["store"] = now
                self._check_resumed(rel)
            if "assembly" not in seen and (_stat(partial) != run.partial or _stat(final) != run.final):
                seen["assembly"] = now
            if "assembly" in seen and "assembled" not in seen and _stat(partial) is None:
                seen["assembled"] = now
            if (
                "install" not in seen
                and _stat(journal) != run.journal
                and _journal(self.install).get("state") in _BUSY_STATES
            ):
                seen["install"] = now
            if target in seen:
                return seen[target]
            if n % 8 == 0:
                if self._done(rel):
                    self._learn(seen, now)
                    return None
                self._check_alive()
            if any(rank[p] > rank[target] for p in seen):
                return None
            time.sleep(0.0005)
        raise _Stuck(f"{target} of release {rel.version} did not come in time:\n{_tail(self.agent_log)}")

    def _learn(self, seen: dict[str, float], done: float) -> None:
        """Phase durations of a run that went through without a kill (they set the delays)."""
        if "assembly" in seen and "assembled" in seen:
            took = seen["assembled"] - seen["assembly"]
            if took > 0.002:  # not when only the renamed file was seen
                self.est["assembly"] = 0.7 * self.est["assembly"] + 0.3 * took
        if "install" in seen:
            self.est["install"] = 0.7 * self.est["install"] + 0.3 * (done - seen["install"])

    def _classify(self, pid: int, rel: _Release) -> str:
        """Which phase the stopped agent is in: read from its open files and the install journal."""
        files = _open_files(pid)
        if str(self.assembly / f"{rel.sha256}.partial") in files:
            return "assembly"
        run = self.run_state
        assert run is not None
        journal_changed = _stat(self.install / _JOURNAL) != run.journal
        state = _journal(self.install).get("state")
        if journal_changed and state in _BUSY_STATES:
            return "install"
        tmp = f"{self.store_tmp}/"
        if any(f.startswith(tmp) for f in files):
            return "store"
        if journal_changed and state == "idle" and _current(self.install) == rel.version:
            return "installed"
        return "other"

    # ------------------------------------------------------------------ the agent process

    def _start_agent(self, rel: _Release) -> None:
        self._begin_run(rel, fresh=True)
        self.agent = _start(_cli("agent", "run", "--config", str(self.config)), self.agent_log)
        line = self._ready_line(self.agent)
        if "serving peers" not in line:
            raise _Stuck(f"agent did not start: {line!r}\n{_tail(self.agent_log)}")
        self.peer_url = f"http://127.0.0.1:{line.rsplit(' ', 1)[-1]}"
        self._rebase()

    def _begin_run(self, rel: _Release, *, fresh: bool) -> None:
        stored = _stored(self.store)
        size = self.agent_log.stat().st_size if self.agent_log.exists() else 0
        self.run_state = _Run(fresh, rel.local_bytes(stored), size, None, None, None)
        self.round_runs.append(self.run_state)
        self._rebase()

    def _rebase(self) -> None:
        """Files as they are at the start of a run: a phase has started when they change."""
        run = self.run_state
        assert run is not None
        rel = self.releases[max(self.releases, key=int)]
        run.partial = _stat(self.assembly / f"{rel.sha256}.partial")
        run.final = _stat(self.assembly / rel.sha256)
        run.journal = _stat(self.install / _JOURNAL)

    def _ready_line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready:
            raise _Stuck("a process did not start within 60 s")
        return proc.stdout.readline().strip()

    def _check_alive(self) -> None:
        if self.agent is not None and self.agent.poll() is not None:
            raise _Stuck(f"agent exited {self.agent.returncode} on its own:\n{_tail(self.agent_log)}")

    def _done(self, rel: _Release) -> bool:
        return _current(self.install) == rel.version and _journal(self.install).get("state") == "idle"

    # ------------------------------------------------------------------ invariants

    def _check_store(self, stored: frozenset[str]) -> None:
        """Every chunk file under its final name holds the bytes it names."""
        for sha in stored:
            path = self.store / sha[:2] / sha
            if _sha256_file(path) != sha:
                self.shared.violation(self.i, f"store: {path} does not hash to its name")

    def _check_install_dir(self, rel: _Release, *, allow_absent: bool, only: str | None = None) -> str | None:
        """``current`` names a complete release, old or new; every release under a final name is complete."""
        current = _current(self.install)
        if current is None:
            if not allow_absent:
                self.shared.violation(self.i, f"no current release, but {self.installed} was installed")
        elif current not in (self.installed, rel.version):
            self.shared.violation(self.i, f"current is {current}, neither {self.installed} nor {rel.version}")
        releases = self.install / "releases"
        for name in _listdir(releases):
            if name.startswith(".") or only not in (None, name):
                continue
            known = self.releases.get(name)
            where = releases / name
            try:
                marker = json.loads((where / ".swarmupdate-release.json").read_bytes())
                artifact = _sha256_file(where / "artifact")
                done = (where / "done").read_text().strip()
            except (OSError, ValueError) as exc:
                self.shared.violation(self.i, f"release dir {where} is incomplete: {exc}")
                continue
            if known is None or marker.get("sha256") != known.sha256 or artifact != known.sha256:
                self.shared.violation(self.i, f"release dir {where}: artifact is not the signed one")
            if done != name:
                self.shared.violation(self.i, f"release dir {where}: install command output {done!r}")
        if current is not None and current not in _listdir(releases):
            self.shared.violation(self.i, f"current names {current}, which is not a release directory")
        return current

    def _check_served(self, rel: _Release, stored: frozenset[str], in_flight: list[str]) -> None:
        """After the restart: no temporary file is left, and only verified bytes are served."""
        for name in in_flight:
            if (self.store_tmp / name).exists():
                self.shared.violation(self.i, f"store: temporary file {name} survived the restart")
        flight = {n.split(".", 1)[0] for n in in_flight}
        missing = [c.sha256 for c in rel.chunks if c.sha256 not in stored]
        asked = [s for s in missing if s[:16] in flight]
        asked += self.rng.sample(missing, min(2, len(missing)))
        held = [c.sha256 for c in rel.chunks if c.sha256 in stored]
        asked += self.rng.sample(held, min(2, len(held)))
        for sha in asked:
            try:
                response = self.http.get(f"{self.peer_url}/v1/chunks/{sha}")
            except httpx.HTTPError as exc:
                self.shared.violation(self.i, f"peer server: GET chunk {sha[:12]}: {exc}")
                continue
            code = response.status_code
            if code == 200 and hashlib.sha256(response.content).hexdigest() != sha:
                self.shared.violation(self.i, f"peer server served bytes that are not chunk {sha}")
            elif code != 200 and (sha in stored or code != 404):
                self.shared.violation(self.i, f"peer server: chunk {sha[:12]} answered {code}")
        with self.shared.lock:
            self.shared.report.served_checks += len(asked)

    def _check_resumed(self, rel: _Release) -> None:
        """A restarted agent's first download counts what the store already held as local bytes."""
        run = self.run_state
        assert run is not None
        if not run.fresh or run.local_checked:
            return
        run.local_checked = True
        try:
            status = json.loads((self.state / "status.json").read_bytes())
            assert self.agent is not None
            if status.get("pid") != self.agent.pid:
                return  # not written by this run yet
            text = self.http.get(f"http://127.0.0.1:{status['metrics_port']}/metrics").text
        except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
            self.shared.violation(self.i, f"metrics after a restart: {exc}")
            return
        local = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "swarmupdate_download_bytes_total" and s.labels.get("source") == "local":
                    local += s.value
        if int(local) != run.expected_local:
            self.shared.violation(
                self.i, f"restart counted {int(local)} local bytes, the store held {run.expected_local}"
            )
        elif local > 0:
            with self.shared.lock:
                self.shared.report.resume_checks += 1
                self.shared.report.resumed_local_bytes += int(local)

    def _check_run_log(self, rel: _Release) -> None:
        """Each run that finished the download counted exactly what it found in the store as local."""
        data = self.agent_log.read_bytes()
        ends = [r.log_offset for r in self.round_runs[1:]] + [len(data)]
        for run, end in zip(self.round_runs, ends, strict=True):
            for line in data[run.log_offset : end].decode(errors="replace").splitlines():
                self._check_download_line(rel, run, line)

    def _check_download_line(self, rel: _Release, run: _Run, line: str) -> None:
        if '"download_complete"' in line:
            doc = json.loads(line)
            if doc.get("version") != rel.version:
                return
            local, origin, peer = doc.get("local"), doc.get("origin"), doc.get("peer")
            if local != run.expected_local or origin != rel.length - run.expected_local or peer != 0:
                self.shared.violation(
                    self.i,
                    f"release {rel.version}: downloaded local={local} origin={origin} peer={peer}, "
                    f"the store held {run.expected_local} of {rel.length}",
                )

    def _check_origin_log(self) -> None:
        """No chunk that was in the store at a kill is fetched from the origin again afterwards."""
        with self.origin_log.open("rb") as f:
            f.seek(self.origin_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.origin_offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            if '"access"' not in line:
                continue
            doc = json.loads(line)
            path = str(doc.get("path", ""))
            sha = path.rsplit("/", 1)[-1]
            if not path.startswith("/chunks/") or not is_sha256_hex(sha) or doc.get("status") != 200:
                continue
            began = datetime.fromisoformat(doc["timestamp"]).timestamp() - float(doc["ms"]) / 1000
            self.chunk_requests.setdefault(sha, []).append(began)
        for at, stored in self.round_kills:
            for sha in stored & self.chunk_requests.keys():
                # a request begun after the restart (a restart takes far longer than this margin)
                if any(t > at + 0.2 for t in self.chunk_requests[sha]):
                    self.shared.violation(
                        self.i, f"chunk {sha[:12]} fetched again after a kill had it stored"
                    )


# ---------------------------------------------------------------------- the run


def run(cfg: CrashConfig, log: Callable[[str], None] = print) -> Report:
    """Run the lanes until ``cfg.points`` kills landed in the phases (and ``min_per_phase`` in each)."""
    report = Report({k: v if not isinstance(v, Path) else str(v) for k, v in asdict(cfg).items()})
    shared = _Shared(cfg, report, log)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if cfg.workdir is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarmupdate-crash-")))
        else:
            base = cfg.workdir
        lanes = [_Lane(i, base / f"lane{i}", shared) for i in range(cfg.lanes)]
        for lane in lanes:
            stack.callback(lane.close)

        def drive(lane: _Lane) -> None:
            try:
                lane.setup()
                lane.run()
            except _Stuck as exc:
                shared.violation(lane.i, f"stuck: {exc}")
            except Exception as exc:
                shared.violation(lane.i, f"driver error: {type(exc).__name__}: {exc}")
                raise

        threads = [threading.Thread(target=drive, args=(lane,), name=f"lane{lane.i}") for lane in lanes]
        for t in threads:
            t.start()
        last = 0
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=5)
            n = len(report.kills)
            if n != last:
                log(f"{time.monotonic() - started:6.1f}s  kills {n}  {shared.counts()}")
                last = n
    report.seconds = time.monotonic() - started
    if time.monotonic() > shared.deadline:
        report.violations.append(f"time limit of {cfg.time_limit:.0f}s reached")
    return report


# ---------------------------------------------------------------------- small helpers


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarmupdate.cli", "--log-format", "json", *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True, env=dict(os.environ)
        )


def _kill_session(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process and everything in its session (install and health commands), as systemd does."""
    sid = proc.pid
    deadline = time.monotonic() + 15
    while members := _session_members(sid):
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.poll()  # reap the leader so it stops counting
        if time.monotonic() > deadline:
            raise _Stuck(f"session {sid} would not die: {members}")
        time.sleep(0.001)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _session_members(sid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        entry = proc.name
        if not entry.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields after the command: state ppid pgrp session ...; zombies are dead already
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return
        if state in ("T", "t", "Z", "X"):
            return
        time.sleep(0.0002)


def _open_files(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    out = set()
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                out.add(str(fd.readlink()))
    return out


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)  # noqa: PTH208 - polled every half millisecond: names, not Paths
    except OSError:
        return []


def _stored(store: Path) -> frozenset[str]:
    out: set[str] = set()
    for shard in _listdir(store):
        if len(shard) == 2:
            out.update(n for n in _listdir(store / shard) if is_sha256_hex(n))
    return frozenset(out)


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _current(install: Path) -> str | None:
    try:
        return (install / "current").readlink().name
    except OSError:
        return None


def _journal(install: Path) -> dict[str, Any]:
    try:
        doc = json.loads((install / _JOURNAL).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _print_summary(report: Report, out: TextIO) -> None:
    doc = report.to_json()
    print(
        f"{doc['kills']} kills ({doc['kills_in_phases']} in the phases) in {doc['rounds']} rounds, "
        f"{doc['seconds']}s: {doc['by_phase']}",
        file=out,
    )
    print(f"aimed -> hit: {doc['by_target']}", file=out)
    print(
        f"restarts that resumed from the store: {doc['resume_checks']} "
        f"({doc['resumed_local_bytes']:,} local bytes); chunks asked of the peer server: "
        f"{doc['served_checks']}",
        file=out,
    )
    print(f"invariant violations: {len(doc['violations'])}", file=out)
    for v in doc["violations"]:
        print(f"  {v}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=300, help="kills inside the three phases")
    parser.add_argument("--min-per-phase", type=int, default=None, help="default: a fifth of --points")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size-mib", type=float, default=4.0, help="artifact size per release")
    parser.add_argument("--rate-mib", type=float, default=4.0, help="origin rate, MiB/s")
    parser.add_argument("--lanes", type=int, default=2, help="agents killed side by side")
    parser.add_argument("--time-limit", type=float, default=3600.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    args = parser.parse_args(argv)
    cfg = CrashConfig(
        points=args.points,
        min_per_phase=args.points // 5 if args.min_per_phase is None else args.min_per_phase,
        seed=args.seed,
        size=int(args.size_mib * MIB),
        rate=int(args.rate_mib * MIB),
        lanes=args.lanes,
        time_limit=args.time_limit,
        workdir=args.workdir,
    )
    report = run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    _print_summary(report, sys.stdout)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    counts = report.counts()
    short = report.in_phases() < cfg.points or any(counts[p] < cfg.min_per_phase for p in PHASES)
    return 1 if report.violations or short else 0


if __name__ == "__main__":
    sys.exit(main())

"""A multi-host testbed on one machine: one network namespace per host, joined by veth pairs to a bridge.

Every host gets ``eth0`` with an address in 10.77.0.0/16; the bridge lives in a hub namespace of its own,
so nothing is added to the machine's own network namespace and all traffic stays between namespaces this
testbed made. Each host's uplink is shaped with ``tc`` HTB on its ``eth0`` (egress), its downlink, when
asked, on the hub's end of its veth (the hub's egress towards the host). ``tc`` here has no ``netem``, so
there is no emulated latency: the testbed takes a latency argument only to refuse it clearly.

Processes run inside a host with ``ip netns exec``, which execs the command in the same process, so
``os.wait4`` on it gives that process's own CPU time and peak RSS. :meth:`Testbed.close` kills every process
in the testbed's namespaces and deletes them, also after a failure or Ctrl-C; namespaces left over by a
killed run (same prefix) are removed when the next testbed starts.

Needs root (``ip netns add``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

PREFIX = "swb"
SUBNET = "10.77"


class TestbedError(RuntimeError):
    """The testbed could not be built or a command in it failed."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError(
            "the network testbed needs root (ip netns, tc): run it as root, e.g. sudo make bench"
        )
    for tool in ("ip", "tc"):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")):
            raise TestbedError(f"{tool!r} not found: install iproute2")


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Usage:
    """What a finished process used: CPU seconds (user + system, its waited-for children included) and
    peak resident memory (VmHWM of its own program, sampled while it ran: 0 when never sampled)."""

    cpu_s: float
    max_rss_bytes: int
    returncode: int


@dataclass
class Process:
    """A process running in a host, with its own process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    usage: Usage | None = None
    hwm: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def sample(self) -> None:
        """Note the process's peak RSS so far (VmHWM). Not ``ru_maxrss``: that one starts from the RSS of
        the forking parent (the kernel carries the pre-exec high-water mark over), which here is the whole
        benchmark's."""
        if self.usage is not None:
            return
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm = max(self.hwm, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass

    def cpu_s(self) -> float:
        """CPU seconds the process (and its reaped children) has used so far, from /proc; 0 once gone."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after the command name
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        # through wait4, never Popen.poll(): that would reap the process and lose its rusage
        return self.poll() is None

    def stop(self, timeout: float = 10.0) -> Usage:
        """SIGTERM, then SIGKILL after ``timeout``; returns the process's usage."""
        if self.usage is not None:
            return self.usage
        self.sample()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if (usage := self._wait_until(time.monotonic() + timeout)) is not None:
            return usage
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        _, status, ru = os.wait4(self.pid, 0)
        return self._reaped(status, ru)

    def poll(self) -> Usage | None:
        """The usage once the process has exited, else None (without waiting)."""
        if self.usage is None:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status, ru)
        return self.usage

    def wait(self, timeout: float) -> Usage:
        """Wait for the process to exit by itself."""
        if (usage := self._wait_until(time.monotonic() + timeout)) is not None:
            return usage
        raise TestbedError(f"{self.name} did not exit within {timeout:.0f}s (log: {self.log})")

    def _wait_until(self, deadline: float) -> Usage | None:
        while (usage := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return usage

    def _reaped(self, status: int, ru: Any) -> Usage:
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code  # reaped here: keep Popen from waiting on a pid that is gone
        self.usage = Usage(ru.ru_utime + ru.ru_stime, self.hwm, code)
        return self.usage


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    hub_if: str
    processes: list[Process] = field(default_factory=list)

    def tx_bytes(self) -> int:
        """Bytes this host sent on eth0, from the kernel's interface counters (headers included)."""
        return int(self._stats()["tx"]["bytes"])

    def rx_bytes(self) -> int:
        return int(self._stats()["rx"]["bytes"])

    def _stats(self) -> dict[str, Any]:
        out = _run("ip", "-n", self.ns, "-j", "-s", "link", "show", "eth0").stdout
        doc: dict[str, Any] = json.loads(out)[0]["stats64"]
        return doc

    def run(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Process:
        """Start ``argv`` in this host's namespace, output to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out: IO[bytes]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc


def _shape(ns: str, dev: str, mbit: float) -> None:
    """HTB at ``mbit`` on ``dev``'s egress in ``ns``: one class for small packets (pure ACKs, requests,
    short answers), served first, and one for the bulk, sharing the rate; fq_codel under each when the
    kernel has it.

    A link shaped with a plain FIFO queues a host's ACKs behind its own uploads: on the 20 Mbit/s links
    its queue reached hundreds of kilobytes, so the ACKs of everything the host *downloaded* came
    150-300 ms late, and every sender to it was held back by the receiver's uplink instead of its own
    (``ss`` showed RTTs of 150-300 ms on a path with no latency). Real uplinks do not do that: fq_codel,
    the default queue of systemd-based distributions, serves sparse flows (ACKs, requests) ahead of
    bulk ones. This kernel has no fq_codel (nor sfq, fq or prio), so the small-packet class is the
    nearest it can do; when fq_codel is there, it also keeps each class's queue short.
    """
    rate = f"{mbit:g}mbit"
    small = f"{max(mbit / 10, 0.1):g}mbit"
    bulk = f"{max(mbit - mbit / 10, 0.1):g}mbit"

    def tc(command: str, check: bool = True) -> None:
        _run("tc", "-n", ns, *command.split(), check=check)

    # r2q: HTB's quantum (rate / r2q bytes) within its bounds for these rates; burst: at least one
    # 64 KiB GSO segment, so HTB does not stall on veth's large packets
    tc(f"qdisc replace dev {dev} root handle 1: htb default 10 r2q 100")
    tc(f"class replace dev {dev} parent 1: classid 1:1 htb rate {rate} ceil {rate} burst 128k cburst 128k")
    for leaf, share, prio in (("5", small, "0"), ("10", bulk, "1")):
        tc(
            f"class replace dev {dev} parent 1:1 classid 1:{leaf} htb rate {share} ceil {rate}"
            f" burst 128k cburst 128k prio {prio}"
        )
        tc(f"qdisc replace dev {dev} parent 1:{leaf} handle {leaf}: fq_codel", check=False)
    # IPv4 packets under 512 bytes (IP total length) to the small class; everything else is bulk
    tc(f"filter replace dev {dev} parent 1: protocol ip prio 1 u32 match u16 0x0000 0xfe00 at 2 flowid 1:5")


@dataclass
class Testbed:
    """Hosts on a bridge. Use as a context manager: every namespace is removed on exit."""

    prefix: str = PREFIX
    hosts: dict[str, Host] = field(default_factory=dict)
    hub: str = ""
    _old_handlers: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> Testbed:
        require_root()
        self.cleanup_stale(self.prefix)
        self.hub = f"{self.prefix}-hub"
        _run("ip", "netns", "add", self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so close() runs
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str, *, up_mbit: float | None, down_mbit: float | None = None) -> Host:
        """A new host ``name`` with its uplink (and downlink) shaped to the given Mbit/s (None: unshaped)."""
        index = len(self.hosts) + 1
        if index > 250 * 250:
            raise TestbedError("too many hosts")
        ns = f"{self.prefix}-{name}"
        hub_if = f"v{index}"
        ip = f"{SUBNET}.{index // 250}.{index % 250 + 1}"
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", self.hub, "link", "add", hub_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "-n", self.hub, "link", "set", hub_if, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        if up_mbit:
            _shape(ns, "eth0", up_mbit)
        if down_mbit:
            _shape(self.hub, hub_if, down_mbit)
        host = Host(name, ns, ip, hub_if)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in host.processes:
                if proc.alive():
                    with contextlib.suppress(TestbedError):
                        proc.stop(timeout=3)
        for ns in [h.ns for h in self.hosts.values()] + ([self.hub] if self.hub else []):
            _kill_and_delete(ns)
        self.hosts.clear()
        self.hub = ""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    @staticmethod
    def cleanup_stale(prefix: str) -> None:
        """Remove namespaces named ``prefix-*`` left by an earlier run that was killed."""
        out = _run("ip", "-j", "netns", "list", check=False).stdout.strip()
        for entry in json.loads(out) if out else []:
            if entry["name"].startswith(f"{prefix}-"):
                _kill_and_delete(entry["name"])


def _kill_and_delete(ns: str) -> None:
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run("ip", "netns", "del", ns, check=False)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class CpuMeter:
    """Machine-wide CPU use between start and stop, from /proc/stat (all cores): tells a CPU-bound run
    from a network-bound one."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def utilisation(self) -> float:
        total, idle = self._read()
        t0, i0 = self._start
        return 0.0 if total == t0 else 1.0 - (idle - i0) / (total - t0)

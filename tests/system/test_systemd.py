"""The systemd units in service/: static checks (``systemd-analyze verify`` and ``security``), then the agent
unit booted for real in a Debian container (``systemd-nspawn --boot``, see tests/nspawn.py).

In the container the units are installed unchanged; only the timings of the watchdog test come from a
drop-in. The agent's interpreter is the host's Python, bind-mounted read-only outside /root (the unit's
ProtectHome=yes hides /root), with a venv at /opt/swarmupdate/venv as in production. The origin runs on the
host; the container shares the host's network, and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, need_tool
from tests.fleet import Fleet, metric, scrape, sha256, wait_for
from tests.nspawn import Container

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SERVICE = PROJECT / "service"
UNITS = sorted(p.name for p in SERVICE.iterdir() if p.suffix in (".service", ".timer"))
VENV = "/opt/swarmupdate/venv"
#: where the host's Python installation is bind-mounted in the container: outside /root (ProtectHome=yes)
PY_HOME = "/usr/local/lib/swarmupdate-test-python"
#: the project's venv's site-packages and the project itself, at fixed paths: the checkout may live under
#: /tmp or /root, which the units hide (PrivateTmp=yes, ProtectHome=yes)
SITE_HOME = "/usr/local/lib/swarmupdate-test-site"
PROJECT_HOME = "/usr/local/lib/swarmupdate-test-project"
#: what every container of this module bind-mounts read-only
BINDS_RO = [
    (sys.base_prefix, PY_HOME),
    (sysconfig.get_paths()["purelib"], SITE_HOME),
    (str(PROJECT), PROJECT_HOME),
]
MB = 1024 * 1024


# ---------------------------------------------------------------------------- static checks


def test_units_present() -> None:
    assert set(UNITS) == {
        "swarmupdate-agent.service",
        "swarmupdate-refresh.service",
        "swarmupdate-refresh.timer",
        "swarmupdate-tracker.service",
    }


@pytest.mark.parametrize("unit", UNITS)
def test_verify(unit: str, tmp_path: Path) -> None:
    """``systemd-analyze verify`` in a root holding the units, the host's system units and stub binaries;
    any line on stderr (systemd only warns there: unknown keys, bad values, missing binaries) fails."""
    analyze = need_tool("systemd-analyze")
    root = tmp_path / "root"
    for d in ("etc/systemd/system", "usr/lib/systemd", "usr/bin", "usr/sbin", "opt/swarmupdate/venv/bin"):
        (root / d).mkdir(parents=True)
    for link, target in (("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")):
        (root / link).symlink_to(target)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for stub in ("opt/swarmupdate/venv/bin/swarmupdate", "usr/bin/kill"):
        (root / stub).write_text("#!/bin/sh\nexit 0\n")
        (root / stub).chmod(0o755)
    for name in UNITS:
        shutil.copy(SERVICE / name, root / "etc/systemd/system" / name)
    proc = subprocess.run(
        [analyze, "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", f"systemd-analyze verify warned:\n{proc.stderr}"


@pytest.mark.parametrize(
    "unit", ["swarmupdate-agent.service", "swarmupdate-tracker.service", "swarmupdate-refresh.service"]
)
def test_security_exposure(unit: str) -> None:
    """``systemd-analyze security --offline=yes``: overall exposure at most 2.0 (0 safest, 10 unsafe)."""
    analyze = need_tool("systemd-analyze")
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(SERVICE / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, f"no exposure level in:\n{proc.stdout}\n{proc.stderr}"
    exposure = float(found.group(1))
    print(f"{unit}: exposure {exposure}")
    assert exposure <= 2.0, proc.stdout


# ---------------------------------------------------------------------------- the booted container

#: the install command of the test app: it runs as a child of the agent, so inside the real unit's
#: sandbox. It records what it may write and its privileges into the release dir, then succeeds.
PROBE = r"""
out="$SWARMUPDATE_RELEASE_DIR/probe.txt"
try() { if ( : > "$1" ) 2>"$SWARMUPDATE_RELEASE_DIR/err"; then echo "$1 written"; else
  echo "$1 refused: $(sed 's/.*: //' "$SWARMUPDATE_RELEASE_DIR/err")"; fi; }
{
  try /etc/swarmupdate-probe
  try /usr/swarmupdate-probe
  try /srv/open/swarmupdate-probe
  try /var/lib/swarmupdate/swarmupdate-probe
  try /var/cache/swarmupdate/swarmupdate-probe
  echo "uid $(id -un)"
  grep -E '^(NoNewPrivs|CapEff):' /proc/self/status
  /opt/swarmupdate/venv/bin/python3 -c 'import socket; print("if_nameindex", len(socket.if_nameindex()))' 2>&1
} > "$out"
rm -f "$SWARMUPDATE_RELEASE_DIR/err"
"""


@dataclass
class Booted:
    """A container running the agent unit against an origin on the host."""

    ct: Container
    fleet: Fleet
    data: bytes
    sha256: str

    def status(self) -> dict[str, object]:
        import json

        try:
            doc: dict[str, object] = json.loads(self.ct.read("/var/lib/swarmupdate/status.json"))
        except (OSError, ValueError):
            return {}
        return doc

    @property
    def metrics_url(self) -> str:
        wait_for(lambda: bool(self.status().get("metrics_port")), 30, "the agent's status.json")
        return f"http://127.0.0.1:{self.status()['metrics_port']}"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, bytes, str]]:
    """A repository with web 1.0, served by an origin process on the host at 127.0.0.1."""
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        rel, data = fleet.publish("1.0", 2 * MB)
        fleet.start_origin()
        yield fleet, data, rel.sha256
    finally:
        fleet.close()


def _agent_config(origin_url: str) -> str:
    return (
        'node_id = "nspawn-agent"\n'
        f'origin_url = "{origin_url}"\n'
        'trusted_root = "/etc/swarmupdate/root.json"\n'
        "poll_interval = 2.0\n"
        'peer_listen = "127.0.0.1:0"\n'
        'metrics_listen = "127.0.0.1:0"\n'
        "connect_timeout = 1.0\n"
        "\n[[app]]\n"
        'name = "web"\n'
        'install_dir = "/var/lib/swarmupdate/apps/web"\n'
        f"install_command = {_toml_array(['/bin/sh', '-c', PROBE])}\n"
        "keep_releases = 2\n"
    )


def _toml_array(items: list[str]) -> str:
    import json

    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _install_python(ct: Container) -> None:
    """/opt/swarmupdate/venv: a venv on the host's interpreter (bind-mounted at PY_HOME) whose site-packages
    holds one .pth file naming the project and the project's venv's site-packages (at PROJECT_HOME and
    SITE_HOME). Path lines of a .pth file are not site dirs, so the venv's own editable-install .pth (which
    names the host path of the checkout) is not read: ``swarmupdate`` is imported from PROJECT_HOME."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    ct.put("/etc/ld.so.conf.d/swarmupdate-test-python.conf", f"{PY_HOME}/lib\n")
    ct.run("ldconfig")
    ct.put(
        f"{VENV}/pyvenv.cfg",
        f"home = {PY_HOME}/bin\ninclude-system-site-packages = false\nversion = {sys.version.split()[0]}\n",
    )
    ct.symlink(f"{VENV}/bin/python3", f"{PY_HOME}/bin/python{version}")
    ct.put(f"{VENV}/lib/python{version}/site-packages/swarmupdate-test.pth", f"{PROJECT_HOME}\n{SITE_HOME}\n")
    ct.put(
        f"{VENV}/bin/swarmupdate",
        f"#!{VENV}/bin/python3\nimport sys\nfrom swarmupdate.cli import main\nsys.exit(main())\n",
        mode=0o755,
    )


def _install_units(ct: Container) -> None:
    """The units and users of service/ as a package would install them, and the venv they run."""
    _install_python(ct)
    for unit in UNITS:
        ct.put(f"/etc/systemd/system/{unit}", (SERVICE / unit).read_bytes())
    ct.put("/usr/lib/sysusers.d/swarmupdate.conf", (SERVICE / "sysusers.d/swarmupdate.conf").read_bytes())
    ct.run("systemd-sysusers")
    ct.run("systemctl", "daemon-reload")


@pytest.fixture
def booted(rootfs: Path, published: tuple[Fleet, bytes, str], tmp_path: Path) -> Iterator[Booted]:
    """A freshly booted container with the units installed, the agent enabled and started."""
    fleet, data, digest = published
    assert fleet.origin is not None
    with Container.boot(
        rootfs,
        binds_ro=BINDS_RO,
        log_dir=tmp_path,
    ) as ct:
        try:
            _install_units(ct)
            ct.put("/etc/swarmupdate/agent.toml", _agent_config(fleet.origin.url))
            ct.put(
                "/etc/swarmupdate/root.json", (fleet.repo_dir / "origin/metadata/1.root.json").read_bytes()
            )
            ct.run(
                "install", "-d", "-m", "1777", "/srv/open"
            )  # writable by anyone, were it not for the sandbox
            ct.run("systemctl", "daemon-reload")
            ct.run("systemctl", "enable", "--now", "swarmupdate-agent.service", timeout=60)
            yield Booted(ct, fleet, data, digest)
        except BaseException:
            print(ct.journal("swarmupdate-agent.service"), file=sys.stderr)
            raise


def test_agent_reaches_ready_with_status(booted: Booted) -> None:
    """Type=notify: the unit is active only after READY=1; StatusText is the agent's STATUS= line."""
    props = booted.ct.wait_unit(
        "swarmupdate-agent.service",
        ActiveState="active",
        SubState="running",
        check=lambda p: "swarms" in p.get("StatusText", ""),
        timeout=30,
    )
    print(f"StatusText={props['StatusText']}")
    assert booted.ct.show("swarmupdate-agent.service", "UnitFileState")["UnitFileState"] == "enabled"
    user = booted.ct.run("ps", "-o", "user=", "-p", props["MainPID"]).stdout.strip()
    assert user == "swarmupdate"


def test_agent_installs_release_and_serves_metrics(booted: Booted) -> None:
    """The published release is installed into the state dir; /metrics answers from the host."""
    ct = booted.ct
    current = "/var/lib/swarmupdate/apps/web/current"

    def installed() -> bool:
        try:
            return ct.read(f"{current}/artifact") == booted.data
        except OSError:
            return False

    wait_for(installed, 60, "web 1.0 installed in the container")
    assert (ct.root / current.lstrip("/")).readlink().name == "1.0"
    samples = scrape(booted.metrics_url)
    assert metric(samples, "swarmupdate_release_info", app="web", version="1.0") == 1
    assert metric(samples, "swarmupdate_download_bytes_total", source="origin") == len(booted.data)
    assert metric(samples, "swarmupdate_build_info") == 1
    assert sha256(booted.data) == booted.sha256


def test_install_command_runs_in_the_sandbox(booted: Booted) -> None:
    """The app's install command, a child of the agent, may write the agent's state and cache dirs and
    nothing else: /etc, /usr and even a world-writable /srv/open are read-only (ProtectSystem=strict); it
    runs as user swarmupdate without privileges."""
    ct = booted.ct
    probe = "/var/lib/swarmupdate/apps/web/current/probe.txt"

    def done() -> bool:
        try:
            ct.read(probe)
        except OSError:
            return False
        return True

    wait_for(done, 60, "the install command's probe")
    lines = ct.read(probe).decode().splitlines()
    print("\n".join(lines))
    report = dict(line.split(None, 1) for line in lines)
    assert report["/etc/swarmupdate-probe"] == "refused: Read-only file system"
    assert report["/usr/swarmupdate-probe"] == "refused: Read-only file system"
    assert report["/srv/open/swarmupdate-probe"] == "refused: Read-only file system"
    assert report["/var/lib/swarmupdate/swarmupdate-probe"] == "written"
    assert report["/var/cache/swarmupdate/swarmupdate-probe"] == "written"
    assert report["uid"] == "swarmupdate"
    assert report["NoNewPrivs:"] == "1"
    assert int(report["CapEff:"], 16) == 0
    # with a wildcard peer_listen the agent finds its address through rtnetlink (RestrictAddressFamilies)
    assert int(report["if_nameindex"]) >= 1, report["if_nameindex"]
    assert not (ct.root / "srv/open/swarmupdate-probe").exists()


def test_watchdog_restarts_a_hung_agent(booted: Booted) -> None:
    """SIGSTOP the agent: its watchdog pings stop, systemd aborts it and Restart=on-failure brings it back."""
    ct = booted.ct
    unit = "swarmupdate-agent.service"
    ct.put(
        f"/etc/systemd/system/{unit}.d/test-watchdog.conf",
        "[Service]\nWatchdogSec=4\nRestartSec=1\nTimeoutAbortSec=5\nLimitCORE=0\n",
    )
    ct.run("systemctl", "daemon-reload")
    ct.run("systemctl", "restart", unit, timeout=60)
    before = ct.wait_unit(unit, ActiveState="active", SubState="running", timeout=30)
    assert ct.show(unit, "WatchdogUSec")["WatchdogUSec"] == "4s"
    # a healthy agent outlives several watchdog periods
    stable_until = time.monotonic() + 6
    while time.monotonic() < stable_until:
        now = ct.show(unit, "MainPID", "NRestarts", "ActiveState")
        assert (now["MainPID"], now["NRestarts"], now["ActiveState"]) == (
            before["MainPID"],
            before["NRestarts"],
            "active",
        ), ct.journal(unit)
        time.sleep(0.5)
    ct.run("kill", f"-{signal.SIGSTOP.value}", before["MainPID"])
    stopped = time.monotonic()
    after = ct.wait_unit(
        unit,
        ActiveState="active",
        SubState="running",
        check=lambda p: (
            p["MainPID"] not in ("0", before["MainPID"]) and int(p["NRestarts"]) > int(before["NRestarts"])
        ),
        timeout=4 + 5 + 1 + 20,
    )
    print(f"restarted {time.monotonic() - stopped:.1f}s after SIGSTOP: NRestarts {after['NRestarts']}")
    journal = ct.journal(unit, 200)
    assert "Watchdog timeout" in journal, journal
    # and it serves again
    httpx.get(f"{booted.metrics_url}/metrics", timeout=5).raise_for_status()


@pytest.fixture
def container(rootfs: Path, tmp_path: Path) -> Iterator[Container]:
    """A freshly booted container with the units installed, nothing enabled."""
    with Container.boot(rootfs, binds_ro=BINDS_RO, log_dir=tmp_path) as ct:
        _install_units(ct)
        yield ct


def test_tracker_unit_serves(container: Container) -> None:
    """The tracker under DynamicUser= and the same sandbox answers /healthz and /metrics (from the host);
    its listen address comes from /etc/swarmupdate/tracker.env."""
    ct = container
    port = free_port()
    env = (SERVICE / "tracker.env").read_text().replace("0.0.0.0:7070", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in env
    ct.put("/etc/swarmupdate/tracker.env", env)
    ct.run("systemctl", "enable", "--now", "swarmupdate-tracker.service", timeout=60)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 30, "the tracker's /healthz")
    except AssertionError:
        raise AssertionError(ct.journal("swarmupdate-tracker.service")) from None
    assert "swarmupdate_tracker_announces_total" in httpx.get(f"{url}/metrics", timeout=5).text
    props = ct.show("swarmupdate-tracker.service", "ActiveState", "MainPID")
    assert props["ActiveState"] == "active"
    # a dynamic user: neither root nor one of the image's users
    user = ct.run("ps", "-o", "user=", "-p", props["MainPID"]).stdout.strip()
    assert user not in ("root", "swarmupdate", "nobody"), user


def test_refresh_unit_resigns_only_the_repo(container: Container, tmp_path: Path) -> None:
    """The oneshot refresh re-signs the timestamp of /srv/swarmupdate/repo as swarmupdate-repo, inside its
    sandbox (no network, only the repository writable); the timer is enabled with a next elapse."""
    ct = container
    fleet = Fleet(tmp_path / "publisher")
    src = fleet.repo_dir
    before = (src / "origin/metadata/timestamp.json").read_bytes()
    shutil.copytree(src, ct.root / "srv/swarmupdate/repo", symlinks=True)
    ct.run("chown", "-R", "swarmupdate-repo:swarmupdate-repo", "/srv/swarmupdate")
    ct.run("systemctl", "enable", "swarmupdate-refresh.timer")
    ct.run("systemctl", "start", "swarmupdate-refresh.timer")
    ct.run("systemctl", "start", "swarmupdate-refresh.service", timeout=120)  # oneshot: waits for the end
    props = ct.show("swarmupdate-refresh.service", "Result", "ExecMainStatus")
    assert props == {"Result": "success", "ExecMainStatus": "0"}, ct.journal("swarmupdate-refresh.service")
    after = ct.read("/srv/swarmupdate/repo/origin/metadata/timestamp.json")
    assert after != before
    import json

    assert json.loads(after)["signed"]["version"] == json.loads(before)["signed"]["version"] + 1
    assert "re-signed" in ct.journal("swarmupdate-refresh.service")
    timer = ct.show("swarmupdate-refresh.timer", "ActiveState", "NextElapseUSecRealtime")
    assert timer["ActiveState"] == "active"
    assert timer["NextElapseUSecRealtime"] not in ("", "0", "n/a"), timer

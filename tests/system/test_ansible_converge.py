"""A real converge of ansible/site.yml's agent play inside a booted Debian container (systemd-nspawn, see
tests/nspawn.py), against its real systemd: the role installs the package into a venv under /opt with
Debian's own Python, places the TUF root, the peer TLS files and agent.toml from variables, installs and
starts the unit. The agent then installs a release from an origin on the host and serves its chunks over
mutual TLS only. A second run of the same playbook changes nothing.

Ansible runs inside the container with ``ansible_connection=local`` (ansible-core has no container
connection, and the container has no sshd): the controller is the project's venv on the host's interpreter,
both bind-mounted read-only at their host paths, so the roles' controller-side tasks (``delegate_to:
localhost``) read the same checkout. Nothing is fetched: the package and its dependencies come from a
wheelhouse built on the host (``swarmupdate_wheelhouse``), as an offline fleet would do it.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swarmupdate.fleetca import init_ca, issue
from tests.conftest import BIN, free_port, venv_tool
from tests.fleet import Fleet, metric, scrape, wait_for
from tests.nspawn import Container

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = PROJECT / "ansible"
UNIT = "swarmupdate-agent.service"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every dependency and of the build backend (the role builds the project from source with
    ``--no-index``), for the container's CPython 3.11."""
    out = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [str(BIN / "pip"), "wheel", "--quiet", "--wheel-dir", str(out), str(PROJECT), "hatchling"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for built in out.glob("swarmupdate-*.whl"):  # the role installs the project from its source
        built.unlink()
    return out


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "publisher")
    try:
        f.publish("1.0", 2 * MB)
        f.start_origin()
        yield f
    finally:
        f.close()


def _recap(output: str) -> dict[str, int]:
    found = re.search(r"^ct-agent\s*:\s*(.*)$", output, re.MULTILINE)
    assert found, f"no PLAY RECAP for ct-agent in:\n{output[-4000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(1))}


def test_agent_role_converges_and_is_idempotent(
    rootfs: Path, fleet: Fleet, wheelhouse: Path, tmp_path: Path
) -> None:
    playbook = venv_tool("ansible-playbook")
    assert fleet.origin is not None
    metrics_port, peer_port = free_port(), free_port()
    pki = tmp_path / "pki"
    init_ca(pki / "ca")
    issue(pki / "ca", "ct-agent", pki, ips=["127.0.0.1"])
    issue(pki / "ca", "checker", pki)
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "swarmupdate_become": False,
        "swarmupdate_site": "site_a",
        "swarmupdate_wheelhouse": str(wheelhouse),
        "swarmupdate_agent_origin_url": fleet.origin.url,
        "swarmupdate_agent_trusted_root_src": str(fleet.repo_dir / "origin/metadata/1.root.json"),
        "swarmupdate_agent_poll_interval": 2.0,
        "swarmupdate_agent_peer_listen": f"127.0.0.1:{peer_port}",
        "swarmupdate_agent_metrics_listen": f"127.0.0.1:{metrics_port}",
        "swarmupdate_agent_apps": [{"name": "web", "install_dir": "/var/lib/swarmupdate/apps/web"}],
        "swarmupdate_agent_peer_tls": True,
        "swarmupdate_agent_peer_tls_ca_src": str(pki / "ca" / "ca.pem"),
        "swarmupdate_agent_peer_tls_cert_src": str(pki / "ct-agent.pem"),
        "swarmupdate_agent_peer_tls_key_src": str(pki / "ct-agent.key"),
    }
    inventory = tmp_path / "inventory.yml"
    agents = {"swarmupdate_agents": {"hosts": {"ct-agent": host}}}
    inventory.write_text(json.dumps({"all": {"children": agents}}))
    home = tmp_path / "ansible-home"
    env = [
        f"ANSIBLE_CONFIG={ANSIBLE_DIR / 'ansible.cfg'}",
        f"ANSIBLE_HOME={home}",
        f"ANSIBLE_LOCAL_TEMP={home / 'tmp'}",
        f"ANSIBLE_ROLES_PATH={ANSIBLE_DIR / 'roles'}",
        "ANSIBLE_NOCOLOR=1",
        "ANSIBLE_FORCE_COLOR=0",
        "HOME=/root",
        "LANG=C.UTF-8",
    ]
    with Container.boot(
        rootfs,
        binds_ro=[sys.base_prefix, str(PROJECT)],
        binds=[str(tmp_path), str(wheelhouse)],
        log_dir=tmp_path / "logs",
    ) as ct:

        def converge() -> tuple[dict[str, int], str]:
            proc = ct.run(
                "env",
                *env,
                playbook,
                "-i",
                str(inventory),
                str(ANSIBLE_DIR / "site.yml"),
                check=False,
                timeout=900,
            )
            output = proc.stdout + proc.stderr
            assert proc.returncode == 0, f"ansible-playbook exited {proc.returncode}:\n{output[-6000:]}"
            return _recap(output), output

        first, _ = converge()
        print(f"first run: {first}")
        assert first["failed"] == 0 and first["unreachable"] == 0
        assert first["changed"] > 0
        props = ct.wait_unit(UNIT, ActiveState="active", SubState="running", timeout=60)
        assert ct.show(UNIT, "UnitFileState")["UnitFileState"] == "enabled"
        user = ct.run("ps", "-o", "user=", "-p", props["MainPID"]).stdout.strip()
        assert user == "swarmupdate"
        # the agent runs from the venv the role made with Debian's python3
        cmdline = ct.read(f"/proc/{props['MainPID']}/cmdline").split(b"\0")
        assert cmdline[0].startswith(b"/opt/swarmupdate/venv/bin/python"), cmdline
        assert b"/etc/swarmupdate/agent.toml" in cmdline
        assert (
            ct.read("/etc/swarmupdate/root.json")
            == (fleet.repo_dir / "origin/metadata/1.root.json").read_bytes()
        )

        # and does its job: the release from the host's origin is installed and counted
        current = "/var/lib/swarmupdate/apps/web/current"

        def installed() -> bool:
            try:
                return (ct.root / current.lstrip("/")).readlink().name == "1.0"
            except OSError:
                return False

        wait_for(installed, 60, "web 1.0 installed by the converged agent")
        samples = scrape(f"http://127.0.0.1:{metrics_port}")
        assert metric(samples, "swarmupdate_release_info", app="web", version="1.0") == 1

        # peer mutual TLS as deployed: the key is readable by the agent's group only, and the agent serves
        # its chunks to a fleet certificate and to nobody without one
        key = ct.run("stat", "-c", "%a %U %G", "/etc/swarmupdate/tls/agent.key").stdout.split()
        assert key == ["640", "root", "swarmupdate"]
        chunk = next((fleet.repo_dir / "origin" / "chunks").glob("*/*")).name
        url = f"https://127.0.0.1:{peer_port}/v1/chunks/{chunk}"
        member = ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem"))
        member.load_cert_chain(pki / "checker.pem", pki / "checker.key")
        got = httpx.get(url, verify=member, timeout=10)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == chunk
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem")), timeout=10)

        second, output = converge()
        print(f"second run: {second}")
        changed = [line for line in output.splitlines() if line.startswith("changed:")]
        assert second["changed"] == 0, f"the second run changed: {changed}\n{output[-4000:]}"
        assert second["failed"] == 0
        after = ct.show(UNIT, "MainPID", "NRestarts", "ActiveState")
        assert after["ActiveState"] == "active"
        assert after["MainPID"] == props["MainPID"], "an idempotent run must not restart the agent"

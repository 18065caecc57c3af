"""The Ansible deployment in ansible/: the playbook parses, and ansible-lint passes its production profile.

Both run offline: collections, caches and temporary files go to the test's own directory, and only
ansible.builtin modules are used, so nothing is ever fetched from Galaxy. ansible-core and ansible-lint come
from the ``ops`` extra (``pip install -e '.[ops]'``). A real converge of the roles runs in a systemd-nspawn
container (tests/nspawn.py), never against this machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, venv_tool

pytestmark = pytest.mark.system

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
INVENTORY = ANSIBLE_DIR / "inventory" / "example" / "hosts.yml"
ROLES = (
    "swarmupdate",
    "swarmupdate_agent",
    "swarmupdate_tracker",
    "swarmupdate_origin",
    "swarmupdate_monitoring",
)


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment that keeps Ansible off the network and out of the home directory."""
    home = tmp_path / "ansible-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ANSIBLE_LINT_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_COLLECTIONS_PATH=str(home / "collections"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LINT_SKIP_VERSION_CHECK="1",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        NO_COLOR="1",
    )
    return env


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300)


def test_layout() -> None:
    for role in ROLES:
        for part in ("meta", "defaults", "handlers", "tasks"):
            assert (ANSIBLE_DIR / "roles" / role / part / "main.yml").is_file(), f"{role}/{part}/main.yml"
    assert (ANSIBLE_DIR / "site.yml").is_file()
    assert INVENTORY.is_file()


def test_syntax_check(offline_env: dict[str, str]) -> None:
    playbook = venv_tool("ansible-playbook")
    proc = run([playbook, "--syntax-check", "-i", str(INVENTORY), "site.yml"], offline_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr


def test_example_inventory(offline_env: dict[str, str]) -> None:
    """Both sites are agent groups with their own site label; every host group the playbook targets exists."""
    inventory = venv_tool("ansible-inventory")
    proc = run([inventory, "-i", str(INVENTORY), "--graph"], offline_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for group in ("swarmupdate_agents", "site_a", "site_b", "swarmupdate_trackers", "swarmupdate_origin"):
        assert f"@{group}:" in proc.stdout, proc.stdout
    assert "@swarmupdate_monitoring:" in proc.stdout
    for host, site in (("web-a1.example.net", "site_a"), ("web-b1.example.net", "site_b")):
        proc = run([inventory, "-i", str(INVENTORY), "--host", host], offline_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f'"swarmupdate_site": "{site}"' in proc.stdout, proc.stdout


def test_lint_production_profile(offline_env: dict[str, str]) -> None:
    lint = venv_tool("ansible-lint")
    proc = run(
        [lint, "--offline", "--nocolor", "--profile", "production", "--strict", "-c", ".ansible-lint"],
        offline_env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "0 failure(s), 0 warning(s)" in output, output
    assert "'production' was required, and it passed" in output, output

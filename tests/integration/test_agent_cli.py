"""The agent's command line: a bad config fails at start, naming the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_bad_config_fails_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('node_id = "a"\norigin_url = "http://127.0.0.1:1"\npoll_intervall = 5\n')
    proc = run_cli("agent", "run", "--config", cfg)
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "poll_intervall" in proc.stderr and "poll_interval" in proc.stderr
    cfg.write_text('node_id = "a"\norigin_url = "ftp://x"\n')
    proc = run_cli("agent", "run", "--config", cfg)
    assert proc.returncode == 2 and "origin_url" in proc.stderr
    proc = run_cli("agent", "run", "--config", tmp_path / "missing.toml")
    assert proc.returncode == 2 and "missing.toml" in proc.stderr


def test_status_without_a_running_agent(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'node_id = "a"\norigin_url = "http://127.0.0.1:1"\nstate_dir = "{tmp_path / "state"}"\n')
    proc = run_cli("agent", "status", "--config", cfg)
    assert proc.returncode == 2 and "no status yet" in proc.stderr


def test_origin_serve_bad_rate(tmp_path: Path) -> None:
    proc = run_cli("origin", "serve", tmp_path, "--max-rate", "fast")
    assert proc.returncode == 2 and "--max-rate" in proc.stderr

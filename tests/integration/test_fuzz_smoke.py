"""The coverage-guided fuzzers (``fuzz/``) still start, run and find nothing: about a second of fuzzing
per harness through ``fuzz/run.py``, as ``make fuzz`` runs them for a minute each."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STRICT

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_harness_runs_without_a_crash(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        message = "atheris is not installed (pip install -e '.[fuzz]')"
        if STRICT:
            pytest.fail(f"SWARMUPDATE_STRICT=1: {message}")
        pytest.skip(message)
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "fuzz" / "run.py"),
            "--seconds",
            "1",
            "--out",
            str(out),
            "--work",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    harnesses = {h["harness"]: h for h in summary["harnesses"]}
    expected = {p.stem.removeprefix("fuzz_") for p in (REPO / "fuzz").glob("fuzz_*.py")}
    assert set(harnesses) == expected and len(expected) >= 6
    for name, h in harnesses.items():
        assert h["executions"] > 0, (name, (tmp_path / name / "log.txt").read_text()[-2000:])
        assert h["crashes"] == 0, (name, h["findings"])
    assert summary["total_crashes"] == 0

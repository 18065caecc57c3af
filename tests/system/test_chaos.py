"""The chaos scenarios on the namespace testbed at a size that fits `make test` (full size: `make chaos`):
hostile peers (chaos/hostile.py) and churn (chaos/churn.py). Not timed against a number: what must hold
is that every honest agent installs exactly the signed bytes, the liars are banned, and the faults were
really dealt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_netns

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path, *args: str) -> dict[str, Any]:
    need_netns()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "chaos" / script), f"--out={out}", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def test_a_quarter_of_the_swarm_hostile_and_a_lying_tracker(tmp_path: Path) -> None:
    doc = _run(
        "hostile.py",
        tmp_path / "hostile.json",
        "--agents=8",
        "--size-mib=8",
        "--prefix=swth",
        "--scenario=baseline",
        "--scenario=adversaries",
        "--scenario=evil-tracker",
        "--timeout=400",
    )
    runs = {r["scenario"]: r for r in doc["runs"]}
    for r in runs.values():
        assert r["verified"], r  # every honest agent installed exactly the signed bytes
        assert len(r["done_s"]) == r["honest"] == 6, r
    for name in ("adversaries", "evil-tracker"):
        r = runs[name]
        assert r["adversaries"] == 2, r
        assert r["banned"] >= 6, r  # each honest agent banned at least one liar
    # with an honest tracker in the mix, the liars do not make the origin send the release again
    assert runs["adversaries"]["origin_copies"] < 1.5, runs["adversaries"]


def test_churn_kills_and_link_cuts_during_a_release(tmp_path: Path) -> None:
    doc = _run(
        "churn.py",
        tmp_path / "churn.json",
        "--agents=8",
        "--size-mib=16",
        "--period=1.5",
        "--fault-seconds=25",
        "--prefix=swtc",
        "--timeout=400",
    )
    quiet, churn = doc["runs"]
    for r in (quiet, churn):
        assert r["verified"], r
        assert len(r["done_s"]) == 8, r
    assert quiet["faults"] == {"kill": 0, "cut": 0}
    assert churn["faults"]["kill"] + churn["faults"]["cut"] >= 4, churn

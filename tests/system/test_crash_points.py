"""kill -9 a real agent at 100+ seeded random points while it stores chunks, assembles the artifact and
installs it; after every kill and restart the invariants hold (see chaos/crash.py, the driver shared
with the larger run: ``python chaos/crash.py --points 1000 --seed N --out report.json``).

Reproduce a failure with ``SWARMUPDATE_CRASH_SEED=<seed printed in the failure>``; the kill log with
each kill's aimed and hit phase and delay is in the report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SWARMUPDATE_CRASH_SEED", "20241"))


def _load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_crash", ROOT / "chaos/crash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


crash = _load_driver()


def test_sigkill_at_seeded_points_keeps_invariants(tmp_path: Path) -> None:
    cfg = crash.CrashConfig(
        points=100, min_per_phase=20, seed=SEED, lanes=3, time_limit=300.0, workdir=tmp_path
    )
    report = crash.run(cfg, log=lambda m: print(m, file=sys.stderr))
    doc = report.to_json()
    (tmp_path / "report.json").write_text(json.dumps(doc, indent=1))
    summary = (
        f"seed {SEED}: {doc['kills']} kills in {doc['seconds']}s, by phase {doc['by_phase']}, "
        f"aimed -> hit {doc['by_target']}, resumed {doc['resume_checks']}"
    )
    print(summary, file=sys.stderr)
    assert report.violations == [], f"{summary}\n" + "\n".join(report.violations[:20])
    counts = report.counts()
    for phase in crash.PHASES:
        assert counts[phase] >= 20, summary
    assert report.in_phases() >= 100, summary
    # restarts after kills in the store phase found their verified chunks and counted them as local
    assert report.resume_checks >= 10, summary
    assert report.resumed_local_bytes > 0, summary
    # the peer server was asked after restarts for the chunks that were being written at the kill
    assert report.served_checks >= 100, summary

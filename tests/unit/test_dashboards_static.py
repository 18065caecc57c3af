"""The dashboards and rules without Prometheus or Grafana: well-formed, and naming only metrics that
exist (the metric names are a contract; a rename must break this test, not a dashboard in production).
The same files run on a real Prometheus in tests/system/test_dashboards.py."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from swarmupdate.agent.metrics import AgentMetrics
from swarmupdate.origin.server import OriginServer
from swarmupdate.tracker.app import TrackerApp
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.store import PeerStore

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "dashboards"
RULES = DASH / "prometheus" / "rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_VARIABLES = ("__rate_interval", "__interval", "__range")
JOBS = {"swarmupdate-origin", "swarmupdate-tracker", "swarmupdate-agent"}


def _series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can export, including those of labelled metrics with no child yet."""
    names = set()
    for fam in registry.collect():
        if fam.type == "counter":
            names.add(f"{fam.name}_total")
        elif fam.type == "histogram":
            names.update(f"{fam.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(fam.name)
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    agent = AgentMetrics()
    agent.peer_cert_expires(0.0)  # exported only by agents with [peer_tls]
    names = _series_names(agent.registry)
    names |= _series_names(OriginServer(tmp_path_factory.mktemp("origin")).registry)
    names |= _series_names(TrackerApp(PeerStore(TrackerConfig(), rng=random.Random(1))).registry)
    return names


def _recorded() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)$", RULES.read_text(), re.M))


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bswarmupdate[a-z_]*:[a-z0-9_:]+|\bswarmupdate_[a-z0-9_]+", expr))


def _dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in ("fleet.json", "agent.json"):
        yield name, json.loads((DASH / "grafana" / name).read_text())


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from _panels(p.get("panels", []))


def test_rules_name_only_exported_metrics(exported: set[str]) -> None:
    text = RULES.read_text()
    assert "swarmupdate:bandwidth_saved:ratio" in _recorded()
    unknown = _metric_names(text) - exported - _recorded()
    assert unknown == set()
    assert set(re.findall(r'job="([^"]+)"', text)) <= JOBS


@pytest.mark.parametrize("name", ["fleet.json", "agent.json"])
def test_dashboard_is_well_formed(name: str, exported: set[str]) -> None:
    doc = json.loads((DASH / "grafana" / name).read_text())
    assert doc["uid"].startswith("swarmupdate-") and doc["title"]
    assert 36 <= doc["schemaVersion"] <= 41
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "site" in variables
    if name == "agent.json":
        assert "instance" in variables and not variables["instance"]["multi"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE
            assert re.fullmatch(r"label_values\(.*, \w+\)", var["query"]["query"]), var["name"]
    panels = list(_panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
            used |= _metric_names(t["expr"])
            # variables are the ones the dashboard defines, or Grafana's own
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var in variables or var in GRAFANA_VARIABLES, (p["title"], var)
    assert used - exported - _recorded() == set()


def test_dashboards_cover_the_operations_view() -> None:
    """The fleet dashboard shows what DESIGN.md promises operators; the agent one, one machine."""
    fleet = dict(_dashboards())["fleet.json"]
    exprs = " ".join(t["expr"] for p in _panels(fleet["panels"]) for t in p.get("targets", []))
    for needle in (
        "swarmupdate:bandwidth_saved:ratio",
        "swarmupdate_site:bandwidth_saved:ratio",
        "swarmupdate_origin_sent_bytes_total",
        "swarmupdate_release_info",
        "swarmupdate_release_available_info",
        "histogram_quantile",
        "swarmupdate_chunk_verification_failures_total",
        'state="banned"',
        'up{job="swarmupdate-tracker"}',
    ):
        assert needle in exprs, needle
    agent = dict(_dashboards())["agent.json"]
    exprs = " ".join(t["expr"] for p in _panels(agent["panels"]) for t in p.get("targets", []))
    for needle in (
        "swarmupdate_download_bytes_total",
        "swarmupdate_peers",
        "swarmupdate_store_bytes",
        "swarmupdate_metadata_refresh_total",
        "swarmupdate_install_total",
    ):
        assert needle in exprs, needle
    assert all(
        'instance="$instance"' in t["expr"] for p in _panels(agent["panels"]) for t in p.get("targets", [])
    )


def test_provisioning_files_point_at_the_dashboards() -> None:
    ds = (DASH / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "apiVersion: 1" in ds and "type: prometheus" in ds
    prov = (DASH / "grafana/provisioning/dashboards/swarmupdate.yml").read_text()
    assert "apiVersion: 1" in prov and "type: file" in prov and "path:" in prov


def test_every_alert_has_a_runbook_in_operations_doc() -> None:
    """Each alert's runbook annotation points at a heading of docs/operations.md that exists."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    alerts = re.findall(r"^\s*- alert: (\S+)$", RULES.read_text(), re.MULTILINE)
    runbooks = re.findall(r'^\s*runbook: "docs/operations\.md#([a-z0-9-]+) ', RULES.read_text(), re.MULTILINE)
    assert len(alerts) >= 10
    assert len(runbooks) == len(alerts), "every alert needs a runbook annotation into docs/operations.md"
    missing = sorted(set(runbooks) - anchors)
    assert not missing, f"runbook anchors with no heading in docs/operations.md: {missing}"

"""Prometheus rules and Grafana dashboards against the real tools and a live local swarm.

There is no Grafana here: a dashboard is checked by running every panel's query, with its template
variables substituted, on a real Prometheus that scraped a fleet which has just rolled out two releases.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port, need_tool
from tests.fleet import Fleet, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "dashboards" / "prometheus"
RULES = PROM_DIR / "rules.yml"
GRAFANA_DIR = ROOT / "dashboards" / "grafana"
DASHBOARDS = ("fleet.json", "agent.json")
JOBS = ("swarmupdate-origin", "swarmupdate-tracker", "swarmupdate-agent")
MB = 1024 * 1024
#: what Grafana would put in place of its interval variables for a "last hour" view
INTERVALS = {"$__rate_interval": "2m", "$__interval": "15s", "$__range": "1h"}


def _run(*cmd: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- promtool, no fleet


def test_promtool_check_rules() -> None:
    promtool = need_tool("promtool")
    proc = _run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    promtool = need_tool("promtool")
    proc = _run(promtool, "test", "rules", "rules.test.yml", cwd=PROM_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_tests_cover_every_alert() -> None:
    """Every alert has a unit test where it fires and one where it does not.

    (Read with regular expressions: the project does not depend on a YAML parser, and both files are
    ours, written in one style.)"""
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M))
    cases = re.findall(
        r"^\s*- alertname: (\w+)\n\s*eval_time: \S+\n\s*exp_alerts:(.*)$",
        (PROM_DIR / "rules.test.yml").read_text(),
        re.M,
    )
    assert len(alerts) >= 10 and cases
    firing = {name for name, rest in cases if rest.strip() != "[]"}
    quiet = {name for name, rest in cases if rest.strip() == "[]"}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_promtool_check_example_config(tmp_path: Path) -> None:
    promtool = need_tool("promtool")
    text = (PROM_DIR / "prometheus.example.yml").read_text()
    assert set(re.findall(r"^\s*- job_name: (\S+)$", text, re.M)) == set(JOBS)
    assert text.count("static_configs:") == len(JOBS)
    assert text.count("- targets:") == text.count("site:")
    # the example names the installed rules path; point it at the file in the tree
    installed = "/etc/prometheus/swarmupdate/rules.yml"
    assert installed in text
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text.replace(installed, str(RULES)))
    proc = _run(promtool, "check", "config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout


# ---------------------------------------------------------------- a live swarm and a real Prometheus


def _hostport(url: str) -> str:
    return urlsplit(url).netloc


@dataclass
class Live:
    fleet: Fleet
    prom_url: str
    #: instance label -> site of every agent target
    agents: dict[str, str]

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=10)
        doc = r.json()
        assert r.status_code == 200 and doc["status"] == "success", f"{expr}: {r.text}"
        data = doc["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Origin, one tracker and four agents in two sites, scraped every second by a real Prometheus
    with our rules, after rolling out 1.0 and then 1.1 (which reuses most chunks of 1.0)."""
    prometheus = need_tool("prometheus")
    need_tool("promtool")
    base = tmp_path_factory.mktemp("dashboards")
    fleet = Fleet(base / "fleet")
    prom: subprocess.Popen[bytes] | None = None
    try:
        fleet.start_origin()
        fleet.start_tracker()
        fleet.start_agents(4)
        wait_for(lambda: all("metrics_port" in a.status() for a in fleet.agents), 30, "agent status files")
        agents = {_hostport(a.metrics_url): tomllib.loads(a.config.read_text())["site"] for a in fleet.agents}
        assert sorted(set(agents.values())) == ["site-0", "site-1"]
        assert fleet.origin is not None
        by_site: dict[str, list[str]] = {}
        for instance, site in agents.items():
            by_site.setdefault(site, []).append(instance)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "swarmupdate-origin",
                    "static_configs": [
                        {"targets": [_hostport(fleet.origin.url)], "labels": {"site": "site-0"}}
                    ],
                },
                {
                    "job_name": "swarmupdate-tracker",
                    "static_configs": [
                        {"targets": [_hostport(t.url) for t in fleet.trackers], "labels": {"site": "site-0"}}
                    ],
                },
                {
                    "job_name": "swarmupdate-agent",
                    "static_configs": [
                        {"targets": sorted(targets), "labels": {"site": site}}
                        for site, targets in sorted(by_site.items())
                    ],
                },
            ],
        }
        cfg = base / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = (base / "prometheus.log").open("wb")
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={base / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        live = Live(fleet, f"http://127.0.0.1:{port}", agents)

        def ready() -> bool:
            assert prom is not None and prom.poll() is None, (base / "prometheus.log").read_text()[-3000:]
            try:
                return httpx.get(f"{live.prom_url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30, "prometheus ready")

        def all_up() -> bool:
            targets = httpx.get(f"{live.prom_url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return len(targets) == 2 + len(agents) and all(t["health"] == "up" for t in targets)

        wait_for(all_up, 30, "every target scraped")
        # the counters' starting values are in the TSDB before any byte moves, so rate() sees the rollout
        _, data = fleet.publish("1.0", 4 * MB, seed=7)
        _poll_now(fleet)
        fleet.wait_installed("1.0")
        changed = bytearray(data)
        changed[MB : MB + 64 * 1024] = bytes(64 * 1024)
        fleet.publish("1.1", data=bytes(changed))
        _poll_now(fleet)
        fleet.wait_installed("1.1")
        yield live
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        fleet.close()


def _poll_now(fleet: Fleet) -> None:
    for a in fleet.agents:
        assert a.popen is not None
        a.popen.send_signal(signal.SIGHUP)


def test_live_metrics_pass_promtool_check_metrics(live: Live) -> None:
    promtool = need_tool("promtool")
    fleet = live.fleet
    assert fleet.origin is not None
    endpoints = {"origin": fleet.origin.url, **{t.name: t.url for t in fleet.trackers}}
    endpoints.update({a.name: a.metrics_url for a in fleet.agents})
    problems = {}
    for name, url in endpoints.items():
        text = httpx.get(f"{url}/metrics", timeout=5).text
        assert "swarmupdate_build_info" in text, name
        proc = _run(promtool, "check", "metrics", stdin=text)
        if proc.returncode != 0 or proc.stdout.strip() or proc.stderr.strip():
            problems[name] = proc.stdout + proc.stderr
    assert problems == {}


def test_bandwidth_saved_ratio_on_live_data(live: Live) -> None:
    values: list[float] = []

    def evaluated() -> bool:
        values[:] = [float(r["value"][1]) for r in live.query("swarmupdate:bandwidth_saved:ratio")]
        return bool(values)

    wait_for(evaluated, 30, "swarmupdate:bandwidth_saved:ratio to have a value", interval=0.5)
    assert len(values) == 1 and 0.0 <= values[0] <= 1.0, values
    # 1.1 reused most chunks of 1.0 from the local stores and peers served the rest: the swarm saved
    assert values[0] > 0.0
    sites: dict[str, float] = {}

    def per_site() -> bool:
        # a scrape that times out (1 s, on a loaded machine) marks that agent's series stale for a
        # second: its site can be missing from one evaluation, so wait for both as for the total
        sites.clear()
        sites.update(
            (r["metric"]["site"], float(r["value"][1]))
            for r in live.query("swarmupdate_site:bandwidth_saved:ratio")
        )
        return set(sites) == {"site-0", "site-1"}

    wait_for(per_site, 30, "swarmupdate_site:bandwidth_saved:ratio for both sites", interval=0.5)
    assert all(0.0 <= v <= 1.0 for v in sites.values()), sites


def _substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in {**INTERVALS, **{f"${k}": v for k, v in variables.items()}}.items():
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    return expr


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard["panels"]):
        for t in p.get("targets", []):
            yield f"{p['title']} [{t['refId']}]", t["expr"]


def _variable_query(var: dict[str, Any]) -> str:
    q = var["query"]
    return str(q["query"] if isinstance(q, dict) else q)


def _label_values(live: Live, query: str, variables: dict[str, str]) -> list[str]:
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", _substitute(query, variables))
    assert m, query
    r = httpx.get(
        f"{live.prom_url}/api/v1/label/{m.group(2)}/values", params={"match[]": m.group(1)}, timeout=10
    )
    return list(r.json()["data"])


def _variable_sets(live: Live, dashboard: dict[str, Any]) -> list[dict[str, str]]:
    """The values to try: '.*' for a multi-value/All variable and one real site; for single-value
    variables, a real value (agent0's instance and its site)."""
    names = {v["name"]: v for v in dashboard["templating"]["list"]}
    agent0 = _hostport(live.fleet.agents[0].metrics_url)
    if "instance" in names:
        chosen = {"site": live.agents[agent0], "instance": agent0}
        # the variables' own queries offer these values
        assert chosen["site"] in _label_values(live, _variable_query(names["site"]), chosen)
        assert agent0 in _label_values(live, _variable_query(names["instance"]), chosen)
        return [chosen]
    assert names["site"]["multi"] and names["site"]["includeAll"]
    assert sorted(_label_values(live, _variable_query(names["site"]), {})) == ["site-0", "site-1"]
    return [{"site": ".*"}, {"site": "site-1"}]


@pytest.mark.parametrize("name", DASHBOARDS)
def test_every_panel_query_has_data(live: Live, name: str) -> None:
    dashboard = json.loads((GRAFANA_DIR / name).read_text())
    queries: dict[str, str] = {}
    for variables in _variable_sets(live, dashboard):
        for title, expr in _targets(dashboard):
            q = _substitute(expr, variables)
            assert "$" not in q, f"{title}: unsubstituted variable in {q}"
            queries[f"{title} {variables}"] = q
    assert queries
    empty: dict[str, str] = dict(queries)
    nan: dict[str, str] = {}

    def all_have_data() -> bool:
        for key in list(empty):
            result = live.query(empty[key])
            if result:
                del empty[key]
                if any(math.isnan(float(r["value"][1])) for r in result):
                    nan[key] = queries[key]
        return not empty

    deadline = time.monotonic() + 60
    while not all_have_data() and time.monotonic() < deadline:
        time.sleep(1)
    assert empty == {}, f"panels with no data after 60s: {json.dumps(empty, indent=1)}"
    assert nan == {}, f"panels whose query is NaN: {json.dumps(nan, indent=1)}"

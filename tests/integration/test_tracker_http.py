"""The tracker on a real socket: announce round trips, rejections, limits, metrics, expiry, a burst."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio
import anyio.from_thread
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from swarmupdate.model import PeerInfo
from swarmupdate.net.tracker_client import TrackerClient
from swarmupdate.tracker.app import TrackerApp
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.service import run_tracker, serve_tracker
from swarmupdate.tracker.store import PeerStore

SWARM = "5" * 64
OTHER = "6" * 64


@dataclass
class Tracker:
    app: TrackerApp
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5)


@pytest.fixture
def start_tracker() -> Iterator[Callable[..., Tracker]]:
    """``start_tracker(**config)`` serves a tracker on a loopback port for the test."""
    with anyio.from_thread.start_blocking_portal() as portal:
        futures = []

        def start(**config: float) -> Tracker:
            app = TrackerApp(PeerStore(TrackerConfig(**config), rng=random.Random(1)))  # type: ignore[arg-type]
            future, port = portal.start_task(serve_tracker, app, "127.0.0.1", 0)
            futures.append(future)
            return Tracker(app, f"http://127.0.0.1:{port}")

        yield start
        for future in futures:
            future.cancel()


@pytest.fixture
def tracker(start_tracker: Callable[..., Tracker]) -> Tracker:
    return start_tracker()


def body(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "swarm": SWARM,
        "peer_id": "node-a",
        "url": "http://10.0.0.1:7000",
        "site": "dc1",
        "complete": False,
        "left": 5000,
        "event": "started",
    }
    return {**base, **over}


def metrics(c: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = c.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def announces(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], result: str) -> float:
    return m[("swarmupdate_tracker_announces_total", (("result", result),))]


def test_two_peers_find_each_other(tracker: Tracker) -> None:
    with tracker.client() as c:
        r = c.post("/v1/announce", json=body())
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"interval": 30.0, "swarm_size": 1, "peers": []}
        b = body(peer_id="node-b", url="https://10.0.0.2:7443", site="dc2", complete=True, left=0)
        r = c.post("/v1/announce", json=b)
        assert r.json() == {
            "interval": 30.0,
            "swarm_size": 2,
            "peers": [{"peer_id": "node-a", "url": "http://10.0.0.1:7000", "site": "dc1", "complete": False}],
        }
        r = c.post("/v1/announce", json=body(event=""))
        assert r.json()["peers"] == [
            {"peer_id": "node-b", "url": "https://10.0.0.2:7443", "site": "dc2", "complete": True}
        ]
        # another swarm is another swarm
        assert c.post("/v1/announce", json=body(swarm=OTHER)).json()["peers"] == []
        assert c.post("/v1/announce", json=body(event="stopped")).json() == {
            "interval": 30.0,
            "swarm_size": 1,
            "peers": [],
        }
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("swarm", "ABC"),
        ("swarm", "F" * 64),
        ("peer_id", ""),
        ("peer_id", "x" * 129),
        ("peer_id", "a\u0007b"),
        ("url", "ftp://10.0.0.1/"),
        ("url", "http://"),
        ("url", "10.0.0.1:7000"),
        ("site", "s" * 65),
        ("left", -1),
        ("left", "10"),
        ("left", 1.5),
        ("complete", "no"),
        ("event", "paused"),
        ("numwant", 10_000),
    ],
)
def test_each_bad_field_is_rejected_by_name(tracker: Tracker, field: str, value: object) -> None:
    with tracker.client() as c:
        r = c.post("/v1/announce", json=body(**{field: value}))
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["field"] == field and field in r.json()["error"]


@pytest.mark.parametrize("missing", ["swarm", "peer_id", "url", "complete", "left"])
def test_missing_field_is_named(tracker: Tracker, missing: str) -> None:
    with tracker.client() as c:
        b = body()
        del b[missing]
        r = c.post("/v1/announce", json=b)
        assert r.status_code == 400 and r.json()["field"] == missing


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b"", b"[" * 2000])
def test_malformed_body_is_400(tracker: Tracker, raw: bytes) -> None:
    with tracker.client() as c:
        r = c.post("/v1/announce", content=raw)
        assert r.status_code == 400 and r.json()["field"] == "body"


def test_oversized_body_is_413_and_other_routes(tracker: Tracker) -> None:
    with tracker.client() as c:
        r = c.post("/v1/announce", json=body(site="x" * 5000))
        assert r.status_code == 413
    with tracker.client() as c:
        assert c.get("/v1/announce").status_code == 405
        assert c.post("/metrics").status_code == 405
        assert c.get("/nope").status_code == 404
        assert announces(metrics(c), "ok") == 0


def test_metrics_follow_announces(tracker: Tracker) -> None:
    with tracker.client() as c:
        m = metrics(c)
        assert announces(m, "ok") == 0 and announces(m, "bad") == 0
        assert m[("swarmupdate_tracker_peers", ())] == 0
        assert any(name == "swarmupdate_build_info" for name, _ in m)
        for i in range(3):
            c.post("/v1/announce", json=body(peer_id=f"n{i}", url=f"http://10.0.0.{i}:7000"))
        c.post("/v1/announce", json=body(peer_id="n0", url="http://10.0.0.0:7000"))  # refresh: no new peer
        c.post("/v1/announce", json=body(swarm=OTHER, peer_id="n9"))
        c.post("/v1/announce", json=body(left=-5))
        m = metrics(c)
        assert announces(m, "ok") == 5 and announces(m, "bad") == 1
        assert m[("swarmupdate_tracker_peers", ())] == 4
        assert m[("swarmupdate_tracker_swarms", ())] == 2
        c.post("/v1/announce", json=body(swarm=OTHER, peer_id="n9", event="stopped"))
        m = metrics(c)
        assert m[("swarmupdate_tracker_peers", ())] == 3
        assert m[("swarmupdate_tracker_swarms", ())] == 1
        text = c.get("/metrics").text
        assert "n0" not in text and "10.0.0" not in text and SWARM not in text


def test_the_sweep_expires_peers_without_traffic(start_tracker: Callable[..., Tracker]) -> None:
    tracker = start_tracker(interval=0.05, ttl=0.2)
    with tracker.client() as c:
        for i in range(5):
            c.post("/v1/announce", json=body(peer_id=f"n{i}", swarm=f"{i}" * 64))
    assert tracker.app.store.peer_count == 5
    deadline = time.monotonic() + 5
    # nothing but the sweep task touches the store now
    while tracker.app.store.peer_count or tracker.app.store.swarm_count:
        assert time.monotonic() < deadline, "the sweep did not expire the peers"
        time.sleep(0.01)
    with tracker.client() as c:
        assert metrics(c)[("swarmupdate_tracker_peers", ())] == 0


def test_run_tracker_reports_its_port_and_serves() -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(run_tracker, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/healthz")).status_code == 200
                r = await c.post("/v1/announce", content=json.dumps(body()))
                assert r.json()["swarm_size"] == 1
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_burst_of_announces_across_many_swarms() -> None:
    swarms = [f"{i:064x}" for i in range(200)]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(run_tracker, "127.0.0.1", 0)
            limiter = anyio.CapacityLimiter(16)
            failures: list[object] = []
            async with TrackerClient([f"http://127.0.0.1:{port}"], timeout=10) as client:

                async def one(i: int) -> None:
                    p = PeerInfo(f"n{i}", f"http://10.1.{i // 250}.{i % 250}:7000", f"dc{i % 3}")
                    async with limiter:
                        result = await client.announce(swarms[i % 200], p, 100, "started")
                    failures.extend(result.failed)

                async with anyio.create_task_group() as burst:
                    for i in range(2000):
                        burst.start_soon(one, i)
            assert failures == []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                text = (await c.get("/metrics")).text
            tg.cancel_scope.cancel()
        samples = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.labels.get("result") != "bad"
        }
        assert samples["swarmupdate_tracker_announces_total"] == 2000
        assert samples["swarmupdate_tracker_swarms"] == 200
        assert samples["swarmupdate_tracker_peers"] == 2000

    anyio.run(main)

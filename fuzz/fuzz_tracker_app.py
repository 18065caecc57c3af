"""Fuzz the tracker's HTTP handler and its peer store: ``TrackerApp.handle`` with any method, target
and body, announces from a few peers in a few swarms, a clock that jumps.

Contract: every answer is 200, 400, 404 or 405 (no 5xx is documented), a 400 names the field, a 200
announce is a reply our own client accepts without dropping anything, it never hands the asker
itself, and the store's books stay consistent and within its limits.
"""

from __future__ import annotations

import asyncio
import json
import random

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from prometheus_client import CollectorRegistry

    from swarmupdate.net.httpserver import Request
    from swarmupdate.tracker.app import TrackerApp
    from swarmupdate.tracker.config import TrackerConfig
    from swarmupdate.tracker.store import PeerStore
    from swarmupdate.tracker.wire import decode_reply

_SWARMS = ["ab" * 32, "0" * 64, "f" * 64]
_TARGETS = ["/v1/announce", "/metrics", "/healthz", "/v1/announce?x=1", "/", "", "/v1/announce/"]
_METHODS = ["POST", "GET", "HEAD", "PUT", "DELETE", "post"]
_CONFIG = TrackerConfig(interval=10.0, max_peers_per_swarm=4, max_swarms=2, max_peers=6, pullers=2)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_clock = _Clock()
_app = TrackerApp(PeerStore(_CONFIG, rng=random.Random(1)), registry=CollectorRegistry(), clock=_clock)
_loop = asyncio.new_event_loop()


def _body(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, str | None]:
    """An announce body (mostly a plausible one) and its peer id when it has one."""
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5000)), None
    peer = fdp.ConsumeIntInRange(0, 9)
    complete = fdp.ConsumeBool()
    doc: dict[str, object] = {
        "swarm": fdp.PickValueInList(_SWARMS),
        "peer_id": f"peer-{peer}",
        "url": f"http://10.0.0.{peer}:7071",
        "site": fdp.PickValueInList(["", "dc1", "dc2"]),
        "complete": complete,
        "left": 0 if complete else fdp.ConsumeIntInRange(0, 10**6),
        "event": fdp.PickValueInList(["", "started", "completed", "stopped"]),
        "numwant": fdp.ConsumeIntInRange(0, 5),
    }
    if fdp.ConsumeIntInRange(0, 2) == 0:
        return _common.mutate_object(doc, fdp), None
    return json.dumps(doc).encode(), str(doc["peer_id"])


def _check_store(store: PeerStore) -> None:
    swarms = store._swarms  # the books themselves: what a handout or a metric could get wrong
    assert store.peer_count == sum(len(s.peers) for s in swarms.values()), store.peer_count
    assert store.peer_count <= _CONFIG.max_peers and store.swarm_count <= _CONFIG.max_swarms
    for s in swarms.values():
        assert len(s.peers) <= _CONFIG.max_peers_per_swarm
        assert sorted(pid for _, pid in s.ranked) == sorted(s.peers)
        assert len(s.by_kind[True]) + len(s.by_kind[False]) == len(s.peers)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        _clock.now += fdp.PickValueInList([0.0, 1.0, 15.0, 31.0, -5.0])
        if fdp.ConsumeIntInRange(0, 4):
            method, target = "POST", "/v1/announce"
        else:
            method = fdp.PickValueInList(_METHODS) if fdp.ConsumeBool() else fdp.ConsumeUnicode(6)
            target = fdp.PickValueInList(_TARGETS) if fdp.ConsumeBool() else fdp.ConsumeUnicode(30)
        body, asker = _body(fdp)
        request = Request(method, target, {"content-type": "application/json"}, body, "127.0.0.1:1")
        response = _loop.run_until_complete(_app.handle(request))
        assert response.status in (200, 400, 404, 405), response.status
        assert isinstance(response.body, bytes)
        if response.status == 400:
            assert json.loads(response.body)["field"]
        if response.status == 200 and request.path == "/v1/announce":
            reply, dropped = decode_reply(response.body)
            assert dropped == 0
            assert asker is None or all(p.peer_id != asker for p in reply.peers)
        _check_store(_app.store)


def seeds() -> list[bytes]:
    return [bytes((i + j) % 256 for j in range(64)) for i in range(0, 256, 32)]


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

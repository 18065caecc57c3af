"""The tracker client against real sockets: a real tracker, dead ones and lying ones."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import anyio.abc
import httpx
import pytest

from swarmupdate.errors import ConfigError
from swarmupdate.model import PeerInfo
from swarmupdate.net.httpserver import Request, Response, serve
from swarmupdate.net.tracker_client import AnnounceResult, TrackerClient
from swarmupdate.tracker.service import run_tracker

SWARM = "7" * 64
ME = PeerInfo("me", "http://10.9.0.1:7000", "dc1")
B = PeerInfo("node-b", "http://10.9.0.2:7000", "dc1", True)


def closed_port() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def answer(
    status: int,
    body: bytes | dict[str, object],
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body

    async def handler(request: Request) -> Response:
        return Response(status, data, dict(headers or {}), ctype)

    return handler


async def hang(request: Request) -> Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def fake(tg: anyio.abc.TaskGroup, handler: Callable[[Request], Awaitable[Response]]) -> str:
    port = await tg.start(partial(serve, handler, "127.0.0.1", 0))
    return f"http://127.0.0.1:{port}"


def peers_json(*peers: PeerInfo) -> list[dict[str, object]]:
    return [{"peer_id": p.peer_id, "url": p.url, "site": p.site, "complete": p.complete} for p in peers]


def run(scenario: Callable[[anyio.abc.TaskGroup], Awaitable[None]]) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await scenario(tg)
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_good_tracker_answers_while_one_is_down_and_one_lies() -> None:
    async def scenario(tg: anyio.abc.TaskGroup) -> None:
        port = await tg.start(run_tracker, "127.0.0.1", 0)
        good = f"http://127.0.0.1:{port}/"
        down = closed_port()
        garbage = await fake(tg, answer(200, b"<html>definitely not a tracker</html>", "text/html"))
        async with TrackerClient([down, garbage, good], timeout=3) as client:
            first = await client.announce(SWARM, B, 0, "completed")
            assert first.peers == () and first.swarm_size == 1
            result = await client.announce(SWARM, ME, 4096, "started")
        assert result.peers == (B,)
        assert result.swarm_size == 2 and result.interval == 30.0
        assert result.answered == (good.rstrip("/"),)
        reasons = {f.tracker: f.reason for f in result.failed}
        assert set(reasons) == {down, garbage}
        assert "Connect" in reasons[down]
        assert "not a JSON document" in reasons[garbage]
        assert all(str(f).startswith(f.tracker + ": ") for f in result.failed)

    run(scenario)


def test_every_kind_of_bad_tracker_is_skipped_and_reported() -> None:
    good_peer = PeerInfo("ok", "http://10.9.0.5:7000")
    huge = {"interval": 30, "peers": peers_json(good_peer) * 2000}
    mixed = {
        "interval": 0.001,
        "swarm_size": 3,
        "peers": [
            *peers_json(good_peer),
            {"peer_id": "evil", "url": "file:///etc/shadow"},
            {"peer_id": "x" * 500, "url": "http://10.9.0.6:1"},
            "junk",
        ],
    }

    async def scenario(tg: anyio.abc.TaskGroup) -> None:
        trackers = {
            "500": await fake(tg, answer(500, b"boom", "text/plain")),
            "400": await fake(
                tg, answer(400, {"error": "url: scheme must be http or https", "field": "url"})
            ),
            "302": await fake(tg, answer(302, b"")),
            "huge": await fake(tg, answer(200, huge)),
            "hang": await fake(tg, hang),
            "no-interval": await fake(tg, answer(200, {"peers": []})),
            "nested": await fake(tg, answer(200, b"[" * 20_000)),
            "mixed": await fake(tg, answer(200, mixed)),
            # a gzip bomb would pass a bound on received bytes: compressed replies are refused
            "gzip": await fake(
                tg,
                answer(200, gzip.compress(json.dumps(huge).encode()), headers={"content-encoding": "gzip"}),
            ),
        }
        async with TrackerClient(list(trackers.values()), timeout=0.5) as client:
            with anyio.fail_after(5):
                result = await client.announce(SWARM, ME, 10, "")
        # the bad entries are dropped, the good one kept; a tiny interval is raised to the floor
        assert result.peers == (good_peer,)
        assert result.answered == (trackers["mixed"],)
        assert result.swarm_size == 3 and result.interval == 5.0
        reasons = {f.tracker: f.reason for f in result.failed}
        by_name = {name: reasons[url] for name, url in trackers.items() if url in reasons}
        assert set(by_name) == set(trackers) - {"mixed"}
        assert by_name["500"] == "HTTP 500"
        assert by_name["400"] == "HTTP 400: url: scheme must be http or https"
        assert by_name["302"] == "HTTP 302"
        assert "larger than 65536" in by_name["huge"]
        assert "timed out" in by_name["hang"]
        assert "interval" in by_name["no-interval"]
        assert "body" in by_name["nested"]
        assert "gzip-encoded" in by_name["gzip"]

    run(scenario)


def test_answers_are_merged_and_deduplicated() -> None:
    c = PeerInfo("node-c", "http://10.9.0.3:7000")
    d = PeerInfo("node-d", "http://10.9.0.4:7000", "dc2", True)
    same_url_as_b = PeerInfo("alias", B.url)
    c_elsewhere = PeerInfo("node-c", "http://10.9.9.9:7000")
    myself = PeerInfo("someone", ME.url)

    async def scenario(tg: anyio.abc.TaskGroup) -> None:
        one = await fake(tg, answer(200, {"interval": 40, "swarm_size": 5, "peers": peers_json(B, c, ME)}))
        two = await fake(
            tg,
            answer(
                200,
                {"interval": 20, "swarm_size": 9, "peers": peers_json(c_elsewhere, same_url_as_b, d, myself)},
            ),
        )
        async with TrackerClient([one, two]) as client:
            result = await client.announce(SWARM, ME, 10, "")
        assert result.peers == (B, c, d)
        # the lower median of the sizes (a lying tracker cannot inflate it), the smallest interval
        assert result.swarm_size == 5 and result.interval == 20
        assert result.answered == (one, two) and result.failed == ()

    run(scenario)


def test_no_tracker_answering_is_not_an_error() -> None:
    async def scenario(tg: anyio.abc.TaskGroup) -> None:
        async with TrackerClient([closed_port(), closed_port() + "/"], default_interval=12) as client:
            result = await client.announce(SWARM, ME, 10, "started")
        assert result.peers == () and result.answered == () and len(result.failed) == 2
        assert result.swarm_size == 0 and result.interval == 12
        async with TrackerClient([]) as client:
            assert await client.announce(SWARM, ME, 10, "") == AnnounceResult((), 0, 30.0, (), ())

    run(scenario)


def test_an_injected_http_client_is_used_and_left_open() -> None:
    async def scenario(tg: anyio.abc.TaskGroup) -> None:
        port = await tg.start(run_tracker, "127.0.0.1", 0)
        async with httpx.AsyncClient() as http:
            async with TrackerClient([f"http://127.0.0.1:{port}"], client=http) as client:
                assert (await client.announce(SWARM, ME, 10, "")).answered
            assert not http.is_closed

    run(scenario)


@pytest.mark.parametrize(
    "trackers", [["ftp://t"], ["http://"], ["http://t:1?x=1"], ["http://t:99999"], ["http://t", "http://t/"]]
)
def test_bad_tracker_urls_are_config_errors(trackers: list[str]) -> None:
    with pytest.raises(ConfigError):
        TrackerClient(trackers)


def test_our_own_bad_announce_is_a_config_error() -> None:
    async def main() -> None:
        async with TrackerClient([closed_port()]) as client:
            with pytest.raises(ConfigError, match="url"):
                await client.announce(SWARM, PeerInfo("me", "not-a-url"), 10, "")
            with pytest.raises(ConfigError, match="swarm"):
                await client.announce("nope", ME, 10, "")

    anyio.run(main)

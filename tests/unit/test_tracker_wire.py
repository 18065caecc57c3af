"""The announce protocol's encoding and decoding: what the tracker accepts, what the client keeps."""

from __future__ import annotations

import json

import pytest

from swarmupdate.model import PeerInfo
from swarmupdate.tracker.wire import (
    Announce,
    AnnounceFieldError,
    AnnounceReply,
    decode_announce,
    decode_reply,
    encode_announce,
    encode_reply,
)

SWARM = "0123456789abcdef" * 4
GOOD = {
    "swarm": SWARM,
    "peer_id": "node-1",
    "url": "http://10.0.0.1:7000",
    "site": "dc1",
    "complete": False,
    "left": 1024,
    "event": "started",
}


def test_announce_round_trip_and_defaults() -> None:
    a = Announce(SWARM, PeerInfo("n", "https://h:1", "s", True), 0, "completed", 7)
    assert decode_announce(encode_announce(a)) == a
    minimal = {k: v for k, v in GOOD.items() if k not in ("site", "event")}
    got = decode_announce(json.dumps({**minimal, "extra": [1, 2]}).encode())
    assert got == Announce(SWARM, PeerInfo("node-1", "http://10.0.0.1:7000", "", False), 1024, "", None)
    assert decode_announce(json.dumps({**GOOD, "numwant": None}).encode()).numwant is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"\xff\xfe", "body"),
        (b"[" * 4000 + b"]" * 4000, "body"),
        (b"[]", "body"),
        (b'"x"', "body"),
        (json.dumps({**GOOD, "left": float("nan")}).encode(), "body"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "swarm"}).encode(), "swarm"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "url"}).encode(), "url"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "complete"}).encode(), "complete"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "left"}).encode(), "left"),
        (json.dumps({**GOOD, "peer_id": 5}).encode(), "peer_id"),
        (json.dumps({**GOOD, "url": None}).encode(), "url"),
        (json.dumps({**GOOD, "site": ["x"]}).encode(), "site"),
        (json.dumps({**GOOD, "complete": "false"}).encode(), "complete"),
        (json.dumps({**GOOD, "left": "5"}).encode(), "left"),
        (json.dumps({**GOOD, "left": 10**30}).encode(), "left"),
        (json.dumps({**GOOD, "event": None}).encode(), "event"),
        (json.dumps({**GOOD, "numwant": -1}).encode(), "numwant"),
        (json.dumps({**GOOD, "numwant": True}).encode(), "numwant"),
    ],
)
def test_bad_announce_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(AnnounceFieldError) as e:
        decode_announce(body)
    assert e.value.field == field


def reply(**over: object) -> bytes:
    base: dict[str, object] = {
        "interval": 30,
        "swarm_size": 3,
        "peers": [{"peer_id": "a", "url": "http://a:1", "site": "", "complete": True}],
    }
    return json.dumps({**base, **over}).encode()


def test_reply_round_trip() -> None:
    r = AnnounceReply(12.5, 4, (PeerInfo("a", "http://a:1", "x", True), PeerInfo("b", "http://b:2")))
    assert decode_reply(encode_reply(r)) == (r, 0)


def test_reply_drops_bad_peer_entries_and_bounds_their_number() -> None:
    entries = [
        {"peer_id": "ok", "url": "http://ok:1"},
        {"peer_id": "", "url": "http://x:1"},
        {"peer_id": "x", "url": "file:///etc/passwd"},
        {"peer_id": "y", "url": "http://y:1", "complete": "yes"},
        "not an object",
        None,
    ]
    got, dropped = decode_reply(reply(peers=entries))
    assert [p.peer_id for p in got.peers] == ["ok"] and dropped == 5
    many = [{"peer_id": f"p{i}", "url": f"http://p{i}:1"} for i in range(20)]
    got, dropped = decode_reply(reply(peers=many), max_peers=8)
    assert len(got.peers) == 8 and dropped == 12


def test_reply_without_swarm_size_is_read_as_unknown() -> None:
    body = json.loads(reply())
    del body["swarm_size"]
    got, _ = decode_reply(json.dumps(body).encode())
    assert got.swarm_size == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"<html>", "body"),
        (b"[]", "body"),
        (reply(interval=0), "interval"),
        (reply(interval=-3), "interval"),
        (reply(interval="30"), "interval"),
        (reply(interval=True), "interval"),
        (b'{"interval": Infinity, "peers": []}', "body"),
        (reply(swarm_size=-1), "swarm_size"),
        (reply(swarm_size=2**40), "swarm_size"),
        (reply(peers={"a": 1}), "peers"),
        (json.dumps({"interval": 30}).encode(), "peers"),
    ],
)
def test_unusable_reply_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(AnnounceFieldError) as e:
        decode_reply(body)
    assert e.value.field == field

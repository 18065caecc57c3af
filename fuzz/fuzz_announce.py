"""Fuzz the announce protocol's decoders: ``decode_announce`` (what a tracker reads from any client)
and ``decode_reply`` (what an agent reads from any tracker).

Modes: 0/1 raw bytes to ``decode_announce``/``decode_reply``; 2 a valid announce with fields replaced
by hostile JSON; 3 a valid reply likewise; 4 a valid reply with hostile peer entries.
Contract: a value or ``AnnounceFieldError`` naming a field; round trips
``decode_announce(encode_announce(a)) == a`` and ``decode_reply(encode_reply(r)) == (r, 0)``.
"""

from __future__ import annotations

import json

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.model import PeerInfo
    from swarmupdate.tracker.wire import (
        Announce,
        AnnounceFieldError,
        AnnounceReply,
        decode_announce,
        decode_reply,
        encode_announce,
        encode_reply,
        peer_to_json,
    )

_ANNOUNCE = Announce("ab" * 32, PeerInfo("node-1", "http://10.0.0.1:7071", "dc1", False), 1024, "started", 50)
_PEERS = (PeerInfo("node-2", "https://[::1]:7443", "", True), PeerInfo("n3", "http://h.example", "dc2"))
_REPLY = AnnounceReply(30.0, 17, _PEERS)
_FIELDS = {"swarm", "peer_id", "url", "site", "complete", "left", "event", "numwant", "body"}
_REPLY_FIELDS = {"body", "interval", "swarm_size", "peers"}


def _announce(body: bytes) -> None:
    try:
        a = decode_announce(body)
    except AnnounceFieldError as exc:
        assert exc.field in _FIELDS and str(exc).startswith(f"{exc.field}: "), exc
        return
    assert decode_announce(encode_announce(a)) == a


def _reply(body: bytes) -> None:
    try:
        reply, dropped = decode_reply(body, max_peers=8)
    except AnnounceFieldError as exc:
        assert exc.field in _REPLY_FIELDS, exc
        return
    assert dropped >= 0 and len(reply.peers) <= 8
    assert decode_reply(encode_reply(reply)) == (reply, 0)


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 5)
    if mode == 0:
        _announce(rest)
    elif mode == 1:
        _reply(rest)
    elif mode == 2:
        doc = json.loads(encode_announce(_ANNOUNCE))
        _announce(_common.mutate_object(doc, atheris.FuzzedDataProvider(rest)))
    elif mode == 3:
        doc = json.loads(encode_reply(_REPLY))
        _reply(_common.mutate_object(doc, atheris.FuzzedDataProvider(rest)))
    else:
        fdp = atheris.FuzzedDataProvider(rest)
        entries = [_common.mutate_object(peer_to_json(p), fdp) for p in _PEERS]
        entries.append(_common.json_fragment(fdp))
        _reply(b'{"interval":5,"peers":[' + b",".join(entries) + b"]}")


def seeds() -> list[bytes]:
    return [
        b"\x00" + encode_announce(_ANNOUNCE),
        b"\x00" + encode_announce(Announce("0" * 64, PeerInfo("x", "https://h:1"), 0, "", None)),
        b"\x01" + encode_reply(_REPLY),
        b"\x01" + b'{"interval": 1e308, "swarm_size": 0, "peers": [{}, 1, null]}',
        b"\x02" + b"\x00" * 16,
        b"\x03" + b"\x00" * 16,
        b"\x04" + b"\x00" * 16,
    ]


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

"""Fuzz what an agent parses from another agent's answers: the lean HTTP client's response head
(``http1._parse_head``), a peer-exchange list (``parse_peer_list``) and the status mapping
(``_check_status``, with a ``Retry-After`` from the peer).

Modes: 0 a response head; 1 raw bytes as a peer list; 2 a valid peer list with hostile entries;
3 a status and a ``Retry-After`` value.
Contract: a head parses to a status of three digits and lowercase header names, or raises
``HttpProtocolError``; a peer list keeps only entries whose URL an announce would accept, or raises
``FetchError("corrupt")``; a status is accepted (200) or raises ``FetchError``.
"""

from __future__ import annotations

import json
import math

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.errors import FetchError
    from swarmupdate.net.http1 import HttpProtocolError, _parse_head
    from swarmupdate.net.peer_client import _check_status, parse_peer_list
    from swarmupdate.tracker.wire import check_url

_URL = "http://10.0.0.2:7071/v1/swarms/x/peers"
_PEERS = [
    {"peer_id": "p1", "url": "http://10.0.0.1:7071", "site": "dc1", "complete": True},
    {"peer_id": "p2", "url": "https://[::1]:7443/", "site": "", "complete": False},
]


def _head(head: bytes) -> None:
    try:
        status, headers = _parse_head(head, _URL)
    except HttpProtocolError as exc:
        assert str(exc).startswith(_URL), exc
        return
    assert 0 <= status <= 999
    assert all(k == k.lower() and k == k.strip() and k for k in headers), headers


def _peer_list(body: bytes) -> None:
    try:
        peers = parse_peer_list(body, _URL)
    except FetchError as exc:
        assert exc.kind == "corrupt", exc
        return
    assert len(peers) <= 1000
    for p in peers:
        check_url(p.url)
        assert 0 < len(p.peer_id) <= 128 and len(p.site) <= 64
        assert not p.url.endswith("/")


def _status(status: int, retry_after: str) -> None:
    try:
        _check_status(status, {"retry-after": retry_after}, _URL)
    except FetchError as exc:
        assert exc.kind in ("missing", "busy", "error"), exc
        assert exc.retry_after is None or (math.isfinite(exc.retry_after) and exc.retry_after >= 0)
        return
    assert status == 200


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 4)
    if mode == 0:
        _head(rest)
    elif mode == 1:
        _peer_list(rest)
    elif mode == 2:
        fdp = atheris.FuzzedDataProvider(rest)
        entries = [_common.mutate_object(p, fdp) for p in _PEERS] + [_common.json_fragment(fdp)]
        _peer_list(b"[" + b",".join(entries) + b"]")
    else:
        fdp = atheris.FuzzedDataProvider(rest)
        _status(fdp.PickValueInList([200, 404, 429, 500, 503]), fdp.ConsumeUnicode(12))


def seeds() -> list[bytes]:
    return [
        b"\x00HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain",
        b"\x00HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\ncontent-length: 0",
        b"\x01" + json.dumps(_PEERS).encode(),
        b"\x02" + b"\x00" * 12,
        b"\x03\x02\x00" + b"12",
    ]


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

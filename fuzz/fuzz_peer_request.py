"""Fuzz the peer server's request handling: ``PeerServer.handle`` with any method, target and headers,
and the two request headers it parses, ``parse_peer_header`` and ``parse_pulling``.

Modes: 0 a request to ``handle`` (targets built from the real routes, then fuzzed); 1 raw text to
``parse_peer_header``; 2 raw text and a chunk count to ``parse_pulling``; 3 metadata bytes to
``_signed_version`` (the version check of ``/v1/metadata/N.<role>.json``); 4 the same with a hostile
version.
Contract: answers are 200, 400, 404, 405 or 429 (no 5xx is documented); header parsers return a
checked value or None (they are hints); nothing raises.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.model import PeerInfo
    from swarmupdate.net.httpserver import FileBody, Request
    from swarmupdate.net.peer_server import (
        MAX_PULLING,
        PEER_HEADER,
        PeerServer,
        _signed_version,
        parse_peer_header,
        parse_pulling,
    )
    from swarmupdate.swarm.bitfield import Bitfield
    from swarmupdate.tracker.wire import check_peer_id, check_site, check_url

SWARM = "ab" * 32
CHUNK = b"chunk-bytes" * 100
SHA = hashlib.sha256(CHUNK).hexdigest()
MANIFEST = "cd" * 32


class _Swarms:
    def bitfield(self, swarm: str) -> Bitfield | None:
        return Bitfield(10, [0, 3, 9]) if swarm == SWARM else None

    def pulling(self, swarm: str) -> list[int]:
        return [1, 2] if swarm == SWARM else []

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [PeerInfo("p1", "http://127.0.0.1:1", "x", True)] if swarm == SWARM else None


class _Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / SHA).write_bytes(CHUNK)

    def has(self, sha256: str) -> bool:
        return sha256 == SHA

    def path(self, sha256: str) -> Path:
        return self.root / sha256


def _tree() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz-peer-"))
    (root / "md" / "root_history").mkdir(parents=True)
    (root / "md" / "root_history" / "1.root.json").write_text('{"signed": {"version": 1}}')
    (root / "md" / "timestamp.json").write_text('{"signed": {"version": 7}}')
    (root / "md" / "snapshot.json").write_text('{"signed": {"version": 5}}')
    (root / "md" / "web.json").write_text('{"signed": {"version": "5"}}')
    (root / "manifests").mkdir()
    (root / "manifests" / MANIFEST).write_text('{"m": 1}')
    (root / "chunks").mkdir()
    (root / "secret.json").write_text("secret")
    return root


_root = _tree()
_hints: list[tuple[str, PeerInfo]] = []
_server = PeerServer(
    self_info=PeerInfo("me", "http://127.0.0.1:7071", "site-a"),
    swarms=_Swarms(),
    store=_Store(_root / "chunks"),
    metadata_dir=_root / "md",
    manifests_dir=_root / "manifests",
    max_upload_slots=2,
    on_peer_hint=lambda swarm, info: _hints.append((swarm, info)),
)
_loop = asyncio.new_event_loop()
_PREFIXES = [
    "/v1/chunks/",
    f"/v1/chunks/{SHA}",
    f"/v1/swarms/{SWARM}/",
    f"/v1/swarms/{SWARM}/bitfield",
    f"/v1/swarms/{SWARM}/peers",
    "/v1/swarms/",
    "/v1/metadata/",
    "/v1/metadata/1.root.json",
    "/v1/metadata/5.snapshot.json",
    "/v1/metadata/5.web.json",
    "/v1/targets/",
    f"/v1/targets/web/1.0/{MANIFEST}.app.bin.manifest.json",
    "/healthz",
    "/v1/",
    "/",
    "",
]


def _request(fdp: atheris.FuzzedDataProvider) -> None:
    method = fdp.PickValueInList(["GET", "HEAD", "POST", "OPTIONS", ""]) if fdp.ConsumeBool() else ""
    target = fdp.PickValueInList(_PREFIXES) + fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 120))
    if fdp.ConsumeIntInRange(0, 3) == 0:
        target = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 200))
    headers = {}
    if fdp.ConsumeBool():
        headers[PEER_HEADER] = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 200))
    request = Request(method or "GET", target, headers, b"", "127.0.0.1:1")
    response = _loop.run_until_complete(_server.handle(request))
    try:
        assert response.status in (200, 400, 404, 405, 429), (response.status, target)
        if response.status == 200 and isinstance(response.body, bytes):
            assert b"secret" not in response.body
        if isinstance(response.body, FileBody):
            assert response.body.path == _root / "chunks" / SHA
    finally:
        if response.on_done is not None:
            response.on_done()  # what the server does once it has sent the answer


def _peer_header(text: str) -> None:
    _hints.clear()
    info = parse_peer_header(text)
    if info is not None:
        check_peer_id(info.peer_id)
        check_url(info.url)
        check_site(info.site)
        assert not info.url.endswith("/")


def _pulling(text: str, n: int) -> None:
    got = parse_pulling(text, n)
    assert len(got) <= MAX_PULLING and all(0 <= i < n for i in got)


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 5)
    fdp = atheris.FuzzedDataProvider(rest)
    if mode == 0:
        _request(fdp)
    elif mode == 1:
        _peer_header(fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif mode == 2:
        n = fdp.ConsumeIntInRange(0, 2**31)
        _pulling(fdp.ConsumeUnicode(fdp.remaining_bytes()), n)
    else:
        document = rest if mode == 3 else b'{"signed":{"version":' + _common.json_fragment(fdp) + b"}}"
        version = _signed_version(document)
        assert version is None or isinstance(version, int)


def seeds() -> list[bytes]:
    return [
        b"\x00" + bytes(range(64)),
        b"\x01" + b"node-1 http://10.0.0.1:7071 dc1",
        b"\x02\x00\x00\x00\x10" + b"1, 2,3,,x,99999999999",
        b"\x03" + b'{"signed": {"version": 3}}',
        b"\x04" + b"\x00" * 8,
    ]


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

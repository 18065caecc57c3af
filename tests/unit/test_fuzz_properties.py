"""Property-based fuzzing of every decoder that reads outside input, and regressions for what the
fuzzers found (``fuzz/`` holds the coverage-guided harnesses for the same surfaces).

The contract of each decoder: any input decodes to a valid value or raises the project's documented
error (``RemoteDataError`` and its kinds, ``ConfigError``, ``FetchError``, ``HttpProtocolError``),
never anything else; where an encoder exists, what decodes also survives a round trip. The request
handlers answer every request with a 2xx/4xx (no 5xx is documented for them).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from swarmupdate.agent.config import AgentConfig, load_config, parse_config, parse_rate, parse_size
from swarmupdate.errors import ConfigError, FetchError, RemoteDataError
from swarmupdate.manifest import Manifest
from swarmupdate.model import ChunkerParams, ChunkRef, PeerInfo
from swarmupdate.net.http1 import HttpProtocolError, _parse_head
from swarmupdate.net.httpserver import FileBody, Request
from swarmupdate.net.peer_client import PeerClient, _check_status, parse_peer_list
from swarmupdate.net.peer_server import (
    MAX_PULLING,
    PEER_HEADER,
    PeerServer,
    _signed_version,
    parse_peer_header,
    parse_pulling,
)
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.tracker.app import TrackerApp
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.store import PeerStore
from swarmupdate.tracker.wire import (
    Announce,
    AnnounceFieldError,
    AnnounceReply,
    check_peer_id,
    check_site,
    check_url,
    decode_announce,
    decode_reply,
    encode_announce,
    encode_reply,
)

FAST = settings(max_examples=100, deadline=None)
SLOWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SWARM = "ab" * 32
SHA = hashlib.sha256(b"chunk").hexdigest()

# ---------------------------------------------------------------------------------------- strategies


def _deep(n: int, closed: bool) -> bytes:
    return b"[" * n + (b"]" * n if closed else b"")


#: one JSON value as text, biased to what breaks decoders (as ``fuzz/_common.py``'s ``json_fragment``)
json_fragments: st.SearchStrategy[bytes] = st.recursive(
    st.one_of(
        st.integers().map(lambda i: str(i).encode()),
        st.integers(300, 5000).map(lambda n: b"9" * n),  # past the float range and the int-from-text limit
        st.floats().map(lambda f: json.dumps(f).encode()),
        st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"true", b"null", b'""', b"{}"]),
        st.text(max_size=40).map(lambda s: json.dumps(s).encode()),
        st.builds(_deep, st.integers(1, 3000), st.booleans()),
        st.just(b'"\\ud800"'),
        st.binary(max_size=16),
    ),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]"),
    max_leaves=8,
)


def _object(fields: dict[str, bytes]) -> bytes:
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) + b"}"


def mutated(doc: dict[str, object]) -> st.SearchStrategy[bytes]:
    """``doc`` as JSON with some fields replaced by hostile values, dropped, or added."""
    keys = st.sampled_from(sorted(doc)) | st.text(max_size=6)
    changes = st.dictionaries(keys, st.none() | json_fragments, min_size=1, max_size=3)

    def apply(change: dict[str, bytes | None]) -> bytes:
        fields = {k: json.dumps(v).encode() for k, v in doc.items()}
        for key, value in change.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        return _object(fields)

    return changes.map(apply)


hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
peer_ids = st.text(st.characters(codec="utf-8", exclude_categories=["C", "Z"]), min_size=1, max_size=20)
sites = st.text(st.characters(codec="utf-8", exclude_categories=["C", "Z"]), max_size=10)
urls = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}" + ("" if port is None else f":{port}"),
    st.sampled_from(["http", "https"]),
    st.sampled_from(["10.0.0.1", "h.example", "[::1]", "peer-7"]),
    st.none() | st.integers(1, 65535),
)
peers = st.builds(PeerInfo, peer_ids, urls, sites, st.booleans())

# ------------------------------------------------------------------------------------------ bitfield


@FAST
@given(st.integers(0, 600), st.binary(max_size=80), st.booleans())
def test_bitfield_decode_is_total(n: int, data: bytes, near: bool) -> None:
    if near:  # a chunk count that matches the length, so that spare bits and whole decodes are reached
        n = max(0, len(data) * 8 - n % 8)
    try:
        bf = Bitfield.decode(data, n, source="peer x")
    except RemoteDataError as exc:
        assert str(exc).startswith("peer x: ")
        return
    assert bf.encode() == data
    members = list(bf)
    assert len(bf) == len(members) and all(0 <= i < n for i in members)
    assert Bitfield(n, members) == bf


@FAST
@given(st.integers(0, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0))))))
def test_bitfield_round_trip(case: tuple[int, set[int]]) -> None:
    n, members = case
    bf = Bitfield(n, {i for i in members if i < n})
    assert Bitfield.decode(bf.encode(), n) == bf


# ------------------------------------------------------------------------------------------ manifest

chunk_refs = st.builds(ChunkRef, hex64, st.integers(1, 2**40))
manifests = st.lists(chunk_refs, max_size=20).flatmap(
    lambda refs: st.builds(
        Manifest,
        st.text(max_size=40),
        st.just(sum(r.length for r in refs)),
        hex64,
        st.builds(
            ChunkerParams,
            st.integers(0, 2**30),
            st.integers(0, 2**30),
            st.integers(0, 2**30),
            st.text(max_size=8),
        ),
        st.just(tuple(refs)),
    )
)
_CHUNKER_DOC: dict[str, object] = {"algorithm": "fastcdc", "min": 1, "avg": 2, "max": 3}
_MANIFEST_DOC: dict[str, object] = json.loads(
    Manifest("a/1/f", 3, SHA, ChunkerParams(), (ChunkRef(SHA, 1), ChunkRef(SHA, 2))).encode()
)


@FAST
@given(manifests)
def test_manifest_round_trip(m: Manifest) -> None:
    assert Manifest.decode(m.encode()) == m


def _manifest_contract(data: bytes) -> None:
    try:
        m = Manifest.decode(data, source="m.json")
    except RemoteDataError as exc:
        assert str(exc).startswith("m.json: ")
        return
    assert Manifest.decode(m.encode()) == m


@FAST
@given(st.binary(max_size=300) | json_fragments | mutated(_MANIFEST_DOC))
@example(b"[" * 100_000)
@example(b"1" * 5000)
def test_manifest_decode_is_total(data: bytes) -> None:
    _manifest_contract(data)


@FAST
@given(mutated(_CHUNKER_DOC), st.lists(json_fragments, max_size=3))
def test_manifest_decode_is_total_inside(chunker: bytes, chunks: list[bytes]) -> None:
    fields = {k: json.dumps(v).encode() for k, v in _MANIFEST_DOC.items()}
    _manifest_contract(_object({**fields, "chunker": chunker}))
    _manifest_contract(_object({**fields, "chunks": b"[" + b",".join(chunks) + b"]"}))


# ------------------------------------------------------------------------------------- announce wire

announces = st.builds(
    Announce,
    hex64,
    peers,
    st.integers(0, 2**63 - 1),
    st.sampled_from(["", "started", "completed", "stopped"]),
    st.none() | st.integers(0, 200),
).map(lambda a: Announce(a.swarm, a.peer, 0, a.event, a.numwant) if a.peer.complete else a)
replies = st.builds(
    AnnounceReply,
    st.floats(min_value=1e-3, max_value=1e308, allow_nan=False),
    st.integers(0, 2**31 - 1),
    st.lists(peers, max_size=5).map(tuple),
)
_ANNOUNCE_FIELDS = {"body", "swarm", "peer_id", "url", "site", "complete", "left", "event", "numwant"}
_ANNOUNCE_DOC: dict[str, object] = json.loads(
    encode_announce(Announce(SWARM, PeerInfo("n1", "http://10.0.0.1:7071", "dc1"), 5, "started", 9))
)
_PEER_DOC: dict[str, object] = {"peer_id": "n2", "url": "https://h:1", "site": "", "complete": True}
_REPLY_DOC: dict[str, object] = json.loads(
    encode_reply(AnnounceReply(30.0, 3, (PeerInfo("n2", "https://h:1", "", True),)))
)


@FAST
@given(announces, replies)
def test_announce_and_reply_round_trip(a: Announce, r: AnnounceReply) -> None:
    assert decode_announce(encode_announce(a)) == a
    assert decode_reply(encode_reply(r)) == (r, 0)


@FAST
@given(st.binary(max_size=300) | json_fragments | mutated(_ANNOUNCE_DOC))
def test_decode_announce_is_total(body: bytes) -> None:
    try:
        a = decode_announce(body)
    except AnnounceFieldError as exc:
        assert exc.field in _ANNOUNCE_FIELDS and str(exc).startswith(f"{exc.field}: ")
        return
    assert decode_announce(encode_announce(a)) == a


@FAST
@given(
    st.binary(max_size=300) | json_fragments | mutated(_REPLY_DOC),
    st.lists(mutated(_PEER_DOC), max_size=3),
)
@example(b'{"interval": 1' + b"0" * 400 + b', "peers": []}', [])
def test_decode_reply_is_total(body: bytes, entries: list[bytes]) -> None:
    for doc in (body, b'{"interval": 5, "peers": [' + b",".join(entries) + b"]}"):
        try:
            reply, dropped = decode_reply(doc)
        except AnnounceFieldError as exc:
            assert exc.field in {"body", "interval", "swarm_size", "peers"}
            continue
        assert dropped >= 0 and math.isfinite(reply.interval) and reply.interval > 0
        assert decode_reply(encode_reply(reply)) == (reply, 0)


# ----------------------------------------------------------------------------- tracker HTTP handler


@FAST
@given(
    st.sampled_from(["POST", "GET", "HEAD", "PUT"]) | st.text(max_size=6),
    st.sampled_from(["/v1/announce", "/metrics", "/healthz", "/v1/announce?x", "/"]) | st.text(max_size=30),
    st.binary(max_size=200) | mutated(_ANNOUNCE_DOC),
)
def test_tracker_handler_answers_every_request(method: str, target: str, body: bytes) -> None:
    app = TrackerApp(PeerStore(TrackerConfig(), rng=random.Random(1)), registry=CollectorRegistry())
    response = anyio.run(app.handle, Request(method, target, {}, body, "127.0.0.1:1"))
    assert response.status in (200, 400, 404, 405)
    assert isinstance(response.body, bytes)
    if response.status == 400:
        assert json.loads(response.body)["field"] in _ANNOUNCE_FIELDS
    if response.status == 200 and target == "/v1/announce":
        assert decode_reply(response.body)[1] == 0


# ------------------------------------------------------------------------------- peer request handler


class _Swarms:
    def bitfield(self, swarm: str) -> Bitfield | None:
        return Bitfield(10, [0, 3]) if swarm == SWARM else None

    def pulling(self, swarm: str) -> list[int]:
        return [1]

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [PeerInfo("p1", "http://127.0.0.1:1")] if swarm == SWARM else None


class _Chunks:
    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, sha256: str) -> bool:
        return sha256 == SHA

    def path(self, sha256: str) -> Path:
        return self.root / sha256


@pytest.fixture(scope="module")
def peer_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[PeerServer, list[PeerInfo]]:
    root = tmp_path_factory.mktemp("peer")
    (root / "md" / "root_history").mkdir(parents=True)
    (root / "md" / "root_history" / "1.root.json").write_text('{"signed": {"version": 1}}')
    (root / "md" / "snapshot.json").write_text('{"signed": {"version": 5}}')
    (root / "md" / "timestamp.json").write_text('{"signed": {"version": 7}}')
    (root / "manifests").mkdir()
    (root / "manifests" / ("cd" * 32)).write_text("{}")
    (root / SHA).write_bytes(b"chunk")
    hints: list[PeerInfo] = []
    server = PeerServer(
        self_info=PeerInfo("me", "http://127.0.0.1:1"),
        swarms=_Swarms(),
        store=_Chunks(root),
        metadata_dir=root / "md",
        manifests_dir=root / "manifests",
        on_peer_hint=lambda swarm, info: hints.append(info),
    )
    return server, hints


def _check_peer(info: PeerInfo) -> None:
    check_peer_id(info.peer_id)
    check_url(info.url)
    check_site(info.site)


_PEER_PREFIXES = [
    f"/v1/chunks/{SHA}",
    "/v1/chunks/",
    f"/v1/swarms/{SWARM}/bitfield",
    f"/v1/swarms/{SWARM}/peers",
    "/v1/swarms/",
    "/v1/metadata/1.root.json",
    "/v1/metadata/5.snapshot.json",
    "/v1/metadata/",
    f"/v1/targets/w/1/{'cd' * 32}.x.manifest.json",
    "/v1/targets/",
    "/healthz",
    "",
]


@SLOWER
@given(
    st.sampled_from(["GET", "HEAD", "POST"]) | st.text(max_size=5),
    st.tuples(st.sampled_from(_PEER_PREFIXES), st.text(max_size=60)).map("".join) | st.text(max_size=80),
    st.none() | st.text(max_size=80) | st.builds(lambda p: f"{p.peer_id} {p.url} {p.site}", peers),
)
def test_peer_handler_answers_every_request(
    peer_server: tuple[PeerServer, list[PeerInfo]], method: str, target: str, header: str | None
) -> None:
    server, hints = peer_server
    headers = {} if header is None else {PEER_HEADER: header}
    response = anyio.run(server.handle, Request(method, target, headers, b"", "127.0.0.1:1"))
    if response.on_done is not None:
        response.on_done()  # as the server does once the answer is sent: frees the upload slot
    assert response.status in (200, 400, 404, 405, 429)
    if isinstance(response.body, FileBody):
        assert response.body.path.name == SHA
    for info in hints:
        _check_peer(info)
    hints.clear()


@FAST
@given(st.text(max_size=200) | st.builds(lambda p: f"{p.peer_id} {p.url} {p.site}", peers))
def test_parse_peer_header_is_total(value: str) -> None:
    info = parse_peer_header(value)
    if info is not None:
        _check_peer(info)


@FAST
@given(st.text(max_size=200) | st.lists(st.integers(-5, 2**40).map(str)).map(",".join), st.integers(0, 2**31))
def test_parse_pulling_is_total(value: str, n: int) -> None:
    got = parse_pulling(value, n)
    assert len(got) <= MAX_PULLING and all(0 <= i < n for i in got)


@FAST
@given(st.binary(max_size=100) | json_fragments.map(lambda v: b'{"signed": {"version": ' + v + b"}}"))
@example(b'{"signed": ' + b"[" * 100_000)
def test_signed_version_is_total(data: bytes) -> None:
    version = _signed_version(data)
    assert version is None or isinstance(version, int)


# ------------------------------------------------------------------------------ peer responses (client)


@FAST
@given(
    st.binary(max_size=300)
    | st.lists(
        st.tuples(
            st.sampled_from(["content-length", "retry-after", "X", " x", ""]), st.text(max_size=20)
        ).map(":".join),
        max_size=5,
    ).flatmap(
        lambda lines: st.sampled_from(
            ["HTTP/1.1 200 OK", "HTTP/1.0 404", "HTTP/2 200", "HTTP/1.1 2000 x", "x"]
        ).map(lambda status: "\r\n".join([status, *lines]).encode("utf-8", "surrogatepass"))
    )
)
def test_response_head_parse_is_total(head: bytes) -> None:
    try:
        status, headers = _parse_head(head, "http://p/x")
    except HttpProtocolError:
        return
    assert 0 <= status <= 999 and all(k == k.lower() for k in headers)


@FAST
@given(
    st.binary(max_size=300)
    | json_fragments
    | st.lists(mutated(_PEER_DOC)).map(lambda xs: b"[" + b",".join(xs) + b"]")
)
@example(b"[" * 100_000)
def test_peer_list_parse_is_total(data: bytes) -> None:
    try:
        listed = parse_peer_list(data, "http://p/v1/swarms/x/peers")
    except FetchError as exc:
        assert exc.kind == "corrupt"
        return
    for p in listed:
        check_url(p.url)


@FAST
@given(st.sampled_from([200, 404, 429, 500]), st.text(max_size=10))
def test_status_check_is_total(status: int, retry_after: str) -> None:
    try:
        _check_status(status, {"retry-after": retry_after}, "http://p/x")
    except FetchError as exc:
        assert exc.retry_after is None or exc.retry_after >= 0
        return
    assert status == 200


# ------------------------------------------------------------------------------------------- configs

_VALID_TOML = {
    "origin_url": '"https://origin.example/"',
    "node_id": '"node-1"',
    "peer_advertise": '"http://10.0.0.1:7071"',
    "store_max_bytes": '"10GiB"',
    "upload_limit": '"20Mbit/s"',
    "poll_interval": "300",
    "max_upload_slots": "4",
    "peer_listen": '"0.0.0.0:7071"',
}


def _deep_toml(n: int, table: bool) -> str:
    return ("{a=" * n + "}" * n) if table else "[" * n + "]" * n


toml_values = st.one_of(
    st.integers().map(str),
    st.integers(300, 5000).map(lambda n: "9" * n),
    st.sampled_from(["inf", "nan", "-0.0", "1e999", "true", "1979-05-27", "[]", "{}", "0x10"]),
    st.floats().map(repr),  # TOML spells the non-finite ones as Python does: nan, inf, -inf
    st.builds(_deep_toml, st.integers(1, 2000), st.booleans()),
    st.tuples(
        st.integers(0, 10**6).map(str) | st.integers(1, 5000).map(lambda n: "9" * n),
        st.sampled_from(["", "B", "GiB", "TB", "Mbit/s", "MB/s", "/s", "x"]),
    ).map(lambda p: f'"{p[0]}{p[1]}"'),
    st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=30).map(lambda s: f'"{s}"'),
)


def _check_agent_config(config: AgentConfig) -> None:
    for value in (config.poll_interval, config.connect_timeout, config.request_timeout):
        assert math.isfinite(value) and value > 0
    for size in (config.store_max_bytes, config.upload_limit, config.download_limit):
        assert 0 <= size <= 2**63 - 1
    repr(config)  # a config gets logged: it must print


@FAST
@given(st.dictionaries(st.sampled_from(sorted(_VALID_TOML)) | st.text(max_size=5), toml_values, max_size=3))
def test_agent_config_parse_is_total(changes: dict[str, str]) -> None:
    doc = {**_VALID_TOML, **changes}
    text = "\n".join(f"{json.dumps(k)} = {v}" for k, v in doc.items())
    try:
        config = parse_config(text, Path("/etc/swarmupdate/agent.toml"), machine_id_path=Path("/nonexistent"))
    except ConfigError as exc:
        assert str(exc).startswith("/etc/swarmupdate/agent.toml: ")
        return
    _check_agent_config(config)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config") / "agent.toml"


@FAST
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_agent_config_load_is_total(config_file: Path, data: bytes) -> None:
    config_file.write_bytes(b'origin_url = "http://o"\nnode_id = "n"\n' + data)
    try:
        config = load_config(
            config_file, machine_id_path=Path("/nonexistent"), local_address=lambda: "10.0.0.1"
        )
    except ConfigError as exc:
        assert str(exc).startswith(f"{config_file}: ")
        return
    _check_agent_config(config)


@FAST
@given(st.text(max_size=40) | st.integers() | st.floats() | st.none())
def test_size_and_rate_parsers_are_total(value: object) -> None:
    for parse in (parse_size, parse_rate):
        try:
            got = parse(value)
        except ValueError:
            continue
        assert 0 <= got <= 2**63 - 1


numbers = st.floats() | st.integers(-(2**70), 2**70)


@FAST
@given(
    numbers, st.none() | numbers, st.integers(), st.integers(), st.integers(), st.integers(), st.integers()
)
def test_tracker_config_is_checked(
    interval: float,
    ttl: float | None,
    per_swarm: int,
    swarms: int,
    max_peers: int,
    numwant: int,
    pullers: int,
) -> None:
    try:
        config = TrackerConfig(interval, ttl, per_swarm, swarms, max_peers, numwant, pullers)
    except ConfigError:
        return
    assert config.peer_ttl > 0 and config.sweep_every > 0 and 0 <= config.numwant <= 200


# ------------------------------------------------------------ regressions: what the fuzzers found


def _toml(extra: str) -> str:
    return 'origin_url = "http://o"\nnode_id = "n"\npeer_advertise = "http://10.0.0.1:1"\n' + extra


@pytest.mark.parametrize(
    ("decode", "data", "error"),
    [
        # json: "[[[[..." deeper than the decoder recurses was a RecursionError
        (Manifest.decode, b"[" * 100_000, RemoteDataError),
        # json: an integer of more than 4300 digits was a ValueError (int-from-text limit)
        (Manifest.decode, b"1" * 5000, RemoteDataError),
        # an interval past the float range was an OverflowError in math.isfinite
        (decode_reply, b'{"interval": 1' + b"0" * 400 + b', "peers": []}', AnnounceFieldError),
        (lambda d: parse_peer_list(d, "u"), b"[" * 100_000, FetchError),
    ],
    ids=["manifest-deep", "manifest-huge-int", "reply-huge-interval", "peer-list-deep"],
)
def test_remote_data_crash_regressions(
    decode: Callable[[bytes], object], data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode(data)


def test_signed_version_of_deep_json_is_none() -> None:
    # was a RecursionError out of the /v1/metadata/N.<role>.json handler
    assert _signed_version(b'{"signed": ' + b"[" * 100_000) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply"),  # was a RecursionError in tomllib
        ("x = " + "9" * 5000, "not valid TOML"),  # was a ValueError (int-from-text limit) in tomllib
        ("poll_interval = 1" + "0" * 400, "poll_interval: must be a finite number"),  # was an OverflowError
        (
            'store_max_bytes = "' + "9" * 5000 + 'TiB"',
            "store_max_bytes: more than",
        ),  # printed as a ValueError
        ('upload_limit = "' + "9" * 1_000_001 + 'MB/s"', "upload_limit: more than"),  # was decimal.Overflow
        (f"download_limit = {2**63}", "download_limit: more than"),
    ],
    ids=["deep", "huge-int", "huge-number", "huge-size", "overflowing-rate", "int64"],
)
def test_config_crash_regressions(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_config(_toml(text), Path("agent.toml"))


def test_largest_size_and_rate_are_still_accepted() -> None:
    assert parse_size(2**63 - 1) == parse_rate(str(2**63 - 1)) == 2**63 - 1
    config = parse_config(_toml('store_max_bytes = "8388607TiB"'), Path("a.toml"))
    assert config.store_max_bytes == (2**23 - 1) * 2**40


def test_peer_info_of_deep_json_is_corrupt() -> None:
    # the /healthz answer of a static peer: a RecursionError went up through PeerClient.info
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"[" * 100_000))

    async def ask() -> None:
        client = PeerClient(transport=transport)
        try:
            await client.info("https://peer.example")
        finally:
            await client.aclose()

    with pytest.raises(FetchError) as raised:
        anyio.run(ask)
    assert raised.value.kind == "corrupt"

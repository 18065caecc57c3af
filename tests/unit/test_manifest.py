from __future__ import annotations

import contextlib
import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmupdate.errors import ChunkVerificationError, RemoteDataError
from swarmupdate.manifest import Manifest, verify_chunk
from swarmupdate.model import DEFAULT_CHUNKER, ChunkRef


def _manifest() -> Manifest:
    a, b = b"a" * 10, b"b" * 5
    chunks = (ChunkRef(hashlib.sha256(a).hexdigest(), 10), ChunkRef(hashlib.sha256(b).hexdigest(), 5))
    return Manifest("web/1.0/app.bin", 15, hashlib.sha256(a + b).hexdigest(), DEFAULT_CHUNKER, chunks)


def test_round_trip_and_format_is_the_designs() -> None:
    m = _manifest()
    data = m.encode()
    assert Manifest.decode(data) == m
    doc = json.loads(data)
    assert doc["format"] == 1
    assert doc["chunker"] == {"algorithm": "fastcdc", "min": 131072, "avg": 524288, "max": 2097152}
    assert doc["chunks"][0] == [m.chunks[0].sha256, 10]
    assert set(doc) == {"format", "artifact", "length", "sha256", "chunker", "chunks"}


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(format=2), "'format'"),
        (lambda d: d.update(length=16), "add up to 15"),
        (lambda d: d.update(sha256="ABC"), "'sha256'"),
        (lambda d: d["chunks"].append(["00" * 32, 0]), "chunks[2]"),
        (lambda d: d["chunks"].__setitem__(0, ["zz" * 32, 10]), "chunks[0]"),
        (lambda d: d["chunks"].__setitem__(0, [d["chunks"][0][0], True]), "chunks[0]"),
        (lambda d: d.pop("artifact"), "'artifact'"),
        (lambda d: d["chunker"].pop("avg"), "chunker"),
        (lambda d: d.update(length=-1), "'length'"),
    ],
)
def test_bad_fields_are_named(mutate: object, fragment: str) -> None:
    doc = json.loads(_manifest().encode())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(RemoteDataError, match=re.escape(fragment)):
        Manifest.decode(json.dumps(doc).encode(), source="m.json")


def test_not_json_and_not_object() -> None:
    with pytest.raises(RemoteDataError, match=r"m\.json: not JSON"):
        Manifest.decode(b"\xff\xfe", source="m.json")
    with pytest.raises(RemoteDataError, match="top level"):
        Manifest.decode(b"[]")


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(RemoteDataError):
        Manifest.decode(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes(doc: object) -> None:
    with contextlib.suppress(RemoteDataError):
        Manifest.decode(json.dumps(doc).encode())


def test_verify_chunk() -> None:
    m = _manifest()
    verify_chunk(b"a" * 10, m.chunks[0])
    with pytest.raises(ChunkVerificationError, match="length 9"):
        verify_chunk(b"a" * 9, m.chunks[0])
    with pytest.raises(ChunkVerificationError, match="sha256 mismatch"):
        verify_chunk(b"a" * 9 + b"b", m.chunks[0])

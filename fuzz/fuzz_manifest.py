"""Fuzz ``Manifest.decode``: a chunk manifest as served by the origin or a peer.

Modes: 0 the bytes as they are; 1 a valid manifest with fields replaced by hostile JSON; 2 the same
inside ``chunker``; 3 the same in one chunk entry.
Contract: a ``Manifest`` or ``RemoteDataError`` naming the source; a decoded manifest survives
``decode(encode(m)) == m`` and its encoding is stable.
"""

from __future__ import annotations

import hashlib
import json

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.errors import RemoteDataError
    from swarmupdate.manifest import Manifest
    from swarmupdate.model import DEFAULT_CHUNKER, ChunkRef


def _valid(chunks: int = 3) -> Manifest:
    refs = tuple(ChunkRef(hashlib.sha256(bytes([i])).hexdigest(), 100 + i) for i in range(chunks))
    total = sum(r.length for r in refs)
    return Manifest("web/1.0/app.bin", total, "ab" * 32, DEFAULT_CHUNKER, refs)


_DOC: dict[str, object] = json.loads(_valid().encode())


def _document(mode: int, rest: bytes) -> bytes:
    if mode == 0:
        return rest
    fdp = atheris.FuzzedDataProvider(rest)
    doc = json.loads(json.dumps(_DOC))
    if mode == 1:
        return _common.mutate_object(doc, fdp)
    fields = {k: json.dumps(v).encode() for k, v in doc.items()}
    if mode == 2:
        fields["chunker"] = _common.mutate_object(doc["chunker"], fdp)
    else:
        chunks = [json.dumps(c).encode() for c in doc["chunks"]]
        i = fdp.ConsumeIntInRange(0, len(chunks) - 1)
        chunks[i] = (
            _common.json_fragment(fdp)
            if fdp.ConsumeBool()
            else b"[" + _common.json_fragment(fdp) + b"," + _common.json_fragment(fdp) + b"]"
        )
        fields["chunks"] = b"[" + b",".join(chunks) + b"]"
    return _common.json_object(fields)


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 4)
    document = _document(mode, rest)
    try:
        m = Manifest.decode(document, source="fuzz")
    except RemoteDataError as exc:
        assert str(exc).startswith("fuzz: "), exc
        return
    encoded = m.encode()
    again = Manifest.decode(encoded)
    assert again == m, (again, m)
    assert again.encode() == encoded
    assert sum(c.length for c in m.chunks) == m.length


def seeds() -> list[bytes]:
    out = [b"\x00" + _valid(n).encode() for n in (0, 1, 3)]
    out += [bytes([mode]) + b"\x00" * 8 for mode in (1, 2, 3)]
    out.append(b"\x00" + json.dumps({**_DOC, "length": 1}).encode())
    return out


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

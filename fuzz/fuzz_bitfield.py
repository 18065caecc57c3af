"""Fuzz ``Bitfield.decode``: a peer's bitfield answer for a release of ``n`` chunks.

Input: 3 bytes of ``n`` (big-endian; mode 0 takes ``n`` near the data's own size), then the wire bytes.
Contract: a ``Bitfield`` or ``RemoteDataError``; a decoded one encodes back to the same bytes and
agrees with itself (count, iteration, membership).
"""

from __future__ import annotations

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.errors import RemoteDataError
    from swarmupdate.swarm.bitfield import Bitfield


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 2)
    if len(rest) < 3:
        return
    # 256 bytes of bitfield (2048 chunks) reach every branch; longer ones only slow each execution
    raw_n, wire = int.from_bytes(rest[:3], "big"), rest[3:259]
    # mode 0: n a few bits short of the data's length, so that spare bits and full decodes are reached
    n = max(0, len(wire) * 8 - raw_n % 9) if mode == 0 else raw_n
    try:
        bf = Bitfield.decode(wire, n, source="fuzz")
    except RemoteDataError as exc:
        assert str(exc).startswith("fuzz: "), exc
        return
    assert bf.n == n
    assert bf.encode() == wire
    members = list(bf)
    assert members == sorted(set(members)) and all(0 <= i < n for i in members)
    assert len(bf) == len(members) == sum(bin(b).count("1") for b in wire)
    assert all(i in bf for i in members)
    assert bf.complete == (len(members) == n)
    assert Bitfield(n, members) == bf


def seeds() -> list[bytes]:
    out = []
    for n in (0, 1, 7, 8, 9, 10, 64, 1000):
        bf = Bitfield(n, range(0, n, 3))
        out.append(b"\x01" + n.to_bytes(3, "big") + bf.encode())
        out.append(b"\x00" + ((8 - n % 8) % 8).to_bytes(3, "big") + Bitfield.full(n).encode())
    out.append(b"\x01" + (9).to_bytes(3, "big") + b"\xff\xff")  # spare bits set
    return out


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

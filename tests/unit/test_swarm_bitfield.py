"""Bitfield wire form, and the int masks the core converts it to."""

from __future__ import annotations

import pytest

from swarmupdate.errors import RemoteDataError
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.picker import Availability, MaskCodec, random_priorities, rarest_first


def test_wire_form_is_msb_first_with_zero_spare_bits() -> None:
    bf = Bitfield(10, [0, 7, 9])
    assert bf.encode() == bytes([0b1000_0001, 0b0100_0000])
    assert Bitfield.decode(bf.encode(), 10) == bf
    assert list(bf) == [0, 7, 9] and len(bf) == 3 and 9 in bf and 8 not in bf


def test_decode_rejects_bad_lengths_and_spare_bits() -> None:
    with pytest.raises(RemoteDataError, match="expected 2"):
        Bitfield.decode(b"\x00", 10)
    with pytest.raises(RemoteDataError, match="spare bits"):
        Bitfield.decode(bytes([0, 0b0010_0000]), 10)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 100])
def test_masks_round_trip_through_the_wire_form(n: int) -> None:
    codec = MaskCodec(n)
    indexes = [i for i in range(n) if i % 3 == 0]
    bf = Bitfield(n, indexes)
    mask = codec.from_bitfield(bf)
    assert mask == codec.mask(indexes)
    assert list(codec.indexes(mask)) == indexes
    assert codec.to_bitfield(mask) == bf
    assert codec.from_bitfield(Bitfield.full(n)) == codec.full


def test_mask_checks_sizes() -> None:
    codec = MaskCodec(8)
    with pytest.raises(ValueError, match="bitfield of 9 chunks"):
        codec.from_bitfield(Bitfield(9))
    with pytest.raises(IndexError):
        codec.mask([8])


def test_availability_counts_holders_and_remembers_when_a_chunk_was_last_seen() -> None:
    codec = MaskCodec(4)
    av = Availability(codec, now=0.0)
    av.add(codec.mask([0, 1]))
    av.add(codec.mask([1]))
    assert av.count == [1, 2, 0, 0]
    assert av.visible == codec.mask([0, 1])
    av.remove(codec.mask([1]), now=5.0)
    assert av.count == [1, 1, 0, 0] and av.unseen_since[1] == 0.0
    av.remove(codec.mask([0, 1]), now=7.0)
    assert av.visible == 0 and av.unseen_since[:2] == [7.0, 7.0]


def test_rarest_first_breaks_ties_by_priority() -> None:
    import random

    codec = MaskCodec(6)
    count = [3, 1, 2, 1, 0, 5]
    prio = random_priorities(6, random.Random(1))
    order = rarest_first(codec, codec.full, count, prio)
    assert [count[i] for i in order] == sorted(count)
    ones = [i for i in order if count[i] == 1]
    assert ones == sorted([1, 3], key=lambda i: prio[i])

"""A peer's bitfield (manifest indexes) as the download core sees it (unique chunks)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from swarmupdate.agent.swarm import SwarmRuntime
from swarmupdate.model import ChunkRef
from swarmupdate.swarm.bitfield import Bitfield

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _runtime(digests: str) -> SwarmRuntime:
    """A runtime over a manifest whose chunks have these one-letter contents, in this order (in an
    event loop: it holds a cancel scope)."""
    chunks = [ChunkRef(c * 64, 10) for c in digests]
    release: Any = SimpleNamespace(manifest=SimpleNamespace(chunks=chunks), swarm_id="s" * 64)
    none: Any = None
    return SwarmRuntime(release, none, none, none, none, "http://origin/", none)


async def test_a_manifest_with_repeated_chunks_maps_each_chunk_to_its_first_place() -> None:
    rt = _runtime("abab")  # unique chunks a (0, 2) and b (1, 3)
    assert list(rt.to_unique(Bitfield(4, [1]))) == [1]
    assert list(rt.to_unique(Bitfield(4, [0, 1]))) == [0, 1]
    # a peer holds a chunk by its first place in the manifest (that is what it marks first)
    assert list(rt.to_unique(Bitfield(4, [2, 3]))) == []
    assert rt.to_unique(Bitfield(4)).n == 2  # over the unique chunks


async def test_a_manifest_without_repeated_chunks_passes_bitfields_through() -> None:
    rt = _runtime("abcd")
    bf = Bitfield(4, [0, 3])
    assert rt.to_unique(bf) is bf

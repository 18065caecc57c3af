"""Content-addressed chunk store: verify while writing, rename only on a match; an in-memory twin for tests.

``ChunkStore`` is the interface; ``DiskChunkStore`` keeps chunks as files under ``root/ab/abcdef...``,
``MemoryChunkStore`` keeps them in a dict with the same behaviour.
"""

from __future__ import annotations

from swarmupdate.store.base import ChunkStore, ChunkWriter, check_chunk_id
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.store.memory import MemoryChunkStore

__all__ = ["ChunkStore", "ChunkWriter", "DiskChunkStore", "MemoryChunkStore", "check_chunk_id"]

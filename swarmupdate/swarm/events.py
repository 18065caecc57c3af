"""What goes into the download state machine (events) and what comes out (actions). Pure.

The I/O layer turns network outcomes into events and carries out actions; the core never does I/O.
A ``peer_id`` of ``None`` names the origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from swarmupdate.model import PeerInfo
from swarmupdate.swarm.bitfield import Bitfield

__all__ = [
    "Action",
    "BanPeer",
    "BitfieldUpdate",
    "CancelChunk",
    "ChunkArrived",
    "ChunkFailed",
    "Event",
    "FailureKind",
    "PeerGone",
    "PeerSeen",
    "RequestBitfield",
    "RequestChunk",
    "SwarmSize",
]

#: Why a chunk request failed: ``corrupt`` bytes did not match the signed digest; ``missing`` the peer
#: answered 404 for a chunk its bitfield claimed; ``busy`` 429 (upload slots full); ``timeout`` no answer
#: in time; ``error`` anything else (connection reset, 5xx, protocol error).
FailureKind: TypeAlias = Literal["corrupt", "missing", "busy", "timeout", "error"]


# --- events (inputs) ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerSeen:
    """A peer was named by a tracker, by peer exchange or by static configuration (may repeat)."""

    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerGone:
    """The connection to a peer was refused or reset: drop it now (it may come back with PeerSeen)."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class BitfieldUpdate:
    """A peer's answer to RequestBitfield. The core copies what it needs and keeps no reference.

    ``pulling``: the chunks the peer says it is fetching from the origin right now (a hint: a liar
    can only delay this agent's own origin pull by ``origin_fallback_delay``).
    ``in_swarm``: False when the peer answered that it does not know this swarm (404; the bitfield is
    then empty): it holds nothing yet, and it is no origin puller.
    """

    peer_id: str
    bitfield: Bitfield
    pulling: frozenset[int] = frozenset()
    in_swarm: bool = True


@dataclass(frozen=True, slots=True)
class ChunkArrived:
    """Chunk ``index`` was verified against the manifest and stored.

    ``seconds`` is the time from sending the request to the last byte (it feeds the peer's score).
    """

    index: int
    peer_id: str | None
    nbytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    """A chunk request failed; ``retry_after`` is a 429's Retry-After in seconds when it had one."""

    index: int
    peer_id: str | None
    kind: FailureKind
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class SwarmSize:
    """How many peers a tracker says are in the swarm (0 = unknown)."""

    n: int


Event: TypeAlias = PeerSeen | PeerGone | BitfieldUpdate | ChunkArrived | ChunkFailed | SwarmSize


# --- actions (outputs) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestChunk:
    """Fetch chunk ``index`` from a peer, or from the origin when ``peer_id`` is None."""

    index: int
    peer_id: str | None


@dataclass(frozen=True, slots=True)
class CancelChunk:
    """Abandon an earlier RequestChunk (a slower endgame copy, or a request to a dropped peer).

    Its outcome, if it still comes, is ignored; the I/O layer need not report it.
    """

    index: int
    peer_id: str | None


@dataclass(frozen=True, slots=True)
class RequestBitfield:
    """Ask a peer which chunks it holds; answer with BitfieldUpdate (or PeerGone)."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class BanPeer:
    """The peer sent bytes that failed verification: never use it again for this swarm."""

    peer_id: str
    reason: str


Action: TypeAlias = RequestChunk | CancelChunk | RequestBitfield | BanPeer

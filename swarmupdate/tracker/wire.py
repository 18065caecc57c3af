"""The announce protocol on the wire: encode, decode and validate. Pure.

Request, ``POST /v1/announce``::

    {"swarm": "<64 lowercase hex>", "peer_id": "...", "url": "http://host:port", "site": "...",
     "complete": false, "left": 123, "event": "started", "numwant": 50}

``swarm``, ``peer_id``, ``url``, ``complete`` and ``left`` are required; ``site`` and ``event``
default to ``""`` and ``numwant`` to the tracker's default. Unknown keys are ignored.

Reply::

    {"interval": 30.0, "swarm_size": 17, "peers": [{"peer_id", "url", "site", "complete"}, ...]}

Both sides use the same checks: the tracker rejects a bad announce naming the field, the client
drops a bad peer entry (a tracker is never trusted).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from swarmupdate.errors import RemoteDataError
from swarmupdate.model import PeerInfo, is_sha256_hex

__all__ = [
    "EVENTS",
    "MAX_NUMWANT",
    "Announce",
    "AnnounceFieldError",
    "AnnounceReply",
    "check_complete",
    "check_event",
    "check_left",
    "check_numwant",
    "check_peer_id",
    "check_site",
    "check_swarm",
    "check_url",
    "decode_announce",
    "decode_reply",
    "encode_announce",
    "encode_reply",
    "peer_from_json",
    "peer_to_json",
    "validate_announce",
]

#: announce events; "" is a regular re-announce
EVENTS = frozenset({"", "started", "completed", "stopped"})
MAX_PEER_ID = 128
MAX_SITE = 64
MAX_URL = 512
#: bytes left to download fit in a signed 64-bit integer
MAX_LEFT = 2**63 - 1
#: the most peers one announce may ask for
MAX_NUMWANT = 200
#: a swarm size larger than this is a lie
MAX_SWARM_SIZE = 2**31 - 1


class AnnounceFieldError(RemoteDataError):
    """One field of an announce (or of a peer entry in a reply) is missing or invalid."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_swarm(value: object) -> str:
    """A swarm id is a release's artifact sha256: 64 lowercase hex digits."""
    if not is_sha256_hex(value):
        raise AnnounceFieldError("swarm", "must be 64 lowercase hex digits")
    assert isinstance(value, str)
    return value


def check_peer_id(value: object) -> str:
    """1 to 128 printable characters."""
    if not isinstance(value, str):
        raise AnnounceFieldError("peer_id", "must be a string")
    if not 1 <= len(value) <= MAX_PEER_ID:
        raise AnnounceFieldError("peer_id", f"must be 1 to {MAX_PEER_ID} characters")
    if not value.isprintable():
        raise AnnounceFieldError("peer_id", "must be printable characters")
    return value


def check_url(value: object) -> str:
    """An ``http``/``https`` base URL with a host; no credentials, query or fragment."""
    if not isinstance(value, str):
        raise AnnounceFieldError("url", "must be a string")
    if not 1 <= len(value) <= MAX_URL:
        raise AnnounceFieldError("url", f"must be 1 to {MAX_URL} characters")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise AnnounceFieldError("url", "must be printable ASCII without spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise AnnounceFieldError("url", f"does not parse: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise AnnounceFieldError("url", "scheme must be http or https")
    if not parts.hostname:
        raise AnnounceFieldError("url", "must name a host")
    if port == 0:
        raise AnnounceFieldError("url", "port 0 is not a port")
    if parts.username is not None or parts.password is not None:
        raise AnnounceFieldError("url", "must not carry credentials")
    if parts.query or parts.fragment:
        raise AnnounceFieldError("url", "must not have a query or fragment")
    return value


def check_site(value: object) -> str:
    """At most 64 printable characters; ``""`` means unknown."""
    if not isinstance(value, str):
        raise AnnounceFieldError("site", "must be a string")
    if len(value) > MAX_SITE:
        raise AnnounceFieldError("site", f"must be at most {MAX_SITE} characters")
    if not value.isprintable():
        raise AnnounceFieldError("site", "must be printable characters")
    return value


def check_complete(value: object) -> bool:
    if not isinstance(value, bool):
        raise AnnounceFieldError("complete", "must be true or false")
    return value


def check_left(value: object) -> int:
    """Bytes still to download: an integer, 0 <= left < 2**63."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnounceFieldError("left", "must be an integer")
    if not 0 <= value <= MAX_LEFT:
        raise AnnounceFieldError("left", "must be >= 0 and fit in 64 bits")
    return value


def check_event(value: object) -> str:
    if not isinstance(value, str) or value not in EVENTS:
        raise AnnounceFieldError("event", "must be one of '', 'started', 'completed', 'stopped'")
    return value


def check_numwant(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NUMWANT:
        raise AnnounceFieldError("numwant", f"must be an integer from 0 to {MAX_NUMWANT}")
    return value


def validate_announce(swarm: object, peer: PeerInfo, left: object, event: object) -> None:
    """Check every field of one announce.

    Raises:
        AnnounceFieldError: naming the first bad field.
    """
    check_swarm(swarm)
    check_peer_id(peer.peer_id)
    check_url(peer.url)
    check_site(peer.site)
    check_complete(peer.complete)
    check_left(left)
    check_event(event)
    if peer.complete and left != 0:
        # a peer that has everything has nothing left; one of the two is a bug in the agent
        raise AnnounceFieldError("left", "must be 0 when complete is true")


@dataclass(frozen=True, slots=True)
class Announce:
    """One validated announce."""

    swarm: str
    peer: PeerInfo
    left: int
    event: str = ""
    #: None: the tracker's default
    numwant: int | None = None


@dataclass(frozen=True, slots=True)
class AnnounceReply:
    """A tracker's answer. ``swarm_size`` 0 means the tracker did not say."""

    interval: float
    swarm_size: int
    peers: tuple[PeerInfo, ...]


def _loads(body: bytes) -> Any:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    # RecursionError: a few KiB of "[[[[" nest deeper than the decoder allows
    try:
        return json.loads(body, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise AnnounceFieldError("body", f"not a JSON document: {type(exc).__name__}") from exc


def _require(obj: dict[str, Any], key: str) -> object:
    if key not in obj:
        raise AnnounceFieldError(key, "is required")
    return obj[key]


def decode_announce(body: bytes) -> Announce:
    """Parse and validate an announce request body.

    Raises:
        AnnounceFieldError: the body is not a JSON object (field ``body``) or names the bad field.
    """
    obj = _loads(body)
    if not isinstance(obj, dict):
        raise AnnounceFieldError("body", "must be a JSON object")
    swarm = check_swarm(_require(obj, "swarm"))
    peer = PeerInfo(
        peer_id=check_peer_id(_require(obj, "peer_id")),
        url=check_url(_require(obj, "url")),
        site=check_site(obj.get("site", "")),
        complete=check_complete(_require(obj, "complete")),
    )
    left = check_left(_require(obj, "left"))
    event = check_event(obj.get("event", ""))
    numwant = check_numwant(obj["numwant"]) if obj.get("numwant") is not None else None
    validate_announce(swarm, peer, left, event)
    return Announce(swarm, peer, left, event, numwant)


def encode_announce(announce: Announce) -> bytes:
    body: dict[str, object] = {
        "swarm": announce.swarm,
        **peer_to_json(announce.peer),
        "left": announce.left,
        "event": announce.event,
    }
    if announce.numwant is not None:
        body["numwant"] = announce.numwant
    return json.dumps(body, separators=(",", ":")).encode()


def peer_to_json(peer: PeerInfo) -> dict[str, object]:
    return {"peer_id": peer.peer_id, "url": peer.url, "site": peer.site, "complete": peer.complete}


def peer_from_json(obj: object) -> PeerInfo:
    """One peer entry of a reply.

    Raises:
        AnnounceFieldError: not an object, or a bad field.
    """
    if not isinstance(obj, dict):
        raise AnnounceFieldError("peers", "entry must be a JSON object")
    return PeerInfo(
        peer_id=check_peer_id(obj.get("peer_id")),
        url=check_url(obj.get("url")),
        site=check_site(obj.get("site", "")),
        complete=check_complete(obj.get("complete", False)),
    )


def encode_reply(reply: AnnounceReply) -> bytes:
    return json.dumps(
        {
            "interval": reply.interval,
            "swarm_size": reply.swarm_size,
            "peers": [peer_to_json(p) for p in reply.peers],
        },
        separators=(",", ":"),
    ).encode()


def decode_reply(body: bytes, *, max_peers: int = 1000) -> tuple[AnnounceReply, int]:
    """Parse a tracker's reply, dropping every bad peer entry (and entries past ``max_peers``).

    Returns:
        The reply and how many peer entries were dropped.

    Raises:
        AnnounceFieldError: the document, ``interval``, ``swarm_size`` or ``peers`` is unusable.
    """
    obj = _loads(body)
    if not isinstance(obj, dict):
        raise AnnounceFieldError("body", "must be a JSON object")
    interval = _require(obj, "interval")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        # not math.isfinite: an integer past the float range (1e400 written out) would raise
        or not abs(interval) <= sys.float_info.max
        or interval <= 0
    ):
        raise AnnounceFieldError("interval", "must be a positive number")
    size = obj.get("swarm_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SWARM_SIZE:
        raise AnnounceFieldError("swarm_size", "must be a non-negative integer")
    entries = _require(obj, "peers")
    if not isinstance(entries, list):
        raise AnnounceFieldError("peers", "must be a list")
    peers: list[PeerInfo] = []
    dropped = max(0, len(entries) - max_peers)
    for entry in entries[:max_peers]:
        try:
            peers.append(peer_from_json(entry))
        except AnnounceFieldError:
            dropped += 1
    return AnnounceReply(float(interval), size, tuple(peers)), dropped

"""Announce to every configured tracker at once and merge what they say.

Trackers are hints, never trusted: each answer is bounded in size and every peer entry is
validated (bad ones dropped), so a lying tracker can at worst hand out useless peers and slow
a download; chunks are verified against the signed manifest whatever their source. A tracker
that fails is logged, reported in ``AnnounceResult.failed`` and skipped: ``announce`` never
raises because one (or every) tracker failed. httpx stays inside this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import anyio
import httpx

from swarmupdate import __version__
from swarmupdate.errors import ConfigError, RemoteDataError, SwarmUpdateError, TransferError
from swarmupdate.model import PeerInfo
from swarmupdate.obs.logging import get_logger
from swarmupdate.tracker.wire import (
    Announce,
    AnnounceFieldError,
    AnnounceReply,
    check_numwant,
    decode_reply,
    encode_announce,
    validate_announce,
)

__all__ = ["AnnounceResult", "TrackerClient", "TrackerFailure"]

log = get_logger("swarmupdate.tracker_client")

#: a reply of 200 peers is about 25 KiB; more than this is not a reply
MAX_REPLY_BYTES = 64 * 1024
#: no compression: the size bound then holds for the bytes we decode, not only those we receive
_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}


@dataclass(frozen=True, slots=True)
class TrackerFailure:
    """One tracker that did not give a usable answer."""

    tracker: str
    reason: str

    def __str__(self) -> str:
        return f"{self.tracker}: {self.reason}"


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    """What the trackers said, merged."""

    #: peers from every tracker that answered, de-duplicated by peer id and by URL, never ourselves
    peers: tuple[PeerInfo, ...]
    #: the lower median of the swarm sizes reported (the smaller of two); 0 when no tracker answered.
    #: Not the largest: one lying tracker could then stretch every origin fallback wait at will
    swarm_size: int
    #: seconds until the next announce: the smallest reported (within the client's bounds), or
    #: the client's default when no tracker answered
    interval: float
    #: the trackers that answered, in configured order
    answered: tuple[str, ...]
    #: the trackers that failed and why, in configured order
    failed: tuple[TrackerFailure, ...]


class TrackerClient:
    """Announce to several trackers concurrently.

    Args:
        trackers: base URLs (``http://tracker:7000``); ``/v1/announce`` is appended.
        client: an ``httpx.AsyncClient`` to use (and not close); one is created otherwise.
        timeout: seconds for one tracker's whole exchange.
        connect_timeout: seconds to connect; a dead tracker is given up on quickly.
        default_interval: the interval when no tracker answered.
        min_interval, max_interval: bounds on a reported interval, so a lying tracker cannot
            make the fleet announce in a tight loop (or never again).
        numwant: peers to ask each tracker for; None: the tracker's default.

    Raises:
        ConfigError: a tracker URL or a setting is invalid.
    """

    def __init__(
        self,
        trackers: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        default_interval: float = 30.0,
        min_interval: float = 5.0,
        max_interval: float = 3600.0,
        numwant: int | None = None,
    ) -> None:
        #: the trackers as configured (no trailing slash); failures name them so
        self.trackers = tuple(_check_tracker(t) for t in trackers)
        self._urls = tuple(f"{t}/v1/announce" for t in self.trackers)
        if len(set(self.trackers)) != len(self.trackers):
            raise ConfigError("trackers: the same tracker is listed twice")
        if not (timeout > 0 and connect_timeout > 0 and 0 < min_interval <= max_interval):
            raise ConfigError("tracker client: timeouts and intervals must be positive, min <= max")
        if numwant is not None:
            try:
                check_numwant(numwant)
            except AnnounceFieldError as exc:
                raise ConfigError(f"tracker client: {exc}") from exc
        self.timeout = timeout
        self.default_interval = min(max(default_interval, min_interval), max_interval)
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.numwant = numwant
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"User-Agent": f"swarmupdate/{__version__}"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> TrackerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def announce(self, swarm: str, peer: PeerInfo, left: int, event: str) -> AnnounceResult:
        """Announce ``peer`` in ``swarm`` to every tracker at once; merge the answers.

        Raises:
            ConfigError: our own announce is invalid (a bad advertise URL, site or id).
        """
        try:
            validate_announce(swarm, peer, left, event)
        except AnnounceFieldError as exc:
            raise ConfigError(f"announce: {exc}") from exc
        body = encode_announce(Announce(swarm, peer, left, event, self.numwant))
        outcomes: list[AnnounceReply | TrackerFailure | None] = [None] * len(self.trackers)

        async def one(i: int) -> None:
            tracker = self.trackers[i]
            try:
                reply, dropped = await self._announce_one(self._urls[i], body)
            except SwarmUpdateError as exc:
                log.warning("tracker_failed", tracker=tracker, swarm=swarm, reason=str(exc))
                outcomes[i] = TrackerFailure(tracker, str(exc))
                return
            if dropped:
                log.warning("tracker_bad_peers", tracker=tracker, swarm=swarm, dropped=dropped)
            outcomes[i] = reply

        async with anyio.create_task_group() as tg:
            for i in range(len(self.trackers)):
                tg.start_soon(one, i)
        return self._merge(peer, outcomes)

    async def _announce_one(self, url: str, body: bytes) -> tuple[AnnounceReply, int]:
        """One tracker's answer and how many peer entries were dropped.

        Raises:
            TransferError: could not connect, timed out, or a status other than 200.
            RemoteDataError: the answer is too large, not JSON, or lacks a usable field.
        """
        try:
            with anyio.fail_after(self.timeout):
                async with self._client.stream("POST", url, content=body, headers=_HEADERS) as response:
                    if response.status_code != 200:
                        detail = await _error_detail(response)
                        raise TransferError(f"HTTP {response.status_code}{detail}")
                    data = await _read_bounded(response, MAX_REPLY_BYTES)
        except TimeoutError as exc:
            raise TransferError(f"timed out after {self.timeout:g}s") from exc
        except httpx.TimeoutException as exc:
            raise TransferError(f"timed out ({type(exc).__name__})") from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise TransferError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return decode_reply(data)
        except AnnounceFieldError as exc:
            raise RemoteDataError(f"bad reply: {exc}") from exc

    def _merge(
        self, me: PeerInfo, outcomes: Sequence[AnnounceReply | TrackerFailure | None]
    ) -> AnnounceResult:
        peers: list[PeerInfo] = []
        seen_ids = {me.peer_id}
        seen_urls = {me.url}
        answered: list[str] = []
        failed: list[TrackerFailure] = []
        sizes: list[int] = []
        intervals: list[float] = []
        for url, outcome in zip(self.trackers, outcomes, strict=True):
            if not isinstance(outcome, AnnounceReply):
                # None only if the task never ran, which a task group rules out
                failed.append(outcome or TrackerFailure(url, "no answer"))
                continue
            answered.append(url)
            sizes.append(outcome.swarm_size)
            intervals.append(outcome.interval)
            for p in outcome.peers:
                if p.peer_id not in seen_ids and p.url not in seen_urls:
                    seen_ids.add(p.peer_id)
                    seen_urls.add(p.url)
                    peers.append(p)
        interval = min(intervals) if intervals else self.default_interval
        interval = min(max(interval, self.min_interval), self.max_interval)
        size = sorted(sizes)[(len(sizes) - 1) // 2] if sizes else 0
        return AnnounceResult(tuple(peers), size, interval, tuple(answered), tuple(failed))


def _check_tracker(base: str) -> str:
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ConfigError(f"tracker {base!r}: does not parse: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"tracker {base!r}: must be an http(s) URL with a host and no query")
    return base.rstrip("/")


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body, or RemoteDataError as soon as it passes ``limit`` bytes."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RemoteDataError(f"reply is {encoding}-encoded; identity was asked for")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdecimal() and int(declared) > limit:
        raise RemoteDataError(f"reply of {declared} bytes is larger than {limit}")
    data = bytearray()
    async for block in response.aiter_raw():
        data += block
        if len(data) > limit:
            raise RemoteDataError(f"reply is larger than {limit} bytes")
    return bytes(data)


async def _error_detail(response: httpx.Response) -> str:
    """``": <error>"`` from a tracker's JSON error body, or ``""``."""
    try:
        data = await _read_bounded(response, 1024)
        error = json.loads(data).get("error")
    except (RemoteDataError, ValueError, AttributeError, RecursionError):
        return ""
    if not isinstance(error, str):
        return ""
    return ": " + "".join(c if c.isprintable() else "?" for c in error[:200])

"""The client side of the peer protocol (and chunk fetches from the origin).

Requests to peers (``http://`` URLs) go through the lean client of :mod:`swarmupdate.net.http1`; the
origin, which may be any web server, CDN or proxy, and ``https://`` peers go through httpx. In a fleet
with peer mutual TLS (``tls``), peers are ``https://`` only, through the lean client with the fleet's
client context; a plain ``http://`` peer is refused without a connection.

Every failure becomes a :class:`~swarmupdate.errors.FetchError` whose ``kind`` the swarm core
acts on; httpx never leaks out of this module. Chunk bytes go straight into a store writer that
hashes while writing and refuses bytes beyond the signed length, so an endless or wrong body
is cut off at once and nothing unverified becomes visible.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
import httpx

from swarmupdate import __version__
from swarmupdate.errors import ChunkVerificationError, FetchError, RemoteDataError, StoreError
from swarmupdate.model import ChunkRef, PeerInfo, is_sha256_hex
from swarmupdate.net.http1 import (
    Http1Pool,
    Http1Response,
    HttpConnectError,
    HttpCutError,
    HttpError,
    HttpUrlError,
)
from swarmupdate.net.peer_server import (
    IDLE_HEADER,
    PEER_HEADER,
    PULLING_HEADER,
    RETRY_HEADER,
    RETRY_MIN,
    VERSION_HEADER,
    parse_pulling,
    peer_header,
)
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.tracker.wire import AnnounceFieldError, check_url

__all__ = ["PeerClient", "chunk_url", "parse_peer_list"]

_MAX_JSON = 256 * 1024
_READ = 256 * 1024
_MAX_ERROR_BODY = 4096
#: a chunk transfer gets at most length / MIN_RATE seconds (bytes/s; at least request_timeout)
MIN_RATE = 16 * 1024
#: from a peer, after this many seconds (at most request_timeout) the bytes must keep up MIN_RATE
PEER_GRACE = 10.0


class _Writer(Protocol):
    commit_blocks: bool

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class _Store(Protocol):
    def writer(self, ref: ChunkRef) -> Any: ...


class PeerClient:
    """Fetch chunks, bitfields, peer lists and peer info over HTTP."""

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        request_timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        download_pace: Callable[[int], Awaitable[None]] | None = None,
        max_connections: int = 256,
        me: PeerInfo | None = None,
        tls: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        """``tls``: the client context of peer mutual TLS, or a function giving the current one
        (:class:`~swarmupdate.net.tls.PeerTLS` replaces it when certificates are renewed); peers are then
        reached over ``https://`` only, presenting this machine's certificate."""
        #: who we are, sent with swarm requests so the peers we ask learn of us
        self.me = me
        #: whether this machine uploads nothing right now (its peer server's state, set by the agent):
        #: its chunk requests then say so, and a busy peer serves it before requesters that upload
        self.idle: Callable[[], bool] | None = None
        self.request_timeout = request_timeout
        self.download_pace = download_pace
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            # chunks are incompressible; identity also keeps byte counts honest
            headers={"User-Agent": f"swarmupdate/{__version__}", "Accept-Encoding": "identity"},
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64),
            follow_redirects=False,
        )
        self._peers = Http1Pool(
            connect_timeout=connect_timeout,
            headers={"User-Agent": f"swarmupdate/{__version__}"},
            ssl_context=tls,
        )
        #: the scheme of the peers this client talks to through the lean pool
        self.peer_scheme = f"{self._peers.scheme}://"
        self.tls = tls is not None

    def accepts_peer(self, url: str) -> bool:
        """Whether this client would talk to a peer at ``url`` (with mutual TLS, ``https://`` only)."""
        return not self.tls or url.startswith("https://")

    def _refuse(self, url: str) -> None:
        if not self.accepts_peer(url):
            raise FetchError("error", f"{url}: not an https:// peer, and this fleet requires peer TLS")

    async def aclose(self) -> None:
        await self._peers.aclose()
        await self._http.aclose()

    async def fetch_chunk(self, url: str, ref: ChunkRef, store: _Store, *, origin: bool = False) -> int:
        """GET ``url`` into ``store`` as chunk ``ref``; returns the bytes stored.

        ``origin``: the URL is the origin's (fetched with httpx, whatever its scheme).

        Time limits: a transfer is given up when no byte came for ``request_timeout`` seconds, or when
        the whole chunk has not come within ``length / MIN_RATE`` seconds (at least ``request_timeout``),
        and from a peer also when, ``PEER_GRACE`` seconds in, it has sent less than MIN_RATE on average
        (a peer trickling bytes is cut off in seconds). Not a fixed total: an
        origin that many agents share sends each of them slowly, and a transfer cut off at a fixed time
        is asked again, so everyone would start over forever and nothing would complete.

        Raises:
            FetchError: with kind corrupt, missing, busy, timeout or error.
            StoreError: the local disk refused (not the peer's fault).
        """
        started = anyio.current_time()
        cap = started + max(self.request_timeout, ref.length / MIN_RATE)
        # a peer (not the origin, which many agents share) must keep up MIN_RATE after a short grace:
        # each byte buys 1/MIN_RATE s, so one that trickles is cut in seconds, not at the whole cap
        grace = started + min(self.request_timeout, PEER_GRACE)
        received = 0

        def limit(now: float) -> float:
            deadline = min(now + self.request_timeout, cap)
            return deadline if origin else min(deadline, max(grace + received / MIN_RATE, grace))

        with anyio.CancelScope(deadline=limit(started)) as scope:

            def progress(n: int) -> None:
                nonlocal received
                received += n
                scope.deadline = limit(anyio.current_time())

            if origin:
                return await self._fetch_chunk(url, ref, store, progress)
            self._refuse(url)
            if not url.startswith(self.peer_scheme):
                return await self._fetch_chunk(url, ref, store, progress, peer=True)
            return await self._fetch_chunk_lean(url, ref, store, progress)
        if scope.cancelled_caught:
            took = anyio.current_time() - started
            why = f"stalled or slower than {MIN_RATE // 1024} KiB/s"
            raise FetchError("timeout", f"{url}: {why} after {took:.0f}s")
        raise AssertionError("unreachable")  # pragma: no cover

    def _chunk_headers(self) -> dict[str, str] | None:
        return {IDLE_HEADER: "1"} if self.idle is not None and self.idle() else None

    async def _fetch_chunk(
        self, url: str, ref: ChunkRef, store: _Store, progress: Callable[[int], None], *, peer: bool = False
    ) -> int:
        try:
            async with self._http.stream(
                "GET", url, headers=self._chunk_headers() if peer else None
            ) as response:
                _check_status(response.status_code, response.headers, url)
                declared = response.headers.get("content-length")
                if declared is not None and declared != str(ref.length):
                    raise FetchError(
                        "corrupt", f"{url}: Content-Length {declared}, signed length {ref.length}"
                    )
                return await self._store(response.aiter_raw(_READ), ref, store, progress)
        except ChunkVerificationError as exc:
            raise FetchError("corrupt", f"{url}: {exc}") from exc
        except httpx.RemoteProtocolError as exc:
            # a body cut short (the peer stopped or took its slot back) or a malformed answer; httpx
            # does not tell them apart, so neither bans: a peer that keeps failing is dropped
            raise FetchError("error", f"{url}: truncated or malformed response: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise FetchError("timeout", f"{url}: timed out") from exc
        except httpx.HTTPError as exc:
            raise FetchError("error", f"{url}: {type(exc).__name__}: {exc}") from exc
        except StoreError:
            raise

    async def _fetch_chunk_lean(
        self, url: str, ref: ChunkRef, store: _Store, progress: Callable[[int], None]
    ) -> int:
        try:
            async with self._peers.get(url, self._chunk_headers()) as response:
                await _check_lean_status(response, url)
                if response.length != ref.length:
                    raise FetchError(
                        "corrupt", f"{url}: Content-Length {response.length}, signed length {ref.length}"
                    )
                return await self._store(response.iter_body(_READ), ref, store, progress)
        except ChunkVerificationError as exc:
            raise FetchError("corrupt", f"{url}: {exc}") from exc
        except HttpError as exc:
            raise _lean_error(exc) from exc

    async def _store(
        self, pieces: AsyncIterator[bytes], ref: ChunkRef, store: _Store, progress: Callable[[int], None]
    ) -> int:
        """Write a body into a verifying store writer; nothing becomes visible unless it matches ``ref``."""
        writer: _Writer = store.writer(ref)
        try:
            async for piece in pieces:
                if self.download_pace is not None:
                    await self.download_pace(len(piece))
                writer.write(piece)
                progress(len(piece))
            if writer.commit_blocks:
                await anyio.to_thread.run_sync(writer.commit)
            else:  # (a store in memory: no disk to wait for, and a thread hop costs more than the commit)
                writer.commit()
        except BaseException:
            writer.abort()
            raise
        return ref.length

    async def _get_small(
        self, url: str, *, hint: bool = False, headers_out: dict[str, str] | None = None
    ) -> bytes:
        headers = (
            {PEER_HEADER: peer_header(self.me)} if hint and self.me is not None and self.me.url else None
        )
        self._refuse(url)
        if url.startswith(self.peer_scheme):
            try:
                with anyio.fail_after(self.request_timeout):
                    async with self._peers.get(url, headers) as response:
                        await _check_lean_status(response, url)
                        if headers_out is not None:
                            headers_out.update(response.headers)
                        return await response.read(_MAX_JSON)
            except TimeoutError as exc:
                raise FetchError("timeout", f"{url}: timed out") from exc
            except HttpError as exc:
                raise _lean_error(exc) from exc
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                _check_status(response.status_code, response.headers, url)
                if headers_out is not None:
                    headers_out.update(response.headers)
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > _MAX_JSON:
                        raise FetchError("corrupt", f"{url}: response larger than {_MAX_JSON} bytes")
                return bytes(body)
        except httpx.TimeoutException as exc:
            raise FetchError("timeout", f"{url}: timed out") from exc
        except httpx.HTTPError as exc:
            raise FetchError("error", f"{url}: {type(exc).__name__}: {exc}") from exc

    async def bitfield(self, peer_url: str, swarm: str, n: int) -> tuple[Bitfield, frozenset[int]]:
        """The peer's bitfield for ``swarm`` (a release of ``n`` chunks), and the chunks it says it is
        fetching from the origin."""
        bitfield, pulling, _ = await self.bitfield_versioned(peer_url, swarm, n)
        return bitfield, pulling

    async def bitfield_versioned(
        self, peer_url: str, swarm: str, n: int, *, after: int | None = None, wait: int = 5
    ) -> tuple[Bitfield, frozenset[int], int | None]:
        """Like :meth:`bitfield`, plus the bitfield's version (None when the peer gives none). With
        ``after``, a long poll: the peer answers when its version is not ``after`` any more, or after
        ``wait`` seconds (the request must fit in ``request_timeout``)."""
        url = f"{peer_url.rstrip('/')}/v1/swarms/{swarm}/bitfield"
        if after is not None:
            url += f"?after={after}&wait={wait}"
        headers: dict[str, str] = {}
        data = await self._get_small(url, hint=True, headers_out=headers)
        try:
            bitfield = Bitfield.decode(data, n, source=url)
        except RemoteDataError as exc:
            raise FetchError("corrupt", str(exc)) from exc
        raw = headers.get(VERSION_HEADER, "")
        version = int(raw) if 0 < len(raw) <= 18 and raw.isascii() and raw.isdecimal() else None
        return bitfield, parse_pulling(headers.get(PULLING_HEADER), n), version

    async def peers(self, peer_url: str, swarm: str) -> list[PeerInfo]:
        """The peers ``peer_url`` knows in ``swarm`` (peer exchange); bad entries are dropped."""
        url = f"{peer_url.rstrip('/')}/v1/swarms/{swarm}/peers"
        return parse_peer_list(await self._get_small(url, hint=True), url)

    async def info(self, peer_url: str) -> PeerInfo:
        """Who answers at ``peer_url`` (its ``/healthz``)."""
        url = f"{peer_url.rstrip('/')}/healthz"
        try:
            doc = json.loads(await self._get_small(url))
            return PeerInfo(str(doc["peer_id"]), peer_url.rstrip("/"), str(doc.get("site", "")))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise FetchError("corrupt", f"{url}: not a swarmupdate peer") from exc


def parse_peer_list(data: bytes, source: str) -> list[PeerInfo]:
    """Parse a JSON list of peers, keeping only well-formed entries (a liar can only slow us)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." deeper than json allows
        raise FetchError("corrupt", f"{source}: not JSON") from exc
    if not isinstance(doc, list):
        raise FetchError("corrupt", f"{source}: expected a list")
    out = []
    for item in doc[:1000]:
        if not isinstance(item, dict):
            continue
        pid, url, site = item.get("peer_id"), item.get("url"), item.get("site", "")
        if not (
            isinstance(pid, str) and 0 < len(pid) <= 128 and isinstance(url, str) and isinstance(site, str)
        ):
            continue
        try:
            check_url(url)
        except AnnounceFieldError:
            continue  # the same rules as for an announce: a liar's odd URL is dropped, not followed
        out.append(PeerInfo(pid, url.rstrip("/"), site[:64], item.get("complete") is True))
    return out


def _lean_error(exc: HttpError) -> FetchError:
    """What a failure of the lean client means for the swarm: only a malformed answer is the peer's bad
    data (``corrupt`` bans it). No connection, an answer cut short (the peer stopped, restarted or took
    its upload slot back), or a URL we cannot request is an ``error``: a peer that keeps failing is
    dropped after a few, never banned for it."""
    if isinstance(exc, HttpConnectError | HttpUrlError | HttpCutError):
        return FetchError("error", str(exc))
    return FetchError("corrupt", str(exc))


async def _check_lean_status(response: Http1Response, url: str) -> None:
    if response.status != 200:
        if response.length <= _MAX_ERROR_BODY:
            await response.read(_MAX_ERROR_BODY)  # so that the connection can be used again
        _check_status(response.status, response.headers, url)


def _check_status(status: int, headers: Mapping[str, str], url: str) -> None:
    if status == 200:
        return
    if status == 404:
        raise FetchError("missing", f"{url}: 404")
    if status == 429:
        raise FetchError("busy", f"{url}: 429", _retry_after(headers))
    raise FetchError("error", f"{url}: HTTP {status}")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """A 429's wait: an agent's estimate in decimal seconds (``X-Swarmupdate-Retry-After``, between 0
    and 60), else the standard ``Retry-After`` in whole seconds, else None."""
    precise = headers.get(RETRY_HEADER, "")
    if 0 < len(precise) <= 8 and precise.isascii() and precise.replace(".", "", 1).isdecimal():
        value = float(precise)
        if 0 < value <= 60:
            return max(value, RETRY_MIN)  # a peer cannot have itself asked again at once
    retry = headers.get("retry-after", "")
    ok = retry.isascii() and retry.isdecimal() and len(retry) <= 6
    return float(retry) if ok else None


def chunk_url(base: str, sha256: str, *, origin: bool) -> str:
    """The URL of a chunk at a peer (``/v1/chunks/``) or at the origin (``/chunks/ab/``)."""
    if not is_sha256_hex(sha256):
        raise ValueError(sha256)
    base = base.rstrip("/")
    return f"{base}/chunks/{sha256[:2]}/{sha256}" if origin else f"{base}/v1/chunks/{sha256}"

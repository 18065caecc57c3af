"""A lean HTTP/1.1 client for the peer protocol: GET over kept-alive connections, Content-Length bodies.

Why not httpx here: agents talk to each other all the time (bitfields every second, chunks, peer lists),
and the fleet benchmark's profile showed httpx/httpcore taking most of an agent's CPU on that path. Its
connection pool scans every pooled connection, with a ``poll()`` system call each, on every request, and
each response crosses several layers of async generators. A swarm of 16 agents on two cores ran out of
CPU before it ran out of network. The peer protocol needs none of that generality: the other side is
our own server (:mod:`swarmupdate.net.httpserver`), which always sends ``Content-Length``, so this client
speaks exactly that and refuses anything else (``Transfer-Encoding``, a missing or bad length) as a
protocol error naming the URL. The origin, which may be any web server, a CDN or behind a proxy, keeps
httpx.

Connections are pooled per ``host:port``, at most ``max_idle_per_host`` idle ones each (an agent has at
most four chunk requests and a bitfield poll in flight per peer), and closed after ``idle_timeout`` unused
(before the server's own idle timeout of 30 s) by a sweep at most every ``idle_timeout / 2``. A request on a
pooled connection that the server closed meanwhile is retried once on a fresh one (GET is idempotent); a
response whose body was not read to the end closes its connection instead of returning it, so a stalled or
cancelled transfer never leaks into the next request.

With an ``ssl_context`` the pool speaks ``https://`` instead (peer mutual TLS, :mod:`swarmupdate.net.tls`):
the handshake is part of connecting, and a failed one is an :class:`HttpConnectError`.

Timeouts: connecting is bounded here (``connect_timeout``); the caller bounds the whole request with a
cancel scope, and cancellation at any point closes the connection.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import anyio.abc

__all__ = ["Http1Pool", "Http1Response", "HttpConnectError", "HttpError", "HttpProtocolError", "HttpUrlError"]

_MAX_HEAD = 16 * 1024
_READ = 256 * 1024
#: a body is handed to the reader once this many bytes of it (or all that is left) have arrived
#: (SO_RCVLOWAT): at 20 Mbit/s a packet comes every 0.6 ms, and the event loop woke for every few of
#: them, dozens of times per chunk, each wake-up a receive, a pause and a resume of the transport
BODY_LOWAT = 128 * 1024


class HttpError(Exception):
    """A request failed; the message names the URL."""


class HttpConnectError(HttpError):
    """No connection could be made (refused, unreachable, connect timeout)."""


class HttpProtocolError(HttpError):
    """The server broke HTTP/1.1 or this client's subset of it: bad head, bad length, short body."""


class HttpCutError(HttpProtocolError):
    """The connection ended or broke before the whole answer came: the server stopped, restarted or
    gave the upload slot to another peer. Not proof of bad data, unlike the other protocol errors."""


class HttpUrlError(HttpError, ValueError):
    """The URL cannot be requested by this client (wrong scheme, bad port or characters)."""


def _decimal(text: str | None, digits: int) -> int | None:
    """``text`` as a non-negative int of at most ``digits`` ASCII digits, else None (never raises)."""
    if text is None or not text or len(text) > digits or not (text.isascii() and text.isdecimal()):
        return None
    return int(text)


@dataclass
class _Conn:
    stream: anyio.abc.ByteStream
    buf: bytearray = field(default_factory=bytearray)
    idle_since: float = 0.0
    requests: int = 0
    #: the plain TCP socket, for SO_RCVLOWAT (None over TLS: the socket holds records, not the body)
    sock: socket.socket | None = None
    lowat: int = 1

    def expect(self, nbytes: int) -> None:
        """Wake the reader only once ``nbytes`` bytes are there (best effort; never more than will come)."""
        if self.sock is None or nbytes == self.lowat:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError:
            self.sock = None  # (closed meanwhile, or a kernel without it)
            return
        self.lowat = nbytes

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.stream.aclose()

    async def fill(self, url: str) -> None:
        """Append at least one more byte to the buffer."""
        try:
            data = await self.stream.receive(_READ)
        except anyio.EndOfStream:
            raise HttpCutError(f"{url}: connection closed mid-response") from None
        self.buf += data


class Http1Response:
    """Status, headers (lowercase names) and a body of exactly ``length`` bytes, read once."""

    def __init__(self, url: str, conn: _Conn, status: int, headers: dict[str, str], length: int) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.length = length
        self._conn = conn
        self._left = length

    @property
    def complete(self) -> bool:
        """The whole body has been read (the connection can serve another request)."""
        return self._left == 0

    async def iter_body(self, max_read: int = _READ) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive; raises HttpProtocolError when it ends short."""
        conn = self._conn
        if conn.buf and self._left:
            piece = bytes(conn.buf[: self._left])
            del conn.buf[: len(piece)]
            self._left -= len(piece)
            yield piece
        while self._left:
            # what is left of the body is all still to come when the stream has nothing queued
            # (a receive only waits then), so the reader is never held for bytes that will not come
            conn.expect(min(BODY_LOWAT, self._left))
            try:
                data = await conn.stream.receive(min(max_read, self._left))
            except anyio.EndOfStream:
                raise HttpCutError(
                    f"{self.url}: body ended after {self.length - self._left} of {self.length} bytes"
                ) from None
            except (OSError, anyio.BrokenResourceError) as exc:
                raise HttpCutError(f"{self.url}: connection lost mid-body: {exc}") from exc
            self._left -= len(data)
            if not self._left:
                conn.expect(1)  # the next response's head: every byte as it comes
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body, refusing one longer than ``limit`` before reading it."""
        if self.length > limit:
            raise HttpProtocolError(f"{self.url}: body of {self.length} bytes, more than {limit}")
        body = bytearray()
        async for piece in self.iter_body():
            body += piece
        return bytes(body)


class Http1Pool:
    """GET requests over pooled HTTP/1.1 connections. Close with :meth:`aclose`."""

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        headers: Mapping[str, str] | None = None,
        max_idle_per_host: int = 6,
        idle_timeout: float = 20.0,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        #: with a context (or a function giving the current one at each connection), only ``https://``
        #: URLs; without, only ``http://``
        self.ssl_context = ssl_context
        self.scheme = "http" if ssl_context is None else "https"
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._closed = False
        self._next_sweep = time.monotonic() + idle_timeout / 2

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    @asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> AsyncIterator[Http1Response]:
        """Send ``GET url``; yields the response once its head has arrived.

        Raises:
            HttpConnectError: no connection to the server.
            HttpProtocolError: a malformed, unsupported or truncated response.
            HttpUrlError: ``url`` cannot be requested (not of this pool's scheme, bad port or characters).
        """
        host, port, netloc, target = _split(url, self.scheme)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        try:
            request = f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n{self._headers}{extra}\r\n".encode("ascii")
        except UnicodeEncodeError:
            raise HttpUrlError(f"{url!r}: not ASCII") from None
        for attempt in (1, 2):
            conn = await self._take(host, port)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(host, port, url)
            try:
                response, keep = await self._exchange(conn, request, url)
            except HttpProtocolError:
                await conn.aclose()
                # a kept-alive connection the server closed meanwhile: once more on a fresh one
                if reused and attempt == 1 and not conn.buf:
                    continue
                raise
            except BaseException:
                await conn.aclose()
                raise
            try:
                yield response
            finally:
                idle = self._idle.setdefault((host, port), [])
                if (
                    keep
                    and response.complete
                    and not conn.buf
                    and not self._closed
                    and len(idle) < self.max_idle_per_host
                ):
                    conn.idle_since = time.monotonic()
                    idle.append(conn)
                else:
                    await conn.aclose()
            return

    async def _connect(self, host: str, port: int, url: str) -> _Conn:
        try:
            with anyio.fail_after(self.connect_timeout):
                context = self.ssl_context() if callable(self.ssl_context) else self.ssl_context
                stream: anyio.abc.ByteStream = (
                    await anyio.connect_tcp(host, port, ssl_context=context, tls_standard_compatible=False)
                    if context is not None
                    else await anyio.connect_tcp(host, port)
                )
        except TimeoutError:
            raise HttpConnectError(f"{url}: no connection within {self.connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            why = getattr(exc, "verify_message", None) or exc.reason or exc
            raise HttpConnectError(f"{url}: TLS handshake failed: {why}") from exc
        except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise HttpConnectError(f"{url}: TLS handshake failed: connection closed") from exc
        except OSError as exc:
            raise HttpConnectError(f"{url}: cannot connect: {exc.strerror or exc}") from exc
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None) if context is None else None
        return _Conn(stream, sock=sock)

    async def _exchange(self, conn: _Conn, request: bytes, url: str) -> tuple[Http1Response, bool]:
        try:
            await conn.stream.send(request)
            conn.requests += 1
            end = conn.buf.find(b"\r\n\r\n")
            while end < 0:
                if len(conn.buf) > _MAX_HEAD:
                    raise HttpProtocolError(f"{url}: response head larger than {_MAX_HEAD} bytes")
                await conn.fill(url)
                end = conn.buf.find(b"\r\n\r\n")
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise HttpCutError(f"{url}: connection lost: {exc}") from exc
        if end > _MAX_HEAD:
            raise HttpProtocolError(f"{url}: response head larger than {_MAX_HEAD} bytes")
        head = bytes(conn.buf[:end])
        del conn.buf[: end + 4]
        status, headers = _parse_head(head, url)
        if "transfer-encoding" in headers:
            raise HttpProtocolError(f"{url}: Transfer-Encoding is not supported by the peer protocol")
        declared = headers.get("content-length")
        length = _decimal(declared, 15)
        if length is None:
            raise HttpProtocolError(f"{url}: missing or bad Content-Length {declared!r}")
        keep = headers.get("connection", "").lower() != "close"
        return Http1Response(url, conn, status, headers, length), keep

    async def _take(self, host: str, port: int) -> _Conn | None:
        now = time.monotonic()
        if now >= self._next_sweep:
            await self._sweep(now)
        conns = self._idle.get((host, port))
        while conns:
            conn = conns.pop()
            if now - conn.idle_since < self.idle_timeout:
                return conn
            await conn.aclose()  # the server is about to drop it anyway
        return None

    async def _sweep(self, now: float) -> None:
        """Close every connection idle too long, so that peers gone quiet do not keep file descriptors."""
        self._next_sweep = now + self.idle_timeout / 2
        for key in list(self._idle):
            conns = self._idle[key]
            stale = [c for c in conns if now - c.idle_since >= self.idle_timeout]
            if stale:
                conns[:] = [c for c in conns if now - c.idle_since < self.idle_timeout]
                for conn in stale:
                    await conn.aclose()
            if not conns:
                del self._idle[key]


def _split(url: str, scheme: str = "http") -> tuple[str, int, str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:  # e.g. a port out of range
        raise HttpUrlError(f"{url!r}: {exc}") from None
    if parts.scheme != scheme or not parts.hostname:
        raise HttpUrlError(f"{url!r}: only {scheme}:// URLs are supported here")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c in target or c in parts.netloc for c in " \r\n\t"):
        raise HttpUrlError(f"{url!r}: bad characters")
    return parts.hostname, port, parts.netloc, target


def _parse_head(head: bytes, url: str) -> tuple[int, dict[str, str]]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        version, code, *_ = lines[0].split(" ", 2)
        status = _decimal(code, 3)
        if not version.startswith("HTTP/1.") or len(code) != 3 or status is None:
            raise ValueError(lines[0])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ValueError(line)
            key = name.lower()
            value = value.strip()
            if key == "content-length" and key in headers and headers[key] != value:
                raise ValueError("conflicting Content-Length")
            headers[key] = value
    except ValueError as exc:
        raise HttpProtocolError(f"{url}: malformed response head: {str(exc)[:80]!r}") from None
    return status, headers

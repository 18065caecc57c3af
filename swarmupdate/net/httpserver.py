"""A small HTTP/1.1 server on anyio and h11, shared by the origin dev server, the peer server
and the tracker.

h11 does the protocol (no I/O); this module only moves bytes. Limits: header size, body size,
idle time between requests, the time to receive one request (slow clients get closed), the time one
write may wait for a client that does not read, and the number of open connections: when it is
reached, a newcomer takes the place of the connection that has waited longest for its next request
(slowloris connections and idle keep-alives), and is turned away only when every connection is busy
answering. Running out of file descriptors stops nothing: accepting waits and sheds idle connections.
Handlers are ``async def handler(request) -> Response``; a ``FileBody`` response streams a file
region in large writes. With an ``ssl_context`` every connection is TLS (the handshake, bounded by
``request_timeout``, runs in the connection's own task and counts as waiting, so a client that never
finishes it gives its place away like an idle one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import h11
from anyio.abc import TaskStatus
from anyio.streams.tls import TLSStream

from swarmupdate.fsutil import in_memory
from swarmupdate.obs.logging import get_logger

__all__ = [
    "FileBody",
    "Handler",
    "Request",
    "Response",
    "ServerLimits",
    "ServerStats",
    "raise_open_files_limit",
    "serve",
]

log = get_logger("swarmupdate.http")


@dataclass(frozen=True)
class Request:
    """One parsed request."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    client: str

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class FileBody:
    """Send ``length`` bytes of the file at ``path`` from ``offset``.

    ``pace`` (optional) is awaited before each block with its size: a rate limiter.
    """

    path: Path
    offset: int = 0
    length: int | None = None
    pace: Callable[[int], Awaitable[None]] | None = None


@dataclass(eq=False)  # identity, so that servers can keep the responses in flight in a set
class Response:
    """What a handler answers."""

    status: int = 200
    body: bytes | FileBody = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    #: set by the server: bytes of body actually sent
    sent: int = 0
    #: called once the response is finished or abandoned (e.g. to free an upload slot)
    on_done: Callable[[], None] | None = None
    #: set by the server once the handler returned: ends this connection at once (e.g. to give the
    #: upload slot of a client that stopped reading to another one)
    abort: Callable[[], None] | None = None
    #: set by the server: when the last block of a file body went out (or the sending began)
    progressed: float = 0.0


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ServerLimits:
    """Protect the server from its clients."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    write_block: int = 1024 * 1024
    #: one write (at most ``write_block``) that the client does not take within this many seconds
    #: ends the connection: a reader that stopped holds nothing for long
    send_timeout: float = 30.0
    max_connections: int = 2048
    #: the kernel's send buffer per connection (SO_SNDBUF) when set: bytes "sent" are then close to
    #: bytes the client took, so a client that stops reading is seen to stop (None: the kernel's own)
    send_buffer: int | None = None
    #: at most about this many bytes of a connection wait in the kernel unsent (TCP_NOTSENT_LOWAT)
    #: when set: a write returns when its bytes are nearly on the wire, not when they are queued. The
    #: bytes in flight are not limited (the window still grows with the path's delay). None: no limit
    unsent_limit: int | None = None


@dataclass
class ServerStats:
    """What a server did with its connections (for metrics)."""

    #: open now
    open: int = 0
    #: closed to make room for a newcomer (they had waited longest for a request)
    evicted: int = 0
    #: newcomers closed at once: at the limit, and every connection busy answering
    refused: int = 0
    #: accepts that failed (out of file descriptors or memory)
    accept_failed: int = 0
    #: TLS handshakes that failed or timed out (no certificate, a certificate of another CA, not TLS)
    handshake_failed: int = 0


#: an open connection that has waited this long for its next request may give its place to a newcomer
EVICT_AFTER = 0.5
#: after a failed accept (out of file descriptors or memory), wait this long before the next
ACCEPT_BACKOFF = 0.1
#: over TLS, a write block goes to the TLS stream in pieces of at most this many bytes
TLS_PIECE = 64 * 1024


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: ServerLimits = ServerLimits(),
    on_response: Callable[[Request, Response, float], None] | None = None,
    stats: ServerStats | None = None,
    ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0 picks one) and serve until cancelled; ``stats`` is kept up to date.

    ``ssl_context``: speak TLS only (a server context, or a function giving the current one at each
    connection, so that renewed certificates take effect; the context decides whether client
    certificates are required).

    Reports the bound port through ``task_status`` once listening (use ``tg.start``).
    """
    raise_open_files_limit()
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    task_status.started(bound)
    pool = _Pool(limits.max_connections, stats or ServerStats())

    async def on_connection(stream: anyio.abc.SocketStream) -> None:
        tune_socket(stream.extra(anyio.abc.SocketAttribute.raw_socket), limits)
        conn = _Connection(stream, handler, limits, on_response)
        pool.add(conn)
        try:
            async with stream:
                with conn.scope:
                    if ssl_context is not None:
                        context = ssl_context() if callable(ssl_context) else ssl_context
                        tls = await _handshake(stream, context, limits, pool.stats, conn.client)
                        if tls is None:
                            return
                        conn.stream, conn.tls = tls, True
                    await conn.run()
        finally:
            pool.discard(conn)

    async def accept_loop(sub: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await sub.accept()
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: make room and try again
                pool.stats.accept_failed += 1
                shed = pool.make_room(anyio.current_time(), force=True)
                log.warning("accept_failed", error=str(exc), connections=len(pool.conns), shed=shed)
                await anyio.sleep(ACCEPT_BACKOFF)
                continue
            if not pool.make_room(anyio.current_time()):
                pool.stats.refused += 1
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            tg.start_soon(on_connection, stream)

    async with listener, anyio.create_task_group() as tg:
        for sub in listener.listeners:
            assert isinstance(sub, anyio.abc.SocketListener)
            tg.start_soon(accept_loop, sub, tg)


async def _handshake(
    stream: anyio.abc.SocketStream,
    context: ssl.SSLContext,
    limits: ServerLimits,
    stats: ServerStats,
    client: str,
) -> anyio.abc.ByteStream | None:
    """The TLS stream over ``stream``, or None when the handshake failed or took too long."""
    try:
        with anyio.fail_after(limits.request_timeout):
            return await TLSStream.wrap(
                stream, server_side=True, ssl_context=context, standard_compatible=False
            )
    except (ssl.SSLError, OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
        stats.handshake_failed += 1
        reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else type(exc).__name__
        log.info("tls_handshake_failed", client=client, reason=str(reason))
        return None


def raise_open_files_limit(want: int = 65536) -> int:
    """Raise this process's soft limit on open files towards ``want`` (never above the hard limit):
    a server holding a thousand connections needs more than the usual 1024. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class _Pool:
    """The open connections, and who gives way when there are too many."""

    def __init__(self, limit: int, stats: ServerStats) -> None:
        self.limit = limit
        self.conns: set[_Connection] = set()
        self.stats = stats

    def add(self, conn: _Connection) -> None:
        self.conns.add(conn)
        self.stats.open = len(self.conns)

    def discard(self, conn: _Connection) -> None:
        self.conns.discard(conn)
        self.stats.open = len(self.conns)

    def make_room(self, now: float, *, force: bool = False) -> bool:
        """True when a new connection may be served: below the limit, or after closing the one that
        has waited longest for a request (at least ``EVICT_AFTER``). ``force`` closes one anyway."""
        if len(self.conns) < self.limit and not force:
            return True
        waiting = [c for c in self.conns if c.waiting_since is not None and not c.scope.cancel_called]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: c.waiting_since or 0.0)
        assert victim.waiting_since is not None
        if not force and now - victim.waiting_since < EVICT_AFTER:
            return False
        victim.scope.cancel()
        self.discard(victim)
        self.stats.evicted += 1
        return True


class _Connection:
    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        handler: Handler,
        limits: ServerLimits,
        on_response: Callable[[Request, Response, float], None] | None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.on_response = on_response
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.scope = anyio.CancelScope()
        #: the method of the request being answered (a HEAD answer has no body)
        self.method = b""
        #: the stream is TLS (set after the handshake)
        self.tls = False
        #: when it began to wait for its next request; None while a request is being answered
        self.waiting_since: float | None = anyio.current_time()
        try:
            addr = stream.extra(anyio.abc.SocketAttribute.remote_address)
            self.client = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        except Exception:  # noqa: BLE001 - a peer that vanished has no address; keep serving others
            self.client = "?"

    async def run(self) -> None:
        try:
            while True:
                self.waiting_since = anyio.current_time()
                request = await self._read_request()
                if request is None:
                    return
                self.waiting_since = None
                started = anyio.current_time()
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("handler_failed", target=request.target, client=self.client)
                    response = Response(500, b"internal error\n", content_type="text/plain")
                response.abort = self.scope.cancel
                try:
                    await self._send(request, response)
                finally:
                    if response.on_done is not None:
                        response.on_done()
                    if self.on_response is not None:
                        self.on_response(request, response, anyio.current_time() - started)
                if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            ConnectionError,
            TimeoutError,  # a write the client did not take within send_timeout
        ):
            return

    async def _read_request(self) -> Request | None:
        request: h11.Request | None = None
        body = bytearray()
        # the first byte may take idle_timeout; once it starts, the whole request gets request_timeout
        timeout = self.limits.idle_timeout
        deadline: float | None = None
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if "too long" in str(exc).lower() or "exceeds" in str(exc).lower():
                    status = 431
                await self._send_error(status, str(exc))
                return None
            if event is h11.NEED_DATA:
                now = anyio.current_time()
                if deadline is None and (request is not None or self.conn.their_state is not h11.IDLE):
                    deadline = now + self.limits.request_timeout
                wait = timeout if deadline is None else max(0.0, deadline - now)
                with anyio.move_on_after(wait):
                    try:
                        data = await self.stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                    self.conn.receive_data(data)
                    if deadline is None and data:
                        deadline = anyio.current_time() + self.limits.request_timeout
                    continue
                # timed out: idle keep-alive ends quietly, a slow request gets 408
                if request is not None or self.conn.their_state is not h11.IDLE or deadline is not None:
                    await self._send_error(408, "request timeout")
                return None
            if isinstance(event, h11.Request):
                request = event
                self.method = event.method
                # h11 bounds only incomplete heads; a large head that arrives whole passes it
                head = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if head > self.limits.max_header_bytes:
                    await self._send_error(431, "request head too large")
                    return None
                length = _content_length(event)
                if length is not None and length > self.limits.max_body_bytes:
                    await self._send_error(413, "body too large")
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    await self._send_error(413, "body too large")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
                return Request(
                    request.method.decode("ascii", "replace"),
                    request.target.decode("latin-1"),
                    headers,
                    bytes(body),
                    self.client,
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send_error(self, status: int, message: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{message}\n".encode()
        try:
            head = h11.Response(
                status_code=status,
                headers=[
                    ("content-type", "text/plain"),
                    ("content-length", str(len(body))),
                    ("connection", "close"),
                ],
                reason=_REASONS.get(status, b""),
            )
            await self._write(self._whole(head, body))
        except (
            h11.LocalProtocolError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            ConnectionError,
            TimeoutError,
        ):
            return

    def _whole(self, head: h11.Response, body: bytes) -> bytes:
        """A whole small response as one write (one system call, not three); no body for a HEAD."""
        parts = [self.conn.send(head)]
        if body and self.method != b"HEAD":
            parts.append(self.conn.send(h11.Data(data=body)))
        parts.append(self.conn.send(h11.EndOfMessage()))
        return b"".join(p for p in parts if p)

    async def _send(self, request: Request, response: Response) -> None:
        headers: list[tuple[str, str]] = [("content-type", response.content_type)]
        headers += list(response.headers.items())
        body = response.body
        if isinstance(body, FileBody):
            await self._send_file(request, response, headers, body)
            return
        headers.append(("content-length", str(len(body))))
        head = h11.Response(
            status_code=response.status, headers=headers, reason=_REASONS.get(response.status, b"")
        )
        send_body = body if request.method != "HEAD" else b""
        await self._write(self._whole(head, send_body))
        response.sent = len(send_body)

    async def _send_file(
        self, request: Request, response: Response, headers: list[tuple[str, str]], body: FileBody
    ) -> None:
        # Opened and closed in the event loop, not in a worker thread: a chunk being served was nearly
        # always just written or just sent, so its inode is cached; the two thread hops per upload
        # cost more than the open (and under load each hop can hold the loop for a GIL switch).
        try:
            fd = os.open(body.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a directory opens too (open_file in "rb" refused it)
                os.close(fd)
                fd = -1
        if fd < 0:
            await self._send(request, Response(404, b"not found\n", content_type="text/plain"))
            return
        try:
            size = st.st_size
            length = body.length if body.length is not None else size - body.offset
            headers.append(("content-length", str(length)))
            await self._write(
                self.conn.send(
                    h11.Response(
                        status_code=response.status,
                        headers=headers,
                        reason=_REASONS.get(response.status, b""),
                    )
                )
            )
            response.progressed = anyio.current_time()
            if request.method != "HEAD":
                how = _read_mode(st.st_dev)
                pos = body.offset
                left = length
                while left > 0:
                    if body.pace is not None:
                        await body.pace(min(self.limits.write_block, left))
                    block = await _read_block(fd, pos, min(self.limits.write_block, left), how)
                    pos += len(block)
                    if not block:
                        # the file shrank under us: the client sees a short body and a closed connection
                        raise anyio.BrokenResourceError
                    await self._write(self.conn.send(h11.Data(data=block)))
                    left -= len(block)
                    response.sent += len(block)
                    response.progressed = anyio.current_time()
            await self._write(self.conn.send(h11.EndOfMessage()))
        finally:
            os.close(fd)

    async def _write(self, data: bytes | None) -> None:
        if data:
            with anyio.fail_after(self.limits.send_timeout):
                if not self.tls or len(data) <= TLS_PIECE:
                    await self.stream.send(data)
                    return
                # TLS encrypts a whole send into memory before the socket takes any of it: a block of
                # 1 MiB held plaintext and ciphertext at once per upload (8 uploads: +24 MB of RSS)
                for at in range(0, len(data), TLS_PIECE):
                    await self.stream.send(data[at : at + TLS_PIECE])


#: Linux's TCP_NOTSENT_LOWAT (the socket module names it from Python 3.12 on some builds only)
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def tune_socket(sock: socket.socket, limits: ServerLimits) -> None:
    """Apply ``limits.send_buffer`` and ``limits.unsent_limit`` to an accepted connection (best effort:
    a kernel without an option serves as before)."""
    if limits.send_buffer is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.send_buffer)
    if limits.unsent_limit is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, limits.unsent_limit)


async def _read_block(fd: int, pos: int, size: int, how: str) -> bytes:
    """Up to ``size`` bytes of ``fd`` at ``pos``, read as :func:`_read_mode` said for its file system.

    A chunk being served is nearly always in memory (it was just written or just sent to another peer),
    and handing each block to a worker thread and back cost more CPU than the read itself (the fleet
    profile: 8% of an agent's samples). So: ``direct`` (tmpfs, ramfs: a memory copy, never a wait for a
    disk) reads in the event loop; ``nowait`` reads from the page cache with ``RWF_NOWAIT``, which never
    blocks, and only what is not cached goes to a thread; ``thread`` always uses a thread.
    """
    if how == "direct":
        return os.pread(fd, size, pos)
    if how == "nowait":
        buf = bytearray(size)
        try:
            if os.preadv(fd, [buf], pos, os.RWF_NOWAIT) == size:
                return bytes(buf)
        except OSError as exc:  # EAGAIN: not all cached; EOPNOTSUPP: this file system cannot say
            if exc.errno == errno.EOPNOTSUPP:
                _no_nowait.add(os.fstat(fd).st_dev)
    return await anyio.to_thread.run_sync(os.pread, fd, size, pos)


def _read_mode(dev: int) -> str:
    """How to read files of device ``dev``: ``direct``, ``nowait`` or ``thread`` (see :func:`_read_block`)."""
    if in_memory(dev):
        return "direct"
    if _NOWAIT and dev not in _no_nowait:
        return "nowait"
    return "thread"


_NOWAIT = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")
#: devices whose file system answered EOPNOTSUPP to RWF_NOWAIT
_no_nowait: set[int] = set()


def _content_length(event: h11.Request) -> int | None:
    for k, v in event.headers:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None

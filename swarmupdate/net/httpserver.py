"""A small HTTP/1.1 server on anyio and h11, shared by the origin dev server, the peer server
and the tracker.

h11 does the protocol (no I/O); this module only moves bytes. Limits: header size, body size,
idle time between requests and the time to receive one request (slow clients get closed).
Handlers are ``async def handler(request) -> Response``; a ``FileBody`` response streams a file
region in large writes.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import h11
from anyio.abc import TaskStatus

from swarmupdate.obs.logging import get_logger

__all__ = ["FileBody", "Handler", "Request", "Response", "ServerLimits", "serve"]

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


@dataclass
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


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ServerLimits:
    """Protect the server from its clients."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    write_block: int = 1024 * 1024


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
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0 picks one) and serve until cancelled.

    Reports the bound port through ``task_status`` once listening (use ``tg.start``).
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    task_status.started(bound)

    async def on_connection(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await _Connection(stream, handler, limits, on_response).run()

    async with listener:
        await listener.serve(on_connection)


class _Connection:
    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        handler: Handler,
        limits: ServerLimits,
        on_response: Callable[[Request, Response, float], None] | None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.on_response = on_response
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        try:
            addr = stream.extra(anyio.abc.SocketAttribute.remote_address)
            self.client = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        except Exception:  # noqa: BLE001 - a peer that vanished has no address; keep serving others
            self.client = "?"

    async def run(self) -> None:
        try:
            while True:
                request = await self._read_request()
                if request is None:
                    return
                started = anyio.current_time()
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("handler_failed", target=request.target, client=self.client)
                    response = Response(500, b"internal error\n", content_type="text/plain")
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
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ConnectionError):
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
            await self._write(
                self.conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("content-type", "text/plain"),
                            ("content-length", str(len(body))),
                            ("connection", "close"),
                        ],
                        reason=_REASONS.get(status, b""),
                    )
                )
            )
            await self._write(self.conn.send(h11.Data(data=body)))
            await self._write(self.conn.send(h11.EndOfMessage()))
        except (
            h11.LocalProtocolError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            ConnectionError,
        ):
            return

    async def _send(self, request: Request, response: Response) -> None:
        headers: list[tuple[str, str]] = [("content-type", response.content_type)]
        headers += list(response.headers.items())
        body = response.body
        if isinstance(body, FileBody):
            await self._send_file(request, response, headers, body)
            return
        headers.append(("content-length", str(len(body))))
        await self._write(
            self.conn.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_REASONS.get(response.status, b"")
                )
            )
        )
        if request.method != "HEAD" and body:
            await self._write(self.conn.send(h11.Data(data=body)))
            response.sent = len(body)
        await self._write(self.conn.send(h11.EndOfMessage()))

    async def _send_file(
        self, request: Request, response: Response, headers: list[tuple[str, str]], body: FileBody
    ) -> None:
        try:
            f = await anyio.open_file(body.path, "rb")
        except OSError:
            await self._send(request, Response(404, b"not found\n", content_type="text/plain"))
            return
        async with f:
            size = os.fstat(f.wrapped.fileno()).st_size
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
            if request.method != "HEAD":
                await f.seek(body.offset)
                left = length
                while left > 0:
                    if body.pace is not None:
                        await body.pace(min(self.limits.write_block, left))
                    block = await f.read(min(self.limits.write_block, left))
                    if not block:
                        # the file shrank under us: the client sees a short body and a closed connection
                        raise anyio.BrokenResourceError
                    await self._write(self.conn.send(h11.Data(data=block)))
                    left -= len(block)
                    response.sent += len(block)
            await self._write(self.conn.send(h11.EndOfMessage()))

    async def _write(self, data: bytes | None) -> None:
        if data:
            await self.stream.send(data)


def _content_length(event: h11.Request) -> int | None:
    for k, v in event.headers:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None

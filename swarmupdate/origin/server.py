"""``swarmupdate origin serve``: a development static server for the origin tree.

Serves files under the tree read-only (no listings, no dotfiles, nothing outside the root),
counts the bytes it sends in ``swarmupdate_origin_sent_bytes_total`` and writes an access log.
Production origins are any static server (nginx, S3, a CDN).
"""

from __future__ import annotations

import posixpath
import stat
import time
from pathlib import Path
from urllib.parse import unquote

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from swarmupdate.net.httpserver import FileBody, Request, Response, ServerLimits, serve
from swarmupdate.obs.logging import get_logger
from swarmupdate.obs.metrics import build_info
from swarmupdate.swarm.ratelimit import TokenBucket

__all__ = ["OriginServer"]

log = get_logger("swarmupdate.origin")


class OriginServer:
    """Serve ``root`` over HTTP with metrics and access logs."""

    def __init__(
        self,
        root: Path,
        registry: CollectorRegistry | None = None,
        limits: ServerLimits = ServerLimits(),
        max_rate: int = 0,
    ) -> None:
        self.root = root.resolve()
        self.limits = limits
        #: total bytes/s over all clients (0 = unlimited): emulates a slow or metered origin link
        self.bucket = (
            TokenBucket(float(max_rate), float(max(max_rate // 4, 256 * 1024))) if max_rate else None
        )
        self.registry = registry or CollectorRegistry()
        self.sent_bytes = Counter(
            "swarmupdate_origin_sent_bytes",
            "Bytes of file content the origin sent (bodies only, not headers)",
            registry=self.registry,
        )
        self.requests = Counter(
            "swarmupdate_origin_requests",
            "Requests the origin answered, by status code class",
            ["code"],
            registry=self.registry,
        )
        build_info(self.registry)

    def resolve(self, url_path: str) -> Path | None:
        """Map a URL path to a regular file under the root, or None (never escapes the root)."""
        path = unquote(url_path)
        if "\x00" in path or "\\" in path or path.endswith("/"):
            return None
        norm = posixpath.normpath("/" + path.lstrip("/"))
        if norm != "/" + path.lstrip("/").rstrip("/") or any(p.startswith(".") for p in norm.split("/") if p):
            return None
        candidate = self.root / norm.lstrip("/")
        try:
            real = candidate.resolve(strict=True)
            st = real.stat()
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not stat.S_ISREG(st.st_mode):
            return None
        return real

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", {"allow": "GET, HEAD"}, "text/plain")
        path = request.path
        if path == "/metrics":
            return Response(200, generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return Response(200, b"ok\n", content_type="text/plain")
        file = await anyio.to_thread.run_sync(self.resolve, path)
        if file is None:
            return Response(404, b"not found\n", content_type="text/plain")
        ctype = "application/json" if file.suffix == ".json" else "application/octet-stream"
        # timestamp.json changes in place; everything else is immutable by name
        cache = "no-cache" if file.name == "timestamp.json" else "public, max-age=31536000, immutable"
        return Response(
            200, FileBody(file, pace=self._pace if self.bucket else None), {"cache-control": cache}, ctype
        )

    async def _pace(self, n: int) -> None:
        assert self.bucket is not None
        wait = self.bucket.take(n, time.monotonic())
        if wait > 0:
            await anyio.sleep(wait)

    def on_response(self, request: Request, response: Response, seconds: float) -> None:
        self.sent_bytes.inc(response.sent)
        self.requests.labels(f"{response.status // 100}xx").inc()
        log.info(
            "access",
            client=request.client,
            method=request.method,
            path=request.path,
            status=response.status,
            bytes=response.sent,
            ms=round(seconds * 1000, 1),
        )

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the bound port through ``task_status``."""
        await serve(
            self.handle, host, port, limits=self.limits, on_response=self.on_response, task_status=task_status
        )

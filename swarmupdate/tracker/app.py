"""The tracker's HTTP handler, for the shared server in ``swarmupdate.net.httpserver``.

``POST /v1/announce`` (see ``wire``), ``GET /metrics``, ``GET /healthz``. A bad announce gets
400 with ``{"error": "<field>: <reason>", "field": "<field>"}``; a body over 4 KiB gets 413
from the server before the handler runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from swarmupdate.net.httpserver import Request, Response, ServerLimits
from swarmupdate.obs.logging import get_logger
from swarmupdate.obs.metrics import build_info
from swarmupdate.tracker.store import PeerStore
from swarmupdate.tracker.wire import AnnounceFieldError, AnnounceReply, decode_announce, encode_reply

__all__ = ["MAX_ANNOUNCE_BYTES", "TRACKER_LIMITS", "TrackerApp"]

log = get_logger("swarmupdate.tracker")

#: an announce is a few hundred bytes; anything much larger is not one
MAX_ANNOUNCE_BYTES = 4 * 1024
#: announces are small and quick: tight limits keep a slow or hostile client cheap
TRACKER_LIMITS = ServerLimits(
    max_header_bytes=8 * 1024, max_body_bytes=MAX_ANNOUNCE_BYTES, idle_timeout=30.0, request_timeout=5.0
)

_JSON = "application/json"


class TrackerApp:
    """Route requests to the peer store and keep the tracker's metrics.

    Metrics: ``swarmupdate_tracker_announces_total{result="ok"|"bad"}``,
    ``swarmupdate_tracker_peers`` (live peers over all swarms), ``swarmupdate_tracker_swarms``,
    ``swarmupdate_build_info``. No peer id ever becomes a label.
    """

    def __init__(
        self,
        store: PeerStore,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.announces = Counter(
            "swarmupdate_tracker_announces",
            "Announces received, by result: ok, or bad (rejected with 400)",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "bad"):
            self.announces.labels(result)
        self.peers = Gauge("swarmupdate_tracker_peers", "Live peers over all swarms", registry=self.registry)
        self.swarms = Gauge("swarmupdate_tracker_swarms", "Swarms with live peers", registry=self.registry)
        build_info(self.registry)

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/v1/announce":
            if request.method != "POST":
                return _text(405, "method not allowed", {"allow": "POST"})
            return self.announce(request)
        if path in ("/metrics", "/healthz"):
            if request.method not in ("GET", "HEAD"):
                return _text(405, "method not allowed", {"allow": "GET, HEAD"})
            if path == "/healthz":
                return _text(200, "ok")
            self.expire()
            return Response(200, generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
        return _text(404, "not found")

    def announce(self, request: Request) -> Response:
        """Handle one ``POST /v1/announce``."""
        try:
            if len(request.body) > MAX_ANNOUNCE_BYTES:
                # the server enforces this first; kept so the handler is safe under any limits
                raise AnnounceFieldError("body", f"larger than {MAX_ANNOUNCE_BYTES} bytes")
            ann = decode_announce(request.body)
            now = self.clock()
            peers = self.store.announce(ann.swarm, ann.peer, ann.left, ann.event, now, numwant=ann.numwant)
            size = self.store.swarm_size(ann.swarm, now)
        except AnnounceFieldError as exc:
            self.announces.labels("bad").inc()
            log.info("announce_rejected", client=request.client, field=exc.field, reason=exc.reason)
            body = json.dumps({"error": str(exc), "field": exc.field}).encode()
            return Response(400, body, content_type=_JSON)
        self.announces.labels("ok").inc()
        self._update_gauges()
        log.debug(
            "announce",
            client=request.client,
            swarm=ann.swarm,
            peer_id=ann.peer.peer_id,
            announce_event=ann.event,
            left=ann.left,
            handed=len(peers),
            swarm_size=size,
        )
        reply = AnnounceReply(self.store.config.interval, size, tuple(peers))
        return Response(200, encode_reply(reply), {"cache-control": "no-store"}, _JSON)

    def expire(self) -> int:
        """Forget expired peers now and refresh the gauges; returns how many were forgotten."""
        removed = self.store.expire(self.clock())
        self._update_gauges()
        if removed:
            log.debug("expired", peers=removed, live=self.store.peer_count, swarms=self.store.swarm_count)
        return removed

    def _update_gauges(self) -> None:
        self.peers.set(self.store.peer_count)
        self.swarms.set(self.store.swarm_count)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, f"{message}\n".encode(), headers or {}, "text/plain")

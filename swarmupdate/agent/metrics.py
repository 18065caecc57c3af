"""The agent's Prometheus metrics. Names are a contract (DESIGN.md "Metrics"); no peer ids in labels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from swarmupdate.net.httpserver import ServerStats
from swarmupdate.obs.metrics import build_info

__all__ = ["AgentMetrics", "SOURCES"]


class _Served(Protocol):
    stats: ServerStats
    preempted: int


SOURCES = ("peer", "origin", "local")


class AgentMetrics:
    """Every metric the agent exports, registered on an injected registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.download_bytes = Counter(
            "swarmupdate_download_bytes",
            "Verified chunk bytes by where they came from",
            ["source"],
            registry=r,
        )
        self.upload_bytes = Counter("swarmupdate_upload_bytes", "Chunk bytes served to peers", registry=r)
        self.verification_failures = Counter(
            "swarmupdate_chunk_verification_failures",
            "Chunks that failed verification (wrong, short or overlong bytes), by source",
            ["source"],
            registry=r,
        )
        self.peers = Gauge(
            "swarmupdate_peers", "Peers known over all swarms, by state", ["state"], registry=r
        )
        self.release_info = Gauge(
            "swarmupdate_release_info",
            "1 for the installed release of each app",
            ["app", "version"],
            registry=r,
        )
        self.update_duration = Histogram(
            "swarmupdate_update_duration_seconds",
            "Time from a release first seen to installed",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.metadata_refresh = Counter(
            "swarmupdate_metadata_refresh", "TUF refreshes by result", ["result"], registry=r
        )
        self.install = Counter(
            "swarmupdate_install", "Install attempts by app and result", ["app", "result"], registry=r
        )
        self.store_bytes = Gauge("swarmupdate_store_bytes", "Bytes held in the chunk store", registry=r)
        #: set by :meth:`peer_cert_expires` (only agents with peer TLS export it)
        self.peer_cert_expiry: Gauge | None = None
        self.release_available = Gauge(
            "swarmupdate_release_available_info",
            "1 for the newest signed release of each app and channel this agent has seen",
            ["app", "version"],
            registry=r,
        )
        self.metadata_expires = Gauge(
            "swarmupdate_metadata_expires_timestamp_seconds",
            "When the trusted TUF metadata of each top-level role expires (Unix time)",
            ["role"],
            registry=r,
        )
        self.last_refresh = Gauge(
            "swarmupdate_metadata_last_refresh_timestamp_seconds",
            "When the last successful TUF refresh finished (Unix time)",
            registry=r,
        )
        build_info(r)
        for source in SOURCES:
            self.download_bytes.labels(source)
            self.verification_failures.labels(source)
        for state in ("active", "banned"):
            self.peers.labels(state)
        for result in ("ok", "error"):
            self.metadata_refresh.labels(result)

    def peer_cert_expires(self, not_after: float) -> None:
        """Export when this machine's peer TLS certificate expires (created on first use)."""
        if self.peer_cert_expiry is None:
            self.peer_cert_expiry = Gauge(
                "swarmupdate_peer_tls_cert_expiry_timestamp_seconds",
                "When this machine's peer TLS certificate expires (Unix time)",
                registry=self.registry,
            )
        self.peer_cert_expiry.set(not_after)

    def watch_server(self, server: _Served) -> None:
        """Export the peer server's connection counters (read at each scrape)."""
        self.registry.register(_ServerCollector(server))


class _ServerCollector(Collector):
    def __init__(self, server: _Served) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        st = self.server.stats
        yield GaugeMetricFamily(
            "swarmupdate_peer_connections", "Open connections to the peer server", value=st.open
        )
        shed = CounterMetricFamily(
            "swarmupdate_peer_connections_shed",
            "Peer-server connections closed under load: evicted (waited longest for a request, gave way "
            "to a newcomer), refused (at the limit, every connection busy), accept_failed (no descriptor)",
            labels=["reason"],
        )
        shed.add_metric(["evicted"], st.evicted)
        shed.add_metric(["refused"], st.refused)
        shed.add_metric(["accept_failed"], st.accept_failed)
        yield shed
        yield CounterMetricFamily(
            "swarmupdate_upload_preemptions",
            "Uploads that sent nothing for a while and lost their slot to a waiting peer",
            value=self.server.preempted,
        )
        yield CounterMetricFamily(
            "swarmupdate_peer_tls_handshake_failures",
            "Peer connections refused in the TLS handshake (no certificate, one of another CA, not TLS)",
            value=st.handshake_failed,
        )

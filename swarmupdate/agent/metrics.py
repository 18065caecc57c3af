"""The agent's Prometheus metrics. Names are a contract (DESIGN.md "Metrics"); no peer ids in labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swarmupdate.obs.metrics import build_info

__all__ = ["AgentMetrics", "SOURCES"]

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

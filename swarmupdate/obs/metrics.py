"""Metrics helpers shared by every component. The registry is always injected."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics

from swarmupdate import __version__

__all__ = ["build_info"]

# ``*_created`` series double every counter's cardinality and no dashboard uses them
disable_created_metrics()  # type: ignore[no-untyped-call]


def build_info(registry: CollectorRegistry) -> Gauge:
    """``swarmupdate_build_info{version}`` = 1."""
    g = Gauge("swarmupdate_build_info", "Build of swarmupdate running", ["version"], registry=registry)
    g.labels(__version__).set(1)
    return g

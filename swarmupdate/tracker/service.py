"""``swarmupdate tracker serve``: the HTTP server and the expiry sweep in one task group."""

from __future__ import annotations

import random
from functools import partial

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from swarmupdate.net.httpserver import serve
from swarmupdate.obs.logging import get_logger
from swarmupdate.tracker.app import TRACKER_LIMITS, TrackerApp
from swarmupdate.tracker.config import TrackerConfig
from swarmupdate.tracker.store import PeerStore

__all__ = ["run_tracker", "serve_tracker"]

log = get_logger("swarmupdate.tracker")


async def run_tracker(
    listen_host: str,
    listen_port: int,
    *,
    interval: float = 30.0,
    ttl: float | None = None,
    max_peers_per_swarm: int = 10_000,
    max_swarms: int = 10_000,
    registry: CollectorRegistry | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a tracker on ``listen_host:listen_port`` (0 picks a port) until cancelled.

    Reports the bound port through ``task_status`` once listening, so
    ``port = await tg.start(run_tracker, "127.0.0.1", 0)`` works.

    Args:
        interval: seconds agents are told to wait between announces.
        ttl: seconds a peer stays listed after its last announce; None: ``3 * interval``.
        max_peers_per_swarm: peers remembered per swarm (the least recently announced go first).
        max_swarms: swarms remembered (the least recently announced go first).
        registry: where the metrics go; a new one by default.

    Raises:
        ConfigError: a setting is out of range.
        OSError: the address cannot be bound.
    """
    config = TrackerConfig(
        interval=interval, ttl=ttl, max_peers_per_swarm=max_peers_per_swarm, max_swarms=max_swarms
    )
    app = TrackerApp(PeerStore(config, rng=random.Random()), registry=registry)
    await serve_tracker(app, listen_host, listen_port, task_status=task_status)


async def serve_tracker(
    app: TrackerApp, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` and sweep expired peers every ``app.store.config.sweep_every`` seconds."""
    config = app.store.config
    async with anyio.create_task_group() as tg:
        bound: int = await tg.start(partial(serve, app.handle, host, port, limits=TRACKER_LIMITS))
        tg.start_soon(_sweep, app, config.sweep_every)
        log.info(
            "tracker_listening",
            host=host,
            port=bound,
            interval=config.interval,
            ttl=config.peer_ttl,
            max_peers_per_swarm=config.max_peers_per_swarm,
            max_swarms=config.max_swarms,
        )
        task_status.started(bound)


async def _sweep(app: TrackerApp, every: float) -> None:
    while True:
        await anyio.sleep(every)
        app.expire()

"""``swarmupdate agent run``: the agent service, wired in one task group.

Tasks: the peer server, the metrics server, the TUF poll loop, one task per live swarm
(download, then install, then seeding with announces and peer exchange), the status writer
and the systemd watchdog. Blocking work (TUF refresh, hashing, install) runs in worker
threads; everything else is async on one event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from swarmupdate import __version__
from swarmupdate.agent import sdnotify
from swarmupdate.agent.config import AgentConfig
from swarmupdate.agent.install import Installer, InstallSpec
from swarmupdate.agent.metrics import AgentMetrics
from swarmupdate.agent.swarm import SwarmRuntime
from swarmupdate.errors import FetchError, RemoteDataError, StoreError, SwarmUpdateError
from swarmupdate.fsutil import atomic_write_bytes
from swarmupdate.model import PeerInfo
from swarmupdate.net.httpserver import Request, Response, serve
from swarmupdate.net.peer_client import PeerClient
from swarmupdate.net.peer_server import PeerServer, preempt_after
from swarmupdate.net.tls import PeerTLS
from swarmupdate.net.tracker_client import TrackerClient
from swarmupdate.obs.logging import get_logger
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.swarm.bitfield import Bitfield
from swarmupdate.swarm.download import DownloadConfig
from swarmupdate.swarm.ratelimit import TokenBucket
from swarmupdate.trust.client import Release, TrustClient
from swarmupdate.trust.fetcher import FallbackFetcher

__all__ = ["Agent"]

log = get_logger("swarmupdate.agent")

#: seconds between checks of the peer TLS files for a renewed certificate
TLS_RELOAD_INTERVAL = 30.0


@dataclass
class _AppState:
    name: str
    channel: str
    installer: Installer
    seen_at: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


class Agent:
    """One fleet machine's agent."""

    def __init__(self, config: AgentConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = config
        self.metrics = AgentMetrics(registry)
        self.rng = random.Random()
        self.store = DiskChunkStore(config.store_dir)
        self.state_dir = config.state_dir
        self.metadata_dir = config.state_dir / "metadata"
        self.manifests_dir = config.state_dir / "manifests"
        self.swarms: dict[str, SwarmRuntime] = {}
        self.apps = {
            a.name: _AppState(
                a.name,
                a.channel,
                Installer(
                    InstallSpec(
                        app=a.name,
                        install_dir=a.install_dir,
                        install_command=tuple(a.install_command),
                        health_command=tuple(a.health_command),
                        health_timeout=a.health_timeout,
                        keep_releases=a.keep_releases,
                    )
                ),
            )
            for a in config.apps
        }
        self.upload_bucket = TokenBucket(float(config.upload_limit), float(max(config.upload_limit, 1 << 20)))
        self.download_bucket = TokenBucket(
            float(config.download_limit), float(max(config.download_limit, 1 << 20))
        )
        #: peer mutual TLS; a bad certificate, key or CA file fails here (ConfigError naming the file)
        self.tls = PeerTLS(config.peer_tls) if config.peer_tls is not None else None
        if self.tls is not None:
            self.metrics.peer_cert_expires(self.tls.not_after)
        self.client = PeerClient(
            connect_timeout=config.connect_timeout,
            request_timeout=config.request_timeout,
            download_pace=self._download_pace if config.download_limit else None,
            tls=self._tls_client if self.tls is not None else None,
        )
        self.fetcher = FallbackFetcher(
            config.origin_metadata_url,
            config.origin_targets_url,
            self._peer_urls,
            connect_timeout=config.connect_timeout,
            peer_tls=self.tls.client if self.tls is not None else None,
        )
        self.trust = TrustClient(
            self.metadata_dir, config.origin_metadata_url, config.origin_targets_url, fetcher=self.fetcher
        )
        self.trackers = TrackerClient(list(config.trackers))
        self.static_peers: list[PeerInfo] = []
        #: peers of the whole fleet (same trusted root), from the trackers: where TUF metadata can
        #: come from when the origin is down and no release swarm is known yet
        self.fleet_peers: list[PeerInfo] = []
        self.fleet_swarm = ""
        self.fleet_size = 0
        self.self_info = PeerInfo(config.node_id, config.peer_advertise, config.site)
        self.peer_port = 0
        self.metrics_port = 0
        self.last_refresh_error = ""
        self._wake = anyio.Event()

    # ------------------------------------------------------------------ rate limits

    async def _download_pace(self, n: int) -> None:
        wait = self.download_bucket.take(n, time.monotonic())
        if wait > 0:
            await anyio.sleep(wait)

    async def _upload_pace(self, n: int) -> None:
        wait = self.upload_bucket.take(n, time.monotonic())
        if wait > 0:
            await anyio.sleep(wait)

    # ------------------------------------------------------------------ what the peer server asks

    def bitfield(self, swarm: str) -> Bitfield | None:
        rt = self.swarms.get(swarm)
        return None if rt is None else rt.have

    def bitfield_version(self, swarm: str) -> int | None:
        rt = self.swarms.get(swarm)
        return None if rt is None else rt.version

    async def wait_bitfield_change(self, swarm: str, version: int) -> None:
        rt = self.swarms.get(swarm)
        if rt is not None:
            await rt.wait_change(version)

    def pulling(self, swarm: str) -> list[int]:
        rt = self.swarms.get(swarm)
        return [] if rt is None else rt.pulling()

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        rt = self.swarms.get(swarm)
        if rt is None:
            return None
        peers = rt.known_peers()
        self.rng.shuffle(peers)
        return peers[:50]

    def _peer_hint(self, swarm: str, peer: PeerInfo) -> None:
        rt = self.swarms.get(swarm)
        if rt is not None and peer.peer_id not in rt.peers:
            rt.add_peers([peer])

    def _peer_urls(self) -> list[str]:
        """Peers to ask for TUF metadata when the origin is down (called from a worker thread)."""
        urls = {p.url for rt in list(self.swarms.values()) for p in rt.known_peers()}
        urls |= {p.url for p in self.static_peers}
        urls |= {p.url for p in self.fleet_peers}
        out = sorted(urls)  # the fetcher keeps only https:// peers under peer TLS
        random.shuffle(out)
        return out

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound peer port once listening."""
        for app in self.apps.values():
            await anyio.to_thread.run_sync(app.installer.recover)
        await anyio.to_thread.run_sync(TrustClient.init, self.metadata_dir, self.cfg.trusted_root)
        root_bytes = await anyio.to_thread.run_sync(self.cfg.trusted_root.read_bytes)
        self.fleet_swarm = hashlib.sha256(root_bytes).hexdigest()
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with anyio.create_task_group() as tg:
                host, port = self.cfg.peer_listen
                server = PeerServer(
                    self_info=self.self_info,
                    swarms=self,
                    store=self.store,
                    metadata_dir=self.metadata_dir,
                    manifests_dir=self.manifests_dir,
                    max_upload_slots=self.cfg.max_upload_slots,
                    preempt_after=preempt_after(self.cfg.max_upload_slots, self.cfg.upload_limit),
                    upload_pace=self._upload_pace if self.cfg.upload_limit else None,
                    on_upload=self.metrics.upload_bytes.inc,
                    on_peer_hint=self._peer_hint,
                )
                self.metrics.watch_server(server)
                self.client.idle = lambda: server.uploads == 0
                self.peer_port = await tg.start(
                    partial(server.serve, ssl_context=self._tls_server if self.tls is not None else None),
                    host,
                    port,
                )
                if not self.self_info.url:
                    scheme = "https" if self.tls is not None else "http"
                    self.self_info = PeerInfo(
                        self.cfg.node_id,
                        f"{scheme}://{_advertise_host(host)}:{self.peer_port}",
                        self.cfg.site,
                    )
                    server.self_info = self.self_info
                self.client.me = self.self_info
                if self.cfg.metrics_listen is not None:
                    mhost, mport = self.cfg.metrics_listen
                    self.metrics_port = await tg.start(serve, self._metrics_handler, mhost, mport)
                log.info(
                    "agent_started",
                    node=self.cfg.node_id,
                    peer_url=self.self_info.url,
                    metrics_port=self.metrics_port,
                    version=__version__,
                )
                tg.start_soon(self._static_peers_loop)
                tg.start_soon(self._fleet_announce_loop)
                tg.start_soon(self._poll_loop, tg)
                tg.start_soon(self._status_loop)
                tg.start_soon(self._watchdog_loop)
                if self.tls is not None:
                    tg.start_soon(self._tls_reload_loop, self.tls)
                sdnotify.ready()
                task_status.started(self.peer_port)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                sdnotify.stopping()
                async with anyio.create_task_group() as tg2:
                    for rt in list(self.swarms.values()):
                        tg2.start_soon(self._announce, rt, "stopped")
                await self.client.aclose()

    async def _metrics_handler(self, request: Request) -> Response:
        if request.path == "/metrics":
            self.metrics.store_bytes.set(self.store.total_bytes())
            self._update_peer_gauges()
            return Response(200, generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            return Response(200, b"ok\n", content_type="text/plain")
        return Response(404, b"not found\n", content_type="text/plain")

    def _update_peer_gauges(self) -> None:
        active = {pid for rt in self.swarms.values() for pid in rt.peers if pid not in rt.banned}
        banned = {pid for rt in self.swarms.values() for pid in rt.banned}
        self.metrics.peers.labels("active").set(len(active))
        self.metrics.peers.labels("banned").set(len(banned))

    # ------------------------------------------------------------------ polling TUF

    async def _poll_loop(self, tg: TaskGroup) -> None:
        backoff = 2.0
        while True:
            ok = await self._poll_once(tg)
            if ok:
                backoff = 2.0
                base = self.cfg.poll_interval
                delay = base * (1 + self.rng.uniform(-self.cfg.poll_jitter, self.cfg.poll_jitter))
            else:
                delay = min(backoff, self.cfg.poll_interval)
                backoff = min(backoff * 2, 60.0)
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    def poll_now(self) -> None:
        """Ask the poll loop to refresh at once (SIGHUP, tests)."""
        self._wake.set()

    async def _poll_once(self, tg: TaskGroup) -> bool:
        ok = True
        for app in self.apps.values():
            try:
                release = await anyio.to_thread.run_sync(self.trust.latest_release, app.name, app.channel)
            except SwarmUpdateError as exc:
                ok = False
                self.last_refresh_error = str(exc)
                self.metrics.metadata_refresh.labels("error").inc()
                log.warning("refresh_failed", app=app.name, error=str(exc))
                continue
            self.metrics.metadata_refresh.labels("ok").inc()
            self.metrics.last_refresh.set(time.time())
            for role, expires in self.trust.expires.items():
                self.metrics.metadata_expires.labels(role).set(expires)
            self.last_refresh_error = ""
            if release is None:
                continue
            for labels in list(self.metrics.release_available._metrics):
                if labels[0] == app.name and labels[1] != release.version:
                    self.metrics.release_available.remove(*labels)
            self.metrics.release_available.labels(app.name, release.version).set(1)
            current = _current(app)
            if current is not None:
                self.metrics.release_info.labels(app.name, current).set(1)
            if release.swarm_id in self.swarms:
                continue
            if release.version != current and release.version in app.failed:
                continue
            app.seen_at.setdefault(release.version, time.monotonic())
            try:  # the verified manifest, served to peers (/v1/targets)
                await anyio.to_thread.run_sync(
                    atomic_write_bytes, self.manifests_dir / release.manifest_sha256, release.manifest_bytes
                )
            except StoreError as exc:  # our disk (full, read-only): this poll fails, the next retries
                ok = False
                self.last_refresh_error = str(exc)
                log.warning("manifest_write_failed", app=app.name, error=str(exc))
                continue
            rt = SwarmRuntime(
                release=release,
                self_info=self.self_info,
                store=self.store,
                client=self.client,
                metrics=self.metrics,
                origin_chunks_url=self.cfg.origin_url.rstrip("/"),
                config=self._download_config(),
                rng=random.Random(self.rng.random()),
            )
            rt.add_peers(self.static_peers)
            self.swarms[release.swarm_id] = rt
            tg.start_soon(self._run_swarm, rt, app, release.version == current)
        return ok

    def _download_config(self) -> DownloadConfig:
        c = self.cfg
        return DownloadConfig(
            per_peer_inflight=c.per_peer_inflight,
            max_inflight=c.max_inflight,
            origin_fallback_delay=c.origin_fallback_delay,
            origin_pullers=c.origin_pullers,
            site=c.site,
        )

    # ------------------------------------------------------------------ one swarm

    async def _run_swarm(self, rt: SwarmRuntime, app: _AppState, installed: bool) -> None:
        rel = rt.release
        bound = log.bind(app=app.name, version=rel.version, swarm=rel.swarm_id[:12])
        with rt.scope:
            await self._swarm_tasks(rt, app, installed, bound)

    async def _swarm_tasks(self, rt: SwarmRuntime, app: _AppState, installed: bool, bound: Any) -> None:
        rel = rt.release
        # learn the swarm (peers, its size) before choosing sources, so a joining agent does not
        # mistake a busy swarm for an empty one and go to the origin
        with anyio.move_on_after(self.cfg.connect_timeout + 1):
            await self._announce(rt, "started")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce_loop, rt)
            tg.start_soon(self._pex_loop, rt)
            if installed:
                await anyio.to_thread.run_sync(rt.scan_local)
                bound.info("seeding", have=len(rt.have), chunks=rt.have.n)
                return  # announce and peer exchange go on in tg
            bound.info("download_started", chunks=rt.have.n, length=rel.length)
            await rt.download()
            bound.info(
                "download_complete",
                seconds=round((rt.completed_at or 0) - rt.started_at, 2),
                **rt.bytes_by_source,
            )
            tg.start_soon(self._announce, rt, "completed")
            await self._install(rt, app, bound)

    async def _install(self, rt: SwarmRuntime, app: _AppState, bound: Any) -> None:
        rel = rt.release
        try:
            artifact = await anyio.to_thread.run_sync(self._assemble, rel)
        except (RemoteDataError, StoreError) as exc:
            bound.error("assemble_failed", error=str(exc))
            self.metrics.install.labels(app.name, "failed").inc()
            # leave the swarm: the next poll starts it afresh from what the store still holds
            if self.swarms.get(rel.swarm_id) is rt:
                del self.swarms[rel.swarm_id]
            rt.scope.cancel()
            return
        try:
            result = await anyio.to_thread.run_sync(
                # _assemble hashed the file as it wrote it: the installer moves it without hashing again
                partial(app.installer.install, rel.version, artifact, rel.sha256, consume=True, verified=True)
            )
        except SwarmUpdateError as exc:
            bound.error("install_failed", error=str(exc))
            self.metrics.install.labels(app.name, "failed").inc()
            if isinstance(exc, StoreError):
                # our disk refused (full, read-only), not the release: leave the swarm, and the next
                # poll tries again from the chunks the store holds
                if self.swarms.get(rel.swarm_id) is rt:
                    del self.swarms[rel.swarm_id]
                rt.scope.cancel()
            else:
                app.failed.add(rel.version)
            return
        finally:
            artifact.unlink(missing_ok=True)
        self.metrics.install.labels(app.name, result.result).inc()
        bound.info(
            "install_finished", result=result.result, previous=result.previous, message=result.message[-500:]
        )
        if result.result in ("installed", "already"):
            for labels in list(self.metrics.release_info._metrics):  # drop the old version's series
                if labels[0] == app.name and labels[1] != rel.version:
                    self.metrics.release_info.remove(*labels)
            self.metrics.release_info.labels(app.name, rel.version).set(1)
            seen = app.seen_at.get(rel.version)
            if seen is not None and result.result == "installed":
                self.metrics.update_duration.observe(time.monotonic() - seen)
            self._retire_old_swarms(app.name, keep=rel.swarm_id)
            await anyio.to_thread.run_sync(self._evict)
        else:
            app.failed.add(rel.version)

    def _assemble(self, rel: Release) -> Path:
        """Concatenate the verified chunks and check the whole against the signed target."""
        out_dir = self.state_dir / "assembly"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{rel.sha256}.partial"
        whole = hashlib.sha256()
        try:
            with out.open("wb") as f:
                for ref in rel.manifest.chunks:
                    data = self.store.read(ref.sha256)
                    whole.update(data)
                    f.write(data)
        except OSError as exc:
            out.unlink(missing_ok=True)
            raise StoreError(f"{out}: {exc.strerror or exc}") from exc
        except KeyError as exc:  # a chunk evicted under us: the next poll downloads it again
            out.unlink(missing_ok=True)
            raise StoreError(f"{rel.target_path}: chunk {exc} left the store before assembly") from exc
        if whole.hexdigest() != rel.sha256:
            out.unlink(missing_ok=True)
            raise RemoteDataError(f"{rel.target_path}: assembled artifact does not match the signed sha256")
        final = out_dir / rel.sha256
        out.replace(final)
        return final

    def _retire_old_swarms(self, app: str, keep: str) -> None:
        """Leave the swarms of older releases of ``app``: their chunks stay served until evicted,
        but we stop announcing them and downloading them."""
        for swarm, rt in list(self.swarms.items()):
            if rt.release.app == app and swarm != keep:
                del self.swarms[swarm]
                rt.scope.cancel()

    def _evict(self) -> None:
        keep = {ref.sha256 for rt in self.swarms.values() for ref in rt.release.manifest.chunks}
        removed = self.store.evict(keep, self.cfg.store_max_bytes)
        if removed:
            log.info("store_evicted", chunks=len(removed))
        self.metrics.store_bytes.set(self.store.total_bytes())

    # ------------------------------------------------------------------ discovery

    async def _announce(self, rt: SwarmRuntime, event: str) -> float:
        if not self.cfg.trackers:
            return 30.0
        result = await self.trackers.announce(
            rt.swarm,
            PeerInfo(self.self_info.peer_id, self.self_info.url, self.cfg.site, rt.complete),
            rt.left,
            event,
        )
        rt.add_peers(list(result.peers))
        # a new release's swarm is small at first, but the fleet (same trusted root) is about the size
        # it will grow to: use it as a floor so early joiners do not all think they must pull
        size = max(result.swarm_size, self.fleet_size)
        if size:
            rt.set_swarm_size(size)
        return float(result.interval or 30.0)

    async def _announce_loop(self, rt: SwarmRuntime) -> None:
        interval = 10.0
        while True:
            # while downloading, announce more often: new peers matter most then
            await anyio.sleep(min(interval, 10.0) if not rt.complete else interval)
            interval = await self._announce(rt, "")

    async def _fleet_announce_loop(self) -> None:
        """Announce to the fleet swarm (named by the trusted root): peers to ask for metadata."""
        if not self.cfg.trackers:
            return
        while True:
            result = await self.trackers.announce(
                self.fleet_swarm,
                PeerInfo(self.self_info.peer_id, self.self_info.url, self.cfg.site, True),
                0,
                "",
            )
            if result.peers:
                self.fleet_peers = list(result.peers)
            self.fleet_size = max(result.swarm_size, len(self.fleet_peers) + 1)
            await anyio.sleep(float(result.interval or 30.0) if self.fleet_peers else 2.0)

    async def _pex_loop(self, rt: SwarmRuntime) -> None:
        while True:
            await anyio.sleep(2.0 if not rt.complete else 30.0)
            peers = rt.known_peers()
            for peer in self.rng.sample(peers, min(2, len(peers))):
                try:
                    rt.add_peers(await self.client.peers(peer.url, rt.swarm))
                except FetchError:
                    continue

    def _tls_server(self) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls.server

    def _tls_client(self) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls.client

    async def _tls_reload_loop(self, tls: PeerTLS) -> None:
        """Pick up a renewed certificate, key or fleet CA without a restart (checked every 30 s)."""
        while True:
            await anyio.sleep(TLS_RELOAD_INTERVAL)
            try:
                if await anyio.to_thread.run_sync(tls.reload_if_changed):
                    self.fetcher.set_peer_tls(tls.client)
                    self.metrics.peer_cert_expires(tls.not_after)
                    log.info("peer_tls_reloaded", cert=str(tls.config.cert), not_after=tls.not_after)
            except SwarmUpdateError as exc:  # a half-renewed file: keep the old one, say so, try again
                log.warning("peer_tls_reload_failed", error=str(exc))

    async def _static_peers_loop(self) -> None:
        pending = list(self.cfg.static_peers)
        while pending:
            still = []
            for url in pending:
                try:
                    info = await self.client.info(url)
                except FetchError:
                    still.append(url)
                    continue
                if info.peer_id != self.self_info.peer_id:
                    self.static_peers.append(info)
                    for rt in self.swarms.values():
                        rt.add_peers([info])
            pending = still
            await anyio.sleep(5.0)

    # ------------------------------------------------------------------ status, watchdog

    def status(self) -> dict[str, Any]:
        apps = {}
        for name, app in self.apps.items():
            apps[name] = {
                "channel": app.channel,
                "current": _current(app),
                "failed": sorted(app.failed),
            }
        swarms = []
        for rt in self.swarms.values():
            swarms.append(
                {
                    "swarm": rt.swarm,
                    "app": rt.release.app,
                    "version": rt.release.version,
                    "have": len(rt.have),
                    "chunks": rt.have.n,
                    "complete": rt.complete,
                    "left_bytes": rt.left,
                    "peers": len(rt.known_peers()),
                    "banned": len(rt.banned),
                    "swarm_size": rt.swarm_size,
                    "bytes": dict(rt.bytes_by_source),
                    "error": rt.error,
                }
            )
        total = {
            s: int(self.metrics.download_bytes.labels(s)._value.get()) for s in ("peer", "origin", "local")
        }
        return {
            "node_id": self.cfg.node_id,
            "peer_url": self.self_info.url,
            "metrics_port": self.metrics_port,
            "pid": os.getpid(),
            "updated": time.time(),
            "apps": apps,
            "swarms": swarms,
            "bytes": total,
            "uploaded": int(self.metrics.upload_bytes._value.get()),
            "refresh_error": self.last_refresh_error,
            "metadata_from_peers": self.fetcher.served_by_peers,
            "fleet_size": self.fleet_size,
        }

    async def _status_loop(self) -> None:
        path = self.state_dir / "status.json"
        while True:
            data = json.dumps(self.status(), indent=2, sort_keys=True).encode()
            try:
                await anyio.to_thread.run_sync(partial(atomic_write_bytes, path, data, durable=False))
            except StoreError as exc:
                log.warning("status_write_failed", error=str(exc))
            downloading = [rt for rt in self.swarms.values() if not rt.complete]
            sdnotify.status(
                f"{len(downloading)} downloading, {len(self.swarms)} swarms"
                if downloading
                else f"idle, {len(self.swarms)} swarms seeding"
            )
            await anyio.sleep(1.0)

    async def _watchdog_loop(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            sdnotify.watchdog()
            await anyio.sleep(interval / 2)


def _current(app: _AppState) -> str | None:
    """The installed version, or None when ``current`` is missing or not ours (logged)."""
    try:
        return app.installer.current()
    except StoreError as exc:
        log.error("install_dir_unusable", app=app.name, error=str(exc))
        return None


def _advertise_host(listen_host: str) -> str:
    if listen_host not in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        return f"[{listen_host}]" if ":" in listen_host else listen_host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostname()

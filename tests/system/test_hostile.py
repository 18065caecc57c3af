"""Hostile peers in a real swarm: corrupt, truncated and endless chunk bodies.

Each adversary is a real HTTP server on loopback that announces itself to the tracker as a
complete seed (so trackers hand it out first), claims every chunk in its bitfield, and then
serves bad bodies. Honest agents must finish and install only the signed bytes. They ban the
forgers (wrong bytes, a body longer than signed); a body cut short is what an honest peer that
stops or restarts mid-upload sends too, so its sender is dropped after a few failures, not banned.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import httpx
import pytest

from swarmupdate.swarm.bitfield import Bitfield
from tests.fleet import Fleet, metric, scrape, sha256, wait_for

pytestmark = pytest.mark.slow
MB = 1024 * 1024


class Adversary:
    """A fake peer on a raw socket; ``mode`` is corrupt, truncated or endless."""

    def __init__(self, mode: str, n_chunks: int, lengths: dict[str, int]) -> None:
        self.mode = mode
        self.n = n_chunks
        self.lengths = lengths
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.peer_id = f"evil-{mode}"
        self.served = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    piece = conn.recv(4096)
                    if not piece:
                        return
                    head += piece
                path = head.split(b" ", 2)[1].decode()
                if path.endswith("/bitfield"):
                    body = Bitfield.full(self.n).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                        + body
                    )
                elif path.endswith("/peers"):
                    body = b"[]"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + body)
                elif path == "/healthz":
                    body = json.dumps({"status": "ok", "peer_id": self.peer_id}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                        + body
                    )
                elif path.startswith("/v1/chunks/"):
                    self.served += 1
                    length = self.lengths.get(path.rsplit("/", 1)[1], 1024)
                    if self.mode == "corrupt":
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % length
                        )
                        conn.sendall(os.urandom(length))
                    elif self.mode == "truncated":
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % length
                        )
                        conn.sendall(os.urandom(length // 2))
                    else:  # endless: no length, bytes until the client gives up (bounded here too)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        block = os.urandom(64 * 1024)
                        for _ in range(2000):
                            conn.sendall(block)
                else:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                return

    def announce(self, tracker: str, swarm: str) -> None:
        body = {
            "swarm": swarm,
            "peer_id": self.peer_id,
            "url": self.url,
            "site": "site-0",
            "complete": True,
            "left": 0,
            "event": "completed",
        }
        httpx.post(f"{tracker}/v1/announce", json=body, timeout=5).raise_for_status()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def test_corrupt_and_endless_peers_are_banned_truncating_ones_dropped(fleet: Fleet) -> None:
    rel, data = fleet.publish("1.0", 12 * MB)
    fleet.start_origin(extra=("--max-rate", "10MB/s"))
    tracker = fleet.start_tracker()
    from swarmupdate.manifest import Manifest

    manifest_file = next((fleet.repo_dir / "origin/targets/web/1.0").glob("*.manifest.json"))
    manifest = Manifest.decode(manifest_file.read_bytes())
    lengths = {c.sha256: c.length for c in manifest.chunks}
    adversaries = [Adversary(m, len(manifest.chunks), lengths) for m in ("corrupt", "truncated", "endless")]
    try:
        for adv in adversaries:
            adv.announce(tracker.url, rel.sha256)
        fleet.start_agents(4)
        fleet.wait_installed("1.0", timeout=150)
        failures = 0.0
        banned = 0.0
        for a in fleet.agents:
            assert sha256(a.installed_bytes()) == sha256(data) == rel.sha256
            m = scrape(a.metrics_url)
            failures += metric(m, "swarmupdate_chunk_verification_failures_total", source="peer")
            banned += metric(m, "swarmupdate_peers", state="banned")
        assert all(adv.served > 0 for adv in adversaries), [adv.served for adv in adversaries]
        assert failures >= 2, failures
        assert banned >= 2, banned
        # the status of every agent that met an adversary lists it as banned
        wait_for(
            lambda: sum(s["banned"] for a in fleet.agents for s in a.status()["swarms"]) >= 2,
            10,
            "status files to show the bans",
        )
        bans = [
            json.loads(line)
            for a in fleet.agents
            for line in a.log.read_text().splitlines()
            if '"peer_banned"' in line
        ]
        banned_ids = {b["peer"] for b in bans}
        assert {"evil-corrupt", "evil-endless"} <= banned_ids, bans
        assert "evil-truncated" not in banned_ids, bans
    finally:
        for adv in adversaries:
            adv.close()

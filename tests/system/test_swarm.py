"""The swarm with real processes and sockets on loopback: origin, trackers, agents."""

from __future__ import annotations

import random
import signal

import pytest

from tests.fleet import Fleet, metric, scrape, sha256, wait_for

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def _bytes_by_source(agent_metrics: dict) -> dict[str, float]:  # type: ignore[type-arg]
    return {
        s: metric(agent_metrics, "swarmupdate_download_bytes_total", source=s)
        for s in ("peer", "origin", "local")
    }


def test_ten_agents_one_release(fleet: Fleet) -> None:
    size = 24 * MB
    # the origin is the expensive, slow link; peers are fast: the setting swarming is for
    fleet.start_origin(extra=("--max-rate", "40MB/s"))
    fleet.start_tracker()
    # a running fleet, then a release: agents discover it at their next poll (2 s, with jitter)
    fleet.start_agents(10)
    wait_for(
        lambda: all(a.status().get("fleet_size", 0) >= 10 for a in fleet.agents), 30, "the fleet to form"
    )
    rel, data = fleet.publish("1.0", size)
    fleet.wait_installed("1.0", timeout=120)
    for a in fleet.agents:
        assert sha256(a.installed_bytes()) == rel.sha256 == sha256(data)
    copies = fleet.origin_sent() / size
    assert copies <= 1.25, f"origin sent {copies:.2f} copies"
    peer_total = 0.0
    for a in fleet.agents:
        by_source = _bytes_by_source(scrape(a.metrics_url))
        # every byte an agent holds for this release was counted once, by where it came from
        assert sum(by_source.values()) == size, (a.name, by_source)
        peer_total += by_source["peer"]
    uploaded = sum(metric(scrape(a.metrics_url), "swarmupdate_upload_bytes_total") for a in fleet.agents)
    assert peer_total > 0
    assert uploaded == pytest.approx(peer_total, rel=0.05)


def test_second_release_moves_only_new_chunks(fleet: Fleet) -> None:
    size = 16 * MB
    _, data = fleet.publish("1.0", size, seed=3)
    fleet.start_origin()
    fleet.start_tracker()
    fleet.start_agents(4)
    fleet.wait_installed("1.0")
    before_origin = fleet.origin_sent()
    before = {a.name: _bytes_by_source(scrape(a.metrics_url)) for a in fleet.agents}
    changed = bytearray(data)
    changed[5 * MB : 5 * MB + 100_000] = random.Random(4).randbytes(100_000)
    rel2, _ = fleet.publish("1.1", data=bytes(changed))
    for a in fleet.agents:
        a.kill(signal.SIGHUP) if False else a.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    fleet.wait_installed("1.1")
    moved_origin = fleet.origin_sent() - before_origin
    moved_peer = 0.0
    for a in fleet.agents:
        after = _bytes_by_source(scrape(a.metrics_url))
        moved_peer += after["peer"] - before[a.name]["peer"]
        assert after["local"] - before[a.name]["local"] >= size - rel2.new_chunk_bytes
        assert sha256(a.installed_bytes()) == rel2.sha256
    network = moved_origin + moved_peer
    # only the new chunks travel (plus a little metadata), to each of the 4 agents
    assert network <= 4 * rel2.new_chunk_bytes + 200_000, (network, rel2.new_chunk_bytes)
    assert rel2.new_chunk_bytes < size / 4


def test_origin_killed_after_first_completes(fleet: Fleet) -> None:
    size = 16 * MB
    fleet.publish("1.0", size)
    fleet.start_origin(extra=("--max-rate", "8MB/s"))
    fleet.start_tracker()
    first = fleet.start_agents(1)
    fleet.wait_installed("1.0", first)
    fleet.origin.kill()  # type: ignore[union-attr]
    # agents that join now find the fleet through the tracker and get everything from peers:
    # the TUF metadata (verified as if from the origin), the manifest and the chunks
    others = fleet.start_agents(5)
    fleet.wait_installed("1.0", others, timeout=90)
    for a in others:
        wait_for(
            lambda a=a: a.status().get("metadata_from_peers", 0) > 0,
            10,  # type: ignore[misc]
            f"{a.name}'s status to show TUF metadata from peers",
        )
        assert sha256(a.installed_bytes()) == sha256(fleet.agents[0].installed_bytes())


def test_trackers_killed_mid_download(fleet: Fleet) -> None:
    size = 24 * MB
    fleet.publish("1.0", size)
    fleet.start_origin(extra=("--max-rate", "6MB/s"))
    fleet.start_tracker()
    fleet.start_tracker()
    fleet.start_agents(6)
    # once every agent has found a peer, kill both trackers
    wait_for(
        lambda: all(any(s["peers"] for s in a.status().get("swarms", [])) for a in fleet.agents),
        30,
        "every agent to know a peer",
    )
    for t in fleet.trackers:
        t.kill()
    fleet.wait_installed("1.0", timeout=120)


def test_third_of_agents_killed_then_restarted_resume(fleet: Fleet) -> None:
    size = 24 * MB
    rel, _ = fleet.publish("1.0", size)
    fleet.start_origin(extra=("--max-rate", "6MB/s"))
    fleet.start_tracker()
    fleet.start_agents(6)
    victims = fleet.agents[:2]
    wait_for(
        lambda: all(sum(s["have"] for s in v.status().get("swarms", [])) > 0 for v in victims),
        60,
        "victims to hold some chunks",
    )
    held = {}
    for v in victims:
        v.kill()
        held[v.name] = {p.name for p in (v.dir / "store").rglob("*") if p.is_file() and len(p.name) == 64}
        assert held[v.name]
    survivors = fleet.agents[2:]
    fleet.wait_installed("1.0", survivors, timeout=120)
    for v in victims:
        v.start("serving peers")
    fleet.wait_installed("1.0", victims, timeout=60)
    for v in victims:
        m = scrape(v.metrics_url)
        # after the restart, the chunks verified before the kill came from the local store, not the network
        local = metric(m, "swarmupdate_download_bytes_total", source="local")
        assert local >= len(held[v.name]) * 256 * 1024, (v.name, local)
        assert metric(m, "swarmupdate_download_bytes_total") == size
        assert sha256(v.installed_bytes()) == rel.sha256


def test_agent_status_command(fleet: Fleet) -> None:
    import json
    import subprocess

    fleet.publish("1.0", 2 * MB)
    fleet.start_origin()
    fleet.start_agents(1)
    fleet.wait_installed("1.0")
    agent = fleet.agents[0]
    wait_for(
        lambda: any(s.get("complete") for s in agent.status().get("swarms", [])), 10, "status to catch up"
    )
    out = subprocess.run(
        [
            *__import__("tests.fleet", fromlist=["cli"]).cli(
                "agent", "status", "--config", str(agent.config), "--json"
            )
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["apps"]["web"]["current"] == "1.0"
    assert doc["bytes"]["origin"] == 2 * MB
    assert doc["running"] is True
    text = subprocess.run(
        [*__import__("tests.fleet", fromlist=["cli"]).cli("agent", "status", "--config", str(agent.config))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "installed 1.0" in text.stdout and "seeding" in text.stdout


def test_static_peers_without_tracker(fleet: Fleet) -> None:
    """No tracker at all: agents configured with each other as static peers still swarm."""
    size = 8 * MB
    rel, _ = fleet.publish("1.0", size)
    fleet.start_origin(extra=("--max-rate", "4MB/s"))
    seed = fleet.start_agents(1, trackers=[])[0]
    fleet.wait_installed("1.0", [seed])
    others = fleet.start_agents(3, trackers=[], static_peers=[seed.peer_url])
    fleet.wait_installed("1.0", others, timeout=60)
    peer_bytes = sum(_bytes_by_source(scrape(a.metrics_url))["peer"] for a in others)
    assert peer_bytes >= 2 * size, peer_bytes  # most of it came from the seed, not the slow origin
    for a in others:
        assert sha256(a.installed_bytes()) == rel.sha256


def test_upload_rate_limit_holds(fleet: Fleet) -> None:
    """A seed limited to 1 MB/s of uploads takes at least the time the limit implies."""
    import time

    size = 4 * MB
    fleet.publish("1.0", size)
    fleet.start_origin()
    seed = fleet.start_agents(1, trackers=[], extra='upload_limit = "1MB/s"\n')[0]
    fleet.wait_installed("1.0", [seed], timeout=60)
    fleet.origin.kill()  # type: ignore[union-attr]  # no way round the seed's limit
    started = time.monotonic()
    leecher = fleet.start_agents(1, trackers=[], static_peers=[seed.peer_url])[0]
    fleet.wait_installed("1.0", [leecher], timeout=60)
    elapsed = time.monotonic() - started
    uploaded = metric(scrape(seed.metrics_url), "swarmupdate_upload_bytes_total")
    assert uploaded >= size * 0.9
    # 4 MiB through a 1 MB/s bucket (with its burst of 1 MiB) cannot take less than ~3 s
    assert elapsed >= 3.0, elapsed

"""Peer mutual TLS with real agent processes: a fleet swarms over TLS, and machines outside it (a
certificate of another CA, no certificate, plain HTTP) get nothing from the fleet's agents."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from swarmupdate.fleetca import init_ca, issue
from tests.fleet import Agent, Fleet, metric, scrape, sha256, wait_for

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def _tls(pki: Path, ca: str, name: str) -> str:
    issue(pki / ca, name, pki / "certs", ips=["127.0.0.1"])
    return (
        "[peer_tls]\n"
        f'ca = "{pki / "fleet-ca" / "ca.pem"}"\n'
        f'cert = "{pki / "certs" / f"{name}.pem"}"\n'
        f'key = "{pki / "certs" / f"{name}.key"}"\n'
    )


def _peer_bytes(a: Agent) -> float:
    return metric(scrape(a.metrics_url), "swarmupdate_download_bytes_total", source="peer")


def _handshake_failures(a: Agent) -> float:
    return metric(scrape(a.metrics_url), "swarmupdate_peer_tls_handshake_failures_total")


def test_fleet_swarms_over_mutual_tls_and_outsiders_get_nothing(fleet: Fleet, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_ca(pki / "fleet-ca")
    init_ca(pki / "other-ca", name="another fleet")
    size = 8 * MB
    rel, data = fleet.publish("1.0", size)
    fleet.start_origin(extra=("--max-rate", "4MB/s"))  # slow origin: the fleet must swarm to finish soon
    fleet.start_tracker()
    members = []
    for i in range(4):
        agent = fleet.write_agent(i, extra=_tls(pki, "fleet-ca", f"agent-{i}"))
        agent.start("serving peers")
        members.append(agent)
    fleet.agents += members
    fleet.wait_installed("1.0", members, timeout=90)
    for a in members:
        assert a.peer_url.startswith("https://127.0.0.1:")
        assert sha256(a.installed_bytes()) == rel.sha256 == sha256(data)
        expiry = metric(scrape(a.metrics_url), "swarmupdate_peer_tls_cert_expiry_timestamp_seconds")
        assert expiry > 0
    assert sum(_peer_bytes(a) for a in members) >= size  # they swarmed, over TLS
    before = sum(_handshake_failures(a) for a in members)
    assert before == 0

    # outsiders on the same tracker: one with a certificate of another CA (it trusts the fleet CA, so
    # only the fleet refuses it), one that speaks plain HTTP; both may only use the origin
    stranger = fleet.write_agent(4, extra=_tls(pki, "other-ca", "stranger"))
    plain = fleet.write_agent(5)
    for a in (stranger, plain):
        a.start("serving peers")
        fleet.agents.append(a)
    fleet.wait_installed("1.0", [stranger, plain], timeout=90)
    for a in (stranger, plain):
        assert sha256(a.installed_bytes()) == rel.sha256
        assert _peer_bytes(a) == 0, f"{a.name} got chunks from the fleet"
    wait_for(
        lambda: sum(_handshake_failures(a) for a in members) > before,
        20,
        "the fleet to refuse the stranger's handshakes",
    )
    assert (
        sum(metric(scrape(a.metrics_url), "swarmupdate_upload_bytes_total") for a in (stranger, plain)) == 0
    )

    # a client without a certificate, and one with another CA's, get no byte of a chunk
    chunk = next((fleet.repo_dir / "origin" / "chunks").glob("*/*")).name
    url = f"{members[0].peer_url}/v1/chunks/{chunk}"
    no_cert = ssl.create_default_context(cafile=str(pki / "fleet-ca" / "ca.pem"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=no_cert, timeout=5)
    other = ssl.create_default_context(cafile=str(pki / "fleet-ca" / "ca.pem"))
    other.load_cert_chain(pki / "certs" / "stranger.pem", pki / "certs" / "stranger.key")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=other, timeout=5)
    # and the fleet's own certificate does get it
    member = ssl.create_default_context(cafile=str(pki / "fleet-ca" / "ca.pem"))
    member.load_cert_chain(pki / "certs" / "agent-1.pem", pki / "certs" / "agent-1.key")
    got = httpx.get(url, verify=member, timeout=5)
    assert got.status_code == 200
    assert sha256(got.content) == chunk

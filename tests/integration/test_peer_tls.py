"""Peer mutual TLS on real sockets: only holders of a fleet-CA certificate get anything from an agent,
and an agent talks only to such peers."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import httpx
import pytest

from swarmupdate.errors import ConfigError, FetchError
from swarmupdate.fleetca import init_ca, issue
from swarmupdate.model import ChunkRef, PeerInfo
from swarmupdate.net.httpserver import ServerLimits
from swarmupdate.net.peer_client import PeerClient
from swarmupdate.net.peer_server import PeerServer
from swarmupdate.net.tls import PeerTLS, PeerTLSConfig
from swarmupdate.store.disk import DiskChunkStore
from swarmupdate.swarm.bitfield import Bitfield

SWARM = "ab" * 32
DATA = os.urandom(300_000)
REF = ChunkRef(hashlib.sha256(DATA).hexdigest(), len(DATA))


class Directory:
    def pulling(self, swarm: str) -> list[int]:
        return []

    def bitfield(self, swarm: str) -> Bitfield | None:
        return Bitfield(4, [0, 2]) if swarm == SWARM else None

    def known_peers(self, swarm: str) -> list[PeerInfo] | None:
        return [] if swarm == SWARM else None


@dataclass
class Pki:
    fleet_ca: Path
    other_ca: Path
    base: Path

    def cfg(self, name: str, ca: Path | None = None, *, check_hostname: bool = False) -> PeerTLSConfig:
        return PeerTLSConfig(
            ca=(ca or self.fleet_ca) / "ca.pem",
            cert=self.base / f"{name}.pem",
            key=self.base / f"{name}.key",
            check_hostname=check_hostname,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    fleet, other = base / "fleet-ca", base / "other-ca"
    init_ca(fleet)
    init_ca(other, name="somebody else's CA")
    issue(fleet, "server", base, ips=["127.0.0.1"])
    issue(fleet, "client", base)
    issue(fleet, "no-san", base)
    issue(other, "stranger", base, ips=["127.0.0.1"])
    return Pki(fleet, other, base)


@pytest.fixture
def server(pki: Pki, tmp_path: Path) -> Iterator[tuple[int, PeerServer]]:
    store = DiskChunkStore(tmp_path / "store")
    store.put(REF, DATA)
    (tmp_path / "md").mkdir()
    (tmp_path / "manifests").mkdir()
    peer = PeerServer(
        self_info=PeerInfo("server", "https://127.0.0.1:0", "a"),
        swarms=Directory(),
        store=store,
        metadata_dir=tmp_path / "md",
        manifests_dir=tmp_path / "manifests",
        max_upload_slots=2,
        limits=ServerLimits(request_timeout=2.0, idle_timeout=2.0),
    )
    tls = PeerTLS(pki.cfg("server"))
    with anyio.from_thread.start_blocking_portal() as portal:
        future, port = portal.start_task(partial(peer.serve, ssl_context=tls.server), "127.0.0.1", 0)
        yield port, peer
        future.cancel()


async def _fetch(client: PeerClient, url: str, store: DiskChunkStore) -> int:
    try:
        return await client.fetch_chunk(f"{url}/v1/chunks/{REF.sha256}", REF, store)
    finally:
        await client.aclose()


def _raw_tls(port: int, ctx: ssl.SSLContext) -> bytes:
    """A GET over TLS with ``ctx``; whatever came back (b"" when refused)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(f"GET /v1/chunks/{REF.sha256} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                while piece := s.recv(65536):
                    out += piece
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    return out


def test_fleet_client_fetches_verified_chunk(
    pki: Pki, server: tuple[int, PeerServer], tmp_path: Path
) -> None:
    port, _ = server
    store = DiskChunkStore(tmp_path / "mine")
    client = PeerClient(tls=PeerTLS(pki.cfg("client")).client)
    assert anyio.run(_fetch, client, f"https://127.0.0.1:{port}", store) == len(DATA)
    assert store.read(REF.sha256) == DATA

    async def more() -> tuple[Bitfield, PeerInfo]:
        c = PeerClient(tls=PeerTLS(pki.cfg("client")).client)
        try:
            bf, _ = await c.bitfield(f"https://127.0.0.1:{port}", SWARM, 4)
            return bf, await c.info(f"https://127.0.0.1:{port}")
        finally:
            await c.aclose()

    bitfield, info = anyio.run(more)
    assert list(bitfield) == [0, 2]
    assert info.peer_id == "server"


def test_client_without_certificate_is_refused(pki: Pki, server: tuple[int, PeerServer]) -> None:
    port, peer = server
    ctx = ssl.create_default_context(cafile=str(pki.fleet_ca / "ca.pem"))  # trusts the server, no cert
    assert _raw_tls(port, ctx) == b""
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://127.0.0.1:{port}/v1/chunks/{REF.sha256}", verify=ctx)
    assert peer.stats.handshake_failed >= 2


def test_certificate_of_another_ca_is_refused(
    pki: Pki, server: tuple[int, PeerServer], tmp_path: Path
) -> None:
    port, peer = server
    ctx = ssl.create_default_context(cafile=str(pki.fleet_ca / "ca.pem"))
    ctx.load_cert_chain(pki.base / "stranger.pem", pki.base / "stranger.key")
    assert _raw_tls(port, ctx) == b""
    # the same through our own client configured with the stranger's PKI (its CA does not sign the server)
    mixed = PeerTLS(pki.cfg("stranger", pki.fleet_ca)).client
    store = DiskChunkStore(tmp_path / "s")
    with pytest.raises(FetchError) as err:
        anyio.run(_fetch, PeerClient(tls=mixed), f"https://127.0.0.1:{port}", store)
    assert err.value.kind == "error"
    assert not store.has(REF.sha256)
    assert peer.stats.handshake_failed >= 2


def test_plain_http_to_a_tls_peer_gets_nothing(server: tuple[int, PeerServer]) -> None:
    port, peer = server
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /v1/chunks/{REF.sha256} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            while piece := s.recv(65536):
                out += piece
        except ConnectionResetError:
            pass
    assert DATA[:100] not in out
    assert not out.startswith(b"HTTP/1.1 200")
    assert peer.stats.handshake_failed >= 1


def test_fleet_client_refuses_a_server_of_another_ca(pki: Pki, tmp_path: Path) -> None:
    """An impostor peer (certificate of another CA) gets no request from a fleet agent."""
    impostor = PeerTLS(pki.cfg("stranger", pki.other_ca))
    seen: list[str] = []

    async def main() -> None:
        async def handler(request):  # type: ignore[no-untyped-def]
            seen.append(request.target)
            raise AssertionError("reached")

        from swarmupdate.net.httpserver import serve

        async with anyio.create_task_group() as tg:
            port = await tg.start(
                lambda task_status: serve(
                    handler, "127.0.0.1", 0, ssl_context=impostor.server, task_status=task_status
                )
            )
            client = PeerClient(tls=PeerTLS(pki.cfg("client")).client)
            with pytest.raises(FetchError, match="TLS handshake failed"):
                await _fetch(client, f"https://127.0.0.1:{port}", DiskChunkStore(tmp_path / "s"))
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert seen == []


def test_tls_client_refuses_plain_http_peers_without_connecting(pki: Pki, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    listener.setblocking(False)
    client = PeerClient(tls=PeerTLS(pki.cfg("client")).client)
    assert not client.accepts_peer(f"http://127.0.0.1:{port}")
    assert client.accepts_peer(f"https://127.0.0.1:{port}")
    with pytest.raises(FetchError, match="requires peer TLS"):
        anyio.run(_fetch, client, f"http://127.0.0.1:{port}", DiskChunkStore(tmp_path / "s"))
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    listener.close()


def test_check_hostname(pki: Pki, tmp_path: Path) -> None:
    """With check_hostname, the peer's certificate must name the address in its URL."""

    async def main(server_cert: str) -> int | str:
        from swarmupdate.net.httpserver import Response, serve

        async def handler(request):  # type: ignore[no-untyped-def]
            return Response(200, DATA)

        async with anyio.create_task_group() as tg:
            srv = PeerTLS(pki.cfg(server_cert)).server
            port = await tg.start(
                lambda task_status: serve(handler, "127.0.0.1", 0, ssl_context=srv, task_status=task_status)
            )
            client = PeerClient(tls=PeerTLS(pki.cfg("client", check_hostname=True)).client)
            got: int | str
            try:
                got = await _fetch(
                    client, f"https://127.0.0.1:{port}", DiskChunkStore(tmp_path / server_cert)
                )
            except FetchError as exc:
                got = str(exc)
            tg.cancel_scope.cancel()
        return got

    assert anyio.run(main, "server") == len(DATA)  # SAN IP 127.0.0.1
    assert "TLS handshake failed: IP address mismatch" in str(anyio.run(main, "no-san"))


def test_bad_files_name_the_file(pki: Pki, tmp_path: Path) -> None:
    good = pki.cfg("client")
    with pytest.raises(ConfigError, match=str(tmp_path / "missing.pem")):
        PeerTLS(PeerTLSConfig(ca=good.ca, cert=tmp_path / "missing.pem", key=good.key))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"junk\.pem: not a PEM CA certificate"):
        PeerTLS(PeerTLSConfig(ca=tmp_path / "junk.pem", cert=good.cert, key=good.key))
    with pytest.raises(ConfigError, match="key does not match"):
        PeerTLS(PeerTLSConfig(ca=good.ca, cert=good.cert, key=pki.base / "server.key"))


def test_renewed_certificate_is_reloaded(pki: Pki, tmp_path: Path) -> None:
    issue(pki.fleet_ca, "renewing", tmp_path, days=10)
    cfg = PeerTLSConfig(
        ca=pki.fleet_ca / "ca.pem", cert=tmp_path / "renewing.pem", key=tmp_path / "renewing.key"
    )
    tls = PeerTLS(cfg)
    first = tls.not_after
    assert not tls.reload_if_changed()
    issue(pki.fleet_ca, "renewing", tmp_path, days=60)
    assert tls.reload_if_changed()
    assert tls.not_after > first + 40 * 86400
    # new contexts, not the old ones changed: a CA taken out of the file is no longer trusted
    old_server = tls.server
    (tmp_path / "fleet-ca.pem").write_bytes((pki.other_ca / "ca.pem").read_bytes())
    moved = PeerTLS(PeerTLSConfig(ca=tmp_path / "fleet-ca.pem", cert=cfg.cert, key=cfg.key))
    (tmp_path / "fleet-ca.pem").write_bytes((pki.fleet_ca / "ca.pem").read_bytes())
    assert moved.reload_if_changed()
    (tmp_path / "fleet-ca.pem").write_bytes((pki.other_ca / "ca.pem").read_bytes())
    assert moved.reload_if_changed()
    names = [dict(x[0] for x in c["subject"])["commonName"] for c in moved.server.get_ca_certs()]
    assert names == ["somebody else's CA"]
    assert tls.server is old_server
    # a half-written renewal keeps the old certificate live and says which file is wrong
    (tmp_path / "renewing.pem").write_text("-----BEGIN CERT")
    with pytest.raises(ConfigError, match=r"renewing\.pem"):
        tls.reload_if_changed()
    assert tls.not_after > first + 40 * 86400


def test_metadata_from_peers_goes_to_tls_peers_only(
    pki: Pki, server: tuple[int, PeerServer], tmp_path: Path
) -> None:
    """With the origin down, TUF metadata comes from a peer over mutual TLS; a plain http:// peer in
    the list is never contacted."""
    from swarmupdate.trust.fetcher import FallbackFetcher

    port, peer = server
    (peer.metadata_dir / "timestamp.json").write_text('{"signed": {"version": 3}}')
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    plain.setblocking(False)
    dead = socket.socket()  # a port nobody listens on: the origin is down
    dead.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{dead.getsockname()[1]}"
    fetcher = FallbackFetcher(
        f"{origin}/metadata/",
        f"{origin}/targets/",
        lambda: [f"http://127.0.0.1:{plain.getsockname()[1]}", f"https://127.0.0.1:{port}"],
        peer_tls=PeerTLS(pki.cfg("client")).client,
        connect_timeout=2.0,
    )
    try:
        with fetcher.download_file(f"{origin}/metadata/timestamp.json", 10_000) as f:
            assert f.read() == b'{"signed": {"version": 3}}'
        assert fetcher.served_by_peers == 1
        with pytest.raises(BlockingIOError):
            plain.accept()  # the plain peer was never asked
    finally:
        fetcher.close()
        plain.close()
        dead.close()

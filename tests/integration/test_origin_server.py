"""The origin dev server on a real socket: files, limits, hostile requests, metrics."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from swarmupdate.net.httpserver import ServerLimits
from tests.conftest import Origin


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata/timestamp.json").write_text('{"x": 1}')
    (root / "chunks/ab").mkdir(parents=True)
    (root / "chunks/ab/abc").write_bytes(b"c" * 3_000_000)
    (root / ".hidden").write_text("no")
    (tmp_path / "secret").write_text("secret")
    (root / "metadata/link").symlink_to(tmp_path / "secret")
    return root


def _raw(origin: Origin, payload: bytes, timeout: float = 5.0) -> bytes:
    host, port = origin.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_serves_files_and_counts_bytes(tree: Path, serve_origin: object) -> None:
    origin: Origin = serve_origin(tree)  # type: ignore[operator]
    with httpx.Client(base_url=origin.url) as c:
        r = c.get("/chunks/ab/abc")
        assert r.status_code == 200 and r.content == b"c" * 3_000_000
        assert "immutable" in r.headers["cache-control"]
        r = c.get("/metadata/timestamp.json")
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-cache"
        h = c.head("/chunks/ab/abc")
        assert h.status_code == 200 and h.headers["content-length"] == "3000000" and h.content == b""
        assert origin.sent_bytes() == 3_000_000 + 8
        metrics = c.get("/metrics").text
        samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
        assert samples["swarmupdate_origin_sent_bytes_total"] == 3_000_008
        assert 'swarmupdate_build_info{version="' in metrics
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../secret",
        "/metadata/../../secret",
        "/%2e%2e/secret",
        "/metadata/link",
        "/.hidden",
        "/metadata",
        "/chunks/ab/abc/",
        "/nope",
        "/metadata/%00x",
        "//etc/passwd",
    ],
)
def test_nothing_outside_the_tree(tree: Path, serve_origin: object, path: str) -> None:
    origin: Origin = serve_origin(tree)  # type: ignore[operator]
    reply = _raw(origin, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 404"), reply[:80]
    assert b"secret" not in reply


def test_bad_requests_get_4xx_and_server_survives(tree: Path, serve_origin: object) -> None:
    origin: Origin = serve_origin(tree)  # type: ignore[operator]
    assert _raw(origin, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _raw(origin, huge).split(b" ")[1] in (b"431", b"400")
    assert _raw(
        origin, b"POST /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    ).startswith(b"HTTP/1.1 413")
    assert _raw(origin, b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert httpx.get(f"{origin.url}/metadata/timestamp.json").status_code == 200


def test_slow_client_is_cut_off(tree: Path, serve_origin: object) -> None:
    origin: Origin = serve_origin(tree, ServerLimits(request_timeout=1.0))  # type: ignore[operator]
    host, port = origin.url.removeprefix("http://").split(":")
    # a slowloris: starts a request and never finishes it; the server answers 408 and closes
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        data = s.recv(1024)
        assert data.startswith(b"HTTP/1.1 408"), data
        assert time.monotonic() - start < 5
    # others are served meanwhile and after
    assert httpx.get(f"{origin.url}/metadata/timestamp.json").status_code == 200


def test_keep_alive_serves_many(tree: Path, serve_origin: object) -> None:
    origin: Origin = serve_origin(tree)  # type: ignore[operator]
    with httpx.Client(base_url=origin.url) as c:
        for _ in range(50):
            assert c.get("/metadata/timestamp.json").status_code == 200

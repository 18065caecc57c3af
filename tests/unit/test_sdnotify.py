"""sd_notify against real AF_UNIX datagram sockets: a path in a temp dir and a Linux abstract name."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmupdate.agent import sdnotify


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)  # a deadline for recv, not a wait: the datagram is queued before recv is called
    return sock


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    address = str(tmp_path / "notify.sock")
    with _receiver(address) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"swarmupdate-test-{secrets.token_hex(8)}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_unsupported_address_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False


def test_helpers_send_one_datagram_each_to_a_path_socket(path_socket: socket.socket) -> None:
    assert sdnotify.ready()
    assert sdnotify.status("downloading web 2.0\nfrom 3 peers")
    assert sdnotify.watchdog()
    assert sdnotify.stopping()
    assert sdnotify.notify("RELOADING=1\nMONOTONIC_USEC=1")
    got = [path_socket.recv(4096) for _ in range(5)]
    assert got == [
        b"READY=1",
        b"STATUS=downloading web 2.0 from 3 peers",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"RELOADING=1\nMONOTONIC_USEC=1",
    ]


def test_abstract_socket(abstract_socket: socket.socket) -> None:
    assert sdnotify.ready()
    assert abstract_socket.recv(4096) == b"READY=1"


def test_send_failure_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("1500000", "self", 1.5),
        ("30000000", "other", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, None, None),
        ("30000000", "x", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval() == expected

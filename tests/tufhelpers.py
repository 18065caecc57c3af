"""Helpers for the trust tests: forge metadata with a repository's own keys, read a client's state,
and a hostile HTTP server.

Forging goes through python-tuf's Metadata API and the publisher's key store, never through a
fake of TUF: what the client rejects here is exactly what it would reject from a real origin.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, MetaFile
from tuf.api.serialization.json import JSONSerializer

from swarmupdate.fsutil import atomic_write_bytes
from swarmupdate.publisher.repository import Repository
from swarmupdate.trust.client import TrustClient

SERIALIZER = JSONSerializer(compact=False)
#: the files python-tuf keeps for the top-level roles, under unversioned names
TOP_LEVEL_FILES = ("root.json", "timestamp.json", "snapshot.json", "targets.json")


# ---------------------------------------------------------------------- client side


def init_client(tmp_path: Path, repo_dir: Path, name: str = "client") -> Path:
    """A client metadata directory that trusts the repository's ``1.root.json``."""
    d = tmp_path / name
    TrustClient.init(d, repo_dir / "origin" / "metadata" / "1.root.json")
    return d


def version_of(path: Path) -> int:
    """The ``signed.version`` of a metadata file."""
    return int(json.loads(path.read_bytes())["signed"]["version"])


def files_of(directory: Path, names: Iterable[str]) -> dict[str, bytes | None]:
    """The bytes of each named file in ``directory`` (None when absent): compare before and after."""
    out: dict[str, bytes | None] = {}
    for name in names:
        p = directory / name
        out[name] = p.read_bytes() if p.exists() else None
    return out


def origin_target(repo_dir: Path, target_path: str) -> Path:
    """The origin file of a published target, found by its signed sha256 (consistent-snapshot name)."""
    repo = Repository(repo_dir)
    tf = repo.app(target_path.split("/", 1)[0]).signed.targets[target_path]
    return repo.layout.target(target_path, tf.hashes["sha256"])


# ---------------------------------------------------------------------- forging


def sign_with(repo: Repository, md: Metadata[Any], role: str, keys: Iterable[Key]) -> None:
    """Replace the signatures of ``md`` with ones by exactly ``keys`` (loaded as signers for ``role``)."""
    md.signatures.clear()
    for key in keys:
        md.sign(repo.keys.signer(key, role), append=True)


def meta_of(data: bytes, version: int) -> MetaFile:
    """The snapshot/timestamp entry that names ``data`` as ``version``."""
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def write_role(repo: Repository, role: str, md: Metadata[Any]) -> MetaFile:
    """Write already-signed ``md`` as ``N.role.json`` on the origin; return its snapshot entry."""
    data = md.to_bytes(SERIALIZER)
    atomic_write_bytes(repo.layout.metadata(role, md.signed.version), data)
    return meta_of(data, md.signed.version)


def publish_timestamp(repo: Repository, snapshot_meta: MetaFile) -> bytes:
    """Sign (with the real timestamp key) and write a new ``timestamp.json`` naming ``snapshot_meta``."""
    ts = repo.timestamp
    ts.signed.version += 1
    ts.signed.snapshot_meta = snapshot_meta
    repo.sign("timestamp", ts)
    data = ts.to_bytes(SERIALIZER)
    atomic_write_bytes(repo.layout.metadata("timestamp", None), data)
    return data


def publish_snapshot(repo: Repository, meta: dict[str, MetaFile]) -> bytes:
    """Sign and write a new snapshot with ``meta`` over the live entries, then a timestamp naming it.

    Both are signed with the repository's real snapshot and timestamp keys, so the only thing
    wrong with what is published is whatever ``meta`` says.
    """
    snap = repo.snapshot
    snap.signed.version += 1
    snap.signed.meta.update(meta)
    repo.sign("snapshot", snap)
    data = snap.to_bytes(SERIALIZER)
    atomic_write_bytes(repo.layout.metadata("snapshot", snap.signed.version), data)
    publish_timestamp(repo, meta_of(data, snap.signed.version))
    return data


# ---------------------------------------------------------------------- hostile server


class HostileServer:
    """A raw-socket HTTP server on 127.0.0.1 that serves ``root`` honestly, except for ``endless``
    URL paths: those get ``200 OK`` with no Content-Length and a body that never ends.

    Every connection thread stops at the latest ``give_up_after`` seconds after it started, or
    when the server is closed, so a client that never hangs up cannot keep the test alive.
    """

    def __init__(self, root: Path, endless: Iterable[str], *, give_up_after: float = 20.0) -> None:
        self.root = root.resolve()
        self.endless = set(endless)
        self.give_up_after = give_up_after
        #: body bytes sent on endless paths, over all connections
        self.streamed_bytes = 0
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> HostileServer:
        self._spawn(self._accept_loop)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=5)
        self._listener.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._handle, conn)

    def _handle(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.give_up_after
        with conn:
            conn.settimeout(0.2)
            head = b""
            while b"\r\n\r\n" not in head:
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode()
            with self._lock:
                self.requests.append(path)
            if path in self.endless:
                self._stream_forever(conn, deadline)
            else:
                self._serve_file(conn, path)

    def _stream_forever(self, conn: socket.socket, deadline: float) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        block = b"{" + b" " * 65535
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                n = conn.send(block)
            except TimeoutError:
                continue  # the client is not reading right now; keep offering
            except OSError:
                return  # the client hung up: what a well-behaved client does
            with self._lock:
                self.streamed_bytes += n

    def _serve_file(self, conn: socket.socket, path: str) -> None:
        file = (self.root / path.lstrip("/")).resolve()
        if file.is_relative_to(self.root) and file.is_file():
            body = file.read_bytes()
            status = b"200 OK"
        else:
            body, status = b"not found\n", b"404 Not Found"
        head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(body))
        try:
            conn.sendall(head + body)
        except OSError:
            return

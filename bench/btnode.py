"""One BitTorrent node (libtorrent 2.x) for the swarm-vs-BitTorrent benchmark, run as one process.

    python bench/btnode.py make-torrent FILE --out T.torrent [--piece-size BYTES] [--format v1]
    python bench/btnode.py seed  --torrent T --dir D --listen IP:PORT [--status FILE]
    python bench/btnode.py leech --torrent T --dir D --listen IP:PORT --peers IP:PORT,... --status FILE

No tracker, DHT, LSD, UPnP or NAT-PMP: a leecher connects explicitly to every address in --peers
(its own is skipped) and asks again every 2 s, since the others may not be listening yet. The status
file (JSON, replaced atomically about every 0.5 s) is what the benchmark runner reads; see
``Node.status``. libtorrent hash-checks every piece before it counts; once the download is done the
leecher also takes the sha256 of the whole file and only then reports ``"complete": true``
(``completed_at`` is when the last piece passed its check). Nodes keep seeding until SIGTERM or
SIGINT, write a final status and exit 0. Bad input (torrent, address, directory): exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

MIB = 1024 * 1024
STATUS_EVERY_S = 0.5
RECONNECT_EVERY_S = 2.0
LISTEN_TIMEOUT_S = 10.0


class NodeError(Exception):
    """Bad input or an environment the node cannot work in; the message names the file or address."""


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"IP:PORT"`` (``"[v6]:PORT"`` for IPv6) to ``(ip, port)``; raises NodeError."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise NodeError(f"{text!r}: expected IP:PORT") from None
    if not sep or not 0 < number < 65536:
        raise NodeError(f"{text!r}: expected IP:PORT")
    return host, number


def make_torrent(file: Path, out: Path, piece_size: int, fmt: str) -> None:
    """Write a trackerless torrent for ``file``: v1 (SHA-1 pieces) by default, or hybrid / v2."""
    if not file.is_file():
        raise NodeError(f"{file}: no such file")
    flags = {"v1": lt.create_torrent.v1_only, "hybrid": 0, "v2": lt.create_torrent.v2_only}[fmt]
    if hasattr(lt, "list_files"):  # 2.1
        ct = lt.create_torrent(lt.list_files(str(file.resolve())), piece_size, flags)
    else:  # 2.0
        fs = lt.file_storage()
        lt.add_files(fs, str(file.resolve()))
        ct = lt.create_torrent(fs, piece_size, flags)
    ct.set_creator("swarmupdate bench/btnode.py")
    lt.set_piece_hashes(ct, str(file.resolve().parent))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(lt.bencode(ct.generate()))
    tmp.replace(out)


def session_settings(
    listen: tuple[str, int], upload_limit: int, download_limit: int, slots: int
) -> dict[str, Any]:
    """The session settings: libtorrent's defaults except where a comment says why."""
    ip, port = listen
    host = f"[{ip}]" if ":" in ip else ip
    return {
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": ip,  # connections leave from the node's own address
        "max_retry_port_bind": 0,  # a busy port is an error, not a silent move to port + 1
        # peers come only from --peers: no discovery, no port mapping
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # TCP only, like our HTTP peers; uTP's LEDBAT would back off behind any TCP traffic on the
        # same link and costs more CPU per byte
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # plaintext out, either accepted in: no obfuscation cost (ours does not encrypt either)
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        # the testbed may put several nodes on one address (loopback)
        "allow_multiple_connections_per_ip": True,
        # a node that was not listening yet is retried soon, not after 60 s, and never given up on
        "min_reconnect_time": 1,
        "max_failcount": 1000,
        # the default backlog of 5 drops SYNs when a whole swarm connects to the seeder at once
        "listen_queue_size": 128,
        "unchoke_slots_limit": slots,
        # rate limits hand out quota once a tick: at the default 500 ms each handshake round trip
        # of a new connection waits for one, ~2 s before the first block under any limit
        "tick_interval": 100,
        "upload_rate_limit": upload_limit,
        "download_rate_limit": download_limit,
        "alert_mask": int(
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.storage_notification
        ),
        "user_agent": "swarmupdate-bench-btnode",
    }


def everyone_in_global_class() -> lt.ip_filter:
    """A peer-class filter that puts every address, LAN and loopback included, in the global class.

    By default libtorrent puts private, link-local and loopback addresses in the "local" class, which
    has no rate limit and ignores the unchoke slots, so a testbed of private addresses would measure
    neither limits nor choking. An *empty* filter is not the fix: it puts peers in no class at all, so
    the global rate limits (which live on the global class) would not apply either.
    """
    f = lt.ip_filter()
    every_peer = 1 << lt.session.global_peer_class_id
    f.add_rule("0.0.0.0", "255.255.255.255", every_peer)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", every_peer)
    return f


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


class Node:
    """One libtorrent session with one torrent, its status file and (for a leecher) its peer list."""

    def __init__(self, args: argparse.Namespace, seeding: bool, stop: threading.Event) -> None:
        self.seeding = seeding
        self.stop = stop
        self.status_path: Path | None = args.status
        self.listen = parse_endpoint(args.listen)
        self.peers = [p for p in (parse_endpoint(x) for x in args.peers.split(",") if x) if p != self.listen]
        try:
            info = lt.torrent_info(str(args.torrent))
        except RuntimeError as e:
            raise NodeError(f"{args.torrent}: not a usable torrent: {e}") from None
        if info.num_files() != 1:
            raise NodeError(f"{args.torrent}: {info.num_files()} files; btnode handles one-file torrents")
        args.dir.mkdir(parents=True, exist_ok=True)
        self.file = args.dir / info.name()  # a one-file torrent's name is its file name
        if seeding and not self.file.is_file():
            raise NodeError(f"{self.file}: missing, cannot seed {args.torrent}")
        self.started_at = time.time()
        self.completed_at: float | None = self.started_at if seeding else None
        self.sha256: str | None = None
        self._hasher: threading.Thread | None = None

        limits = (args.upload_limit, args.download_limit, args.unchoke_slots)
        self.ses = lt.session(session_settings(self.listen, *limits))
        self.ses.set_peer_class_filter(everyone_in_global_class())
        self._wait_listening()
        if args.go is not None:  # a running client, then the release: the torrent comes at the signal
            (args.go.parent / f"{self.listen[0]}.ready").touch()
            while not args.go.exists():
                time.sleep(0.01)
            self.started_at = time.time()
        atp = lt.add_torrent_params()
        atp.ti = info
        atp.save_path = str(args.dir)
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if seeding:
            atp.flags |= lt.torrent_flags.seed_mode  # trust the file: each piece is checked when first sent
        self.handle = self.ses.add_torrent(atp)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while time.monotonic() < deadline:
            self.ses.wait_for_alert(100)
            for a in self.ses.pop_alerts():
                listen_alert = isinstance(a, lt.listen_failed_alert | lt.listen_succeeded_alert)
                if not listen_alert or a.socket_type != lt.socket_type_t.tcp:
                    continue
                if isinstance(a, lt.listen_failed_alert):
                    raise NodeError(f"{a.address}:{a.port}: cannot listen: {a.message()}")
                if a.port != self.listen[1]:  # libtorrent moves to another port when it is busy
                    raise NodeError(f"{a.address}:{self.listen[1]}: cannot listen: port in use")
                return
        raise NodeError(f"{self.listen[0]}:{self.listen[1]}: not listening after {LISTEN_TIMEOUT_S:.0f} s")

    def run(self) -> None:
        next_status = next_connect = 0.0
        while not self.stop.is_set():
            self.ses.wait_for_alert(100)
            for a in self.ses.pop_alerts():
                self._on_alert(a)
            now = time.monotonic()
            if self.peers and now >= next_connect and not self.handle.status().is_seeding:
                self._connect_missing()
                next_connect = now + RECONNECT_EVERY_S
            if now >= next_status:
                self.write_status()
                next_status = now + STATUS_EVERY_S
        if self._hasher is not None:
            self._hasher.join()
        self.write_status()

    def _on_alert(self, a: lt.alert) -> None:
        if isinstance(a, lt.torrent_finished_alert) and not self.seeding and self.completed_at is None:
            self.completed_at = time.time()
            self.handle.flush_cache()  # answered by cache_flushed_alert once the file is all on disk
        elif isinstance(a, lt.cache_flushed_alert) and self.completed_at is not None and not self.seeding:
            if self._hasher is None:  # a thread, so that status and seeding go on while it reads
                self._hasher = threading.Thread(target=self._hash_file, daemon=True)
                self._hasher.start()
        elif isinstance(a, lt.torrent_error_alert | lt.file_error_alert | lt.hash_failed_alert):
            print(f"btnode: {self.file}: {a.message()}", file=sys.stderr, flush=True)

    def _hash_file(self) -> None:
        self.sha256 = sha256_file(self.file)

    def _connect_missing(self) -> None:
        # Outgoing connections show the peer's listen address; incoming ones show an ephemeral
        # port, so a peer that connected to us may be asked again: libtorrent matches it to its
        # listen port after the handshake and makes that a no-op (or drops the duplicate).
        connected = {(p.ip[0], p.ip[1]) for p in self.handle.get_peer_info()}
        for peer in self.peers:
            if peer not in connected:
                self.handle.connect_peer(peer)

    def status(self) -> dict[str, Any]:
        st = self.handle.status()
        return {
            "role": "seed" if self.seeding else "leech",
            "state": str(st.state),
            "progress": st.progress,
            "total_done": st.total_done,
            "complete": self.seeding or self.sha256 is not None,
            "completed_at": self.completed_at,
            "started_at": self.started_at,
            "downloaded_payload": st.total_payload_download,
            "uploaded_payload": st.total_payload_upload,
            "redundant_payload": st.total_redundant_bytes,  # in downloaded_payload: endgame duplicates
            "peers": st.num_peers,
            "sha256": self.sha256,
            "error": st.errc.message() if st.errc.value() else None,
        }

    def write_status(self) -> None:
        if self.status_path is None:
            return
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        tmp.write_text(json.dumps(self.status()) + "\n")
        tmp.replace(self.status_path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-torrent", help="write a .torrent for FILE")
    mk.add_argument("file", type=Path)
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--piece-size", type=int, default=MIB, help="bytes, a power of two (default 1 MiB)")
    mk.add_argument("--format", choices=("v1", "hybrid", "v2"), default="v1")
    for name in ("seed", "leech"):
        sp = sub.add_parser(name, help=f"{name} one torrent until SIGTERM")
        sp.add_argument("--torrent", type=Path, required=True)
        sp.add_argument("--dir", type=Path, required=True, help="directory holding (or to hold) the file")
        sp.add_argument("--listen", required=True, metavar="IP:PORT")
        sp.add_argument("--status", type=Path, required=name == "leech", metavar="FILE")
        sp.add_argument("--upload-limit", type=int, default=0, metavar="BYTES_PER_S", help="0 = none")
        sp.add_argument("--download-limit", type=int, default=0, metavar="BYTES_PER_S", help="0 = none")
        sp.add_argument("--unchoke-slots", type=int, default=8, help="libtorrent's default: 8")
        sp.add_argument(
            "--go",
            type=Path,
            help="once listening, touch DIR/<ip>.ready next to this file, and add the torrent when it exists",
        )
        if name == "leech":
            sp.add_argument("--peers", required=True, metavar="IP:PORT,...")
        else:
            sp.set_defaults(peers="")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "make-torrent":
            if args.piece_size < 16 * 1024 or args.piece_size & (args.piece_size - 1):
                raise NodeError(f"--piece-size {args.piece_size}: must be a power of two >= 16 KiB")
            make_torrent(args.file, args.out, args.piece_size, args.format)
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before the session: a stop while starting is clean
            signal.signal(sig, lambda *_: stop.set())
        node = Node(args, seeding=args.cmd == "seed", stop=stop)
    except (NodeError, OSError) as e:
        print(f"btnode: {e}", file=sys.stderr)
        return 2
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

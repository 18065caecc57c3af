"""Loopback micro-benchmark: one libtorrent seeder serving one libtorrent leecher.

The BitTorrent counterpart of ``bench/peer_serve.py``: MB/s of payload that the leecher holds
hash-checked (libtorrent checks every piece against the torrent before it counts), over a real
loopback TCP connection, with the session settings of ``bench/btnode.py``. Both sessions live in this
process, each with libtorrent's own network and disk threads. Each round: a fresh leecher session and
an empty download directory; timed from the TCP connection (``peer_connect_alert``) to the leecher's
``torrent_finished_alert`` (the wait from ``connect_peer`` to the connection, up to a tick of
libtorrent's scheduler, is reported apart);
then, untimed, the sha256 of the downloaded file is compared with the original.

Conditions: the seeder checks its file fully before the first round (like a swarmupdate store, whose
chunks were verified when stored), so serving does not hash; the source file is in the page cache;
``os.sync()`` before each round. The leecher writes a file (page cache), where peer_serve.py's client
writes to memory. MB = 10^6 bytes. Run:

    .venv/bin/python bench/bt_pair.py [--size-mb 64] [--repeat 3] [--piece-kib 1024] [--format v1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import libtorrent as lt
from _common import (
    MB,
    MIB,
    Series,
    cleanup,
    create_random_file,
    machine_info,
    make_workdir,
    timed,
    utc_stamp,
    warm_page_cache,
    write_result,
)
from btnode import everyone_in_global_class, make_torrent, session_settings, sha256_file

TIMEOUT_S = 300.0
_CONNECT_ALERTS = int(lt.alert.category_t.connect_notification)


def _session(ip: str) -> lt.session:
    ses = lt.session(session_settings((ip, 0), 0, 0, 8))  # port 0: the OS picks a free one
    ses.set_peer_class_filter(everyone_in_global_class())
    deadline = time.monotonic() + 10
    while ses.listen_port() == 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"{ip}: libtorrent is not listening")
        time.sleep(0.01)
    return ses


def _add(ses: lt.session, torrent: Path, save_path: Path) -> lt.torrent_handle:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(save_path)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return ses.add_torrent(atp)


def _wait_for(ses: lt.session, alert_type: type, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        alerts = ses.pop_alerts()
        for a in alerts:
            if isinstance(a, lt.torrent_error_alert | lt.file_error_alert | lt.hash_failed_alert):
                raise SystemExit(f"{what}: {a.message()}")
        if any(isinstance(a, alert_type) for a in alerts):
            return
    raise SystemExit(f"{what}: no {alert_type.__name__} after {TIMEOUT_S:.0f} s")


def _one_round(seeder: lt.session, torrent: Path, dest: Path) -> tuple[float, float, float]:
    """Download ``torrent`` from ``seeder`` into the empty ``dest``.

    Returns seconds: (from ``connect_peer`` to the TCP connection, which libtorrent makes on its next
    session tick; from the connection until every piece passed its check; CPU of that second part).
    """
    leecher = _session("127.0.0.1")
    leecher.apply_settings({"alert_mask": leecher.get_settings()["alert_mask"] | _CONNECT_ALERTS})
    handle = _add(leecher, torrent, dest)
    while handle.status().state != lt.torrent_status.states.downloading:  # empty dir: a quick check
        time.sleep(0.005)
    asked = time.perf_counter()
    handle.connect_peer(("127.0.0.1", seeder.listen_port()))
    _wait_for(leecher, lt.peer_connect_alert, f"leecher in {dest}")
    delay = time.perf_counter() - asked
    seconds, cpu, _ = timed(lambda: _wait_for(leecher, lt.torrent_finished_alert, f"leecher in {dest}"))
    leecher.remove_torrent(handle)  # the session itself closes when this function returns
    seeder.pop_alerts()
    return delay, seconds, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=64, help="size of the random file in MiB (64)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (3)")
    p.add_argument("--piece-kib", type=int, default=1024, help="piece size in KiB (1024, like our chunks)")
    p.add_argument(
        "--format", choices=("v1", "hybrid", "v2"), default="v1", help="v1: SHA-1, v2: SHA-256 (v1)"
    )
    p.add_argument(
        "--output", type=Path, help="JSON result file (bench/results/bt-pair-<UTC timestamp>.json)"
    )
    args = p.parse_args(argv)

    machine = machine_info()
    workdir = make_workdir()
    try:
        (workdir / "seed").mkdir()
        source = create_random_file(workdir / "seed" / "artifact.bin", args.size_mb * MIB)
        size = source.stat().st_size
        expected = sha256_file(source)
        torrent = workdir / "artifact.torrent"
        make_torrent(source, torrent, args.piece_kib * 1024, args.format)
        warm_page_cache(source)

        seeder = _session("127.0.0.1")
        seed_handle = _add(seeder, torrent, source.parent)  # a full check, before any timing
        _wait_for(seeder, lt.torrent_finished_alert, f"seeder checking {source}")
        assert seed_handle.status().is_seeding

        series = Series("libtorrent")
        with_connect = Series("libtorrent, from connect_peer")
        for rnd in range(args.repeat):
            dest = workdir / f"leech-{rnd}"
            dest.mkdir()
            os.sync()
            delay, seconds, cpu = _one_round(seeder, torrent, dest)
            series.seconds.append(seconds)
            series.cpu_seconds.append(cpu)
            with_connect.seconds.append(delay + seconds)
            with_connect.cpu_seconds.append(cpu)
            if sha256_file(dest / source.name) != expected:
                print(f"MISMATCH: {dest / source.name} differs from {source}", file=sys.stderr)
                return 1
            shutil.rmtree(dest)
            rate = size / seconds / MB
            print(
                f"round {rnd + 1}/{args.repeat}  {seconds:7.3f} s  {rate:8.1f} MB/s  CPU {cpu:.2f} s  "
                f"(+ {delay:.3f} s from connect_peer to the connection)",
                flush=True,
            )
        del seeder

        machine["loadavg_end"] = list(os.getloadavg())
        print(
            f"\nlibtorrent {lt.__version__}, one seeder -> one leecher on loopback, {size / MB:.1f} MB, "
            f"{args.piece_kib} KiB pieces, {args.format}: "
            f"{series.mb_per_s(size):.0f} MB/s of hash-checked payload "
            f"({with_connect.mb_per_s(size):.0f} MB/s counting from connect_peer) "
            f"(median of {args.repeat}); load average {machine['loadavg_start'][0]:.2f} at start, "
            f"{machine['loadavg_end'][0]:.2f} at end"
        )
        doc: dict[str, Any] = {
            "benchmark": "bt-pair",
            "timestamp": utc_stamp(),
            "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
            "machine": {**machine, "libtorrent": lt.__version__},
            "conditions": {
                "size_bytes": size,
                "piece_bytes": args.piece_kib * 1024,
                "torrent_format": args.format,
                "repeat": args.repeat,
                "transport": "TCP over loopback, uTP off, no encryption (bench/btnode.py settings)",
                "timed": "leecher's peer_connect_alert to its torrent_finished_alert (every piece checked)",
                "timed_with_connect": "the same from connect_peer: adds libtorrent's wait for its tick",
                "seeder": "file fully checked before timing; page cache warm",
                "leecher": "fresh session and empty directory each round; os.sync() before each round",
                "mb": "10^6 bytes",
            },
            "sha256": expected,
            "results": {
                "libtorrent": series.to_json(size),
                "libtorrent_with_connect": with_connect.to_json(size),
            },
        }
        print(f"wrote {write_result('bt-pair', doc, args.output)}")
    finally:
        cleanup(workdir, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

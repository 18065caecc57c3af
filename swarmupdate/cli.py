"""The ``swarmupdate`` command line: thin argument parsing that calls the package.

Exit codes: 0 success; 1 unexpected failure; 2 bad input (usage, config); 3 the repository
refuses (unknown app, version exists, key missing); 4 remote data is bad; 5 transfer failed;
6 local disk refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from swarmupdate import __version__
from swarmupdate.errors import ConfigError, RepositoryStateError, SwarmUpdateError
from swarmupdate.obs.logging import configure_logging, get_logger

__all__ = ["main"]

log = get_logger("swarmupdate.cli")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the operator chose to listen on all


def _role_days(value: str) -> tuple[str, int]:
    role, sep, days = value.partition("=")
    if not sep or not days.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected ROLE=DAYS, e.g. timestamp=1")
    return role, int(days)


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(text)


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on a terminal (stderr), nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# ---------------------------------------------------------------------------- repo


def cmd_repo_init(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.repository import Repository

    repo = Repository.init(
        args.dir,
        root_keys=args.root_keys,
        root_threshold=args.root_threshold,
        expiry_days=dict(args.expiry or []),
        store_artifacts=args.store_artifacts,
    )
    root_path = repo.layout.metadata("root", 1)
    _out(
        args,
        {
            "dir": str(args.dir),
            "root": str(root_path),
            "root_keys": args.root_keys,
            "root_threshold": args.root_threshold,
        },
        f"initialised {args.dir}: root {args.root_threshold}-of-{args.root_keys}, "
        f"keys in {args.dir / 'keys'}\nagents trust {root_path}",
    )
    return 0


def cmd_repo_verify(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.repository import Repository
    from swarmupdate.publisher.verify import verify_repository

    repo = Repository(args.dir)
    with _progress("verifying chunks", 0) as progress:
        report = verify_repository(repo, progress)
    lines = [
        f"{report.roles} roles, {report.releases} releases, {report.chunks} chunks "
        f"({report.chunk_bytes} bytes) checked"
    ]
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines.append("OK" if report.ok else f"{len(report.problems)} problem(s)")
    _out(args, report.to_json(), "\n".join(lines))
    return 0 if report.ok else 4


def cmd_repo_refresh(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.repository import Repository

    repo = Repository(args.dir)
    done: list[str] = []
    if args.role in (None, "timestamp", "snapshot"):
        period = repo.settings.expiry("snapshot")
        due = args.role == "snapshot" or repo.snapshot.signed.expires - repo.now < period / 2
        repo.refresh_timestamp(snapshot_too=due)
        done += ["snapshot", "timestamp"] if due else ["timestamp"]
    else:
        repo.app(args.role) if args.role not in ("root", "targets") else None
        repo.stage(args.role)
        repo.commit()
        done += [args.role, "snapshot", "timestamp"]
    _out(
        args,
        {
            "resigned": done,
            "timestamp_version": repo.timestamp.signed.version,
            "timestamp_expires": repo.timestamp.signed.expires.isoformat(),
        },
        f"re-signed {', '.join(done)}; timestamp v{repo.timestamp.signed.version} "
        f"expires {repo.timestamp.signed.expires.isoformat()}",
    )
    return 0


# ---------------------------------------------------------------------------- app, release, key


def cmd_app_add(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.repository import Repository, validate_app_name

    validate_app_name(args.name)
    repo = Repository(args.dir)
    if args.name in repo.apps:
        raise RepositoryStateError(f"app {args.name!r} already exists")
    if (args.public_key is None) != (args.signer_uri is None):
        raise ConfigError("--public-key and --signer-uri go together")
    repo.check_not_expired(["root", "targets"])
    repo.require_signers(["targets"])
    if args.public_key is not None:
        key = repo.public_key_from_pem(args.public_key)
        repo.keys.add_uri(key.keyid, args.signer_uri)
    else:
        key = repo.keys.generate(f"app-{args.name}")
    repo.add_app(args.name, key, args.threshold)
    repo.commit()
    _out(
        args,
        {"app": args.name, "keyid": key.keyid},
        f"added app {args.name!r} signed by key {key.keyid[:12]}…",
    )
    return 0


def cmd_release_add(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.release import add_release
    from swarmupdate.publisher.repository import Repository

    repo = Repository(args.dir)
    repo.app(args.app)
    try:
        size = args.file.stat().st_size
    except OSError as exc:
        raise ConfigError(f"{args.file}: {exc.strerror}") from exc
    with _progress(f"{args.app} {args.version}", size) as progress:
        rel = add_release(repo, args.app, args.version, args.file, channel=args.channel, progress=progress)
    _out(
        args,
        rel.to_json(),
        f"published {rel.ref.artifact_path} on {rel.channel}: {rel.length} bytes, {rel.chunks} chunks "
        f"({rel.new_chunks} new, {rel.new_chunk_bytes} bytes), sha256 {rel.sha256}",
    )
    return 0


def cmd_release_list(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.release import list_releases
    from swarmupdate.publisher.repository import Repository
    from swarmupdate.trust.client import version_key

    rows = list_releases(Repository(args.dir), args.app)
    rows.sort(key=lambda r: (r.app, r.channel, version_key(r.version)))
    text = "\n".join(f"{r.app:16} {r.version:12} {r.channel:10} {r.length:>12} {r.sha256[:16]}" for r in rows)
    _out(args, [r.to_json() for r in rows], text or "no releases")
    return 0


def cmd_key_rotate(args: argparse.Namespace) -> int:
    from swarmupdate.publisher.repository import Repository
    from swarmupdate.publisher.rotate import rotate_key

    repo = Repository(args.dir)
    new_key = repo.public_key_from_pem(args.public_key) if args.public_key else None
    pairs = rotate_key(repo, args.role, keyid=args.keyid, new_key=new_key, new_uri=args.signer_uri)
    _out(
        args,
        {
            "role": args.role,
            "rotated": [{"old": o, "new": n} for o, n in pairs],
            "root_version": repo.root.signed.version,
        },
        "\n".join(f"role {args.role!r}: {o[:12]}… -> {n[:12]}…" for o, n in pairs)
        + f"\nroot version {repo.root.signed.version}",
    )
    return 0


# ---------------------------------------------------------------------------- peer TLS


def cmd_tls_ca(args: argparse.Namespace) -> int:
    from swarmupdate.fleetca import CA_KEY, init_ca

    cert = init_ca(args.dir, name=args.name, days=args.days)
    _out(
        args,
        {"ca": str(cert), "key": str(args.dir / CA_KEY)},
        f"fleet CA {cert} (key {args.dir / CA_KEY}: keep it off the fleet)\n"
        f'agents trust it with [peer_tls] ca = "{cert}"',
    )
    return 0


def cmd_tls_issue(args: argparse.Namespace) -> int:
    from swarmupdate.fleetca import issue

    out = issue(args.ca, args.name, args.out, ips=args.ip, dns=args.dns, days=args.days)
    _out(
        args,
        {"cert": str(out.cert), "key": str(out.key), "not_after": out.not_after.isoformat()},
        f"{out.cert} and {out.key}, valid until {out.not_after:%Y-%m-%d %H:%M} UTC",
    )
    return 0


# ---------------------------------------------------------------------------- servers


def cmd_origin_serve(args: argparse.Namespace) -> int:
    import anyio

    from swarmupdate import runloop
    from swarmupdate.origin.server import OriginServer

    if not args.dir.is_dir():
        raise ConfigError(f"{args.dir}: not a directory")
    host, port = args.listen
    from swarmupdate.agent.config import parse_rate

    try:
        max_rate = parse_rate(args.max_rate)
    except ValueError as exc:
        raise ConfigError(f"--max-rate {args.max_rate!r}: {exc}") from exc
    server = OriginServer(args.dir, max_rate=max_rate)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(server.serve, host, port)
            log.info("origin_listening", url=f"http://{host}:{bound}/", root=str(args.dir))
            print(f"origin serving {args.dir} on http://{host}:{bound}/", flush=True)

    try:
        runloop.run(run)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_tracker_serve(args: argparse.Namespace) -> int:
    import anyio

    from swarmupdate import runloop
    from swarmupdate.tracker.service import run_tracker

    host, port = args.listen

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            bound = await tg.start(partial(run_tracker, host, port, interval=args.interval))
            print(f"tracker serving on http://{host}:{bound}/", flush=True)
            await _until_signal(tg)

    runloop.run(run)
    return 0


async def _until_signal(tg: Any, on_hup: Callable[[], None] | None = None) -> None:
    """Cancel ``tg`` on SIGTERM or SIGINT; call ``on_hup`` on SIGHUP."""
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP and on_hup is not None:
                on_hup()
                continue
            log.info("stopping", signal=signal.Signals(signum).name)
            tg.cancel_scope.cancel()
            return


def cmd_agent_run(args: argparse.Namespace) -> int:
    import anyio

    from swarmupdate import runloop
    from swarmupdate.agent.config import load_config
    from swarmupdate.agent.service import Agent

    config = load_config(args.config)
    if args.log_level == "info" and config.log_level != "info":
        configure_logging(
            config.log_level, json=None if args.log_format is None else args.log_format == "json"
        )
    agent = Agent(config)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(agent.run)
            print(f"agent {config.node_id} serving peers on port {port}", flush=True)
            await _until_signal(tg, agent.poll_now)

    runloop.run(run)
    return 0


def cmd_agent_status(args: argparse.Namespace) -> int:
    import time

    from swarmupdate.agent.config import load_config

    config = load_config(args.config)
    path = config.state_dir / "status.json"
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no status yet: is the agent running with this config?") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable status: {exc}") from exc
    age = time.time() - float(doc.get("updated", 0))
    doc["age_seconds"] = round(age, 1)
    doc["running"] = age < 10
    state = "running" if doc["running"] else f"NOT RUNNING (status {age:.0f}s old)"
    lines = [f"node {doc.get('node_id')}  peer {doc.get('peer_url')}  {state}"]
    for name, app in sorted(doc.get("apps", {}).items()):
        lines.append(f"app {name} [{app.get('channel')}]: installed {app.get('current') or '-'}")
    for sw in doc.get("swarms", []):
        pct = 100 * sw["have"] / max(sw["chunks"], 1)
        what = "seeding" if sw["complete"] else f"downloading {pct:.0f}%"
        err = f"  ERROR {sw['error']}" if sw.get("error") else ""
        lines.append(
            f"  {sw['app']} {sw['version']} {what}  peers {sw['peers']} (banned {sw['banned']}){err}"
        )
    b = doc.get("bytes", {})
    lines.append(
        f"bytes: peer {b.get('peer', 0):,}  origin {b.get('origin', 0):,}  local {b.get('local', 0):,}  "
        f"uploaded {doc.get('uploaded', 0):,}"
    )
    if doc.get("refresh_error"):
        lines.append(f"last refresh failed: {doc['refresh_error']}")
    _out(args, doc, "\n".join(lines))
    return 0 if doc["running"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from swarmupdate.demo import run_demo

    if args.size_mb < 1:
        raise ConfigError("--size-mb must be at least 1")
    if args.agents < 1:
        raise ConfigError("--agents must be at least 1")
    return run_demo(args.size_mb, args.workdir, args.keep, args.agents)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarmupdate", description="Swarm-based, TUF-signed software updates.")
    p.add_argument("--version", action="version", version=f"swarmupdate {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format", choices=["json", "console"], help="default: console on a terminal, else json"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def leaf(
        parent: Any, name: str, func: Callable[[argparse.Namespace], int], help_: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return sp

    repo = sub.add_parser("repo", help="create, verify and refresh a TUF repository").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(repo, "init", cmd_repo_init, "create a repository with fresh keys")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--root-keys", type=int, default=1, metavar="N", help="number of root keys (default 1)")
    sp.add_argument(
        "--root-threshold", type=int, default=1, metavar="M", help="signatures needed (default 1)"
    )
    sp.add_argument(
        "--expiry",
        type=_role_days,
        action="append",
        metavar="ROLE=DAYS",
        help="signature lifetime per role: root, targets, app, snapshot, timestamp "
        "(defaults 365, 365, 90, 7, 1)",
    )
    sp.add_argument(
        "--store-artifacts",
        action="store_true",
        help="also store whole artifacts under targets/ for plain TUF clients",
    )
    sp = leaf(repo, "verify", cmd_repo_verify, "check signatures, expiry, targets and every chunk")
    sp.add_argument("dir", type=Path)
    sp = leaf(
        repo,
        "refresh",
        cmd_repo_refresh,
        "re-sign timestamp (and snapshot when due, or a ROLE when asked) with fresh expiry",
    )
    sp.add_argument("dir", type=Path)
    sp.add_argument("--role", help="re-sign this role too: snapshot, targets, root or an app")

    app = sub.add_parser("app", help="manage applications").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(app, "add", cmd_app_add, "delegate an application to its own key")
    sp.add_argument("dir", type=Path)
    sp.add_argument("name")
    sp.add_argument("--threshold", type=int, default=1)
    sp.add_argument("--public-key", type=Path, help="PEM public key of a key held elsewhere")
    sp.add_argument("--signer-uri", help="securesystemslib signer URI of that key (file2:, hsm:, gcpkms:...)")

    rel = sub.add_parser("release", help="publish and list releases").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(rel, "add", cmd_release_add, "chunk, sign and publish a release")
    sp.add_argument("dir", type=Path)
    sp.add_argument("file", type=Path)
    sp.add_argument("--app", required=True)
    sp.add_argument("--version", required=True, dest="version")
    sp.add_argument("--channel", default="stable")
    sp = leaf(rel, "list", cmd_release_list, "list published releases")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--app")

    key = sub.add_parser("key", help="rotate keys").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(key, "rotate", cmd_key_rotate, "replace a role's keys and publish the change")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--role", required=True)
    sp.add_argument("--keyid", help="replace only this key (a prefix is enough)")
    sp.add_argument("--public-key", type=Path, help="PEM public key of the new key, held elsewhere")
    sp.add_argument("--signer-uri", help="signer URI of the new key")

    tls = sub.add_parser("tls", help="a fleet CA for peer mutual TLS").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(tls, "ca", cmd_tls_ca, "create a fleet CA (ca.pem, ca.key) in DIR; never overwrites one")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--name", default="swarmupdate fleet CA", help="the CA's common name")
    sp.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    sp = leaf(tls, "issue", cmd_tls_issue, "issue a machine's peer certificate (NAME.pem, NAME.key)")
    sp.add_argument("name", help="the certificate's common name and file name, e.g. the node id")
    sp.add_argument("--ca", type=Path, required=True, help="the fleet CA's directory")
    sp.add_argument("--out", type=Path, default=Path(), help="where to write (default: here)")
    sp.add_argument("--ip", action="append", default=[], help="an IP address for subjectAltName")
    sp.add_argument("--dns", action="append", default=[], help="a DNS name for subjectAltName")
    sp.add_argument("--days", type=int, default=90, help="validity in days (default 90)")

    origin = sub.add_parser("origin", help="development origin server").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(origin, "serve", cmd_origin_serve, "serve an origin tree over HTTP", json_flag=False)
    sp.add_argument("dir", type=Path)
    sp.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    sp.add_argument("--max-rate", default="0", help="total upload cap, e.g. 40MB/s or 100Mbit/s; 0 = none")

    agent = sub.add_parser("agent", help="the fleet agent").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(agent, "run", cmd_agent_run, "run the agent (systemd Type=notify service)", json_flag=False)
    sp.add_argument("--config", type=Path, default=Path("/etc/swarmupdate/agent.toml"))
    sp = leaf(agent, "status", cmd_agent_status, "installed and in-flight releases, peers, bytes by source")
    sp.add_argument("--config", type=Path, default=Path("/etc/swarmupdate/agent.toml"))

    tracker = sub.add_parser("tracker", help="the tracker").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    sp = leaf(tracker, "serve", cmd_tracker_serve, "serve the announce API", json_flag=False)
    sp.add_argument("--listen", type=_host_port, default=("127.0.0.1", 7070), metavar="HOST:PORT")
    sp.add_argument("--interval", type=float, default=30.0, help="announce interval handed to agents (s)")

    sp = leaf(
        sub,
        "demo",
        cmd_demo,
        "run a local swarm: origin, tracker and N agents; publish, distribute, report savings",
        json_flag=False,
    )
    sp.add_argument("--size-mb", type=int, default=64, help="artifact size in MiB (default 64)")
    sp.add_argument("--agents", type=int, default=8, help="number of agents (default 8)")
    sp.add_argument(
        "--workdir", type=Path, help="keep everything in this directory instead of a temporary one"
    )
    sp.add_argument("--keep", action="store_true", help="do not delete the temporary directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, json=None if args.log_format is None else args.log_format == "json")
    try:
        code: int = args.func(args)
    except SwarmUpdateError as exc:
        print(f"swarmupdate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``swarmupdate demo``: a local run of the whole pipeline on this machine.

Publishes a signed release of a generated artifact, serves the origin from a separate
process on a loopback port, then downloads the release as a client would: TUF refresh,
verified manifest, every chunk checked against it, the assembled artifact checked against
the signed target. Cleans up its processes on exit or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from swarmupdate.errors import RemoteDataError, TransferError
from swarmupdate.manifest import verify_chunk
from swarmupdate.origin.layout import OriginLayout
from swarmupdate.publisher.release import add_release
from swarmupdate.publisher.repository import Repository
from swarmupdate.trust.client import TrustClient

__all__ = ["run_demo"]


@contextlib.contextmanager
def _origin_process(origin_dir: Path, log: Path) -> Iterator[str]:
    cmd = [
        sys.executable,
        "-m",
        "swarmupdate.cli",
        "--log-format",
        "json",
        "origin",
        "serve",
        str(origin_dir),
        "--listen",
        "127.0.0.1:0",
    ]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "http://" not in line:
                raise TransferError(f"origin did not start (see {log})")
            yield line.strip().rsplit(" ", 1)[-1].rstrip("/")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def run_demo(size_mb: int = 64, workdir: Path | None = None, keep: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    console = Console(stderr=True)
    base = workdir or Path(tempfile.mkdtemp(prefix="swarmupdate-demo-"))
    try:
        repo_dir = base / "repo"
        console.rule("[bold]swarmupdate demo")
        console.print(f"work directory: {base}")
        repo = Repository.init(repo_dir)
        repo = Repository(repo_dir)
        repo.add_app("demo", repo.keys.generate("app-demo"))
        repo.commit()
        artifact = base / "demo-app.bin"
        artifact.write_bytes(random.Random(42).randbytes(size_mb * 1024 * 1024))
        started = time.monotonic()
        rel = add_release(Repository(repo_dir), "demo", "1.0", artifact)
        console.print(
            f"published [bold]{rel.ref.artifact_path}[/]: {rel.length / 1e6:.1f} MB in {rel.chunks} chunks, "
            f"signed (root, targets, delegated role 'demo', snapshot, timestamp) "
            f"in {time.monotonic() - started:.2f}s"
        )
        with _origin_process(repo_dir / "origin", base / "origin.log") as url:
            console.print(f"origin serving {repo_dir / 'origin'} at {url}/ (metrics at {url}/metrics)")
            client_dir = base / "client"
            TrustClient.init(client_dir, repo_dir / "origin/metadata/1.root.json")
            client = TrustClient(client_dir, f"{url}/metadata/")
            started = time.monotonic()
            found = client.latest_release("demo", "stable")
            if found is None:
                raise RemoteDataError("the demo release is not visible to the client")
            console.print(
                f"client verified TUF metadata and the manifest of {found.target_path} v{found.version}"
            )
            out = base / "installed.bin"
            whole = hashlib.sha256()
            with (
                httpx.Client(base_url=url, timeout=10) as http,
                out.open("wb") as f,
                Progress(
                    "{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=console,
                    disable=not console.is_terminal,
                ) as bar,
            ):
                task = bar.add_task("downloading chunks", total=found.length)
                for ref in found.manifest.chunks:
                    data = http.get("/" + OriginLayout.chunk_url_path(ref.sha256)).content
                    verify_chunk(data, ref)
                    whole.update(data)
                    f.write(data)
                    bar.advance(task, len(data))
            if whole.hexdigest() != found.sha256:
                raise RemoteDataError("assembled artifact does not match the signed target")
            elapsed = time.monotonic() - started
            sent = _counter(url, "swarmupdate_origin_sent_bytes_total")
        table = Table(title="demo summary")
        for col in ("release", "bytes", "chunks verified", "time", "origin sent", "artifact sha256"):
            table.add_column(col)
        table.add_row(
            found.target_path,
            f"{found.length:,}",
            str(len(found.manifest.chunks)),
            f"{elapsed:.2f}s",
            f"{sent:,.0f} B",
            found.sha256[:16] + "…",
        )
        console.print(table)
        console.print("[green]the installed bytes match the publisher's signature[/]")
        return 0
    finally:
        if not keep and workdir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_demo(int(os.environ.get("SIZE_MB", "64"))))

"""Fixtures for the multi-process system tests."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.fleet import Fleet
from tests.nspawn import ensure_rootfs


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A publisher repository with app ``web``; origin, trackers and agents are started by the test
    and all stopped afterwards."""
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The Debian rootfs that systemd-nspawn boots (built once with debootstrap, then cached)."""
    need_tool("systemd-nspawn")
    need_tool("debootstrap")
    need_tool("nsenter")
    started = time.monotonic()
    root = ensure_rootfs(log=lambda m: print(m, file=sys.stderr))
    print(f"rootfs ready in {time.monotonic() - started:.1f}s: {root}", file=sys.stderr)
    return root

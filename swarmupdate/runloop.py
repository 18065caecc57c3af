"""The event loop of the long-running commands (agent, tracker, origin): anyio on asyncio, on uvloop's
loop when it is installed.

uvloop (libuv, in C) runs the same asyncio code with less CPU per socket event. On the benchmark's
CPU-bound case (24 agents at 100 Mbit/s on 2 cores) the agents used 12% less CPU per GB and finished
sooner (docs/benchmarks.md). ``SWARMUPDATE_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop when
importable), ``uvloop`` (required: an error without it) or ``asyncio`` (the standard library's loop).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from swarmupdate.errors import ConfigError

__all__ = ["ENV", "backend_options", "run"]

ENV = "SWARMUPDATE_EVENT_LOOP"
_CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def backend_options(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """anyio's asyncio backend options for the loop ``env`` asks for.

    Raises:
        ConfigError: an unknown choice, or ``uvloop`` asked for and not installed.
    """
    choice = env.get(ENV, "") or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"{ENV}={choice!r}: expected one of {', '.join(_CHOICES)}")
    if choice == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(f"{ENV}=uvloop: uvloop is not installed ({exc})") from exc
        return {}
    return {"use_uvloop": True}


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(fn)`` on the loop chosen by :func:`backend_options`."""
    return anyio.run(fn, backend_options=backend_options())

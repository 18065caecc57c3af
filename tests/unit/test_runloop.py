"""The long-running commands' event loop choice (swarmupdate/runloop.py)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from swarmupdate import runloop
from swarmupdate.errors import ConfigError

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_auto_takes_uvloop_when_installed() -> None:
    # uvloop is a dependency: a venv without it would silently run ~12% more CPU per GB
    assert HAVE_UVLOOP
    assert runloop.backend_options({}) == {"use_uvloop": True}
    assert runloop.backend_options({runloop.ENV: "auto"}) == {"use_uvloop": True}
    assert runloop.backend_options({runloop.ENV: "uvloop"}) == {"use_uvloop": True}


def test_asyncio_can_be_chosen() -> None:
    assert runloop.backend_options({runloop.ENV: "asyncio"}) == {}


def test_unknown_choice_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SWARMUPDATE_EVENT_LOOP='tokio'"):
        runloop.backend_options({runloop.ENV: "tokio"})


def test_uvloop_required_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        runloop.backend_options({runloop.ENV: "uvloop"})
    assert runloop.backend_options({}) == {}  # auto falls back to the standard loop


@pytest.mark.parametrize(("choice", "module"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_run_uses_the_chosen_loop(monkeypatch: pytest.MonkeyPatch, choice: str, module: str) -> None:
    monkeypatch.setenv(runloop.ENV, choice)

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert runloop.run(which) == module

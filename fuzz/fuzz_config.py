"""Fuzz configuration loading: the agent's TOML file (``load_config``) and the tracker's settings
(``TrackerConfig``).

Modes: 0 the bytes as the agent's file; 1 a valid file with keys set to hostile TOML values; 2 the
same in an ``[[app]]`` table; 3 ``TrackerConfig`` from any numbers.
Contract: a config or ``ConfigError`` (whose message names the file, for the agent); a loaded config
is usable: finite positive times, sizes that are non-negative integers, a printable repr.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import _common
import atheris

with atheris.instrument_imports(include=_common.INSTRUMENT):
    from swarmupdate.agent.config import AgentConfig, load_config
    from swarmupdate.errors import ConfigError
    from swarmupdate.tracker.config import TrackerConfig

_dir = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
_file = _dir / "agent.toml"
_machine_id = _dir / "machine-id"
_machine_id.write_text("0123456789abcdef0123456789abcdef\n")

_VALID = {
    "origin_url": '"https://origin.example/"',
    "node_id": '"node-1"',
    "site": '"dc1"',
    "trackers": '["http://t1:7070", "https://t2"]',
    "store_max_bytes": '"10GiB"',
    "upload_limit": '"20Mbit/s"',
    "poll_interval": "300",
    "poll_jitter": "0.1",
    "peer_listen": '"0.0.0.0:7071"',
    "metrics_listen": '"[::1]:9471"',
    "max_upload_slots": "4",
    "log_level": '"info"',
}
_APP = {
    "name": '"web"',
    "install_dir": '"/opt/web"',
    "install_command": '["/bin/true"]',
    "keep_releases": "3",
}
_KEYS = [*_VALID, "state_dir", "download_limit", "peer_advertise", "static_peers", "request_timeout"]
_APP_KEYS = [*_APP, "channel", "health_command", "health_timeout"]


def _toml_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> str:
    kind = fdp.ConsumeIntInRange(0, 12)
    if kind == 0:
        return str(fdp.ConsumeInt(9))
    if kind == 1:  # past int64, past float range, past int-from-str limits
        return "9" * fdp.ConsumeIntInRange(1, 6000)
    if kind == 2:
        return fdp.PickValueInList(["inf", "-inf", "nan", "1e999", "-0.0", "0.5", "1e-999", "0x7fff"])
    if kind == 3:  # a quantity string: digits, a unit, spaces
        digits = "9" * fdp.ConsumeIntInRange(1, 2000) if fdp.ConsumeBool() else str(fdp.ConsumeInt(4))
        unit = fdp.PickValueInList(["", "B", "KiB", "GiB", "TB", "Mbit/s", "MB/s", "kbit/s", "x", "/s"])
        return '"' + digits + fdp.PickValueInList(["", ".5", " "]) + unit + '"'
    if kind == 4:
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 60))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == 5:
        return "'" + fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 60)).replace("'", "") + "'"
    if kind == 6:
        return fdp.PickValueInList(
            ["true", "false", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", "[]", "{}"]
        )
    if kind == 7:  # nesting deeper than any parser allows
        n = fdp.ConsumeIntInRange(1, 3000)
        opener, closer = fdp.PickValueInList([("[", "]"), ("{a=", "}")])
        return opener * n + (closer * n if fdp.ConsumeBool() else "")
    if kind == 8 and depth < 3:
        return "[" + ", ".join(_toml_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))) + "]"
    if kind == 9 and depth < 3:
        return (
            "{"
            + ", ".join(f"k{i} = {_toml_value(fdp, depth + 1)}" for i in range(fdp.ConsumeIntInRange(0, 3)))
            + "}"
        )
    if kind == 10:
        host = fdp.PickValueInList(["h", "[::1]", "[::1", "1.2.3.4", "999.1.1.1", "", "a..b", "h:1:2"])
        return f'"{fdp.PickValueInList(["http://", "https://", "ftp://", ""])}{host}:{fdp.ConsumeInt(3)}"'
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 20))


def _document(mode: int, rest: bytes) -> bytes:
    if mode == 0:
        return rest
    fdp = atheris.FuzzedDataProvider(rest)
    top, app = dict(_VALID), dict(_APP)
    table, keys = (top, _KEYS) if mode == 1 else (app, _APP_KEYS)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        key = fdp.PickValueInList(keys) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeUnicodeNoSurrogates(6)
        if fdp.ConsumeIntInRange(0, 5) == 0:
            table.pop(key, None)
        else:
            table[key] = _toml_value(fdp)
    lines = [f"{k} = {v}" for k, v in top.items()]
    lines += ["[[app]]", *(f"{k} = {v}" for k, v in app.items())]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def _check_agent(config: AgentConfig) -> None:
    assert config.origin_url.startswith(("http://", "https://"))
    for name in ("poll_interval", "connect_timeout", "request_timeout", "origin_pullers"):
        value = getattr(config, name)
        assert math.isfinite(value) and value > 0, (name, value)
    assert 0 <= config.poll_jitter < 1
    for name in ("store_max_bytes", "upload_limit", "download_limit"):
        value = getattr(config, name)
        assert type(value) is int and 0 <= value < 2**63, (name, value)
    assert all(math.isfinite(a.health_timeout) and a.health_timeout > 0 for a in config.apps)
    repr(config)  # a config is logged: it must print


def _agent(document: bytes) -> None:
    _file.write_bytes(document)
    try:
        config = load_config(_file, machine_id_path=_machine_id, local_address=lambda: "192.0.2.7")
    except ConfigError as exc:
        assert str(exc).startswith(f"{_file}: "), exc
        return
    _check_agent(config)


def _tracker(fdp: atheris.FuzzedDataProvider) -> None:
    def number() -> float:
        return fdp.ConsumeFloat() if fdp.ConsumeBool() else float(fdp.ConsumeInt(2))

    try:
        config = TrackerConfig(
            interval=number(),
            ttl=None if fdp.ConsumeBool() else number(),
            max_peers_per_swarm=fdp.ConsumeInt(4),
            max_swarms=fdp.ConsumeInt(4),
            max_peers=fdp.ConsumeInt(4),
            numwant=fdp.ConsumeInt(2),
            pullers=fdp.ConsumeInt(2),
        )
    except ConfigError:
        return
    assert config.peer_ttl > 0 and config.sweep_every > 0
    assert 0 <= config.numwant <= 200 and 0 <= config.pullers <= 200


def test_one_input(data: bytes) -> None:
    mode, rest = _common.mode_and_rest(data, 4)
    if mode == 3:
        _tracker(atheris.FuzzedDataProvider(rest))
    else:
        _agent(_document(mode, rest))


def seeds() -> list[bytes]:
    valid = "\n".join(f"{k} = {v}" for k, v in _VALID.items())
    app = "\n".join(f"{k} = {v}" for k, v in _APP.items())
    return [
        b"\x00" + f"{valid}\n[[app]]\n{app}\n".encode(),
        b'\x00origin_url = "http://o"\n',
        b"\x01" + b"\x00" * 12,
        b"\x02" + b"\x00" * 12,
        b"\x03" + b"\x00" * 24,
    ]


if __name__ == "__main__":
    _common.main(test_one_input, seeds)

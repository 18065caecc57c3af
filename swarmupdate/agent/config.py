"""Agent configuration: one TOML file (``/etc/swarmupdate/agent.toml``) read into frozen dataclasses.

Every key is documented with its default in ``docs/configuration.md``. A bad file fails at start
with a :class:`~swarmupdate.errors.ConfigError` naming the file, the dotted key
(``app[1].install_command``) and the reason; unknown keys are errors, so a typo never passes
silently. Relative paths are taken relative to the config file's directory.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import ipaddress
import math
import re
import socket
import struct
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from swarmupdate.errors import ConfigError
from swarmupdate.model import CHANNEL_RE, TOP_LEVEL_ROLES, is_app_name
from swarmupdate.net.tls import PeerTLSConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MACHINE_ID_PATH",
    "AgentConfig",
    "AppConfig",
    "HostPort",
    "first_local_address",
    "load_config",
    "parse_config",
    "parse_host_port",
    "parse_rate",
    "parse_size",
    "parse_url",
]

DEFAULT_CONFIG_PATH = Path("/etc/swarmupdate/agent.toml")
MACHINE_ID_PATH = Path("/etc/machine-id")


class HostPort(NamedTuple):
    """A listen address. ``str()`` gives ``HOST:PORT``, with brackets around an IPv6 host."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_PEER_LISTEN = HostPort("0.0.0.0", 7071)  # noqa: S104 - serving peers on every interface is the point
_METRICS_LISTEN = HostPort("127.0.0.1", 9471)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    """One ``[[app]]`` table: an application this agent installs."""

    name: str
    install_dir: Path
    channel: str = "stable"
    install_command: tuple[str, ...] = ()
    health_command: tuple[str, ...] = ()
    health_timeout: float = 60.0
    keep_releases: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The whole agent configuration; see ``docs/configuration.md`` for each field.

    Sizes are bytes, rates bytes per second (0 = unlimited), times seconds.
    """

    origin_url: str
    node_id: str
    site: str = ""
    trusted_root: Path = Path("/etc/swarmupdate/root.json")
    state_dir: Path = Path("/var/lib/swarmupdate")
    store_dir: Path = Path("/var/cache/swarmupdate/chunks")
    store_max_bytes: int = 10 * 1024**3
    trackers: tuple[str, ...] = ()
    static_peers: tuple[str, ...] = ()
    poll_interval: float = 300.0
    poll_jitter: float = 0.1
    peer_listen: HostPort = _PEER_LISTEN
    #: empty only when ``peer_listen`` has port 0: the agent fills it in once bound
    peer_advertise: str = ""
    upload_limit: int = 0
    download_limit: int = 0
    max_upload_slots: int = 2
    origin_fallback_delay: float = 10.0
    origin_pullers: float = 1.5
    per_peer_inflight: int = 4
    max_inflight: int = 16
    connect_timeout: float = 2.0
    request_timeout: float = 30.0
    #: None when metrics are disabled (``metrics_listen = ""``)
    metrics_listen: HostPort | None = _METRICS_LISTEN
    log_level: str = "info"
    #: peer mutual TLS (the ``[peer_tls]`` table); None: peers speak plain HTTP
    peer_tls: PeerTLSConfig | None = None
    apps: tuple[AppConfig, ...] = ()
    #: the file this was loaded from, for messages
    source: Path | None = field(default=None, compare=False)

    @property
    def origin_metadata_url(self) -> str:
        """Base URL of the TUF metadata, ending in ``/``."""
        return f"{self.origin_url}/metadata/"

    @property
    def origin_targets_url(self) -> str:
        """Base URL of the TUF targets, ending in ``/``."""
        return f"{self.origin_url}/targets/"

    @property
    def origin_chunks_url(self) -> str:
        """Base URL of the content-addressed chunks, ending in ``/``."""
        return f"{self.origin_url}/chunks/"


def load_config(
    path: Path,
    *,
    machine_id_path: Path = MACHINE_ID_PATH,
    local_address: Callable[[], str | None] | None = None,
) -> AgentConfig:
    """Read and check the agent's TOML file.

    Args:
        path: the config file.
        machine_id_path: where the default ``node_id`` comes from.
        local_address: finds the address for the default ``peer_advertise``
            (default :func:`first_local_address`).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a key is missing, unknown or
            invalid; the message names the file, the key and the reason.
    """
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    return parse_config(text, path, machine_id_path=machine_id_path, local_address=local_address)


def parse_config(
    text: str,
    source: Path,
    *,
    machine_id_path: Path = MACHINE_ID_PATH,
    local_address: Callable[[], str | None] | None = None,
) -> AgentConfig:
    """Check TOML ``text`` as if read from ``source`` (relative paths are taken against its directory).

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    try:
        doc = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer past Python's int-from-text limit
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # arrays or inline tables nested a few hundred deep
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from exc
    t = _Table(doc, "", source, _AGENT_KEYS)
    node_id = t.text("node_id", "", _NODE_ID, _NODE_ID_HINT) or _machine_id(t, machine_id_path)
    peer_listen = t.host_port("peer_listen", "0.0.0.0:7071")
    peer_tls = _peer_tls(t)
    peer_advertise = t.url("peer_advertise", "", allow_empty=True) or _default_advertise(
        t, peer_listen, local_address or first_local_address, "https" if peer_tls else "http"
    )
    if peer_tls is not None and peer_advertise and not peer_advertise.startswith("https://"):
        raise t.error("peer_advertise", f"{peer_advertise!r}: must be https:// when [peer_tls] is set")
    static_peers = t.url_list("static_peers")
    for i, url in enumerate(static_peers):
        if peer_tls is not None and not url.startswith("https://"):
            raise t.error(f"static_peers[{i}]", f"{url!r}: must be https:// when [peer_tls] is set")
    config = AgentConfig(
        node_id=node_id,
        site=t.text("site", "", _SITE, "up to 128 letters, digits and . _ : / -"),
        origin_url=t.url("origin_url"),
        trusted_root=t.path("trusted_root", "/etc/swarmupdate/root.json"),
        state_dir=t.path("state_dir", "/var/lib/swarmupdate"),
        store_dir=t.path("store_dir", "/var/cache/swarmupdate/chunks"),
        store_max_bytes=t.convert("store_max_bytes", "10GiB", parse_size),
        trackers=t.url_list("trackers"),
        static_peers=static_peers,
        poll_interval=t.number("poll_interval", 300.0, above=0),
        poll_jitter=t.number("poll_jitter", 0.1, at_least=0, below=1),
        peer_listen=peer_listen,
        peer_advertise=peer_advertise,
        upload_limit=t.convert("upload_limit", "0", parse_rate),
        download_limit=t.convert("download_limit", "0", parse_rate),
        max_upload_slots=t.integer("max_upload_slots", 2, at_least=1),
        origin_fallback_delay=t.number("origin_fallback_delay", 10.0, at_least=0),
        origin_pullers=t.number("origin_pullers", 1.5, above=0),
        per_peer_inflight=t.integer("per_peer_inflight", 4, at_least=1),
        max_inflight=t.integer("max_inflight", 16, at_least=1),
        connect_timeout=t.number("connect_timeout", 2.0, above=0),
        request_timeout=t.number("request_timeout", 30.0, above=0),
        metrics_listen=t.optional_host_port("metrics_listen", "127.0.0.1:9471"),
        log_level=t.choice("log_level", "info", _LOG_LEVELS),
        peer_tls=peer_tls,
        apps=_apps(t),
        source=source,
    )
    return config


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as ``"10GiB"``, ``"512MB"``, ``"1.5 GiB"``, ``"0"``.

    Units: B; kB, MB, GB, TB (powers of 1000); KiB, MiB, GiB, TiB (powers of 1024); any case.

    Raises:
        ValueError: anything else; the message is the reason.
    """
    if isinstance(value, str):
        number, unit = _split_quantity(value, _SIZE_HINT)
        if unit.lower() not in _SIZE_UNITS:
            raise ValueError(f"unknown size unit {unit!r}; {_SIZE_HINT}")
        return _bounded(int(number * _SIZE_UNITS[unit.lower()]), _SIZE_HINT)
    if type(value) is int and value >= 0:
        return _bounded(value, _SIZE_HINT)
    raise ValueError(f"expected bytes as a non-negative integer or a string; {_SIZE_HINT}")


def parse_rate(value: object) -> int:
    """Bytes per second from an int or a string such as ``"20Mbit/s"``, ``"5MB/s"``, ``"0"`` (unlimited).

    Units: B/s, kB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s for bytes; kbit/s, Mbit/s, Gbit/s for bits.

    Raises:
        ValueError: anything else; the message is the reason.
    """
    if isinstance(value, str):
        number, unit = _split_quantity(value, _RATE_HINT)
        if unit == "":
            return _bounded(int(number), _RATE_HINT)
        if not unit.endswith("/s"):
            raise ValueError(f"a rate needs '/s' after its unit; {_RATE_HINT}")
        unit = unit[:-2]
        if unit.lower().endswith("bit"):
            prefix, per = unit[:-3].lower(), Decimal(8)
        elif unit.endswith("B"):
            prefix, per = unit[:-1].lower(), Decimal(1)
        else:
            raise ValueError(f"unknown rate unit {unit + '/s'!r} (write bit/s or B/s); {_RATE_HINT}")
        if prefix + "b" not in _SIZE_UNITS:
            raise ValueError(f"unknown rate unit {unit + '/s'!r}; {_RATE_HINT}")
        return _bounded(int(number * _SIZE_UNITS[prefix + "b"] / per), _RATE_HINT)
    if type(value) is int and value >= 0:
        return _bounded(value, _RATE_HINT)
    raise ValueError(f"expected bytes/s as a non-negative integer or a string; {_RATE_HINT}")


def parse_host_port(value: str) -> HostPort:
    """``HOST:PORT`` with an IPv4 address, a host name or a bracketed IPv6 address; port 0-65535.

    Raises:
        ValueError: the reason.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:7071 or [::]:7071")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or IPv4 address (put IPv6 in brackets)")
    elif host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return HostPort(host, int(port))


def parse_url(value: str) -> str:
    """An ``http``/``https`` URL with a host, without query or fragment; returned without a trailing ``/``.

    Raises:
        ValueError: the reason.
    """
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("URL contains whitespace")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: expected an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{value!r}: URL has no host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{value!r}: URL must not have a query, fragment or user name")
    return value.rstrip("/")


def first_local_address() -> str | None:
    """The first non-loopback, non-link-local address of this machine, by interface index.

    IPv4 first, then global IPv6; None when there is none.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):  # interface without IPv4
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
                v4 = ipaddress.IPv4Address(packed[20:24])
                if not (v4.is_loopback or v4.is_link_local or v4.is_unspecified):
                    return str(v4)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            v6 = ipaddress.IPv6Address(int(line.split()[0], 16))
            if not (v6.is_loopback or v6.is_link_local or v6.is_multicast or v6.is_unspecified):
                return str(v6)
    return None


#: the largest size (bytes) or rate (bytes/s): a signed 64-bit integer, past any real disk or link
_MAX_QUANTITY = 2**63 - 1
_SIOCGIFADDR = 0x8915
_NODE_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9._:-]{0,127})?")
_NODE_ID_HINT = "1-128 letters, digits and . _ : -"
_SITE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._:/-]{0,127})?")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_QUANTITY = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(\S*)\s*")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_SIZE_HINT = (
    'use an integer or a string like "10GiB", "512MB", "0" (units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)'
)
_RATE_HINT = 'use an integer or a string like "20Mbit/s", "5MB/s", "0" (0 = unlimited)'
_SIZE_UNITS = {"": 1, "b": 1} | {
    f"{p}b": m
    for i, (si, iec) in enumerate(zip("kmgt", ("ki", "mi", "gi", "ti"), strict=True), 1)
    for p, m in ((si, 1000**i), (iec, 1024**i))
}
_AGENT_KEYS = frozenset(AgentConfig.__dataclass_fields__) - {"apps", "source"} | {"app"}
_APP_KEYS = frozenset(AppConfig.__dataclass_fields__)
_PEER_TLS_KEYS = frozenset(PeerTLSConfig.__dataclass_fields__)
_TOML_TYPES = {str: "string", int: "integer", float: "float", bool: "boolean", list: "array", dict: "table"}


def _split_quantity(value: str, hint: str) -> tuple[Decimal, str]:
    m = _QUANTITY.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not a number with an optional unit; {hint}")
    number = Decimal(m[1])
    # bounded before any arithmetic: a number of a million digits overflows Decimal's context
    if number > _MAX_QUANTITY:
        raise ValueError(f"more than {_MAX_QUANTITY} (2**63 - 1); {hint}")
    return number, m[2]


def _bounded(number: int, hint: str) -> int:
    if number > _MAX_QUANTITY:
        raise ValueError(f"more than {_MAX_QUANTITY} bytes (2**63 - 1); {hint}")
    return number


def _type_name(value: object) -> str:
    return _TOML_TYPES.get(type(value), type(value).__name__)


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()


class _Table:
    """One TOML table being read; names the file and the dotted key in every error."""

    def __init__(self, data: dict[str, Any], prefix: str, source: Path, known: frozenset[str]) -> None:
        """Check the keys first, so that a typo is reported as such, not as the key it was meant to be.

        Raises:
            ConfigError: a key not in ``known``.
        """
        self.data = data
        self.prefix = prefix
        self.source = source
        self.base = source.absolute().parent
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(key, f"unknown key{hint}")

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key}: {reason}")

    def get(self, key: str, default: object, kind: type | tuple[type, ...], expected: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "required key is missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.error(key, f"expected {expected}, got {_type_name(value)}")
        return value

    def text(
        self, key: str, default: object = _REQUIRED, rule: re.Pattern[str] | None = None, hint: str = ""
    ) -> str:
        value: str = self.get(key, default, str, "a string")
        if rule is not None and not rule.fullmatch(value):
            raise self.error(key, f"{value!r} is not allowed: use {hint}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        above: float | None = None,
        at_least: float | None = None,
        below: float | None = None,
    ) -> float:
        raw = self.get(key, default, (int, float), "a number")
        # an integer past the float range (TOML does not bound them) is as unusable as inf
        value = float(raw) if abs(raw) <= sys.float_info.max else math.inf
        if not math.isfinite(value):
            raise self.error(key, "must be a finite number")
        if above is not None and not value > above:
            raise self.error(key, f"must be greater than {above:g}, got {value:g}")
        if at_least is not None and not value >= at_least:
            raise self.error(key, f"must be at least {at_least:g}, got {value:g}")
        if below is not None and not value < below:
            raise self.error(key, f"must be less than {below:g}, got {value:g}")
        return value

    def integer(self, key: str, default: int, *, at_least: int) -> int:
        value: int = self.get(key, default, int, "an integer")
        if value < at_least:
            raise self.error(key, f"must be at least {at_least}, got {value}")
        return value

    def convert(self, key: str, default: object, parse: Callable[[object], int]) -> int:
        try:
            return parse(self.data.get(key, default))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def path(self, key: str, default: object = _REQUIRED) -> Path:
        if isinstance(default, Path):
            default = str(default)
        value = self.text(key, default)
        if not value:
            raise self.error(key, "must not be empty")
        if "\0" in value:
            raise self.error(key, "must not contain NUL")
        return self.base / value

    def url(self, key: str, default: object = _REQUIRED, *, allow_empty: bool = False) -> str:
        value = self.text(key, default)
        if allow_empty and value == "":
            return value
        try:
            return parse_url(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def strings(self, key: str) -> list[str]:
        value: list[Any] = self.get(key, [], list, "an array of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {_type_name(item)}")
        return value

    def url_list(self, key: str) -> tuple[str, ...]:
        urls = []
        for i, item in enumerate(self.strings(key)):
            try:
                urls.append(parse_url(item))
            except ValueError as exc:
                raise self.error(f"{key}[{i}]", str(exc)) from None
        return tuple(urls)

    def argv(self, key: str) -> tuple[str, ...]:
        argv = self.strings(key)
        if argv and not argv[0]:
            raise self.error(f"{key}[0]", "the program name must not be empty")
        for i, item in enumerate(argv):
            if "\0" in item:
                raise self.error(f"{key}[{i}]", "must not contain NUL")
        return tuple(argv)

    def optional_host_port(self, key: str, default: str) -> HostPort | None:
        return None if self.text(key, default) == "" else self.host_port(key, default)

    def host_port(self, key: str, default: str) -> HostPort:
        value = self.text(key, default)
        try:
            return parse_host_port(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None


def _apps(t: _Table) -> tuple[AppConfig, ...]:
    tables: list[Any] = t.get("app", [], list, "an array of tables ([[app]])")
    apps: list[AppConfig] = []
    for i, doc in enumerate(tables):
        if not isinstance(doc, dict):
            raise t.error(f"app[{i}]", f"expected a table ([[app]]), got {_type_name(doc)}")
        a = _Table(doc, f"app[{i}].", t.source, _APP_KEYS)
        name = a.text("name")
        if not is_app_name(name):
            raise a.error(
                "name",
                f"{name!r} is not an app name: use 1-63 lowercase letters, digits, - or _, "
                f"not one of {', '.join(TOP_LEVEL_ROLES)}",
            )
        app = AppConfig(
            name=name,
            channel=a.text("channel", "stable", CHANNEL_RE, "1-63 lowercase letters, digits and . _ -"),
            install_dir=a.path("install_dir"),
            install_command=a.argv("install_command"),
            health_command=a.argv("health_command"),
            health_timeout=a.number("health_timeout", 60.0, above=0),
            keep_releases=a.integer("keep_releases", 3, at_least=1),
        )
        for j, other in enumerate(apps):
            if other.name == app.name:
                raise a.error("name", f"{name!r} is already used by app[{j}]")
            if other.install_dir == app.install_dir:
                raise a.error("install_dir", f"{app.install_dir} is already used by app[{j}]")
        apps.append(app)
    return tuple(apps)


def _peer_tls(t: _Table) -> PeerTLSConfig | None:
    doc = t.get("peer_tls", None, dict, "a table ([peer_tls])")
    if doc is None:
        return None
    p = _Table(doc, "peer_tls.", t.source, _PEER_TLS_KEYS)
    return PeerTLSConfig(
        ca=p.path("ca"),
        cert=p.path("cert"),
        key=p.path("key"),
        check_hostname=p.get("check_hostname", False, bool, "a boolean"),
    )


def _machine_id(t: _Table, machine_id_path: Path) -> str:
    try:
        value = machine_id_path.read_text().strip()
    except OSError:
        value = ""
    if not value:
        raise t.error("node_id", f"not set, and {machine_id_path} is missing or empty")
    if not _NODE_ID.fullmatch(value):
        raise t.error("node_id", f"not set, and {machine_id_path} does not hold {_NODE_ID_HINT}")
    return value


def _default_advertise(
    t: _Table, listen: HostPort, local_address: Callable[[], str | None], scheme: str
) -> str:
    if listen.port == 0:
        return ""  # the port is known only after binding; the agent fills this in
    host = listen.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - detecting the wildcard, not binding to it
        found = local_address()
        if found is None:
            raise t.error("peer_advertise", "not set, and this machine has no non-loopback address")
        host = found
    return f"{scheme}://{HostPort(host, listen.port)}"

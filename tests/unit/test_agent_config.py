"""Agent configuration: a full file, the defaults, and a precise error for every kind of mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swarmupdate.agent.config import (
    AgentConfig,
    AppConfig,
    HostPort,
    load_config,
    parse_host_port,
    parse_rate,
    parse_size,
    parse_url,
)
from swarmupdate.errors import ConfigError
from swarmupdate.model import is_channel
from swarmupdate.net.tls import PeerTLSConfig
from swarmupdate.publisher.repository import validate_app_name

REPO = Path(__file__).resolve().parents[2]
MINIMAL = 'origin_url = "https://origin.example/"\n'
APP = '[[app]]\nname = "web"\ninstall_dir = "/opt/web"\n'


@pytest.fixture
def machine_id(tmp_path: Path) -> Path:
    path = tmp_path / "machine-id"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return path


def load(
    tmp_path: Path, text: str, machine_id: Path | None = None, address: str | None = "192.0.2.7"
) -> AgentConfig:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return load_config(
        path, machine_id_path=machine_id or tmp_path / "no-machine-id", local_address=lambda: address
    )


def test_defaults(tmp_path: Path, machine_id: Path) -> None:
    config = load(tmp_path, MINIMAL, machine_id)
    assert config == AgentConfig(
        origin_url="https://origin.example",
        node_id="0123456789abcdef0123456789abcdef",
        peer_advertise="http://192.0.2.7:7071",
    )
    assert config.site == ""
    assert config.trusted_root == Path("/etc/swarmupdate/root.json")
    assert config.state_dir == Path("/var/lib/swarmupdate")
    assert config.store_dir == Path("/var/cache/swarmupdate/chunks")
    assert config.store_max_bytes == 10 * 2**30
    assert config.trackers == config.static_peers == ()
    assert (config.poll_interval, config.poll_jitter) == (300.0, 0.1)
    assert config.peer_listen == HostPort("0.0.0.0", 7071)
    assert (config.upload_limit, config.download_limit, config.max_upload_slots) == (0, 0, 2)
    assert (config.origin_fallback_delay, config.origin_pullers) == (10.0, 1.5)
    assert (config.per_peer_inflight, config.max_inflight) == (4, 16)
    assert (config.connect_timeout, config.request_timeout) == (2.0, 30.0)
    assert config.metrics_listen == HostPort("127.0.0.1", 9471)
    assert config.log_level == "info"
    assert config.apps == ()
    assert config.source == tmp_path / "etc" / "agent.toml"
    assert config.origin_metadata_url == "https://origin.example/metadata/"
    assert config.origin_targets_url == "https://origin.example/targets/"
    assert config.origin_chunks_url == "https://origin.example/chunks/"


def test_app_defaults(tmp_path: Path, machine_id: Path) -> None:
    (app,) = load(tmp_path, MINIMAL + APP, machine_id).apps
    assert app == AppConfig(name="web", install_dir=Path("/opt/web"))
    assert (app.channel, app.install_command, app.health_command) == ("stable", (), ())
    assert (app.health_timeout, app.keep_releases) == (60.0, 3)


FULL = """
node_id = "node-17.eu"
site = "eu-west-1a"
origin_url = "http://origin.internal:8080/repo"
trusted_root = "keys/root.json"
state_dir = "/srv/state"
store_dir = "../cache/chunks"
store_max_bytes = "1.5GiB"
trackers = ["http://t1:7070", "https://t2.example.com/"]
static_peers = ["http://[2001:db8::5]:7071"]
poll_interval = 60
poll_jitter = 0
peer_listen = "[::]:7072"
peer_advertise = "https://me.example.com:7072/"
upload_limit = "20Mbit/s"
download_limit = 1000000
max_upload_slots = 4
origin_fallback_delay = 0
origin_pullers = 3
per_peer_inflight = 2
max_inflight = 32
connect_timeout = 0.5
request_timeout = 10
metrics_listen = ""
log_level = "debug"

[[app]]
name = "web"
channel = "beta-1"
install_dir = "apps/web"
install_command = ["./install.sh", "--quiet"]
health_command = ["curl", "-f", "http://127.0.0.1/"]
health_timeout = 5
keep_releases = 1

[[app]]
name = "db_tools"
install_dir = "/opt/db"
"""


def test_full_file(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    etc = tmp_path / "etc"
    assert config == AgentConfig(
        node_id="node-17.eu",
        site="eu-west-1a",
        origin_url="http://origin.internal:8080/repo",
        trusted_root=etc / "keys/root.json",
        state_dir=Path("/srv/state"),
        store_dir=etc / "../cache/chunks",
        store_max_bytes=1536 * 2**20,
        trackers=("http://t1:7070", "https://t2.example.com"),
        static_peers=("http://[2001:db8::5]:7071",),
        poll_interval=60.0,
        poll_jitter=0.0,
        peer_listen=HostPort("::", 7072),
        peer_advertise="https://me.example.com:7072",
        upload_limit=2_500_000,
        download_limit=1_000_000,
        max_upload_slots=4,
        origin_fallback_delay=0.0,
        origin_pullers=3.0,
        per_peer_inflight=2,
        max_inflight=32,
        connect_timeout=0.5,
        request_timeout=10.0,
        metrics_listen=None,
        log_level="debug",
        apps=(
            AppConfig(
                name="web",
                channel="beta-1",
                install_dir=etc / "apps/web",
                install_command=("./install.sh", "--quiet"),
                health_command=("curl", "-f", "http://127.0.0.1/"),
                health_timeout=5.0,
                keep_releases=1,
            ),
            AppConfig(name="db_tools", install_dir=Path("/opt/db")),
        ),
    )
    assert config.origin_chunks_url == "http://origin.internal:8080/repo/chunks/"
    assert isinstance(config.poll_interval, float)
    assert str(config.peer_listen) == "[::]:7072"


def test_example_file_loads(machine_id: Path) -> None:
    config = load_config(
        REPO / "service" / "agent.example.toml", machine_id_path=machine_id, local_address=lambda: "192.0.2.7"
    )
    assert config.node_id == "0123456789abcdef0123456789abcdef"
    assert config.origin_metadata_url == "https://updates.example.com/swarmupdate/metadata/"
    assert [a.name for a in config.apps] == ["web", "agent-plugins"]
    assert config.peer_advertise == "http://192.0.2.7:7071"
    assert len(config.trackers) == 2


def test_example_file_shows_the_defaults(machine_id: Path) -> None:
    """Every ``key = value`` line the example shows, commented or not, carries the real default
    unless it is one of the few the example sets on purpose."""
    text = (REPO / "service" / "agent.example.toml").read_text()
    defaults = load(machine_id.parent, MINIMAL, machine_id)
    on_purpose = {"site", "origin_url", "trackers"}
    top = text.split("\n[[app]]")[0].split("\n# [peer_tls]")[0]
    shown = re.findall(r"^#? ?([a-z_]+) = (.+?)\s*(?:#.*)?$", top, re.MULTILINE)
    tables = {"apps", "source", "peer_tls"}  # [[app]] and [peer_tls] are shown as tables
    assert {key for key, _ in shown} == set(AgentConfig.__dataclass_fields__) - tables
    for key, value in shown:
        if key in on_purpose:
            continue
        single = load(machine_id.parent, MINIMAL + f"{key} = {value}\n", machine_id)
        assert single == defaults, f"the example shows {key} = {value}, which is not the default"


NAMES = [
    "web",
    "db_tools",
    "a-b",
    "0",
    "x" * 63,
    "x" * 64,
    "Web",
    "a.b",
    "a/b",
    "",
    "-a",
    "_a",
    "root",
    "a b",
]
NAMES += ["targets", "snapshot", "timestamp", "beta.1", "stable", "é"]


@pytest.mark.parametrize("name", NAMES)
def test_app_and_channel_names_follow_the_publisher(tmp_path: Path, machine_id: Path, name: str) -> None:
    try:
        validate_app_name(name)
        publisher_app_ok = True
    except ConfigError:
        publisher_app_ok = False
    try:
        load(tmp_path, MINIMAL + app(name=name), machine_id)
        agent_app_ok = True
    except ConfigError:
        agent_app_ok = False
    assert agent_app_ok == publisher_app_ok
    try:
        load(tmp_path, MINIMAL + app(f'channel = "{name}"'), machine_id)
        agent_channel_ok = True
    except ConfigError:
        agent_channel_ok = False
    assert agent_channel_ok == is_channel(name)  # the rule the publisher applies in add_release


def test_docs_describe_every_key() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.MULTILINE))
    expected = (set(AgentConfig.__dataclass_fields__) - {"apps", "source"}) | {"app"}
    expected |= set(AppConfig.__dataclass_fields__)
    assert documented == expected


def test_relative_paths_are_taken_against_the_config_directory(tmp_path: Path, machine_id: Path) -> None:
    config = load(tmp_path, MINIMAL + 'store_dir = "chunks"\n' + APP.replace("/opt/web", "web"), machine_id)
    assert config.store_dir == tmp_path / "etc" / "chunks"
    assert config.apps[0].install_dir == tmp_path / "etc" / "web"
    assert config.store_dir.is_absolute()


@pytest.mark.parametrize(
    ("listen", "address", "advertise"),
    [
        ("0.0.0.0:7071", "192.0.2.7", "http://192.0.2.7:7071"),
        ("[::]:7071", "2001:db8::7", "http://[2001:db8::7]:7071"),
        ("10.1.2.3:8000", None, "http://10.1.2.3:8000"),
        ("[2001:db8::1]:7071", None, "http://[2001:db8::1]:7071"),
        ("peer.example.com:7071", None, "http://peer.example.com:7071"),
        ("127.0.0.1:0", None, ""),  # known only after binding: the agent fills it in
    ],
)
def test_default_peer_advertise(
    tmp_path: Path, machine_id: Path, listen: str, address: str | None, advertise: str
) -> None:
    config = load(tmp_path, MINIMAL + f'peer_listen = "{listen}"\n', machine_id, address=address)
    assert config.peer_advertise == advertise


def test_machine_id_is_stripped_and_node_id_wins(tmp_path: Path, machine_id: Path) -> None:
    assert load(tmp_path, MINIMAL, machine_id).node_id == "0123456789abcdef0123456789abcdef"
    assert load(tmp_path, MINIMAL + 'node_id = "n1"\n', machine_id).node_id == "n1"
    assert load(tmp_path, MINIMAL + 'node_id = "n1"\n', None).node_id == "n1"


def expect_error(tmp_path: Path, text: str, key: str, reason: str, **kwargs: object) -> None:
    path = tmp_path / "etc" / "agent.toml"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert re.search(reason, message[len(f"{path}: {key}: ") :]), message


def test_missing_machine_id_and_no_node_id(tmp_path: Path) -> None:
    expect_error(tmp_path, MINIMAL, "node_id", r"not set, and .*no-machine-id is missing or empty")
    (tmp_path / "empty-id").write_text("\n")
    expect_error(
        tmp_path, MINIMAL, "node_id", "empty-id is missing or empty", machine_id=tmp_path / "empty-id"
    )


def test_no_address_to_advertise(tmp_path: Path, machine_id: Path) -> None:
    expect_error(
        tmp_path, MINIMAL, "peer_advertise", "no non-loopback address", machine_id=machine_id, address=None
    )


def app(extra: str = "", name: str = "web", install_dir: str = "/opt/web") -> str:
    return f'[[app]]\nname = "{name}"\ninstall_dir = "{install_dir}"\n{extra}\n'


TLS = '[peer_tls]\nca = "tls/fleet-ca.pem"\ncert = "tls/agent.pem"\nkey = "tls/agent.key"\n'


def test_peer_tls(tmp_path: Path, machine_id: Path) -> None:
    config = load(tmp_path, MINIMAL + TLS, machine_id)
    etc = tmp_path / "etc"
    assert config.peer_tls == PeerTLSConfig(
        ca=etc / "tls/fleet-ca.pem", cert=etc / "tls/agent.pem", key=etc / "tls/agent.key"
    )
    assert config.peer_tls.check_hostname is False
    # peers reach a TLS agent over https; an explicit https advertise is kept
    assert config.peer_advertise == "https://192.0.2.7:7071"
    config = load(tmp_path, 'peer_advertise = "https://n1.example:7071"\n' + MINIMAL + TLS, machine_id)
    assert config.peer_advertise == "https://n1.example:7071"
    assert load(tmp_path, MINIMAL + TLS + "check_hostname = true\n", machine_id).peer_tls.check_hostname  # type: ignore[union-attr]
    assert load(tmp_path, MINIMAL, machine_id).peer_tls is None


def test_example_peer_tls_block_loads(machine_id: Path, tmp_path: Path) -> None:
    text = (REPO / "service" / "agent.example.toml").read_text()
    block = text.split("\n# [peer_tls]")[1].split("\n\n")[0]
    uncommented = "[peer_tls]" + "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = load(tmp_path, MINIMAL + uncommented + "\n", machine_id)
    assert config.peer_tls is not None
    assert config.peer_tls.cert == Path("/etc/swarmupdate/tls/agent.pem")
    assert not config.peer_tls.check_hostname  # the example shows the default


BAD = [
    # (text, key, reason)
    ("", "origin_url", "required key is missing"),
    ("origin_url = 5", "origin_url", "expected a string, got integer"),
    ('origin_url = "ftp://origin"', "origin_url", r"expected an http:// or https:// URL"),
    ('origin_url = "origin.example.com"', "origin_url", r"http:// or https://"),
    ('origin_url = "http://"', "origin_url", "URL has no host"),
    ('origin_url = "http://o/?x=1"', "origin_url", "must not have a query"),
    ('origin_url = "http://user@o/"', "origin_url", "user name"),
    ('origin_url = "http://o /"', "origin_url", "whitespace"),
    ('origin_url = "http://o:99999/"', "origin_url", "not a valid URL"),
    (MINIMAL + 'node_id = "has space"', "node_id", "'has space' is not allowed: use 1-128"),
    (MINIMAL + 'site = "a b"', "site", "is not allowed"),
    (MINIMAL + 'trusted_root = ""', "trusted_root", "must not be empty"),
    (MINIMAL + "state_dir = 3", "state_dir", "expected a string, got integer"),
    (MINIMAL + "store_dir = []", "store_dir", "expected a string, got array"),
    (MINIMAL + 'store_max_bytes = "10 GB/s"', "store_max_bytes", "unknown size unit 'GB/s'"),
    (MINIMAL + 'store_max_bytes = "ten"', "store_max_bytes", "'ten' is not a number"),
    (MINIMAL + "store_max_bytes = -1", "store_max_bytes", "non-negative integer"),
    (MINIMAL + "store_max_bytes = 1.5", "store_max_bytes", "non-negative integer"),
    (MINIMAL + "store_max_bytes = true", "store_max_bytes", "non-negative integer"),
    (MINIMAL + 'trackers = "http://t"', "trackers", "expected an array of strings, got string"),
    (MINIMAL + 'trackers = ["http://t", 5]', r"trackers\[1\]", "expected a string, got integer"),
    (MINIMAL + 'trackers = ["http://t", "t2:7070"]', r"trackers\[1\]", "http:// or https://"),
    (MINIMAL + 'static_peers = ["ftp://p"]', r"static_peers\[0\]", "http:// or https://"),
    (MINIMAL + "poll_interval = 0", "poll_interval", "must be greater than 0, got 0"),
    (MINIMAL + "poll_interval = -5", "poll_interval", "greater than 0"),
    (MINIMAL + "poll_interval = nan", "poll_interval", "finite"),
    (MINIMAL + "poll_interval = inf", "poll_interval", "finite"),
    (MINIMAL + 'poll_interval = "300"', "poll_interval", "expected a number, got string"),
    (MINIMAL + "poll_interval = true", "poll_interval", "expected a number, got boolean"),
    (MINIMAL + "poll_jitter = 1", "poll_jitter", "must be less than 1"),
    (MINIMAL + "poll_jitter = -0.1", "poll_jitter", "must be at least 0"),
    (MINIMAL + 'peer_listen = "7071"', "peer_listen", "expected HOST:PORT"),
    (MINIMAL + 'peer_listen = ":7071"', "peer_listen", "expected HOST:PORT"),
    (
        MINIMAL + 'peer_listen = "0.0.0.0:70000"',
        "peer_listen",
        "port '70000' is not a number from 0 to 65535",
    ),
    (MINIMAL + 'peer_listen = "0.0.0.0:http"', "peer_listen", "port 'http'"),
    (MINIMAL + 'peer_listen = "0.0.0.0:"', "peer_listen", "port ''"),
    (MINIMAL + 'peer_listen = "::1:7071"', "peer_listen", r"put IPv6 in brackets"),
    (MINIMAL + 'peer_listen = "[zz]:7071"', "peer_listen", "not an IPv6 address"),
    (MINIMAL + 'peer_listen = "300.1.1.1:80"', "peer_listen", "not an IPv4 address"),
    (MINIMAL + 'peer_listen = "bad_host:80"', "peer_listen", "not a host name"),
    (MINIMAL + "peer_listen = 7071", "peer_listen", "expected a string, got integer"),
    (MINIMAL + 'peer_advertise = "me:7071"', "peer_advertise", "http:// or https://"),
    (MINIMAL + 'upload_limit = "5MB"', "upload_limit", "needs '/s'"),
    (MINIMAL + 'upload_limit = "5Mb/s"', "upload_limit", r"write bit/s or B/s"),
    (MINIMAL + 'upload_limit = "5XB/s"', "upload_limit", "unknown rate unit"),
    (MINIMAL + "download_limit = -1", "download_limit", "non-negative integer"),
    (MINIMAL + "max_upload_slots = 0", "max_upload_slots", "must be at least 1, got 0"),
    (MINIMAL + "max_upload_slots = 1.5", "max_upload_slots", "expected an integer, got float"),
    (MINIMAL + "max_upload_slots = true", "max_upload_slots", "expected an integer, got boolean"),
    (MINIMAL + "origin_fallback_delay = -1", "origin_fallback_delay", "at least 0"),
    (MINIMAL + "origin_pullers = 0", "origin_pullers", "greater than 0"),
    (MINIMAL + "per_peer_inflight = 0", "per_peer_inflight", "at least 1"),
    (MINIMAL + "max_inflight = 0", "max_inflight", "at least 1"),
    (MINIMAL + "connect_timeout = 0", "connect_timeout", "greater than 0"),
    (MINIMAL + "request_timeout = -1", "request_timeout", "greater than 0"),
    (MINIMAL + 'metrics_listen = "localhost"', "metrics_listen", "expected HOST:PORT"),
    (MINIMAL + 'log_level = "verbose"', "log_level", "'verbose' is not one of debug, info, warning, error"),
    (MINIMAL + 'log_level = "INFO"', "log_level", "not one of"),
    (MINIMAL + "poll_intervall = 3", "poll_intervall", r"unknown key \(did you mean 'poll_interval'\?\)"),
    (MINIMAL + "[extra]\nx = 1", "extra", "unknown key"),
    ("orign_url = 'http://o'", "orign_url", "did you mean 'origin_url'"),  # reported before 'missing'
    (MINIMAL + '[app]\nname = "web"', "app", r"expected an array of tables \(\[\[app\]\]\), got table"),
    (MINIMAL + "app = [1]", r"app\[0\]", "expected a table"),
    (MINIMAL + '[[app]]\ninstall_dir = "/opt/web"', r"app\[0\]\.name", "required key is missing"),
    (MINIMAL + '[[app]]\nname = "web"', r"app\[0\]\.install_dir", "required key is missing"),
    (MINIMAL + app(name="Web"), r"app\[0\]\.name", "'Web' is not an app name"),
    (MINIMAL + app(name="root"), r"app\[0\]\.name", "not an app name"),
    (MINIMAL + app(name="a/b"), r"app\[0\]\.name", "not an app name"),
    (MINIMAL + app('channel = "Stable"'), r"app\[0\]\.channel", "'Stable' is not allowed"),
    (MINIMAL + app('install_command = "x.sh"'), r"app\[0\]\.install_command", "expected an array of strings"),
    (MINIMAL + app('install_command = ["a", 1]'), r"app\[0\]\.install_command\[1\]", "expected a string"),
    (MINIMAL + app('health_command = ["", "x"]'), r"app\[0\]\.health_command\[0\]", "must not be empty"),
    (MINIMAL + app("health_timeout = 0"), r"app\[0\]\.health_timeout", "greater than 0"),
    (MINIMAL + app("keep_releases = 0"), r"app\[0\]\.keep_releases", "at least 1, got 0"),
    (MINIMAL + app('instal_dir = "/x"'), r"app\[0\]\.instal_dir", "did you mean 'install_dir'"),
    (MINIMAL + app(install_dir=""), r"app\[0\]\.install_dir", "must not be empty"),
    (
        MINIMAL + app() + app(install_dir="/opt/other"),
        r"app\[1\]\.name",
        r"'web' is already used by app\[0\]",
    ),
    (MINIMAL + app() + app(name="api"), r"app\[1\]\.install_dir", r"/opt/web is already used by app\[0\]"),
    (MINIMAL + "peer_tls = 5", "peer_tls", r"expected a table \(\[peer_tls\]\), got integer"),
    (MINIMAL + '[peer_tls]\nca = "ca.pem"\nkey = "k"', r"peer_tls\.cert", "required key is missing"),
    (MINIMAL + TLS + 'crt = "x"', r"peer_tls\.crt", "did you mean 'cert'"),
    (MINIMAL + TLS + 'check_hostname = "yes"', r"peer_tls\.check_hostname", "expected a boolean, got string"),
    (MINIMAL + TLS.replace("tls/fleet-ca.pem", ""), r"peer_tls\.ca", "must not be empty"),
    (
        'static_peers = ["https://10.0.0.5:7071", "http://10.0.0.6:7071"]\n' + MINIMAL + TLS,
        r"static_peers\[1\]",
        "must be https:// when \\[peer_tls\\] is set",
    ),
    (
        'peer_advertise = "http://10.0.0.5:7071"\n' + MINIMAL + TLS,
        "peer_advertise",
        "must be https:// when \\[peer_tls\\] is set",
    ),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_file_names_file_key_and_reason(
    tmp_path: Path, machine_id: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "etc" / "agent.toml"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text + "\n", machine_id)
    message = str(info.value)
    assert re.match(re.escape(f"{path}: ") + key + ": ", message), message
    assert re.search(reason, message), message


def test_not_toml(tmp_path: Path, machine_id: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml: not valid TOML: .*line 1"):
        load(tmp_path, "site = \norigin_url = 'http://o'\n", machine_id)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read: No such file"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b"site = '\xe9'\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8"):
        load_config(tmp_path / "latin1.toml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (123, 123),
        ("0", 0),
        ("123", 123),
        ("512B", 512),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("512MB", 512_000_000),
        ("10GiB", 10 * 2**30),
        ("10 GiB", 10 * 2**30),
        ("10gib", 10 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("2TB", 2 * 10**12),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, None, "", "GiB", "-1GiB", "1 PiB", "1e3", "1,000", "١٢"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="10GiB"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1000, 1000),
        ("0", 0),
        ("1000", 1000),
        ("5MB/s", 5_000_000),
        ("5 MB/s", 5_000_000),
        ("1MiB/s", 2**20),
        ("20Mbit/s", 2_500_000),
        ("1Gbit/s", 125_000_000),
        ("8kbit/s", 1000),
        ("100B/s", 100),
        ("800bit/s", 100),
    ],
)
def test_parse_rate(value: object, expected: int) -> None:
    assert parse_rate(value) == expected


@pytest.mark.parametrize("value", [-1, 2.5, False, "5MB", "5Mb/s", "5mb/s", "fast", "5 XB/s", "-5MB/s"])
def test_parse_rate_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="20Mbit/s"):
        parse_rate(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:7071", HostPort("0.0.0.0", 7071)),
        ("[::]:0", HostPort("::", 0)),
        ("[2001:db8::1]:65535", HostPort("2001:db8::1", 65535)),
        ("localhost:9471", HostPort("localhost", 9471)),
        ("a-b.example.com:1", HostPort("a-b.example.com", 1)),
    ],
)
def test_parse_host_port(value: str, expected: HostPort) -> None:
    assert parse_host_port(value) == expected
    assert str(parse_host_port(value)) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://o", "http://o"),
        ("https://o.example.com:8443/base/", "https://o.example.com:8443/base"),
        ("http://[::1]:80/", "http://[::1]:80"),
    ],
)
def test_parse_url(value: str, expected: str) -> None:
    assert parse_url(value) == expected

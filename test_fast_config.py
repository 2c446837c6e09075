"""Settings an operator gives on the command line or in the environment (a container's usual way).

Fast unit tests (`make test-fast`): the real parsers (portainer.parse_args, agent.build_agent_parser,
agent.EdgeSettings.from_environment), never a hand-written copy of their defaults.
"""
from __future__ import annotations

import hashlib
import re

import pytest

import agent
import portainer

ENV_IN_HELP = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")


@pytest.fixture
def clean_environment(monkeypatch):
    """No setting leaks in from the machine running the tests."""
    for parser in (portainer.build_parser(), agent.build_agent_parser()):
        for action in parser._actions:
            for name in ENV_IN_HELP.findall(action.help or ""):
                monkeypatch.delenv(name, raising=False)
    for name in ("EDGE_KEY", "EDGE_ID", "EDGE_HEARTBEAT", "EDGE_BACKOFF_INITIAL", "EDGE_BACKOFF_MAX"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def options(parser) -> list:
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


@pytest.mark.parametrize("parser", [portainer.build_parser(), agent.build_agent_parser()], ids=["server", "agent"])
def test_every_flag_names_the_environment_variable_it_falls_back_to(parser):
    assert [action.option_strings for action in options(parser) if not ENV_IN_HELP.search(action.help or "")] == []


def value_for(action) -> tuple[str, object]:
    """A text to put in an action's environment variable, and the value the parsed config should then hold."""
    if action.const is True:  # store_true
        return "yes", True
    if action.type is float:
        return "12.5", 12.5
    if action.type is int:
        return "9123", 9123
    if action.choices:
        return "warning", "WARNING"
    return f"/from/env/{action.dest}", f"/from/env/{action.dest}"


@pytest.mark.parametrize("parse, parser", [(portainer.parse_args, portainer.build_parser),
                                           (lambda argv: agent.build_agent_parser().parse_args(argv),
                                            agent.build_agent_parser)], ids=["server", "agent"])
def test_every_flag_can_be_set_by_its_environment_variable(clean_environment, parse, parser):
    expected = {}
    for action in options(parser()):
        text, value = value_for(action)
        clean_environment.setenv(ENV_IN_HELP.search(action.help).group(1), text)
        expected[action.dest] = value
    config = vars(parse([]))
    assert {name: config[name] for name in expected} == expected


def test_a_flag_wins_over_its_environment_variable(clean_environment):
    clean_environment.setenv("PORTAINER_BIND", "127.0.0.1:1234")
    clean_environment.setenv("PORTAINER_SNAPSHOT_INTERVAL", "5")
    config = portainer.parse_args(["--bind", ":9100", "--snapshot-interval", "30"])
    assert config.bind == ":9100" and config.snapshot_interval == 30.0


def test_without_settings_the_server_listens_on_portainers_ports_and_keeps_data_in_dot_data(clean_environment):
    config = portainer.parse_args([])
    assert (config.bind, config.bind_https, config.data) == (":9000", ":9443", "./data")
    assert (config.log_level, config.http_disabled, config.no_analytics, config.hsts) == ("INFO", False, False, False)
    assert (config.snapshot_interval, config.proxy_timeout, config.edge_heartbeat) == (60.0, 60.0, 20.0)
    assert config.admin_init_window == 300.0 and config.image_check_interval == 3600.0


def test_the_local_socket_becomes_the_first_environment_only_when_it_exists(clean_environment, tmp_path):
    socket_path = tmp_path / "docker.sock"
    clean_environment.setattr(portainer, "DEFAULT_SOCKET", str(socket_path))
    assert portainer.parse_args([]).host is None
    socket_path.touch()
    assert portainer.parse_args([]).host == f"unix://{socket_path}"
    assert portainer.parse_args(["-H", "tcp://10.0.0.5:2375"]).host == "tcp://10.0.0.5:2375"


def test_a_log_level_is_accepted_in_any_case_and_an_unknown_one_is_refused(clean_environment, capsys):
    assert portainer.parse_args(["--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit) as exited:
        portainer.parse_args(["--log-level", "loud"])
    assert exited.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err


@pytest.mark.parametrize("given", [["--sslcert", "/tls/cert.pem"], ["--sslkey", "/tls/key.pem"]])
def test_a_certificate_without_its_key_or_a_key_without_its_certificate_is_refused(clean_environment, capsys, given):
    with pytest.raises(SystemExit) as exited:
        portainer.parse_args(given)
    assert exited.value.code == 2 and "--sslcert and --sslkey go together" in capsys.readouterr().err
    config = portainer.parse_args(["--sslcert", "/tls/cert.pem", "--sslkey", "/tls/key.pem"])
    assert (config.sslcert, config.sslkey) == ("/tls/cert.pem", "/tls/key.pem")


@pytest.mark.parametrize("address, expected", [
    (":9000", ("0.0.0.0", 9000)), ("9000", ("0.0.0.0", 9000)), ("127.0.0.1:9443", ("127.0.0.1", 9443)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_a_bind_address_is_host_and_port_with_all_addresses_by_default(address, expected):
    assert portainer.split_bind(address) == expected


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:http", "127.0.0.1:"])
def test_a_bind_address_without_a_port_stops_the_server_with_a_clear_message(address):
    with pytest.raises(SystemExit, match=f"invalid bind address {re.escape(repr(address))}, expected host:port"):
        portainer.split_bind(address)


def test_without_settings_the_agent_serves_the_local_engine_on_port_9001(clean_environment):
    config = agent.build_agent_parser().parse_args([])
    assert (config.port, config.host, config.secret) == (9001, "0.0.0.0", "")
    assert config.docker_host == "unix:///var/run/docker.sock" and config.data == "" and config.log_level == "INFO"


# ---- the edge agent: configured by the command the server shows (EDGE=1 EDGE_KEY=... EDGE_ID=...) ---------------

EDGE_KEY = agent.EdgeKey("https://10.0.0.1:9443", 4, hashlib.sha256(b"cert").hexdigest(), "edge-secret").encode()


def test_the_edge_agent_reads_its_key_id_and_timings_from_the_environment():
    settings = agent.EdgeSettings.from_environment({"EDGE_KEY": EDGE_KEY, "EDGE_ID": " machine-1\n",
                                                    "DOCKER_HOST": "unix:///run/user.sock", "EDGE_HEARTBEAT": "5",
                                                    "EDGE_BACKOFF_INITIAL": "0.5", "EDGE_BACKOFF_MAX": "30"})
    assert settings.key == agent.EdgeKey.decode(EDGE_KEY) and settings.edge_id == "machine-1"
    assert (settings.docker_url, settings.heartbeat, settings.backoff_initial, settings.backoff_max) == \
        ("unix:///run/user.sock", 5.0, 0.5, 30.0)
    defaults = agent.EdgeSettings.from_environment({"EDGE_KEY": EDGE_KEY, "EDGE_ID": "machine-1"})
    assert (defaults.docker_url, defaults.heartbeat, defaults.backoff_initial, defaults.backoff_max) == \
        ("unix:///var/run/docker.sock", 20.0, 1.0, 60.0)


@pytest.mark.parametrize("environment", [{}, {"EDGE_KEY": EDGE_KEY}, {"EDGE_ID": "machine-1"}])
def test_the_edge_agent_without_its_key_or_id_says_what_is_missing(environment):
    with pytest.raises(ValueError, match=r"edge mode needs EDGE_KEY \(from the server\) and EDGE_ID"):
        agent.EdgeSettings.from_environment(environment)


def test_the_edge_agent_started_without_settings_exits_with_the_reason(clean_environment, capsys):
    clean_environment.setenv("EDGE", "1")
    assert agent.main([]) == 2
    assert "agent.py: edge mode needs EDGE_KEY" in capsys.readouterr().err


@pytest.mark.parametrize("variable, parse", [
    ("PORTAINER_SNAPSHOT_INTERVAL", lambda: portainer.parse_args([])),
    ("PORTAINER_PROXY_TIMEOUT", lambda: portainer.parse_args([])),
    ("AGENT_PORT", lambda: agent.build_agent_parser().parse_args([])),
])
def test_a_number_setting_that_is_not_a_number_stops_with_a_usage_error_not_a_traceback(clean_environment, capsys,
                                                                                         variable, parse):
    clean_environment.setenv(variable, "soon")
    with pytest.raises(SystemExit) as exited:
        parse()
    assert exited.value.code == 2 and "invalid" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["tcp://ex\x97ample:2375", "tcp://docker:99999", "tcp://docker:port", "10.0.0.5:x"])
def test_an_environment_url_the_connection_could_not_read_is_refused_when_it_is_given(url):
    for creation_type in (portainer.ENDPOINT_AGENT, 1):
        with pytest.raises(portainer.BadRequest) as refused:
            portainer.normalise_docker_url(url, creation_type)
        assert "invalid" in refused.value.message

"""Defaults that work unedited: state folders, one broker address for every command, the zoo that ``make``
fetched, the shipped broker config agreeing with the broker edgefleet starts, and a fast, clear error for
a broker that is not there."""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from edgefleet.agent.config import config_from_dict as agent_config
from edgefleet.broker import BrokerLimits, PrivateBroker
from edgefleet.cli.brokerargs import add_broker_args, settings_from_args
from edgefleet.cli.opsclient import OpsClient, OpsError
from edgefleet.config import ConfigError, parse_mqtt_url
from edgefleet.coordinator.config import config_from_dict as coordinator_config
from edgefleet.mqtt import MqttSettings
from edgefleet.paths import default_state_dir, state_root
from edgefleet.wire import Topics
from edgefleet.zoo import paths as zoo_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A non-root user's environment with its own XDG folders and no broker settings."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("EDGEFLEET_MQTT_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    return tmp_path


def test_state_goes_under_the_users_state_folder_or_the_units_state_directory(
        user_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert state_root() == user_env / "state" / "edgefleet"
    assert agent_config({"agent": {"device_id": "edge-01"}}).state_dir == user_env / "state/edgefleet/agent-edge-01"
    assert coordinator_config({}).db_path == user_env / "state/edgefleet/coordinator/coordinator.db"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edgefleet-agent")  # what systemd sets for StateDirectory=
    assert default_state_dir("agent-edge-01") == Path("/var/lib/edgefleet-agent")
    assert agent_config({"agent": {"device_id": "edge-01"}}).state_dir == Path("/var/lib/edgefleet-agent")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_state_dir("coordinator") == Path("/var/lib/edgefleet/coordinator")


def test_the_example_configs_load_unedited(user_env: Path) -> None:
    from edgefleet.agent.config import load_config as load_agent
    from edgefleet.coordinator.config import load_config as load_coordinator

    agent = load_agent(REPO / "config" / "agent.example.toml")
    coordinator = load_coordinator(REPO / "config" / "coordinator.example.toml")
    assert agent.state_dir.is_relative_to(user_env) and coordinator.db_path.is_relative_to(user_env)
    assert (agent.mqtt.host, agent.mqtt.port) == ("127.0.0.1", 1883) == (coordinator.mqtt.host, coordinator.mqtt.port)


@pytest.mark.parametrize(("url", "table"), [
    ("mqtt://127.0.0.1:18830", {"host": "127.0.0.1", "port": 18830}),
    ("mqtt://gateway", {"host": "gateway", "port": 1883}),
    ("mqtt://op:s%40cret@gw:1884/", {"host": "gw", "port": 1884, "username": "op", "password": "s@cret"}),
])
def test_mqtt_urls(url: str, table: dict[str, object]) -> None:
    assert parse_mqtt_url(url) == table


@pytest.mark.parametrize(("url", "why"), [
    ("mqtts://gw:8883", "TLS needs files"),
    ("tcp://gw", "expected mqtt://"),
    ("mqtt://gw:99999", "port must be a number"),
    ("mqtt://gw/topic", "expected mqtt://"),
    ("mqtt://", "expected mqtt://"),
])
def test_bad_mqtt_urls_say_what_is_expected(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_mqtt_url(url)


def _cli(*argv: str) -> MqttSettings:
    parser = argparse.ArgumentParser()
    add_broker_args(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_one_broker_address_for_every_command(user_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (_cli().host, _cli().port) == ("127.0.0.1", 1883)
    client_file = user_env / "config" / "edgefleet" / "client.toml"
    client_file.parent.mkdir(parents=True)
    client_file.write_text('[mqtt]\nhost = "gw"\nport = 1884\nusername = "op"\n')
    assert (_cli().host, _cli().port, _cli().username) == ("gw", 1884, "op")  # the client file
    monkeypatch.setenv("EDGEFLEET_MQTT_URL", "mqtt://127.0.0.1:18830")
    assert (_cli().host, _cli().port, _cli().username) == ("127.0.0.1", 18830, "op")  # the URL over the file
    assert _cli("--port", "1999").port == 1999  # an explicit option over both
    # the agent's and the coordinator's configs take what their [mqtt] table leaves out from the same place
    assert agent_config({"agent": {"device_id": "a"}}).mqtt.port == 18830
    assert agent_config({"agent": {"device_id": "a"}, "mqtt": {"port": 1885}}).mqtt.port == 1885
    assert coordinator_config({}).mqtt.port == 18830
    # --mqtt-config FILE is the whole story, as before
    own = user_env / "operator.toml"
    own.write_text('[mqtt]\nport = 1886\n')
    assert (_cli("--mqtt-config", str(own)).host, _cli("--mqtt-config", str(own)).port) == ("127.0.0.1", 1886)


def test_a_missing_broker_is_reported_within_two_seconds_with_the_address() -> None:
    port = PrivateBroker(port=None).port  # a free port nobody listens on (the broker is never started)
    start = time.monotonic()
    with pytest.raises(OpsError, match=rf"cannot reach the MQTT broker at 127\.0\.0\.1:{port} \(.+\)"):
        OpsClient(MqttSettings(port=port), Topics("ef"), connect_timeout_s=10.0)
    assert time.monotonic() - start < 2.0


def test_the_zoo_make_fetched_is_the_default_from_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_DATA_DIR", raising=False)
    assert zoo_paths.checkout_data_dir() == REPO / ".data"  # tests run from the checkout's editable install
    assert zoo_paths.data_dir() == REPO / ".data"
    assert "EDGEFLEET_DATA_DIR ?= $(CURDIR)/.data" in (REPO / "Makefile").read_text()  # where make fetches
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", "/srv/zoo")
    assert zoo_paths.data_dir() == Path("/srv/zoo")


def _settings(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^([a-z_]+) (.+)$", text, re.MULTILINE)}


def test_the_shipped_broker_config_and_edgefleet_broker_agree(tmp_path: Path) -> None:
    shipped = _settings((REPO / "config" / "mosquitto.conf").read_text())
    ours = _settings(PrivateBroker(workdir=tmp_path, persistence=True).config_path.read_text())
    limits = BrokerLimits()
    for key in ("set_tcp_nodelay", "max_inflight_messages", "max_queued_messages", "max_packet_size",
                "persistence", "autosave_interval"):
        assert shipped[key] == ours[key], key
    assert shipped["set_tcp_nodelay"] == "true" and shipped["persistence"] == "true"
    assert int(shipped["max_queued_messages"]) == limits.max_queued_messages > 1000  # Mosquitto's default drops
    assert int(shipped["max_packet_size"]) > 8 << 20  # the agent's default max_payload_mib, with headers


@given(host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
       port=st.integers(1, 65535), user=st.none() | st.text("abc:@/%", min_size=1, max_size=8))
def test_mqtt_urls_round_trip(host: str, port: int, user: str | None) -> None:
    auth = "" if user is None else f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(user, safe='')}@"
    table = parse_mqtt_url(f"mqtt://{auth}{host}:{port}")
    assert (table["host"], table["port"]) == (host, port)
    assert table.get("username") == user and table.get("password") == user


@pytest.mark.broker
def test_edgefleet_broker_runs_mosquitto_with_the_shipped_settings_until_sigterm(tmp_path: Path) -> None:
    port = PrivateBroker(workdir=tmp_path / "probe").port  # a free port (never started)
    cmd = [sys.executable, "-m", "edgefleet.cli.main", "broker", "--port", str(port), "--state-dir", str(tmp_path / "b")]
    printed = subprocess.run([*cmd, "--print-config"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"listener {port} 127.0.0.1" in printed and "set_tcp_nodelay true" in printed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"Mosquitto on mqtt://127.0.0.1:{port}" in proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    with pytest.raises(OSError):  # Mosquitto went with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

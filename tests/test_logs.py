"""The agent and the coordinator say what went right, at INFO and once each: connected, subscribed,
reconnected after the broker came back, and (in the tour) deployed and undeployed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefleet.broker import PrivateBroker
from edgefleet.tomlio import dump_toml

pytestmark = [pytest.mark.broker]


def _wait(path: Path, text: str, count: int = 1, timeout_s: float = 30.0) -> str:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        log = path.read_text() if path.exists() else ""
        if log.count(text) >= count:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} x{count} not in {path.name}:\n{path.read_text()[-3000:]}")


def test_connect_subscribe_and_reconnect_are_logged_once_each(tmp_path: Path) -> None:
    with PrivateBroker(workdir=tmp_path / "broker") as broker:
        mqtt = {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5}
        (tmp_path / "agent.toml").write_text(
            dump_toml({"agent": {"device_id": "log-a", "state_dir": tmp_path / "agent", "prefix": "lg"}, "mqtt": mqtt}))
        (tmp_path / "coordinator.toml").write_text(
            dump_toml({"prefix": "lg", "coordinator": {"db": tmp_path / "c.db"}, "mqtt": mqtt}))
        logs = {name: tmp_path / f"{name}.log" for name in ("agent", "coordinator")}
        procs = [subprocess.Popen([sys.executable, "-m", f"edgefleet.{name}.main", "--config", str(tmp_path / f"{name}.toml")],
                                  stdout=logs[name].open("w"), stderr=subprocess.STDOUT)
                 for name in ("agent", "coordinator")]
        try:
            for path in logs.values():
                log = _wait(path, "subscribed to")
                assert "INFO" in log and "connected to the MQTT broker at 127.0.0.1:" in log
            broker.restart()
            for path in logs.values():
                log = _wait(path, "reconnected to the MQTT broker", timeout_s=60)
            time.sleep(1.0)
            agent_log, coordinator_log = (p.read_text() for p in logs.values())
            # two connections each (coordinator: control, telemetry ingest; agent: control, requests):
            # each link says it connected once, and at least one says it reconnected after the restart
            assert coordinator_log.count(" connected to the MQTT broker") == 2
            assert coordinator_log.count("reconnected to the MQTT broker") >= 1
            assert agent_log.count(" connected to the MQTT broker") == 2
            assert agent_log.count("reconnected to the MQTT broker") >= 1
            assert "lg/v1/devices/+/telemetry" in coordinator_log  # what it subscribed to
            assert "lg/v1/devices/log-a/commands" in agent_log
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)

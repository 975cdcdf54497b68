"""The systemd units and the agent's notify protocol.

Units are checked by ``systemd-analyze verify`` on copies whose ExecStart points at this checkout's
virtual environment (verify refuses a missing binary). The notify tests bind a real AF_UNIX datagram
socket, by path and in the abstract namespace, and read what the agent sends, including a run of
``edgefleet-agent`` itself against the private broker.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.agent import systemd_notify
from edgefleet.mqtt import MqttSettings
from edgefleet.tomlio import dump_toml
from edgefleet.wire import Topics

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted((REPO / "systemd").glob("*.service"))
VENV_BIN = Path(sys.executable).parent


def _unit(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit_copies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("units")
    copies = []
    for unit in UNITS:
        text = re.sub(
            r"^ExecStart=/opt/edgefleet/venv/bin/", f"ExecStart={VENV_BIN}/", unit.read_text(), flags=re.M
        )
        binary = re.search(r"^ExecStart=(\S+)", text, re.M)
        assert binary and Path(binary.group(1)).exists(), f"{unit.name}: {binary and binary.group(1)} missing"
        (out / unit.name).write_text(text)
        copies.append(out / unit.name)
    return copies


def test_units_pass_systemd_analyze_verify(unit_copies: list[Path]) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    assert {u.name for u in unit_copies} == {"edgefleet-agent.service", "edgefleet-coordinator.service"}
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, unit_copies)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(u.name in line for u in unit_copies)
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_units_are_hardened(unit_copies: list[Path]) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in unit_copies:
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0 and "offline" in result.stderr:
            pytest.skip("this systemd-analyze cannot assess units offline")
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
        assert level, result.stdout + result.stderr
        assert float(level.group(1)) <= 3.0, f"{unit.name} exposure {level.group(1)}"


def test_agent_unit_keeps_accelerators_visible() -> None:
    agent = _unit(REPO / "systemd" / "edgefleet-agent.service")
    assert agent["Type"] == ["notify"] and agent["WatchdogSec"] == ["30"]
    assert "PrivateDevices" not in agent  # it would hide /dev/nvidia*, /dev/nvhost-*, /dev/apex_0, USB
    allowed = {v.split()[0] for v in agent["DeviceAllow"]}
    assert {"char-nvidia*", "char-usb_device", "char-apex"} <= allowed
    assert {"video", "plugdev"} <= set(agent["SupplementaryGroups"][0].split())


# -- sd_notify ---------------------------------------------------------------------------------------------
class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; records (time, message)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.address = address
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        return [m for _, m in self.received]

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages()):
                return
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in {self.messages()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@edgefleet-test-{uuid.uuid4().hex}"
    sock = NotifySocket(address)
    yield sock
    sock.close()


def test_ready_status_and_stopping_reach_the_socket(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.address}
    assert systemd_notify.ready("serving as edge-01", env)
    assert systemd_notify.status("2 tenants", env)
    assert systemd_notify.stopping(env=env)
    notify_socket.wait_for("STOPPING=1", 2)
    assert notify_socket.messages() == [
        "READY=1\nSTATUS=serving as edge-01",
        "STATUS=2 tenants",
        "STOPPING=1",
    ]


def test_watchdog_pings_at_half_of_watchdog_usec(notify_socket: NotifySocket) -> None:
    env = {
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "200000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    assert systemd_notify.watchdog_interval(env) == pytest.approx(0.1)
    done = threading.Event()
    sent: list[int] = []
    pinger = threading.Thread(target=lambda: sent.append(systemd_notify.keep_alive(done, env)))
    started = time.monotonic()
    pinger.start()
    time.sleep(0.55)
    done.set()
    pinger.join(2)
    time.sleep(0.15)
    pings = [t for t, m in notify_socket.received if m == "WATCHDOG=1"]
    assert sent and sent[0] == len(pings)
    assert 4 <= len(pings) <= 6, pings
    assert pings[0] - started == pytest.approx(0.1, abs=0.06)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.06 <= g <= 0.2 for g in gaps), gaps


def test_no_watchdog_or_socket_means_silence(tmp_path: Path) -> None:
    assert systemd_notify.watchdog_interval({}) is None
    assert systemd_notify.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert systemd_notify.ready(env={}) is False
    # a socket that is not there is logged, never raised: the agent keeps serving
    assert systemd_notify.watchdog({"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_agent_process_notifies_ready_watchdog_and_stopping(
    mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path
) -> None:
    notify_socket = NotifySocket(f"@edgefleet-agent-{uuid.uuid4().hex}")
    try:
        _run_agent(notify_socket, mqtt_settings, topics, tmp_path)
    finally:
        notify_socket.close()


def _run_agent(
    notify_socket: NotifySocket, mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(dump_toml({
        "agent": {"device_id": "dev-sd", "state_dir": tmp_path / "state", "prefix": topics.prefix},
        "mqtt": {"host": mqtt_settings.host, "port": mqtt_settings.port},
    }))
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "300000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.agent.main", "--config", str(config), "--log-level", "WARNING"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        notify_socket.wait_for("READY=1", 30)
        notify_socket.wait_for("WATCHDOG=1", 5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    messages = notify_socket.messages()
    assert messages[0] == "READY=1\nSTATUS=serving as dev-sd"
    assert messages[-1].startswith("STOPPING=1")

"""The Prometheus endpoint: the text format, serving and scraping it over HTTP, off by default, and the
agent's per-tenant counters and device gauges as a scrape shows them."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgefleet.agent.config import AgentConfig, config_from_dict
from edgefleet.agent.service import Agent
from edgefleet.broker import free_port
from edgefleet.config import ConfigError
from edgefleet.metrics import CONTENT_TYPE, THREAD_NAME, Sample, TelemetryMetrics, render, start_metrics
from edgefleet.mqtt import MqttSettings
from edgefleet.wire import Topics
from edgefleet.wire.messages import DeviceWindow, Telemetry, TenantWindow

# one sample line of the text format: name, optional {labels}, value
LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? \S+$')


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return reply.status, reply.headers["Content-Type"], reply.read().decode()


def _check_format(text: str) -> dict[str, str]:
    """Every line is HELP, TYPE or a sample; every family is typed before its samples. Returns the types."""
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge"} and name not in types, line
            types[name] = kind
            continue
        assert LINE.match(line), line
        assert line.split("{")[0].split(" ")[0] in types, line
    return types


def test_render_groups_families_and_escapes_labels() -> None:
    text = render(
        [
            Sample("ef_requests_total", 3, {"tenant": 'a"b\\c\nd'}, "counter", "Requests.\nAll of them."),
            Sample("ef_temp_celsius", 41.5),
            Sample("ef_requests_total", 4.0, {"tenant": "x"}, "counter", "Requests."),
        ]
    )
    assert text == (
        "# HELP ef_requests_total Requests.\\nAll of them.\n"
        "# TYPE ef_requests_total counter\n"
        'ef_requests_total{tenant="a\\"b\\\\c\\nd"} 3\n'
        'ef_requests_total{tenant="x"} 4\n'
        "# TYPE ef_temp_celsius gauge\n"
        "ef_temp_celsius 41.5\n"
    )
    _check_format(text)


def test_endpoint_serves_text_format_in_a_named_daemon_thread() -> None:
    port = free_port()
    calls = []

    def collect() -> list[Sample]:
        calls.append(1)
        return [Sample("edgefleet_up", 1), Sample("edgefleet_scrapes_total", len(calls), kind="counter")]

    server = start_metrics(collect, port, host="127.0.0.1")
    assert server is not None and server.port == port
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]
        assert thread.daemon
        status, content_type, body = _scrape(port)
        assert (status, content_type) == (200, CONTENT_TYPE)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert _check_format(body) == {"edgefleet_up": "gauge", "edgefleet_scrapes_total": "counter"}
        assert "edgefleet_scrapes_total 1\n" in body
        assert "edgefleet_scrapes_total 2\n" in _scrape(port)[2]  # collected afresh on every scrape
        with pytest.raises(urllib.error.HTTPError) as missing:
            _scrape(port, "/")
        assert missing.value.code == 404
    finally:
        server.stop()
    time.sleep(0.05)
    assert not any(t.name == THREAD_NAME and t.is_alive() for t in threading.enumerate())


def test_a_failing_collector_answers_500_and_the_server_lives_on() -> None:
    state = {"fail": True}

    def collect() -> list[Sample]:
        if state["fail"]:
            raise RuntimeError("boom")
        return [Sample("edgefleet_up", 1)]

    server = start_metrics(collect, free_port(), host="127.0.0.1")
    assert server is not None
    try:
        with pytest.raises(urllib.error.HTTPError) as failed:
            _scrape(server.port)
        assert failed.value.code == 500
        state["fail"] = False
        assert _scrape(server.port)[2].endswith("edgefleet_up 1\n")
    finally:
        server.stop()


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    assert AgentConfig(device_id="d", state_dir=tmp_path).metrics_port == 0
    base = {"agent": {"device_id": "d", "state_dir": str(tmp_path)}}
    assert config_from_dict(base).metrics_port == 0
    assert config_from_dict({"agent": {**base["agent"], "metrics_port": 9464}}).metrics_port == 9464
    with pytest.raises(ConfigError, match="metrics_port"):
        config_from_dict({"agent": {**base["agent"], "metrics_port": 70000}})
    assert start_metrics(lambda: [], 0) is None
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


def _window(device: str, seq: int, arrivals: int, p95_ms: float) -> Telemetry:
    tenant = TenantWindow(
        tenant="digits",
        model="mlp",
        variant="fp32",
        slo_ms=50,
        arrivals=arrivals,
        completions=arrivals - 1,
        errors=1,
        shed=2,
        latency_p95_ms=p95_ms,
    )
    device_window = DeviceWindow(
        cpu_percent=12.5,
        memory_used_bytes=100,
        memory_budget_bytes=1000,
        model_memory_bytes=50,
        gpu_percent=None,
        temperature_c=48.0,
    )
    return Telemetry(
        device_id=device,
        boot_id="b",
        seq=seq,
        window_start=0.0,
        window_end=float(seq + 1),
        device=device_window,
        tenants=[tenant],
    )


def test_telemetry_windows_become_running_totals_and_last_window_gauges() -> None:
    metrics = TelemetryMetrics()
    assert metrics.observe(_window("edge-1", 0, arrivals=10, p95_ms=20.0))
    assert metrics.observe(_window("edge-1", 1, arrivals=5, p95_ms=30.0))
    assert not metrics.observe(_window("edge-1", 1, arrivals=5, p95_ms=30.0))  # redelivered: not counted
    assert metrics.observe(_window("edge-2", 0, arrivals=1, p95_ms=5.0))
    text = render(metrics.samples())
    types = _check_format(text)
    assert types["edgefleet_tenant_arrivals_total"] == "counter"
    assert types["edgefleet_tenant_latency_p95_seconds"] == "gauge"
    labels = 'device="edge-1",model="mlp",tenant="digits",variant="fp32"'
    assert f"edgefleet_tenant_arrivals_total{{{labels}}} 15\n" in text
    assert f"edgefleet_tenant_completions_total{{{labels}}} 13\n" in text
    assert f"edgefleet_tenant_errors_total{{{labels}}} 2\n" in text
    assert f"edgefleet_tenant_shed_total{{{labels}}} 4\n" in text
    assert 'edgefleet_tenant_latency_p95_seconds{device="edge-1",tenant="digits"} 0.03\n' in text
    assert 'edgefleet_device_temperature_celsius{device="edge-2"} 48\n' in text
    assert "edgefleet_device_gpu_percent" not in text  # not measured: not exported as a zero
    assert 'edgefleet_telemetry_windows_total{device="edge-1"} 2\n' in text
    metrics.forget_tenant("edge-1", "digits")
    assert 'tenant="digits",variant="fp32"' in render(metrics.samples())  # edge-2's stays
    assert 'device="edge-1",model' not in render(metrics.samples())


def test_agent_serves_its_tenants_and_device_on_metrics_port(
    mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path
) -> None:
    port = free_port()
    cfg = AgentConfig(
        device_id="dev-m",
        state_dir=tmp_path / "state",
        mqtt=mqtt_settings,
        prefix=topics.prefix,
        telemetry_period_s=60.0,
        workers=1,
        metrics_port=port,
    )
    agent = Agent(cfg)
    agent.start()
    try:
        assert agent.wait_connected(10)
        agent.stats.arrival("digits")
        telemetry = agent.roll_window()
        assert telemetry.device.cpu_percent >= 0.0 and telemetry.device.memory_used_bytes > 0
        status, _, body = _scrape(port)
        assert status == 200
        _check_format(body)
        assert 'edgefleet_device_memory_used_bytes{device="dev-m"}' in body
        assert 'edgefleet_telemetry_windows_total{device="dev-m"} 1\n' in body
        caps = agent.capabilities()
        assert caps.accelerators[0] == "cpu" and caps.device_kind
    finally:
        agent.stop()
    with pytest.raises(urllib.error.URLError):
        _scrape(port)

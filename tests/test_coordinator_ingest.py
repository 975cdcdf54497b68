"""The coordinator's ingest path: windows from many devices committed in batches and each acknowledged
after its commit; back-pressure that sheds only telemetry; liveness stamped on arrival."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

import edgefleet.coordinator.service as service
from edgefleet.coordinator.config import CommandPolicy, CoordinatorConfig
from edgefleet.coordinator.service import Coordinator
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings, lean_available
from edgefleet.wire import (
    Birth,
    Capabilities,
    DeviceWindow,
    Telemetry,
    TelemetryAck,
    TenantWindow,
    Topics,
    encode,
)
from edgefleet.wire.codec import decode_to_device


def config(tmp_path: Path, settings: MqttSettings, prefix: str, ingest_link: str = "auto") -> CoordinatorConfig:
    return CoordinatorConfig(
        db_path=tmp_path / "coordinator.db", mqtt=settings, prefix=prefix,
        coordinator_id=f"coord-{uuid.uuid4().hex[:8]}", device_timeout_s=30.0, op_timeout_s=5.0,
        commands=CommandPolicy(ack_timeout_s=0.3, max_attempts=6, backoff_s=0.1, backoff_max_s=0.4),
        ingest_link=ingest_link,
    )


INGEST_LINKS = ["paho", pytest.param("lean", marks=pytest.mark.skipif(not lean_available(), reason="no mqtt5"))]


def birth(device: str) -> Birth:
    caps = Capabilities(device_kind="x86_64-cpu", runtimes=["onnxruntime"], accelerators=["cpu"], cpu_count=2,
                        memory_total_bytes=8 << 30, memory_budget_bytes=1 << 30, max_payload_bytes=1 << 20,
                        cached_models=[])
    return Birth(device_id=device, boot_id="b1", capabilities=caps, tenants=[], agent_version="t", ts=time.time())


def window(device: str, seq: int) -> Telemetry:
    return Telemetry(device_id=device, boot_id="b1", seq=seq, window_start=float(seq), window_end=seq + 1.0,
                     device=DeviceWindow(cpu_percent=10.0, memory_used_bytes=1, memory_budget_bytes=1 << 30,
                                         model_memory_bytes=0),
                     tenants=[TenantWindow(tenant=f"{device}-t", model="ocr-rec", variant="fp32", slo_ms=50.0)])


@pytest.mark.parametrize("ingest_link", INGEST_LINKS)
def test_windows_from_many_devices_are_each_stored_and_acknowledged_after_the_commit(
        tmp_path: Path, mqtt_settings: MqttSettings, prefix: str, ingest_link: str) -> None:
    """40 devices x 10 windows sent as fast as one client can: every window is stored once and
    acknowledged (on the ingest link, lean or paho); the coordinator applied them in fewer transactions
    than messages."""
    topics = Topics(prefix)
    c = Coordinator(config(tmp_path, mqtt_settings, prefix, ingest_link))
    assert type(c.ingest).__name__ == ("LeanLink" if ingest_link == "lean" else "MqttLink")
    c.start()
    acked: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def on_command(msg: Inbound) -> None:
        m = decode_to_device(msg.payload)
        if isinstance(m, TelemetryAck):
            with lock:
                acked.update((m.device_id, s) for s in m.seqs)

    link = MqttLink(mqtt_settings, client_id=f"devices-{uuid.uuid4().hex[:6]}")
    link.subscribe(f"{topics.root}/devices/+/commands", on_command, qos=1)
    link.start()
    try:
        assert link.wait_connected(10)
        devices = [f"d{i}" for i in range(40)]
        for d in devices:
            link.publish(topics.status(d), encode(birth(d)), qos=1)
        for seq in range(10):
            for d in devices:
                link.publish(topics.telemetry(d), encode(window(d, seq)), qos=1)
        expected = {(d, s) for d in devices for s in range(10)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not expected <= acked:
            time.sleep(0.05)
        assert expected <= acked
        assert c.call(lambda e: e.store.telemetry_count()) == 400
        assert c.counters.errors == 0 and c.counters.shed == 0
        assert c.counters.batches < c.counters.received.get("telemetry", 0) + len(devices)
        assert c.counters.unconfirmed == 0
    finally:
        link.stop()
        c.stop()


def test_a_full_queue_sheds_telemetry_only_and_every_arrival_counts_as_heard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the queue at its bound a window is refused (counted, never acknowledged: the agent sends it
    again), while a birth and a command ack are still queued; each arrival stamps its device as heard."""
    monkeypatch.setattr(service, "MAX_QUEUED", 2)
    topics = Topics("ef")
    c = Coordinator(config(tmp_path, MqttSettings(port=1), "ef"), clock=lambda: 123.0)  # never started
    telemetry, status, acks = c._enqueue("telemetry"), c._enqueue("status"), c._enqueue("acks")

    def inbound(topic: str, payload: bytes) -> Inbound:
        return Inbound(topic=topic, payload=payload, qos=1, retain=False)

    for seq in range(3):
        telemetry(inbound(topics.telemetry("d1"), encode(window("d1", seq))))
    assert c._queue.qsize() == 2 and c.counters.shed == 1
    status(inbound(topics.status("d2"), encode(birth("d2"))))
    acks(inbound(topics.acks("d3"), b"{}"))
    assert c._queue.qsize() == 4 and c.counters.shed == 1
    assert c._heard == {"d1": 123.0, "d2": 123.0, "d3": 123.0}


def test_a_deep_queue_drops_the_telemetry_subscription_until_it_drains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At ``PAUSE_AT`` waiting messages the telemetry subscription goes (the broker sheds windows, which
    their agents resend), the other subscriptions stay; at ``RESUME_AT`` it comes back. Telemetry is
    routed on the ingest link only; statuses, acks and operator calls on the control link."""
    monkeypatch.setattr(service, "PAUSE_AT", 3)
    monkeypatch.setattr(service, "RESUME_AT", 1)
    topics = Topics("ef")
    c = Coordinator(config(tmp_path, MqttSettings(port=1), "ef"))  # never started: routes only
    control, routes = c.link._routes, c.ingest._routes  # type: ignore[attr-defined]
    assert topics.all_telemetry not in control and topics.all_status in control and topics.all_acks in control
    for _ in range(3):
        c._queue.put(("telemetry", Inbound(topic=topics.telemetry("d1"), payload=b"", qos=1, retain=False), 0.0))
    c._pace()
    assert c._paused and c.counters.pauses == 1
    assert topics.all_telemetry not in routes and topics.all_status in control and topics.all_acks in control
    c._queue.get_nowait()
    c._pace()  # 2 waiting: still paused
    assert c._paused and topics.all_telemetry not in routes
    c._queue.get_nowait()
    c._pace()  # 1 waiting: resumed
    assert not c._paused and topics.all_telemetry in routes and c.counters.pauses == 1


def test_the_ingest_link_is_chosen_by_config_and_named_after_the_coordinator() -> None:
    from edgefleet.coordinator.config import ConfigError, config_from_dict
    from edgefleet.coordinator.service import ingest_client_id

    assert config_from_dict({}).ingest_link == "auto"
    assert config_from_dict({"coordinator": {"ingest_link": "paho"}}).ingest_link == "paho"
    with pytest.raises(ConfigError, match=r"\[coordinator\] ingest_link must be one of auto, lean, paho"):
        config_from_dict({"coordinator": {"ingest_link": "fast"}})
    assert ingest_client_id("coordinator") == "coordinator-ingest"
    assert len(ingest_client_id("c" * 128)) == 128  # within MQTT client id rules (CLIENT_RE: 128 at most)

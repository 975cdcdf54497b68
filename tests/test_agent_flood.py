"""A flood of requests at ten times what a tenant can serve never costs the agent or the coordinator
its broker session.

Requests and replies travel on the agent's data link, its births, will, commands and telemetry on the
control link. Through a real broker: a tenant on a slow stand-in model (one worker, 20 ms a request:
about 50 requests/s; deployed through the coordinator under a catalog model's name) is offered
requests as fast as one publisher can send them, far above ten times that, for a few seconds. Asserted: neither link reconnected, no "lost" death (the will) was published,
the telemetry windows kept coming with contiguous sequence numbers and no gap beyond a generous
liveness bound, a command sent during the flood is acknowledged, and every request the agent answered
got either a result or a typed error. A coordinator on the same broker and fleet stores the windows
and confirms them (``telemetry.ack``) throughout the flood, answers an operator call made during it, and
never reconnects either.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.host import LocalModels
from edgefleet.agent.service import Agent
from edgefleet.cli.opsclient import call_ops
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import (
    Deploy,
    ErrorFrame,
    OpDeploy,
    OpStatus,
    ResultFrame,
    TenantSpec,
    Topics,
    decode,
    decode_frame,
    encode_request,
)
from edgefleet.wire.messages import Death, Status, Telemetry
from tests.fleetkit import Watcher, wait_for

pytestmark = pytest.mark.broker

STAND_IN_FOR = "ocr-cls"  # a catalog model's name, served here by the slow stand-in
SERVICE_S = 0.02  # the stand-in model's service time: one worker serves about 50 requests/s
PERIOD_S = 0.3  # telemetry period
FLOOD_S = 4.0
LIVENESS_GAP_S = 5.0  # generous: a window normally follows the last one after PERIOD_S
ACK_GAP_S = 2.0  # generous too, and shorter than the flood: telemetry.ack normally follows each window


def _slow_model(folder: Path) -> Path:
    path = folder / "slow.json"
    path.write_text(json.dumps({
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 1]}],
        "function": "sum", "service_time_s": SERVICE_S, "memory_bytes": 1 << 20,
    }))
    return path


def test_a_tenfold_flood_costs_no_session_and_no_telemetry(
    mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path
) -> None:
    coordinator = Coordinator(CoordinatorConfig(
        db_path=tmp_path / "coordinator.db", mqtt=mqtt_settings, prefix=topics.prefix,
        coordinator_id=f"coord-{uuid.uuid4().hex[:8]}", device_timeout_s=30.0, op_timeout_s=5.0,
        commands=CommandPolicy(ack_timeout_s=0.3, max_attempts=6, backoff_s=0.1, backoff_max_s=0.4)))
    coordinator.start()
    cfg = AgentConfig(device_id="dev-flood", state_dir=tmp_path / "state", mqtt=mqtt_settings,
                      prefix=topics.prefix, telemetry_period_s=PERIOD_S, workers=1)
    # the stand-in is registered under a catalog model's name: the coordinator places only what its
    # catalog knows (and undeploys what it did not place), the agent serves what it was given by that name
    agent = Agent(cfg, local_models=LocalModels({STAND_IN_FOR: _slow_model(tmp_path)}))
    agent.start()
    assert agent.wait_connected(10)
    watcher = Watcher(mqtt_settings, topics)
    windows: list[tuple[float, int]] = []
    deaths: list[str] = []
    answers = {"ok": 0, "error": 0, "other": 0}
    confirmed: list[float] = []  # when the coordinator's telemetry.ack messages reached the device's topic
    lock = threading.Lock()

    def on_telemetry(msg: Inbound) -> None:
        t = decode(msg.payload, Telemetry)
        with lock:
            windows.append((time.monotonic(), t.seq))

    def on_status(msg: Inbound) -> None:
        status = decode(msg.payload, Status)
        if isinstance(status, Death):
            deaths.append(status.reason)

    def on_device_command(msg: Inbound) -> None:
        if json.loads(msg.payload).get("type") == "telemetry.ack":
            with lock:
                confirmed.append(time.monotonic())

    inbox = f"{topics.root}/clients/flood-{uuid.uuid4().hex[:8]}/replies"

    def on_reply(msg: Inbound) -> None:
        frame = decode_frame(msg.payload)
        key = "ok" if isinstance(frame, ResultFrame) else "error" if isinstance(frame, ErrorFrame) else "other"
        with lock:
            answers[key] += 1

    listener = MqttLink(mqtt_settings, client_id=f"listen-{uuid.uuid4().hex[:8]}")
    listener.subscribe(topics.all_telemetry, on_telemetry, qos=1)
    listener.subscribe(topics.all_status, on_status, qos=1)
    listener.subscribe(inbox, on_reply, qos=0)
    listener.subscribe(topics.commands("dev-flood"), on_device_command, qos=1)
    listener.start()
    flooder = MqttLink(mqtt_settings, client_id=f"flood-{uuid.uuid4().hex[:8]}")
    flooder.start()
    try:
        assert listener.wait_connected(10) and flooder.wait_connected(10)
        spec = TenantSpec(name="slow", model=STAND_IN_FOR, slo_ms=100.0, max_batch=1)
        wait_for(lambda: any(d.device_id == "dev-flood" for d in coordinator.status().devices), 10, "birth seen")
        # through the coordinator, whose tenant it then is (it undeploys what it did not assign)
        deployed = call_ops(mqtt_settings, topics, OpDeploy(tenant=spec, device_id="dev-flood"), timeout=30)
        assert deployed.ok, deployed
        payload = encode_request({"x": np.ones((1, 4), np.float32)}, timeout_ms=500.0)
        topic = topics.infer("slow")
        stored_before = coordinator.call(lambda e: e.store.telemetry_count("dev-flood"))
        sent = 0
        start = time.monotonic()
        end = start + FLOOD_S
        ack_during_flood = None
        ops_during_flood = None
        while time.monotonic() < end:
            for _ in range(200):
                flooder.publish(topic, payload, qos=1, response_topic=inbox,
                                correlation_data=sent.to_bytes(8, "little"), expiry_s=2)
                sent += 1
            if ack_during_flood is None and time.monotonic() > end - FLOOD_S / 2:
                ack_during_flood = watcher.command(
                    Deploy(command_id="flood-redeploy", device_id="dev-flood", tenant=spec), timeout=30)
                ops_during_flood = call_ops(mqtt_settings, topics, OpStatus(), timeout=10)
        offered_rps = sent / FLOOD_S
        assert offered_rps >= 10 * (1 / SERVICE_S), f"the flood offered only {offered_rps:.0f} requests/s"
        time.sleep(3 * PERIOD_S)  # the windows that cover the end of the flood
        with lock:
            seen = list(windows)
            got = dict(answers)
            acks = list(confirmed)
        assert agent.link.connects == 1 and agent.data.connects == 1, "a link reconnected during the flood"
        assert coordinator.link.connects == 1, "the coordinator reconnected during the flood"
        ingest = getattr(coordinator, "ingest", None)  # its telemetry connection, where it has one
        assert ingest is None or ingest.connects == 1, "the coordinator's telemetry link reconnected"
        assert ops_during_flood is not None and ops_during_flood.ok, ops_during_flood
        stored = coordinator.call(lambda e: e.store.telemetry_count("dev-flood")) - stored_before
        assert stored >= FLOOD_S / PERIOD_S / 2, f"the coordinator stored only {stored} windows during the flood"
        during = [t for t in acks if start <= t <= end]
        ack_gaps = [b - a for a, b in itertools.pairwise([start, *during, end])]
        # a window every 0.3 s, confirmed after each database commit: a pause of ACK_GAP_S means none came
        assert len(during) >= 2 and max(ack_gaps) < ACK_GAP_S, (len(during), ack_gaps)
        assert "lost" not in deaths, "the broker published the agent's will"
        assert ack_during_flood is not None and ack_during_flood.ok
        seqs = [s for _, s in seen]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"telemetry windows missing: {seqs}"
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
        assert len(seen) >= FLOOD_S / PERIOD_S / 2 and max(gaps) < LIVENESS_GAP_S, gaps
        assert got["other"] == 0 and got["ok"] > 0 and got["error"] > 0, (
            got, sent, agent.data.handler_errors, agent.server.dropped_no_reply_topic, agent.slots.get("slow"))
    finally:
        flooder.stop()
        listener.stop()
        watcher.close()
        agent.stop()
        coordinator.stop()

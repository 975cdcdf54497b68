"""Deploy-time profiles end to end: a real agent times a real zoo model as it loads it, the Ack carries
the profile through a real Mosquitto, and the coordinator's performance model learns it.

The coordinator runs in-process with the learning placement over the calibrated book (so the test can
read the book it learns), the agent in-process with the zoo. The calibration knows ocr-cls:fp32 on
x86 (1.2 ms at batch 1, measured on this project's box) and no int8 variant at all, so before a device
has loaded ocr-cls:int8, asking where an int8 tenant would go is answered "no profile"; after the
device has swapped a tenant to int8 (a Configure, as the rebalancer sends), the same question is
answered with the device.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.service import Agent
from edgefleet.cli.opsclient import call_ops
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.coordinator.perf.calibration import build_book, read
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement
from edgefleet.mqtt import MqttSettings
from edgefleet.wire import Ack, OpDeploy, OpPlan, ServiceProfile, TenantSpec, Topics
from tests.fleetkit import Watcher, wait_for

pytestmark = pytest.mark.broker
PLAUSIBLE = 5.0  # a batch-1 time within this factor of the calibration's figure is plausible


@pytest.fixture()
def fleet(
    tmp_path: Path, mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> Iterator[tuple[Coordinator, LearnedModel, Watcher]]:
    config = CoordinatorConfig(
        db_path=tmp_path / "c.db", mqtt=mqtt_settings, prefix=prefix, coordinator_id=f"co-{uuid.uuid4().hex[:8]}",
        op_timeout_s=30.0, placement="predicted-latency",
        commands=CommandPolicy(ack_timeout_s=20.0, max_attempts=3, backoff_s=0.5, backoff_max_s=2.0))
    live = LearnedModel(build_book())
    coordinator = Coordinator(config, placement=ModelPlacement(), model=live)
    coordinator.start()
    watcher = Watcher(mqtt_settings, topics)
    agent = Agent(AgentConfig(device_id="dev-a", device_kind="x86_64-cpu", state_dir=tmp_path / "agent",
                              mqtt=mqtt_settings, prefix=prefix, telemetry_period_s=1.0, workers=1,
                              memory_policy="static"))
    agent.start()
    try:
        assert agent.wait_connected(10)
        wait_for(lambda: any(d.online for d in coordinator.status().devices), 10, "dev-a online")
        yield coordinator, live, watcher
    finally:
        agent.stop()
        watcher.close()
        coordinator.stop()


def _profiled(w: Watcher, variant: str) -> list[Ack]:
    return [a for acks in list(w.acks.values()) for a in acks
            if a.profile is not None and (a.profile.model, a.profile.variant) == ("ocr-cls", variant)]


def test_a_deploy_profile_reaches_the_coordinators_book(
    fleet: tuple[Coordinator, LearnedModel, Watcher], mqtt_settings: MqttSettings, topics: Topics,
) -> None:
    coordinator, live, w = fleet
    int8 = TenantSpec(name="cls2", model="ocr-cls", variant="int8", slo_ms=500.0)
    before = call_ops(mqtt_settings, topics, OpPlan(tenant=int8, rate_rps=1.0), timeout=30)
    assert not before.ok and "no profile for ocr-cls:int8 on x86-cpu" in before.message, before

    spec = TenantSpec(name="cls", model="ocr-cls", slo_ms=500.0, max_batch=8)
    reply = call_ops(mqtt_settings, topics, OpDeploy(tenant=spec), timeout=60)
    assert reply.ok and reply.device_id == "dev-a", reply
    wait_for(lambda: _profiled(w, "fp32"), 10, "the deploy's ack with its profile")
    [ack] = _profiled(w, "fp32")
    assert ack.profile is not None
    ms = ack.profile.ms_by_batch
    # ocr-cls batches (a batch axis on its input and output) and is cheap: batch 1 and batch 8 are timed
    assert set(ms) == {1, 8}, ms
    table = read()["models"]["ocr-cls"]["batch1_ms"]
    assert table / PLAUSIBLE <= ms[1] <= table * PLAUSIBLE, (ms, table)

    # the device's measurement replaced the table's prior: the curve passes through what it measured
    def curve_at(variant: str, batch: int) -> float | None:
        prof = coordinator.call(lambda e: live.learner.book.profile("ocr-cls", variant, "x86-cpu"))
        return None if prof is None else prof.curve.at(batch)

    assert curve_at("fp32", 1) == pytest.approx(ms[1]) and curve_at("fp32", 8) == pytest.approx(ms[8])

    # the swap to int8 (what the rebalancer sends): its Ack carries the int8 profile, and the book
    # learns a variant it had no figures for
    swapped = msgspec.structs.replace(spec, variant="int8")
    assert coordinator.call(lambda e: e.tenants.reconfigure("cls", swapped, "test")) is None
    wait_for(lambda: _profiled(w, "int8"), 30, "the configure's ack with the int8 profile")
    [ack8] = _profiled(w, "int8")
    assert isinstance(ack8.profile, ServiceProfile) and set(ack8.profile.ms_by_batch) == {1, 8}
    wait_for(lambda: curve_at("int8", 1) is not None, 10, "the int8 profile in the book")
    assert curve_at("int8", 1) == pytest.approx(ack8.profile.ms_by_batch[1])
    after = call_ops(mqtt_settings, topics, OpPlan(tenant=int8, rate_rps=1.0), timeout=30)
    assert after.ok and after.device_id == "dev-a", after

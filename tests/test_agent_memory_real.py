"""The memory manager with real runtimes: eviction, cold starts, downgrade, per-request fidelity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.service import Agent
from edgefleet.mqtt import MqttSettings
from edgefleet.runtime import SessionOptions, get_runtime
from edgefleet.wire import Deploy, ErrorCode, ErrorFrame, ResultFrame, Telemetry, TenantSpec, Topics, decode
from edgefleet.zoo import model_path, sample_inputs
from tests.fleetkit import RawCaller, Watcher, wait_for


@pytest.fixture()
def rig(
    mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path
) -> Iterator[tuple[Agent, Watcher, RawCaller]]:
    cfg = AgentConfig(
        device_id="mem-a",
        state_dir=tmp_path,
        mqtt=mqtt_settings,
        prefix=topics.prefix,
        telemetry_period_s=0.3,
        workers=2,
        memory_policy="predictive",
    )
    agent = Agent(cfg)
    agent.start()
    assert agent.wait_connected(10)
    w, c = Watcher(mqtt_settings, topics), RawCaller(mqtt_settings, topics)
    yield agent, w, c
    c.close()
    w.close()
    agent.stop()


def _deploy(w: Watcher, spec: TenantSpec) -> None:
    ack = w.command(Deploy(command_id=uuid.uuid4().hex, device_id="mem-a", tenant=spec))
    assert ack.ok, ack


def test_evicted_tenant_is_served_after_a_cold_start_within_the_budget(
    rig: tuple[Agent, Watcher, RawCaller],
) -> None:
    agent, w, c = rig
    _deploy(w, TenantSpec(name="rec-a", model="ocr-rec", slo_ms=500, min_fidelity=1.0))
    a_bytes = agent.host.memory_used()
    agent.host.budget_bytes = int(1.5 * a_bytes)  # room for one ocr-rec fp32, not two
    _deploy(w, TenantSpec(name="rec-b", model="ocr-rec", slo_ms=500, min_fidelity=1.0))
    assert agent.host.get("rec-a") is None and agent.host.get("rec-b") is not None
    assert agent.host.memory_used() <= agent.host.budget_bytes
    frame = c.call("rec-a", dict(sample_inputs("ocr-rec")), timeout=30)  # needs a load first
    assert isinstance(frame, ResultFrame), frame
    assert agent.host.get("rec-a") is not None and agent.host.memory_used() <= agent.host.budget_bytes
    assert agent.memory.loads >= 3 and agent.memory.evictions >= 2

    def cold_starts() -> int:
        return sum(
            x.cold_starts for t in w.telemetry for x in decode(t, Telemetry).tenants if x.tenant == "rec-a"
        )

    wait_for(lambda: cold_starts() == 1, 5, "the cold start reported in telemetry")


def test_downgrade_before_evict_and_per_request_fidelity(rig: tuple[Agent, Watcher, RawCaller]) -> None:
    agent, w, c = rig
    # ocr-rec accepts fp32 (1.0) and fp16 (0.994) at min_fidelity 0.99
    _deploy(w, TenantSpec(name="rec", model="ocr-rec", slo_ms=500, min_fidelity=0.99))
    assert agent.host.get("rec") is not None and agent.host.get("rec").variant == "fp32"  # type: ignore[union-attr]
    fp16 = model_path("ocr-rec", "fp16").stat().st_size
    cls = model_path("ocr-cls", "fp32").stat().st_size
    # fits rec at fp16 plus ocr-cls, but not rec at fp32 plus ocr-cls
    agent.host.budget_bytes = fp16 + 2 * cls + (agent.host.memory_used() - fp16) // 4
    _deploy(w, TenantSpec(name="cls", model="ocr-cls", slo_ms=200, min_fidelity=1.0))
    rec = agent.host.get("rec")
    assert rec is not None and rec.variant == "fp16"  # downgraded, not evicted
    assert agent.host.get("cls") is not None
    frame = c.call("rec", dict(sample_inputs("ocr-rec")), timeout=30)
    assert isinstance(frame, ResultFrame) and frame.meta["variant"] == "fp16"
    strict = c.call("rec", dict(sample_inputs("ocr-rec")), timeout=30, min_fidelity=0.999)
    assert isinstance(strict, ErrorFrame) and strict.code is ErrorCode.FIDELITY_UNAVAILABLE
    assert "fp32" in strict.message  # says which variant would meet it


def test_unloading_really_releases_memory() -> None:
    proc = psutil.Process()
    path = model_path("ocr-rec", "fp32")
    feeds = dict(sample_inputs("ocr-rec"))
    rt = get_runtime("onnxruntime")

    def cycle() -> None:
        s = rt.open(path, SessionOptions())
        s.run(feeds)
        s.close()

    cycle()
    base = proc.memory_info().rss
    for _ in range(6):
        cycle()
    grown = proc.memory_info().rss - base
    # six more load/run/unload cycles of a 10.9 MB model leave less than one model's worth behind
    assert grown < path.stat().st_size, grown
    _ = np.zeros(1)

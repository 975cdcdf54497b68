"""The rebalancer end to end through a real Mosquitto: a rate rise is predicted to break a device's
SLOs, the coordinator sends the command its planner chose, the agent applies it, and the violation
stops.

The agents are the simulator's (``edgefleet.coordinator.sim.agents.SimAgent``) behind a real MQTT link: they
apply Deploy / Configure / Undeploy at most once per id and ack, re-announce their tenants, and their
telemetry windows come from the same performance model the coordinator plans with, for the tenants
and variants they actually host — so a command that fixes the device shows in the next windows.

Book (one CPU worker, headroom 0.8, margin 0.1 -> settled at utilisation <= 0.72):
  ocr:fp32 s(1) = 5 ms, ocr:int8 s(1) = 2.5 ms (fidelity 0.95), det:fp32 s(1) = 5 ms.
t1 (ocr) and t2 (det) share edge-a at 60 req/s each: 0.3 + 0.3 = 0.6 -> 0.75 of headroom, fine.
t1 rises to 110 req/s: 0.55 + 0.3 = 0.85 -> 1.06 of headroom: predicted in violation. The cheapest
fix is t1 on int8: 0.275 + 0.3 = 0.575 -> 0.72 <= 0.9, so a Configure (no move, although edge-b is
free).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from edgefleet.cli.opsclient import call_ops
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.coordinator.fleet import ModelFacts
from edgefleet.coordinator.models import StaticModels
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement
from edgefleet.coordinator.rebalance import RebalancePolicy
from edgefleet.coordinator.sim.agents import DeviceKind, SimAgent
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings, Will
from edgefleet.wire import Configure, Death, OpDeploy, TenantSpec, Topics, WireError, decode_command, encode
from tests.fleetkit import wait_for

pytestmark = pytest.mark.broker
KIND = "x86-cpu"
MB = 1_000_000
BOOK = PerfBook(
    {KIND: KindSpec(KIND, {"cpu": Processor("cpu", 1)}, {"onnxruntime": "cpu"})},
    {("ocr", "fp32", KIND): Profile(ServiceCurve(-1.0, 6.0), "onnxruntime"),
     ("ocr", "int8", KIND): Profile(ServiceCurve(-0.5, 3.0), "onnxruntime"),
     ("det", "fp32", KIND): Profile(ServiceCurve(0.0, 5.0), "onnxruntime")})
MODELS = StaticModels({
    ("ocr", "fp32"): ModelFacts("ocr", "fp32", "onnxruntime", 10 * MB),
    ("ocr", "int8"): ModelFacts("ocr", "int8", "onnxruntime", 3 * MB, fidelity=0.95),
    ("det", "fp32"): ModelFacts("det", "fp32", "onnxruntime", 5 * MB),
})
WINDOW_S = 10.0  # virtual length of a telemetry window: enough arrivals for a steady rate


class BrokerSimAgent:
    """A SimAgent on a real MQTT link."""

    def __init__(self, settings: MqttSettings, topics: Topics, device_id: str, rates: dict[str, float]) -> None:
        self.topics = topics
        self.sim = SimAgent(device_id, DeviceKind("x86_64-cpu", KIND, 100 * MB), runtimes=("onnxruntime",),
                            models=MODELS, book=BOOK, rates=rates, rng=random.Random(7))
        self.birth = self.sim.start(time.time())
        self.commands: list[object] = []
        self._lock = threading.Lock()
        death = Death(device_id=device_id, reason="lost", boot_id=self.sim.boot_id)
        self.link = MqttLink(settings, client_id=f"sim-{device_id}-{uuid.uuid4().hex[:6]}",
                             will=Will(topics.status(device_id), encode(death)))
        self.link.subscribe(topics.commands(device_id), self._on_command, qos=1)
        self.link.start()
        assert self.link.wait_connected(10)
        self._announce()

    def _announce(self) -> None:
        birth = msgspec.structs.replace(self.birth, tenants=sorted(self.sim.hosted), ts=time.time())
        self.link.publish(self.topics.status(self.sim.device_id), encode(birth), qos=1, retain=True)

    def _on_command(self, msg: Inbound) -> None:
        try:
            cmd = decode_command(msg.payload)
        except WireError:
            return  # not a command (a telemetry.ack)
        with self._lock:
            self.commands.append(cmd)
            ack = self.sim.apply(cmd, time.time())
        self._announce()
        self.link.publish(self.topics.acks(self.sim.device_id), encode(ack), qos=1)

    def telemetry(self) -> None:
        seq = self.sim.seq
        with self._lock:
            window = self.sim.window(seq * WINDOW_S, (seq + 1) * WINDOW_S)
        self.link.publish(self.topics.telemetry(self.sim.device_id), encode(window), qos=1)

    def stop(self) -> None:
        self.link.stop()


def test_a_predicted_violation_is_fixed_by_the_rebalancers_command(
    tmp_path: Path, mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    config = CoordinatorConfig(
        db_path=tmp_path / "c.db", mqtt=mqtt_settings, prefix=prefix, coordinator_id=f"co-{uuid.uuid4().hex[:8]}",
        op_timeout_s=5.0, placement="predicted-latency",
        commands=CommandPolicy(ack_timeout_s=0.5, max_attempts=6, backoff_s=0.1, backoff_max_s=0.4),
        rebalance=RebalancePolicy(windows=2, cooldown_s=0.0, margin=0.1))
    coordinator = Coordinator(config, models=MODELS, placement=ModelPlacement(), model=LearnedModel(BOOK, headroom=0.8))
    coordinator.start()
    rates = {"t1": 60.0, "t2": 60.0}
    agents: list[BrokerSimAgent] = []
    try:
        a = BrokerSimAgent(mqtt_settings, topics, "edge-a", rates)
        agents.append(a)
        wait_for(lambda: any(d.online for d in coordinator.status().devices), what="edge-a online")
        for name, model in (("t1", "ocr"), ("t2", "det")):
            op = OpDeploy(tenant=TenantSpec(name=name, model=model, slo_ms=1000.0, max_batch=1))
            assert call_ops(mqtt_settings, topics, op, timeout=10).device_id == "edge-a"
        b = BrokerSimAgent(mqtt_settings, topics, "edge-b", rates)
        agents.append(b)
        wait_for(lambda: sum(d.online for d in coordinator.status().devices) == 2, what="edge-b online")

        def windows(agent: BrokerSimAgent, n: int) -> None:
            for _ in range(n):
                def stored() -> int:
                    return coordinator.call(lambda e: e.store.telemetry_count(agent.sim.device_id))

                before = stored()
                agent.telemetry()
                wait_for(lambda: stored() > before, what="window stored")  # noqa: B023 (used at once)

        windows(a, 3)  # 0.75 of headroom: nothing to do
        assert coordinator.call(lambda e: list(e.rebalance_moves)) == []
        rates["t1"] = 110.0  # the rate change: 1.06 of headroom
        windows(a, 2)  # two windows predicted in violation: due
        wait_for(lambda: any(isinstance(c, Configure) for c in a.commands), what="a Configure to edge-a")
        [cmd] = [c for c in a.commands if isinstance(c, Configure)]
        assert (cmd.tenant.name, cmd.tenant.variant, cmd.tenant.model) == ("t1", "int8", "ocr")
        wait_for(lambda: coordinator.call(lambda e: e.store.tenant("t1")).spec.variant == "int8",
                 what="t1 takes the new spec at the ack")
        [move] = coordinator.call(lambda e: list(e.rebalance_moves))
        assert (move.tenant, move.action, move.outcome) == ("t1", "configure", "configuring")
        assert "predicted" in move.reason and "int8" in move.reason
        # the violation stops: the next windows (t1 now int8 on edge-a) are predicted settled, and
        # nothing more is done — no migration, no flapping back
        windows(a, 3)
        streaks = coordinator.call(lambda e: dict(e.streaks))
        assert streaks["t1"].predicted == 0 and streaks["t2"].predicted == 0
        assert len(coordinator.call(lambda e: list(e.rebalance_moves))) == 1
        assert b.commands == [] and a.sim.hosted["t1"].variant == "int8"
        view = {t.name: t for t in coordinator.status().tenants}
        assert (view["t1"].device_id, view["t1"].state, view["t1"].variant) == ("edge-a", "running", "int8")
    finally:
        for agent in agents:
            agent.stop()
        coordinator.stop()

"""The coordinator's model report through a real Mosquitto: telemetry with known rates and p95s goes in,
the retained ``model.report`` comes out with the errors the queueing arithmetic says, a subscriber that
comes later gets it retained, an unchanged report is not published again, and ``edgefleet status``
shows the same figures."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist

import msgspec
import pytest

from edgefleet.cli.fleet import format_status
from edgefleet.cli.opsclient import call_ops
from edgefleet.coordinator import Coordinator
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import (
    Birth,
    FleetStatus,
    ModelReport,
    OpDeploy,
    OpStatus,
    TenantModelError,
    TenantSpec,
    TenantView,
    Topics,
)
from edgefleet.wire.codec import decode_model_report
from tests.fleetkit import wait_for
from tests.test_coordinator_broker import FakeAgent, cli, device_known, make_config

# One x86 kind with one worker and no contention, where ocr-rec fp32 takes exactly 10 ms every time
# (Cs² = 0): the model's p95 is then a one-line calculation.
BOOK = PerfBook(
    kinds={"x86-cpu": KindSpec("x86-cpu", {"cpu": Processor("cpu", 1)}, {"onnxruntime": "cpu"})},
    profiles={("ocr-rec", "fp32", "x86-cpu"): Profile(ServiceCurve(0.0, 10.0), "onnxruntime", scv=0.0)},
)
PERIOD_S = 0.05


class X86Agent(FakeAgent):
    """A fake agent that reports an x86 CPU (the model's ``x86-cpu``), so its windows are scored."""

    def birth(self) -> Birth:
        b = super().birth()
        return msgspec.structs.replace(b, capabilities=msgspec.structs.replace(b.capabilities,
                                                                               device_kind="x86_64-cpu"))


class Reports:
    """Every ModelReport published on the coordinator's model topic, and a fence topic to order by."""

    def __init__(self, settings: MqttSettings, topics: Topics) -> None:
        self.got: list[tuple[ModelReport, bool]] = []  # (report, retained)
        self.fences: list[bytes] = []
        self.fence_topic = f"{topics.root}/clients/fence-{uuid.uuid4().hex[:8]}/replies"
        self._lock = threading.Lock()
        self.link = MqttLink(settings, client_id=f"reports-{uuid.uuid4().hex[:8]}")
        self.link.subscribe(topics.model(), self._report, qos=1)
        self.link.subscribe(self.fence_topic, lambda m: self.fences.append(m.payload), qos=1)
        self.link.start()
        assert self.link.wait_connected(10)

    def _report(self, msg: Inbound) -> None:
        with self._lock:
            self.got.append((decode_model_report(msg.payload), msg.retain))

    def last(self) -> ModelReport | None:
        with self._lock:
            return self.got[-1][0] if self.got else None


@pytest.fixture()
def fleet(tmp_path: Path, mqtt_settings: MqttSettings, prefix: str) -> Iterator[tuple[Coordinator, list[FakeAgent]]]:
    config = dataclasses.replace(make_config(tmp_path, mqtt_settings, prefix), model_report_period_s=PERIOD_S)
    coordinator = Coordinator(config, placement=ModelPlacement(), model=LearnedModel(BOOK))
    coordinator.start()
    agents: list[FakeAgent] = []
    yield coordinator, agents
    for a in agents:
        a.stop()
    coordinator.stop()


@pytest.mark.broker
def test_the_retained_model_report_carries_the_errors_the_arithmetic_says(
    fleet: tuple[Coordinator, list[FakeAgent]], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    coordinator, agents = fleet
    early = Reports(mqtt_settings, topics)
    try:
        x1 = X86Agent(mqtt_settings, topics, "x1").start()
        x2 = X86Agent(mqtt_settings, topics, "x2").start()
        agents.extend([x1, x2])
        wait_for(lambda: device_known(coordinator, "x1")() and device_known(coordinator, "x2")(), what="births")
        for name, device in (("a", "x1"), ("b", "x2")):
            spec = TenantSpec(name=name, model="ocr-rec", slo_ms=50.0)
            assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec, device_id=device)).ok
        # a on x1 at 2 req/s: λ = 0.002/ms, s = 10 ms, ρ = 0.02; it waits with probability ρ = 0.02 <= 0.05,
        #   so the wait's p95 is 0 and the p95 is the service p95 10·(1 + 1.645·√0) = 10 ms.
        #   Window 1 measures 8 ms:    rel = (10 - 8)/8 = +0.25       -> ape 0.25, bias 0.25
        #   window 2 measures 12.5 ms: rel = (10 - 12.5)/12.5 = -0.2  -> ape 0.8·0.25 + 0.2·0.2 = 0.24,
        #                                                               bias 0.8·0.25 - 0.2·0.2 = 0.16
        # b on x2 at 20 req/s: ρ = 0.2 = P(wait); mean wait (M/D/1) 0.2·10/(1 - 0.2)·(1 + 0)/2 = 1.25 ms;
        #   6.25 ms when it waits, a gamma of squared CV 0.2 + 0.8/3 = 0.4667 (a fixed service's residual
        #   is uniform): its 75th percentile (1 - 0.05/0.2; z = 0.6745), by Wilson–Hilferty with v = 0.4667/9,
        #   6.25·(1 - v + z·√v)³ = 8.358 ms -> p95 10 + 8.358 = 18.358 ms.
        #   One window measures 20 ms: rel = (18.358 - 20)/20 = -0.0821 -> ape 0.0821, bias -0.0821 (optimistic)
        # mean APE over the two tenants: (0.24 + 0.0821)/2 = 0.1611
        for seq, p95 in enumerate((8.0, 12.5)):
            x1.link.publish(topics.telemetry("x1"), x1.telemetry(seq, "a", 2.0, p95, completions=10), qos=1)
        x2.link.publish(topics.telemetry("x2"), x2.telemetry(0, "b", 20.0, 20.0, completions=10), qos=1)

        def complete() -> bool:
            r = early.last()
            return r is not None and [(t.tenant, t.windows) for t in r.tenants] == [("a", 2), ("b", 1)]

        wait_for(complete, what="a report with both tenants' windows")
        report = early.last()
        assert report is not None
        a, b = report.tenants
        v, z = (0.2 + 0.8 / 3) / 9, NormalDist().inv_cdf(0.75)
        b_p95 = 10.0 + 6.25 * (1 - v + z * math.sqrt(v)) ** 3
        assert (a.device_id, a.device_kind, a.model, a.variant) == ("x1", "x86-cpu", "ocr-rec", "fp32")
        assert (a.predicted_p95_ms, a.observed_p95_ms, a.arrival_rps) == (pytest.approx(10.0), 12.5, 2.0)
        assert (a.ape_ratio, a.bias_ratio) == (pytest.approx(0.24), pytest.approx(0.16))
        assert (b.device_id, b.predicted_p95_ms, b.observed_p95_ms, b.arrival_rps) == (
            "x2", pytest.approx(b_p95), 20.0, 20.0)
        assert (b.ape_ratio, b.bias_ratio) == (pytest.approx((20.0 - b_p95) / 20.0), pytest.approx((b_p95 - 20) / 20))
        assert report.mean_ape_ratio == pytest.approx((0.24 + (20.0 - b_p95) / 20.0) / 2)

        # a subscriber that comes later gets the same report at once, retained
        late = Reports(mqtt_settings, topics)
        try:
            wait_for(lambda: late.got, what="the retained report")
            assert late.got[0] == (report, True)
        finally:
            late.link.stop()

        # unchanged, it is not published again: let several periods pass on the coordinator's clock (two
        # calls: the worker's timer runs after each), then fence through the coordinator's own connection
        # (the broker delivers one publisher's messages in order), and nothing new has come
        seen = len(early.got)
        wait_for(lambda: coordinator.call(lambda e: e.clock()) > report.ts + 4 * PERIOD_S, what="periods")
        coordinator.call(lambda e: None)
        coordinator.call(lambda e: None)
        coordinator.link.publish(early.fence_topic, b"fence", qos=1)
        wait_for(lambda: early.fences, what="the fence")
        assert len(early.got) == seen

        # op.status carries the same report, and `edgefleet status` shows it per tenant
        status = call_ops(mqtt_settings, topics, OpStatus()).status
        assert status is not None and status.model is not None
        assert msgspec.structs.replace(status.model, ts=0.0) == msgspec.structs.replace(report, ts=0.0)
        rc, out = cli("status", "--port", str(mqtt_settings.port), "--prefix", prefix)
        assert rc == 0 and "PRED P95 MS" in out, out
        row_a = next(line for line in out.splitlines() if line.startswith("a "))
        assert "10.0" in row_a and "24% (+16%)" in row_a, out
        assert "mean p95 error 16% over 2 tenants" in out  # 0.1611, as above
        rc, out = cli("status", "--json", "--port", str(mqtt_settings.port), "--prefix", prefix)
        assert rc == 0 and json.loads(out)["model"]["tenants"][0]["ape_ratio"] == pytest.approx(0.24)
    finally:
        early.link.stop()


@pytest.mark.broker
def test_a_coordinator_without_the_model_publishes_no_report(
    tmp_path: Path, mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    coordinator = Coordinator(make_config(tmp_path, mqtt_settings, prefix))  # most-free-memory placement
    coordinator.start()
    reports = Reports(mqtt_settings, topics)
    try:
        coordinator.call(lambda e: None)
        coordinator.call(lambda e: None)
        coordinator.link.publish(reports.fence_topic, b"fence", qos=1)
        wait_for(lambda: reports.fences, what="the fence")
        assert reports.got == [] and coordinator.status().model is None
    finally:
        reports.link.stop()
        coordinator.stop()


def test_status_table_shows_the_model_columns_only_with_a_report() -> None:
    views = [TenantView(name=n, model="vad", variant="fp32", slo_ms=50, state="running", device_id="d1",
                        latency_p95_ms=12.0) for n in ("new", "old")]
    entry = TenantModelError(tenant="old", device_id="d1", device_kind="x86-cpu", model="vad", variant="fp32",
                             predicted_p95_ms=11.04, observed_p95_ms=12.0, arrival_rps=5.0, ape_ratio=0.08,
                             bias_ratio=-0.08, windows=3)
    plain = format_status(FleetStatus(devices=[], tenants=views, ts=0.0))
    assert "PRED P95" not in plain and "performance model" not in plain
    text = format_status(FleetStatus(devices=[], tenants=views, ts=0.0,
                                     model=ModelReport(tenants=[entry], mean_ape_ratio=0.08)))
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("new", "old"))}
    # "old" was scored: predicted 11.0 ms, error 8 % and optimistic by 8 %; "new" not yet: dashes
    assert rows["old"][-3:] == ["11.0", "8%", "(-8%)"] and rows["new"][-2:] == ["-", "-"]
    assert text.endswith("performance model: mean p95 error 8% over 1 tenant (EWMA of |predicted - measured| / "
                         "measured; bias < 0: optimistic)")

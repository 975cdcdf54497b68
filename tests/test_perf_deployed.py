"""Profiles measured at deploy enter the performance book: table-driven, with the arithmetic in comments.

The book: one kind ``x86-cpu`` with one CPU worker, ONNX Runtime only. ocr:fp32 has the calibration-like
curve s(b) = -1 + 6·b ms (s(1) = 5, s(8) = 47), spread 0.09, requests of 0.5 MB; ocr:int8 has no profile
(as every variant in the real calibration). det:fp32 s(b) = 5·b. A fit through two measured points
(1, y1), (8, y8) is c = (y8 - y1) / 7, a = y1 - c.
"""

from __future__ import annotations

import math

import pytest

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve
from edgefleet.coordinator.perf.deployed import DEFAULT_SCV, seed_points
from edgefleet.coordinator.perf.learner import Learner
from edgefleet.coordinator.placement.live import LearnedModel
from edgefleet.coordinator.placement.model import PredictedLatency
from edgefleet.coordinator.placement.planner import Demand
from edgefleet.coordinator.placement.seam import NoFit, Placed
from edgefleet.coordinator.rebalance import (
    Host,
    Model,
    RebalancePolicy,
    Reconfigure,
    Resident,
    Situation,
    Streak,
    plan,
)
from edgefleet.wire import DeviceWindow, ServiceProfile, Telemetry, TenantSpec, TenantWindow

KIND = "x86-cpu"
MB = 1_000_000
BOOK = PerfBook(
    {KIND: KindSpec(KIND, {"cpu": Processor("cpu", 1)}, {"onnxruntime": "cpu"})},
    {("ocr", "fp32", KIND): Profile(ServiceCurve(-1.0, 6.0), "onnxruntime", scv=0.09, request_mb=0.5),
     ("det", "fp32", KIND): Profile(ServiceCurve(0.0, 5.0), "onnxruntime")},
)
FACTS = {("ocr", "fp32"): ModelFacts("ocr", "fp32", "onnxruntime", 10 * MB),
         ("ocr", "int8"): ModelFacts("ocr", "int8", "onnxruntime", 3 * MB, fidelity=0.95),
         ("det", "fp32"): ModelFacts("det", "fp32", "onnxruntime", 5 * MB)}

SEED_POINTS = [
    # two or more points are kept as measured
    ({1: 2.0, 8: 6.0}, ServiceCurve(4.0, 1.0), {1: 2.0, 8: 6.0}),
    # batch 1 only, with a shape s(b) = 4 + b (s(1) = 5, s(8) = 12): s(8) = 3 x 12 / 5 = 7.2
    ({1: 3.0}, ServiceCurve(4.0, 1.0), {1: 3.0, 8: 7.2}),
    # batch 1 only, no shape: no batching gain, s(8) = 8 x 3 = 24
    ({1: 3.0}, None, {1: 3.0, 8: 24.0}),
]


@pytest.mark.parametrize(("measured", "shape", "expected"), SEED_POINTS)
def test_seed_points(measured: dict[int, float], shape: ServiceCurve | None, expected: dict[int, float]) -> None:
    got = seed_points(measured, shape)
    assert got.keys() == expected.keys()
    assert all(math.isclose(got[b], expected[b]) for b in expected)


PROFILED = [
    # (id, model, variant, measured, expected curve (a, c), expected scv, expected request MB)
    ("a new variant, two points: c = (13 - 2.5)/7 = 1.5, a = 2.5 - 1.5 = 1; spread and request from fp32",
     "ocr", "int8", {1: 2.5, 8: 13.0}, (1.0, 1.5), 0.09, 0.5),
    ("a new variant, batch 1 only: s(8) = 2.5 x 47/5 = 23.5 (fp32's shape), c = 21/7 = 3, a = -0.5",
     "ocr", "int8", {1: 2.5}, (-0.5, 3.0), 0.09, 0.5),
    ("a profiled fp32 replaces the table's curve: c = (45 - 10)/7 = 5, a = 5; the rest stays the table's",
     "ocr", "fp32", {1: 10.0, 8: 45.0}, (5.0, 5.0), 0.09, 0.5),
    ("a model with no fp32 profile here: default spread, the request size given, s(8) = 8 x 2 (no gain)",
     "new", "fp32", {1: 2.0}, (0.0, 2.0), DEFAULT_SCV, 0.25),
]


@pytest.mark.parametrize(("case", "model", "variant", "measured", "curve", "scv", "request_mb"), PROFILED,
                         ids=[c[0].split(":")[0] for c in PROFILED])
def test_a_deploy_profile_seeds_the_book_and_the_estimator(
    case: str, model: str, variant: str, measured: dict[int, float], curve: tuple[float, float], scv: float,
    request_mb: float,
) -> None:
    learner = Learner(BOOK).profiled(KIND, model, variant, "onnxruntime", measured, request_mb=0.25)
    prof = learner.book.profile(model, variant, KIND)
    assert prof is not None, case
    assert (prof.curve.fixed_ms, prof.curve.per_row_ms) == pytest.approx(curve), case
    assert (prof.runtime, prof.scv, prof.request_mb) == ("onnxruntime", pytest.approx(scv), pytest.approx(request_mb))
    est = learner.estimators[(model, variant, KIND)]
    assert (est.fixed_ms, est.per_row_ms) == pytest.approx(curve) and est.windows == 0
    assert BOOK.profile("ocr", "int8", KIND) is None  # the old book is unchanged


def _window(seq: int, ms: float) -> Telemetry:
    w = TenantWindow(tenant="t", model="ocr", variant="fp32", slo_ms=500, arrivals=50, completions=50,
                     arrival_rps=5.0, latency_p95_ms=20.0, service_ms_by_batch={1: ms}, batches_by_size={1: 50})
    return Telemetry(device_id="d1", boot_id="b", seq=seq, window_start=seq * 10.0, window_end=seq * 10.0 + 10,
                     device=DeviceWindow(cpu_percent=5, memory_used_bytes=1, memory_budget_bytes=1,
                                         model_memory_bytes=1), tenants=[w])


def test_telemetry_knows_better_than_a_later_deploy_profile() -> None:
    learner = Learner(BOOK).observe(KIND, _window(0, 9.0))  # an estimator exists for ocr:fp32 now
    assert ("ocr", "fp32", KIND) in learner.estimators
    assert learner.profiled(KIND, "ocr", "fp32", "onnxruntime", {1: 100.0}) is learner


@pytest.mark.parametrize(("kind", "runtime", "measured"), [
    ("coral-tpu", "onnxruntime", {1: 2.0}),  # a kind the book does not know
    (KIND, "litert", {1: 2.0}),  # a runtime the kind does not run
])
def test_what_the_book_cannot_hold_changes_nothing(kind: str, runtime: str, measured: dict[int, float]) -> None:
    learner = Learner(BOOK)
    assert learner.profiled(kind, "ocr", "int8", runtime, measured) is learner


def test_the_live_placement_maps_the_reported_kind() -> None:
    live = LearnedModel(BOOK)
    live.profiled("x86_64-cpu", ServiceProfile(model="ocr", variant="int8", ms_by_batch={1: 2.5}), "onnxruntime")
    assert live.learner.book.profile("ocr", "int8", KIND) is not None


def _fleet(*tenants: TenantLoad) -> FleetSnapshot:
    device = DeviceSnapshot(device_id="d1", online=True, device_kind=KIND, runtimes=frozenset({"onnxruntime"}),
                            memory_budget_bytes=100 * MB, tenants=tenants)
    return FleetSnapshot((device,), 0.0)


def test_a_variant_profiled_at_deploy_becomes_placeable() -> None:
    spec = TenantSpec(name="o8", model="ocr", variant="int8", slo_ms=1000.0, max_batch=1)
    before = PredictedLatency(BOOK, probe=None).place(spec, FACTS[("ocr", "int8")], _fleet())
    assert isinstance(before, NoFit) and "no profile for ocr:int8 on x86-cpu" in before.reason
    book = Learner(BOOK).profiled(KIND, "ocr", "int8", "onnxruntime", {1: 2.5}).book
    after = PredictedLatency(book, probe=None).place(spec, FACTS[("ocr", "int8")], _fleet())
    assert isinstance(after, Placed) and after.device_id == "d1"


def test_a_variant_profiled_at_deploy_becomes_a_swap_for_the_rebalancer() -> None:
    # o (ocr:fp32) at 170 req/s alone on d1's one worker: 170 x 5 / 1000 = 0.85 > headroom 0.8. Without
    # an int8 profile nothing helps: on the empty d2 it would be 0.85 as well. Profiled int8 (s(1) = 2.5 ms, the curve of
    # the second PROFILED row): 170 x 2.5 / 1000 = 0.425 -> 0.53 of headroom, settled in place.
    spec = TenantSpec(name="o", model="ocr", slo_ms=1000.0, max_batch=1)
    o = Resident(spec, "onnxruntime", 10 * MB, changeable=True, movable=True)
    hosts = (Host("d1", KIND, True, frozenset({"onnxruntime"}), 100 * MB, (o,)),
             Host("d2", KIND, True, frozenset({"onnxruntime"}), 100 * MB, ()))
    policy = RebalancePolicy(windows=2, cooldown_s=60.0, margin=0.1, max_actions=2, max_batch=1)
    demand = {"o": Demand(170.0, 1000.0)}

    def actions(book: PerfBook) -> list[tuple[str, str]]:
        sit = Situation(hosts, Model(book, demand, headroom=0.8), FACTS, {})
        got = plan(sit, {"o": Streak(predicted=2)}, policy, 1000.0).actions
        return [("configure", a.spec.variant) if isinstance(a, Reconfigure) else ("migrate", a.target or "")
                for a in got]

    assert actions(BOOK) == []
    profiled = Learner(BOOK).profiled(KIND, "ocr", "int8", "onnxruntime", {1: 2.5}).book
    assert actions(profiled) == [("configure", "int8")]

"""Model-driven placement and the knapsack baselines: choices and NoFit reasons by table (arithmetic in the
comments), and by property: whatever the fleet and the stream, a placement never overfills memory, never
pushes a processor past the headroom and never leaves a tenant with a predicted p95 above its SLO."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.coordinator.fleet import MB, DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve, predict
from edgefleet.coordinator.placement import (
    BestFit,
    Demand,
    FirstFit,
    NoFit,
    Placed,
    PredictedLatency,
    SpreadFit,
    WorstFit,
)
from edgefleet.wire import TenantSpec

ORT, LITERT = "onnxruntime", "litert"
M1 = ModelFacts("m1", "fp32", ORT, 5 * MB)  # 10 ms per request on "box", none on "tpu-box"
M2 = ModelFacts("m2", "fp32", LITERT, 1 * MB)  # 2 ms on "box", 1 ms + 0.5 ms reload on the TPU
BOOK = PerfBook(
    kinds={
        "box": KindSpec("box", {"cpu": Processor("cpu", 1)}, {ORT: "cpu", LITERT: "cpu"}),
        "tpu-box": KindSpec(
            "tpu-box", {"cpu": Processor("cpu", 2), "tpu": Processor("tpu")}, {ORT: "cpu", LITERT: "tpu"}
        ),
    },
    profiles={
        ("m1", "fp32", "box"): Profile(ServiceCurve(0.0, 10.0), ORT, scv=0.0),
        ("m2", "fp32", "box"): Profile(ServiceCurve(0.0, 2.0), LITERT, scv=0.0),
        ("m2", "fp32", "tpu-box"): Profile(ServiceCurve(0.0, 1.0), LITERT, scv=0.0, switch_ms=0.5),
    },
)


def dev(
    did: str,
    kind: str = "box",
    budget_mb: float = 100,
    *residents: tuple[str, ModelFacts],
    online: bool = True,
    runtimes: tuple[str, ...] = (ORT, LITERT),
) -> DeviceSnapshot:
    loads = tuple(TenantLoad(name, m.name, m.variant, m.size_bytes) for name, m in residents)
    return DeviceSnapshot(did, online, kind, frozenset(runtimes), int(budget_mb * MB), loads)


def spec(name: str, model: ModelFacts, slo: float) -> TenantSpec:
    return TenantSpec(name=name, model=model.name, variant=model.variant, slo_ms=slo)


# (case, devices, new tenant (name, model, rate, slo), resident demand, expected device or NoFit reason)
CASES = [
    # d1 hosts r (m1, 40 req/s): the newcomer at 10 req/s would share one worker at ρ = 0.5; d2 is empty -> d2
    (
        "more slack wins",
        [dev("d1", "box", 100, ("r", M1)), dev("d2")],
        ("t1", M1, 10, 50),
        {"r": Demand(40)},
        "d2",
    ),
    # alone: λ = 0.01/ms, s = 10, ρ = 0.1, M/D/1 wait 0.01·100/(2·0.9) = 0.556 ms with P(wait) = 0.1,
    # so 5.556 ms when it waits, a gamma of squared CV 0.1 + 0.9/3 = 0.4 (a fixed service's residual is
    # uniform): its median (1 - 0.05/0.1 = 0.5, z = 0) 5.556·(1 - 0.4/9)³ = 4.847 -> 14.8 > 12
    ("SLO unreachable alone", [dev("d1")], ("t1", M1, 10, 12), {}, "d1: t1 p95 14.8 ms > SLO 12 ms"),
    # r at 50 req/s (ρ 0.5, no SLO known) + 40 req/s · 10 ms = 0.9 > 0.8
    (
        "headroom",
        [dev("d1", "box", 100, ("r", M1))],
        ("t1", M1, 40, 1000),
        {"r": Demand(50)},
        "d1: cpu utilisation 0.90 > headroom 0.80",
    ),
    # r alone: ρ 0.2, W 1.25 ms, P 0.2: 6.25 ms when waiting, squared CV 0.2 + 0.8/3 = 0.467, its
    # 75th percentile (z = 0.6745) 6.25·(1 - 0.0519 + 0.6745·0.2277)³ = 8.36 -> 18.4 <= 19.
    # With t1 (100 req/s · 2 ms):
    # ρ = 0.4, E[S] = 0.4/0.12 = 3.333, E[S²] = (0.02·100 + 0.1·4)/0.12 = 20, Cs² = 20/3.333² - 1 = 0.8,
    # pool W = 0.4·3.333/0.6·1.8/2 = 2.0 ms with P 0.4: 5 ms when waiting; residual squared CV
    # 4·3.4/(3·1.8²) - 1 = 0.399, wait's 0.4 + 0.6·0.399 = 0.639; its 87.5th percentile (z = 1.1503)
    # 5·(1 - 0.0710 + 1.1503·0.2665)³ = 9.43 -> r at 19.4 > its SLO 19
    (
        "protects residents",
        [dev("d1", "box", 100, ("r", M1))],
        ("t1", M2, 100, 1000),
        {"r": Demand(20, 19)},
        "d1: r p95 19.4 ms > SLO 19 ms",
    ),
    (
        "no profile on the kind",
        [dev("d1", "tpu-box")],
        ("t1", M1, 1, 100),
        {},
        "d1: no profile for m1:fp32 on tpu-box",
    ),
    ("unknown kind", [dev("d1", "jetson")], ("t1", M1, 1, 100), {}, "d1: unknown device kind jetson"),
    ("memory", [dev("d1", "box", 4)], ("t1", M1, 1, 100), {}, "d1: needs 4.8 MiB, 3.8 MiB free"),  # 5 MB and 4 MB printed in MiB
    (
        "offline and no runtime",
        [dev("d1", online=False), dev("d2", runtimes=(LITERT,))],
        ("t1", M1, 1, 100),
        {},
        "d1: offline; d2: no runtime onnxruntime",
    ),
    # m2 at 100 req/s: box 2 ms (ρ 0.2) vs the TPU 1 ms (ρ 0.1): more slack on the TPU
    ("the faster processor", [dev("d1"), dev("d2", "tpu-box")], ("t1", M2, 100, 10), {}, "d2"),
    # a resident with no demand entry counts at the default 1 req/s: ρ 0.01 + 0.75 < 0.8 -> fits
    ("default rate", [dev("d1", "box", 100, ("r", M1))], ("t1", M1, 75, 1000), {}, "d1"),
    ("empty fleet", [], ("t1", M1, 1, 100), {}, "no devices known"),
]


@pytest.mark.parametrize(("case", "devices", "new", "demand", "expected"), CASES, ids=[c[0] for c in CASES])
def test_choices_and_reasons(
    case: str,
    devices: list[DeviceSnapshot],
    new: tuple[str, ModelFacts, float, float],
    demand: dict[str, Demand],
    expected: str,
) -> None:
    name, model, rate, slo = new
    policy = PredictedLatency(BOOK, demand={**demand, name: Demand(rate, slo)})
    decision = policy.place(spec(name, model, slo), model, FleetSnapshot(tuple(devices)))
    if expected.startswith("d") and ":" not in expected:
        assert isinstance(decision, Placed), decision
        assert decision.device_id == expected
        assert 0.0 <= decision.score <= 1.0
    else:
        assert isinstance(decision, NoFit)
        assert decision.reason == expected
    # the bounded search agrees on this small fleet
    bounded, _ = policy.planner(FleetSnapshot(tuple(devices))).decide(spec(name, model, slo), model)
    assert type(bounded) is type(decision)
    if isinstance(decision, Placed):
        assert isinstance(bounded, Placed) and bounded.device_id == decision.device_id


def test_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        PredictedLatency(BOOK, headroom=1.5)
    with pytest.raises(ValueError):
        PredictedLatency(BOOK, probe=0)


# -- properties ---------------------------------------------------------------------------------
fleets = st.lists(
    st.tuples(st.sampled_from(["box", "tpu-box"]), st.integers(1, 40), st.booleans()),
    min_size=1,
    max_size=8,
).map(
    lambda ds: FleetSnapshot(
        tuple(
            DeviceSnapshot(f"d{i}", online, kind, frozenset({ORT, LITERT}), budget * MB)
            for i, (kind, budget, online) in enumerate(ds)
        )
    )
)
streams = st.lists(
    st.tuples(
        st.sampled_from([M1, M2]),
        st.sampled_from([1.0, 5.0, 20.0, 60.0, 150.0]),
        st.sampled_from([5.0, 15.0, 30.0, 100.0]),
    ),
    min_size=1,
    max_size=40,
)


def _check_invariants(
    policy: PredictedLatency,
    fleet: FleetSnapshot,
    placed: dict[str, tuple[str, ModelFacts]],
    demand: dict[str, Demand],
) -> None:
    """Rebuild every processor's loads from scratch and check memory, headroom and SLOs."""
    for d in fleet.devices:
        mine = [(t, m) for t, (did, m) in placed.items() if did == d.device_id]
        assert sum(m.size_bytes for _, m in mine) <= d.memory_budget_bytes
        per_proc: dict[str, list] = {}
        for t, m in mine:
            got = BOOK.load(
                tenant=t,
                model=m.name,
                variant=m.variant,
                kind=d.device_kind,
                rate_rps=demand[t].rate_rps,
                slo_ms=demand[t].slo_ms,
            )
            assert not isinstance(got, str)
            per_proc.setdefault(got[0], []).append(got[1])
        for pname, loads in per_proc.items():
            out = predict(BOOK.kinds[d.device_kind].processors[pname], loads)
            assert out.utilisation <= policy.headroom + 1e-9
            for ld, p95 in zip(loads, out.p95_ms, strict=True):
                assert p95 <= ld.slo_ms + 1e-9


@settings(max_examples=120, deadline=None)
@given(fleets, streams, st.sampled_from([None, 1, 2]))
def test_placement_keeps_memory_headroom_and_slos(
    fleet: FleetSnapshot, stream: list[tuple[ModelFacts, float, float]], probe: int | None
) -> None:
    demand = {f"t{i}": Demand(rate, slo) for i, (_, rate, slo) in enumerate(stream)}
    policy = PredictedLatency(BOOK, demand=demand, probe=probe or 1)
    planner = policy.planner(fleet, exhaustive=probe is None)
    placed: dict[str, tuple[str, ModelFacts]] = {}
    for i, (model, _, slo) in enumerate(stream):
        decision = planner.place(spec(f"t{i}", model, slo), model)
        if isinstance(decision, Placed):
            assert fleet.get(decision.device_id).online  # type: ignore[union-attr]
            placed[f"t{i}"] = (decision.device_id, model)
        else:
            assert decision.reason
    _check_invariants(policy, fleet, placed, demand)
    # the planner's incremental view matches a planner rebuilt from the resulting snapshot
    snap = fleet
    for t, (did, m) in placed.items():
        snap = snap.with_tenant(did, TenantLoad(t, m.name, m.variant, m.size_bytes))
    rebuilt = policy.planner(snap)
    for did, d in planner.devices.items():
        for pname, state in d.procs.items():
            assert rebuilt.devices[did].procs[pname].util == pytest.approx(state.util, abs=1e-12)
        assert rebuilt.devices[did].free == d.free


@settings(max_examples=60, deadline=None)
@given(fleets, streams)
def test_exhaustive_choice_is_the_best_feasible(
    fleet: FleetSnapshot, stream: list[tuple[ModelFacts, float, float]]
) -> None:
    demand = {f"t{i}": Demand(rate, slo) for i, (_, rate, slo) in enumerate(stream)}
    policy = PredictedLatency(BOOK, demand=demand)
    model, _, slo = stream[-1]
    new = spec(f"t{len(stream) - 1}", model, slo)
    decision = policy.place(new, model, fleet)
    planner = policy.planner(fleet, exhaustive=True)
    scores = {}
    for did, d in planner.devices.items():
        got = planner._why_not(d, new, model)
        r = got if isinstance(got, str) else planner.check(d, got[0], got[1], model.size_bytes)
        if not isinstance(r, str):
            scores[did] = r[0]
    if isinstance(decision, NoFit):
        assert not scores
        assert all(d.device_id in decision.reason for d in fleet.devices)
    else:
        assert decision.score == pytest.approx(max(scores.values()))


# -- knapsack baselines ---------------------------------------------------------------------------
def _mem(did: str, budget_mb: float, used_mb: float = 0.0) -> DeviceSnapshot:
    loads = (TenantLoad("x", "m", "fp32", int(used_mb * MB)),) if used_mb else ()
    return DeviceSnapshot(did, True, "k", frozenset({ORT}), int(budget_mb * MB), loads)


# free: a 30 of 100, b 60 of 200, c 10 of 20 (shares 0.3, 0.3, 0.5); M1 needs 5 MB
KNAP = [
    (FirstFit(), "a"),  # first in id order with >= 5 MB free
    (BestFit(), "c"),  # least free that fits: 10 MB
    (WorstFit(), "b"),  # most free: 60 MB
    (SpreadFit(), "c"),  # largest free share: 10/20 = 0.5
]


@pytest.mark.parametrize(("policy", "expected"), KNAP, ids=[k[0].name for k in KNAP])
def test_knapsack_choices(policy: FirstFit, expected: str) -> None:
    fleet = FleetSnapshot((_mem("a", 100, 70), _mem("b", 200, 140), _mem("c", 20, 10)))
    decision = policy.place(spec("t", M1, 50), M1, fleet)
    assert isinstance(decision, Placed) and decision.device_id == expected
    nofit = policy.place(spec("t", M1, 50), M1, FleetSnapshot((_mem("a", 4),)))
    assert isinstance(nofit, NoFit) and nofit.reason == "a: needs 4.8 MiB, 3.8 MiB free"  # 5e6 and 4e6 bytes in MiB


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=6),
    st.lists(st.integers(1, 12), max_size=30),
    st.sampled_from([FirstFit(), BestFit(), WorstFit(), SpreadFit()]),
)
def test_knapsack_plan_matches_place_and_never_overfills(
    budgets: list[int], sizes: list[int], policy: FirstFit
) -> None:
    fleet = FleetSnapshot(tuple(_mem(f"d{i}", b) for i, b in enumerate(budgets)))
    models = [ModelFacts("m", "fp32", ORT, s * MB) for s in sizes]
    planned = policy.plan([(spec(f"t{i}", m, 50), m) for i, m in enumerate(models)], fleet)
    snap = fleet
    for i, (m, got) in enumerate(zip(models, planned, strict=True)):
        one = policy.place(spec(f"t{i}", m, 50), m, snap)
        assert type(one) is type(got)
        if isinstance(one, Placed) and isinstance(got, Placed):
            assert one.device_id == got.device_id
            snap = snap.with_tenant(one.device_id, TenantLoad(f"t{i}", "m", "fp32", m.size_bytes))
    for d in snap.devices:
        assert d.used_bytes <= d.memory_budget_bytes
    assert math.isfinite(sum(d.free_bytes for d in snap.devices))

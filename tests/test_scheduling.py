"""The scheduling framework: each filter and score by table (arithmetic in the comments), the cycle's
choices and NoFit reasons, its invariants by property, and the fleet snapshot it reads (a tenant with a
command in flight is busy; the cache equals a full rebuild when commands come and go).

The book for the predicted plugins: one kind ``box`` with one CPU worker, m1 takes 10 ms a request
(no spread), so a tenant's utilisation is rate x 10 / 1000 and, alone, its p95 is a function of that.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.coordinator.fleet import MB, DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.perf import KindSpec, PerfBook, Processor, Profile, ServiceCurve, predict
from edgefleet.coordinator.scheduling import (
    BEST_FIT,
    FIRST_FIT,
    MOST_FREE_MEMORY,
    PREDICTED_LATENCY,
    PROFILES,
    SPREAD_FIT,
    WORST_FIT,
    CycleState,
    NoFit,
    NotExcluded,
    Pinned,
    Placed,
    Request,
    schedule,
)
from edgefleet.coordinator.scheduling.framework import Demand, Model, rejections
from edgefleet.coordinator.scheduling.plugins import (
    FIT,
    FirstInOrder,
    FreeMemory,
    FreeShare,
    LeastFreeMemory,
    MemoryFits,
    Online,
    PredictedSlack,
    Profiled,
    RuntimePresent,
    SlosKept,
    fit,
    mapped_kind,
    reported_kind,
)
from edgefleet.coordinator.snapshots import SnapshotCache, build_snapshot
from edgefleet.coordinator.store import Store, TenantRow
from edgefleet.wire import Birth, Capabilities, TenantSpec

ORT, LITERT = "onnxruntime", "litert"
M1 = ModelFacts("m1", "fp32", ORT, 5 * MB)
BOOK = PerfBook(kinds={"box": KindSpec("box", {"cpu": Processor("cpu", 1)}, {ORT: "cpu"})},
                profiles={("m1", "fp32", "box"): Profile(ServiceCurve(0.0, 10.0), ORT, scv=0.0)})


def dev(did: str, budget_mb: float = 100, *loads_mb: float, online: bool = True, kind: str = "box",
        runtimes: tuple[str, ...] = (ORT,)) -> DeviceSnapshot:
    loads = tuple(TenantLoad(f"{did}-r{i}", "m1", "fp32", int(mb * MB)) for i, mb in enumerate(loads_mb))
    return DeviceSnapshot(did, online, kind, frozenset(runtimes), int(budget_mb * MB), loads)


def req(slo_ms: float = 100.0, facts: ModelFacts = M1, model: Model | None = None, name: str = "t") -> Request:
    return Request(TenantSpec(name=name, model=facts.name, variant=facts.variant, slo_ms=slo_ms), facts, model)


# -- filters -------------------------------------------------------------------------------------------
FILTER_CASES = [
    # (filter, device, why or None)
    (Online(), dev("d"), None),
    (Online(), dev("d", online=False), "offline"),
    (RuntimePresent(), dev("d"), None),
    (RuntimePresent(), dev("d", runtimes=(LITERT,)), "no runtime onnxruntime"),
    # 10 MB budget - 4 MB charged = 6 MB free >= 5 MB: fits
    (MemoryFits(), dev("d", 10, 4), None),
    # 10 - 6 = 4 MB free < 5 MB; sizes print in MiB: 5e6 / 2^20 = 4.8, 4e6 / 2^20 = 3.8
    (MemoryFits(), dev("d", 10, 6), "needs 4.8 MiB, 3.8 MiB free"),
    # over budget: 10 - 12 = -2 MB prints as 0 free
    (MemoryFits(), dev("d", 10, 12), "needs 4.8 MiB, 0.0 MiB free"),
    (NotExcluded(frozenset({"d"})), dev("d"), "excluded"),
    (NotExcluded(frozenset({"e"})), dev("d"), None),
    (Pinned("e"), dev("d"), "not e, the pinned device"),
    (Pinned("d"), dev("d"), None),
    (Pinned(None), dev("d"), None),
]


@pytest.mark.parametrize(("plugin", "device", "why"), FILTER_CASES)
def test_memory_and_caller_filters(plugin: Online, device: DeviceSnapshot, why: str | None) -> None:
    assert plugin.filter(req(), device, CycleState()) == why


PREDICTED_CASES = [
    # (device, rates of its residents and of the newcomer t, SLO of t, why or None)
    # t alone at 50 req/s: utilisation 50 x 10 / 1000 = 0.5 <= 0.8 headroom; p95 under 100 ms
    (dev("d"), {"t": 50.0}, 100.0, None),
    # a resident at 40 and t at 50: 0.4 + 0.5 = 0.9 > 0.8
    (dev("d", 100, 5), {"d-r0": 40.0, "t": 50.0}, 100.0, "cpu utilisation 0.90 > headroom 0.80"),
    # t alone at 50 with an SLO of 10 ms: its service time alone is 10 ms, queueing adds to it
    (dev("d"), {"t": 50.0}, 10.0, "p95"),
    # a kind the book does not know
    (dev("d", kind="toaster"), {"t": 1.0}, 100.0, "unknown device kind toaster"),
]


@pytest.mark.parametrize(("device", "rates", "slo", "why"), PREDICTED_CASES)
def test_predicted_filters(device: DeviceSnapshot, rates: dict[str, float], slo: float, why: str | None) -> None:
    model = Model(BOOK, {n: Demand(r) for n, r in rates.items()}, headroom=0.8)
    r, state = req(slo, model=model), CycleState()
    got = Profiled().filter(r, device, state) or SlosKept().filter(r, device, state)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got, got


def test_predicted_slack_is_the_smallest_relative_slack() -> None:
    # t alone at 20 req/s on one worker with 10 ms: the sharing model's p95 p; slack (100 - p) / 100
    model = Model(BOOK, {"t": Demand(20.0)}, headroom=0.8)
    r, state, d = req(100.0, model=model), CycleState(), dev("d")
    assert Profiled().filter(r, d, state) is None and SlosKept().filter(r, d, state) is None
    p95 = predict(Processor("cpu", 1), [BOOK.load(tenant="t", model="m1", variant="fp32", kind="box",
                                                  rate_rps=20.0, slo_ms=100.0)[1]]).p95_ms[0]  # type: ignore[index]
    assert math.isclose(PredictedSlack().score(r, d, state), (100.0 - p95) / 100.0)
    assert state.read(FIT, "d")[0] == PredictedSlack().score(r, d, state)


def test_fit_checks_headroom_then_slos() -> None:
    proc = Processor("cpu", 1)
    load = BOOK.load(tenant="t", model="m1", variant="fp32", kind="box", rate_rps=90.0)
    assert not isinstance(load, str)
    # 90 x 10 / 1000 = 0.9 > 0.8
    assert fit(proc, "cpu", [load[1]], 0.8) == "cpu utilisation 0.90 > headroom 0.80"
    got = fit(proc, "cpu", [load[1]], 0.95)  # no SLO (inf): the score is 1
    assert not isinstance(got, str) and got[0] == 1.0


def test_kinds_as_given_or_mapped() -> None:
    reported = DeviceSnapshot("d", True, "x86_64-cpu")
    assert reported_kind(reported) == "x86_64-cpu" and mapped_kind(reported) == "x86-cpu"
    given_kind = DeviceSnapshot("d", True, "x86_64-cpu", perf_kind="x86-cpu")
    assert reported_kind(given_kind) == "x86-cpu" and mapped_kind(given_kind) == "x86-cpu"


# -- scores --------------------------------------------------------------------------------------------
SCORE_CASES = [
    # (score, device, value): 100 MB budget with 30 MB charged: 70 MB free
    (FreeMemory(), dev("d", 100, 30), 70.0 * MB),
    (LeastFreeMemory(), dev("d", 100, 30), -70.0 * MB),
    (FirstInOrder(), dev("d", 100, 30), 0.0),
    (FreeShare(), dev("d", 100, 30), 0.7),  # 70 / 100
    (FreeShare(), dev("d", 400, 30), 370 / 400),  # 0.925: a bigger device spreads more
]


@pytest.mark.parametrize(("plugin", "device", "value"), SCORE_CASES)
def test_scores(plugin: FreeMemory, device: DeviceSnapshot, value: float) -> None:
    assert math.isclose(plugin.score(req(), device, CycleState()), value)


# -- the cycle -----------------------------------------------------------------------------------------
# a: 100 MB, 60 used -> 40 free (share 0.40); b: 50 MB, 20 used -> 30 free (0.60); c: 200 MB, 150 used
# -> 50 free (0.25); x: offline; y: no ORT
FLEET = FleetSnapshot((dev("a", 100, 60), dev("b", 50, 20), dev("c", 200, 150), dev("x", online=False),
                       dev("y", runtimes=(LITERT,))))
CHOICES = [
    (MOST_FREE_MEMORY, "c"),  # 50 MB free is the most
    (WORST_FIT, "c"),
    (BEST_FIT, "b"),  # 30 MB free is the least that still fits 5 MB
    (FIRST_FIT, "a"),  # the first feasible in id order
    (SPREAD_FIT, "b"),  # 0.60 is the largest share
]


@pytest.mark.parametrize(("profile", "device_id"), CHOICES, ids=[p.name for p, _ in CHOICES])
def test_profiles_choose_as_their_rule_says(profile: object, device_id: str) -> None:
    got = schedule(req().spec, M1, FLEET, profile=profile)  # type: ignore[arg-type]
    assert isinstance(got, Placed) and got.device_id == device_id


def test_ties_go_to_fewer_tenants_then_the_smaller_id() -> None:
    # p: 100 MB with 2 x 10 MB -> 80 free; q: 90 MB empty -> 90 free; r: 90 MB empty -> 90 free
    fleet = FleetSnapshot((dev("r", 90), dev("p", 100, 10, 10), dev("q", 90)))
    got = schedule(req().spec, M1, fleet, profile=MOST_FREE_MEMORY)
    assert isinstance(got, Placed) and got.device_id == "q"
    # most free memory, with equal frees: s (1 tenant) loses to t (none) whatever the ids
    fleet = FleetSnapshot((dev("s", 100, 10), dev("t", 90)))
    got = schedule(req().spec, M1, fleet, profile=MOST_FREE_MEMORY)
    assert isinstance(got, Placed) and got.device_id == "t"
    # first fit ignores the tenants: the smaller id
    got = schedule(req().spec, M1, fleet, profile=FIRST_FIT)
    assert isinstance(got, Placed) and got.device_id == "s"


def test_nofit_says_why_per_device_and_leaves_the_callers_own_out() -> None:
    full = FleetSnapshot((dev("a", 10, 8), dev("x", online=False), dev("y", runtimes=(LITERT,))))
    got = schedule(req().spec, M1, full, profile=MOST_FREE_MEMORY)
    # 10 - 8 = 2 MB free: 2e6 / 2^20 = 1.9 MiB
    assert got == NoFit("a: needs 4.8 MiB, 1.9 MiB free; x: offline; y: no runtime onnxruntime")
    got = schedule(req().spec, M1, full, profile=MOST_FREE_MEMORY, exclude=("a",))
    assert got == NoFit("x: offline; y: no runtime onnxruntime")  # the excluded device is not listed
    got = schedule(req().spec, M1, full, profile=MOST_FREE_MEMORY, pinned="x")
    assert got == NoFit("x: offline")
    assert schedule(req().spec, M1, full, profile=MOST_FREE_MEMORY, pinned="zz") == NoFit("zz: unknown device")
    assert schedule(req().spec, M1, full, profile=MOST_FREE_MEMORY, exclude=("a", "x", "y")) == NoFit(
        "no device left to try after a, x, y")
    assert schedule(req().spec, M1, FleetSnapshot(), profile=MOST_FREE_MEMORY) == NoFit("no devices known")
    got = schedule(req().spec, M1, FLEET, profile=PREDICTED_LATENCY)
    assert isinstance(got, NoFit) and "performance model" in got.reason


def test_pinned_and_excluded_narrow_the_choice() -> None:
    got = schedule(req().spec, M1, FLEET, profile=MOST_FREE_MEMORY, exclude=("c",))
    assert isinstance(got, Placed) and got.device_id == "a"  # 40 MB free, next after c's 50
    got = schedule(req().spec, M1, FLEET, profile=MOST_FREE_MEMORY, pinned="b")
    assert isinstance(got, Placed) and got.device_id == "b"


def test_predicted_latency_takes_the_most_slack() -> None:
    # a holds a resident at 40 req/s (0.4 busy), b is empty: t at 20 req/s has more slack alone on b
    fleet = FleetSnapshot((dev("a", 100, 5), dev("b")))
    model = Model(BOOK, {"a-r0": Demand(40.0), "t": Demand(20.0)}, headroom=0.8)
    got = schedule(req(100.0).spec, M1, fleet, profile=PREDICTED_LATENCY, model=model)
    assert isinstance(got, Placed) and got.device_id == "b" and "predicted t on box/cpu" in got.reason


# -- invariants ----------------------------------------------------------------------------------------
devices_st = st.builds(
    lambda i, budget, used, online, ort: dev(f"d{i}", budget, *used, online=online,
                                            runtimes=(ORT,) if ort else (LITERT,)),
    st.integers(0, 9), st.integers(1, 60), st.lists(st.integers(1, 20), max_size=3), st.booleans(), st.booleans())
fleets_st = st.lists(devices_st, max_size=6, unique_by=lambda d: d.device_id).map(lambda ds: FleetSnapshot(tuple(ds)))
profiles_st = st.sampled_from([p for name, p in sorted(PROFILES.items()) if name != "predicted-latency"])


@settings(max_examples=200, deadline=None)
@given(fleets_st, profiles_st, st.lists(st.sampled_from([f"d{i}" for i in range(10)]), max_size=3))
def test_schedule_never_returns_a_device_a_filter_rejects(fleet: FleetSnapshot, profile: object,
                                                          exclude: list[str]) -> None:
    got = schedule(req().spec, M1, fleet, profile=profile, exclude=exclude)  # type: ignore[arg-type]
    if isinstance(got, Placed):
        assert got.device_id not in exclude
        assert rejections(profile, req(), fleet)[got.device_id] is None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(fleets_st, profiles_st)
def test_a_fitting_device_and_no_exclusions_never_give_nofit(fleet: FleetSnapshot, profile: object) -> None:
    fits = [d for d, why in rejections(profile, req(), fleet).items() if why is None]  # type: ignore[arg-type]
    got = schedule(req().spec, M1, fleet, profile=profile)  # type: ignore[arg-type]
    assert isinstance(got, Placed) == bool(fits)


@settings(max_examples=100, deadline=None)
@given(fleets_st, profiles_st)
def test_same_inputs_same_answer(fleet: FleetSnapshot, profile: object) -> None:
    again = FleetSnapshot(tuple(reversed(fleet.devices)))  # the same fleet, handed in another order
    a = schedule(req().spec, M1, fleet, profile=profile)  # type: ignore[arg-type]
    assert a == schedule(req().spec, M1, again, profile=profile)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(fleets_st, st.dictionaries(st.sampled_from([f"d{i}-r{j}" for i in range(10) for j in range(3)]),
                                  st.floats(0.5, 60.0), max_size=8), st.floats(0.5, 60.0), st.floats(20.0, 500.0))
def test_predicted_latency_never_returns_a_device_a_filter_rejects(fleet: FleetSnapshot, rates: dict[str, float],
                                                                   rate: float, slo: float) -> None:
    fleet = FleetSnapshot(tuple(DeviceSnapshot(d.device_id, d.online, "box", d.runtimes, d.memory_budget_bytes,
                                               d.tenants) for d in fleet.devices))
    model = Model(BOOK, {**{n: Demand(r) for n, r in rates.items()}, "t": Demand(rate)}, headroom=0.8)
    r = req(slo, model=model)
    got = schedule(r.spec, M1, fleet, profile=PREDICTED_LATENCY, model=model)
    fits = [d for d, why in rejections(PREDICTED_LATENCY, r, fleet).items() if why is None]
    assert isinstance(got, Placed) == bool(fits)
    if isinstance(got, Placed):
        assert got.device_id in fits


# -- the snapshot: busy tenants ------------------------------------------------------------------------
def _birth(device: str) -> Birth:
    caps = Capabilities(device_kind="x86_64-cpu", runtimes=[ORT], accelerators=["cpu"], cpu_count=2,
                        memory_total_bytes=8 << 30, memory_budget_bytes=100 * MB, max_payload_bytes=1 << 20,
                        cached_models=[])
    return Birth(device_id=device, boot_id="b", capabilities=caps, tenants=[], agent_version="test", ts=0.0)


def test_a_command_in_flight_makes_a_tenant_busy_and_the_cache_sees_it() -> None:
    store = Store(":memory:")
    store.record_birth(_birth("d1"), 1.0)
    store.record_birth(_birth("d2"), 1.0)
    cache = SnapshotCache(store)
    spec = TenantSpec(name="a", model="m1", slo_ms=50.0)
    store.put_tenant(TenantRow.of(spec, ORT, 5 * MB, "d1", "running"), 2.0)
    first = cache.snapshot(2.0)
    a = first.get("d1").get("a")  # type: ignore[union-attr]
    assert a is not None and a.changeable and a.movable and a.runtime == ORT and a.spec == spec
    assert first.get("d1").perf_kind == "x86-cpu"  # type: ignore[union-attr]
    store.add_command(command_id="c1", device_id="d1", tenant="a", kind="configure", payload=b"", now=3.0)
    busy = cache.snapshot(3.0)
    assert busy == build_snapshot(store, 3.0)
    a = busy.get("d1").get("a")  # type: ignore[union-attr]
    assert a is not None and not a.changeable and not a.movable
    assert busy.get("d2") is first.get("d2")  # the other device is kept as it was
    store.finish_command("c1", "acked", "ok")
    free = cache.snapshot(4.0)
    assert free == build_snapshot(store, 4.0) and free.get("d1").get("a").changeable  # type: ignore[union-attr]
    store.put_tenant(TenantRow.of(spec, ORT, 5 * MB, "d1", "running", pinned="d1"), 5.0)
    pinned = cache.snapshot(5.0).get("d1").get("a")  # type: ignore[union-attr]
    assert pinned is not None and pinned.changeable and not pinned.movable  # pinned: may change, never move
    store.close()


def test_a_command_outstanding_at_a_restart_keeps_its_tenant_busy(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = Store(path)
    store.record_birth(_birth("d1"), 1.0)
    store.put_tenant(TenantRow.of(TenantSpec(name="a", model="m1", slo_ms=50.0), ORT, 5 * MB, "d1", "running"), 2.0)
    store.add_command(command_id="c1", device_id="d1", tenant="a", kind="configure", payload=b"", now=3.0)
    store.close()
    again = Store(path)
    assert again.in_flight("a")
    a = SnapshotCache(again).snapshot(4.0).get("d1").get("a")  # type: ignore[union-attr]
    assert a is not None and not a.changeable
    again.finish_command("c1", "failed", "gone")
    assert not again.in_flight("a")
    again.close()

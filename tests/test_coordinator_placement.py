"""The simple placement policy: feasibility, choice and NoFit reasons, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.coordinator.fleet import MB, DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.placement import MostFreeMemory, NoFit, Placed
from edgefleet.wire import TenantSpec

ORT, LITERT = "onnxruntime", "litert"
OCR_REC = ModelFacts("ocr-rec", "fp32", ORT, 10_857_958)  # 10.9 MB
FACE = ModelFacts("face-detect", "fp32", LITERT, 229_714)  # 0.2 MB


def spec(name: str = "t1", model: ModelFacts = OCR_REC) -> TenantSpec:
    return TenantSpec(name=name, model=model.name, variant=model.variant, slo_ms=50.0)


def dev(device_id: str, budget_mb: float, used_mb: float = 0.0, *, runtimes: tuple[str, ...] = (ORT,),
        online: bool = True, tenants: int = 1) -> DeviceSnapshot:
    """A device whose assigned tenants take ``used_mb`` in total, spread over ``tenants`` tenants."""
    loads: tuple[TenantLoad, ...] = ()
    if used_mb:
        share = int(used_mb * MB) // tenants
        loads = tuple(TenantLoad(f"x{i}", "m", "fp32", share) for i in range(tenants))
    return DeviceSnapshot(device_id, online, "x86_64-cpu", frozenset(runtimes), int(budget_mb * MB), loads)


POLICY = MostFreeMemory()

# (case, devices, model, expected device or None)
CHOICES = [
    # d1: 100 MB - 60 MB = 40 MB free >= 10.9 MB -> feasible; d2: 100 - 20 = 80 MB free -> feasible, more free
    ("most free memory wins", [dev("d1", 100, 60), dev("d2", 100, 20)], OCR_REC, "d2"),
    # d1: 40 MB free but no litert; d2: 5 MB free >= 0.2 MB with litert -> only d2 is feasible
    ("runtime decides", [dev("d1", 100, 60), dev("d2", 10, 5, runtimes=(ORT, LITERT))], FACE, "d2"),
    # d1: 50 - 40 = 10 MB free < 10.9 MB -> infeasible; d2: 11 MB free >= 10.9 MB -> feasible
    ("exact memory check", [dev("d1", 50, 40), dev("d2", 11)], OCR_REC, "d2"),
    # both 50 MB free; d1 has 2 tenants, d2 has 1 -> fewer tenants wins
    ("tie: fewer tenants", [dev("d1", 100, 50, tenants=2), dev("d2", 100, 50, tenants=1)], OCR_REC, "d2"),
    # both 100 MB free, no tenants -> smaller id wins
    ("tie: device id", [dev("b", 100), dev("a", 100)], OCR_REC, "a"),
    # d1 offline with 1000 MB free -> skipped; d2: 20 MB free >= 10.9 MB
    ("offline skipped", [dev("d1", 1000, online=False), dev("d2", 20)], OCR_REC, "d2"),
    # 10.857958 MB budget, nothing used: free == size -> fits exactly
    ("fits exactly", [dev("d1", 10.857958)], OCR_REC, "d1"),
]


@pytest.mark.parametrize(("case", "devices", "model", "expected"), CHOICES, ids=[c[0] for c in CHOICES])
def test_choice(case: str, devices: list[DeviceSnapshot], model: ModelFacts, expected: str) -> None:
    decision = POLICY.place(spec(model=model), model, FleetSnapshot(tuple(devices)))
    assert isinstance(decision, Placed), decision
    assert decision.device_id == expected
    chosen = next(d for d in devices if d.device_id == expected)
    assert decision.score == chosen.free_bytes - model.size_bytes


NOFITS = [
    # d1: litert missing; d2: 10 MB - 9.9 MB = 0.1 MB free < 0.2 MB needed (printed in MiB: / 1.048576)
    ("no runtime and no room", [dev("d1", 100, runtimes=(ORT,)), dev("d2", 10, 9.9, runtimes=(LITERT,))],
     FACE, "d1: no runtime litert; d2: needs 0.2 MiB, 0.1 MiB free"),
    # d1: onnxruntime missing; d2: 14 MB - 10.9 MB = 3.1 MB free < 10.9 MB needed; in MiB 3.0 and 10.4
    ("too full", [dev("d1", 100, runtimes=(LITERT,)), dev("d2", 14, 10.9)],
     OCR_REC, "d1: no runtime onnxruntime; d2: needs 10.4 MiB, 3.0 MiB free"),
    ("offline", [dev("d1", 100, online=False)], OCR_REC, "d1: offline"),
    ("empty fleet", [], OCR_REC, "no devices known"),
    # over-committed device (used > budget) reports 0 MB free, not a negative number
    ("over-committed", [dev("d1", 10, 12)], OCR_REC, "d1: needs 10.4 MiB, 0.0 MiB free"),
]


@pytest.mark.parametrize(("case", "devices", "model", "reason"), NOFITS, ids=[c[0] for c in NOFITS])
def test_nofit_reasons(case: str, devices: list[DeviceSnapshot], model: ModelFacts, reason: str) -> None:
    decision = POLICY.place(spec(model=model), model, FleetSnapshot(tuple(devices)))
    assert isinstance(decision, NoFit)
    assert decision.reason == reason


def test_snapshot_helpers() -> None:
    fleet = FleetSnapshot((dev("b", 100), dev("a", 50)))
    assert [d.device_id for d in fleet.devices] == ["a", "b"]
    assert fleet.excluding(["a"]).get("a") is None
    assert [d.device_id for d in fleet.only("b").devices] == ["b"]
    after = fleet.with_tenant("a", TenantLoad("t", "m", "fp32", 10 * MB))
    assert after.get("a").used_bytes == 10 * MB  # type: ignore[union-attr]
    assert fleet.get("a").used_bytes == 0  # type: ignore[union-attr]


# -- properties ---------------------------------------------------------------------------------
runtimes = st.frozensets(st.sampled_from([ORT, LITERT]), max_size=2)
devices = st.lists(
    st.builds(
        lambda i, online, rts, budget: DeviceSnapshot(f"d{i}", online, "k", rts, budget),
        st.integers(0, 50), st.booleans(), runtimes, st.integers(0, 200 * MB),
    ),
    max_size=8,
    unique_by=lambda d: d.device_id,
)
models = st.builds(ModelFacts, st.just("m"), st.just("fp32"), st.sampled_from([ORT, LITERT]),
                   st.integers(1, 50 * MB))


@settings(max_examples=300, deadline=None)
@given(devices, models)
def test_chosen_device_is_feasible(devs: list[DeviceSnapshot], model: ModelFacts) -> None:
    decision = POLICY.place(spec(), model, FleetSnapshot(tuple(devs)))
    feasible = [d for d in devs if d.online and model.runtime in d.runtimes and d.free_bytes >= model.size_bytes]
    if isinstance(decision, NoFit):
        assert not feasible
        for d in devs:
            assert d.device_id in decision.reason
        return
    chosen = next(d for d in devs if d.device_id == decision.device_id)
    assert chosen.online and model.runtime in chosen.runtimes
    assert chosen.free_bytes >= model.size_bytes
    assert chosen.free_bytes == max(d.free_bytes for d in feasible)


@settings(max_examples=150, deadline=None)
@given(devices, st.lists(models, min_size=1, max_size=40))
def test_sequence_never_overcommits(devs: list[DeviceSnapshot], batch: list[ModelFacts]) -> None:
    fleet = FleetSnapshot(tuple(devs))
    for i, model in enumerate(batch):
        decision = POLICY.place(spec(f"t{i}"), model, fleet)
        if isinstance(decision, Placed):
            fleet = fleet.with_tenant(decision.device_id, TenantLoad(f"t{i}", "m", "fp32", model.size_bytes))
    for d in fleet.devices:
        assert d.used_bytes <= d.memory_budget_bytes

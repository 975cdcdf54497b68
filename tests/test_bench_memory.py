"""The memory benchmark's replay (edgefleet.bench.memory.replay) on hand-made traces: load times are charged to the
requests that wait for them, and a variant below a tenant's floor is counted when it serves."""

from __future__ import annotations

import math

import pytest

from edgefleet.agent.memory import VariantOption
from edgefleet.bench.memory import Tenant, make_trace, replay

MB = 1_000_000
FULL = VariantOption("fp32", 10 * MB, 1.0)
LITE = VariantOption("lite", 3 * MB, 0.95)
COST = {("m", "fp32"): (0.5, 0.01), ("m", "lite"): (0.2, 0.01)}  # (load, unload) seconds


def tenant(name: str, floor: float, options: tuple[VariantOption, ...] = (FULL, LITE)) -> Tenant:
    return Tenant(name, "m", floor, 1.0, 0.0, options)


def test_lru_charges_the_load_to_every_request_that_waits_for_it() -> None:
    # fp32 loads in 0.5 s from t=0: the request at 0 waits 0.5 s, at 0.2 waits 0.3 s, at 0.7 nothing
    out = replay("lru", [tenant("a", 0.0)], [(0.0, "a"), (0.2, "a"), (0.7, "a")], 20 * MB, COST, duration_s=10.0)
    assert out["warm_start_ratio"] == 0.0  # the one start (t=0) waited
    assert out["start_wait_ms_mean"] == pytest.approx(500.0)
    assert out["warm_request_ratio"] == pytest.approx(1 / 3)
    # resident and ready from 0.5 s to the end (10 s): 9.5 / 10 tenants on average
    assert out["resident_tenants_mean"] == pytest.approx(0.95)
    assert out["loads"] == 1 and out["floor_violations"] == 0


def test_lru_evicts_the_least_recently_used_and_reloads_it() -> None:
    # budget 15 MB holds one fp32 (10 MB): a, b, a again: three cold starts, three loads
    trace = [(0.0, "a"), (10.0, "b"), (20.0, "a")]
    out = replay("lru", [tenant("a", 0.0), tenant("b", 0.0)], trace, 15 * MB, COST, duration_s=30.0)
    assert out["starts"] == 3 and out["warm_start_ratio"] == 0.0
    assert out["loads"] == 3 and out["unloads"] == 3  # b evicts a, a evicts b, a at the end


@pytest.mark.parametrize(
    ("policy", "served", "violations"),
    [
        # budget 5 MB: only lite (3 MB, fidelity 0.95) fits; the tenant's floor is 0.99
        ("predictive", 0, 0),  # the planner refuses lite: requests go unserved, none below the floor
        ("predictive-ignoring-floors", 3, 3),  # told the floor is 0, it serves lite: every request counts
    ],
)
def test_a_request_served_below_its_floor_is_counted(policy: str, served: int, violations: int) -> None:
    trace = [(0.0, "a"), (0.5, "a"), (1.0, "a")]
    out = replay(policy, [tenant("a", 0.99)], trace, 5 * MB, COST, duration_s=5.0)
    assert out["requests"] - out["unserved"] == served
    assert out["floor_violations"] == violations


def test_the_fp32_only_policy_never_downgrades() -> None:
    # budget 12 MB: fp32-only holds one tenant at a time; the predictive planner holds both at lite
    tenants = [tenant("a", 0.9), tenant("b", 0.9)]
    trace = [(t, n) for t in (0.0, 1.0, 2.0, 3.0) for n in ("a", "b")]
    fp32 = replay("predictive-fp32", tenants, trace, 12 * MB, COST, duration_s=10.0)
    pred = replay("predictive", tenants, trace, 12 * MB, COST, duration_s=10.0)
    assert fp32["resident_tenants_mean"] <= 1.0
    assert pred["resident_tenants_mean"] > fp32["resident_tenants_mean"]
    assert pred["floor_violations"] == 0 and pred["fidelity_loss"] == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["bursty", "diurnal"])
def test_traces_are_sorted_reproducible_and_inside_the_duration(kind: str) -> None:
    tenants = [tenant(f"t{i}", 0.9) for i in range(4)]
    a = make_trace(kind, tenants, 600.0, seed=3)
    assert a == make_trace(kind, tenants, 600.0, seed=3)
    assert a != make_trace(kind, tenants, 600.0, seed=4)
    assert all(0.0 <= t < 600.0 for t, _ in a) and [t for t, _ in a] == sorted(t for t, _ in a)
    assert not math.isnan(sum(t for t, _ in a))

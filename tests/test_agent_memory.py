"""Pure tests of the memory manager: predictor, knapsack plan, LRU baseline."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.memory import ArrivalPredictor, Candidate, VariantOption, lru_admit, plan_residency

MB = 1_000_000


def test_plan_downgrades_before_it_evicts() -> None:
    # budget 12 MB. A (p=0.9): fp32 11 MB or fp16 5.5 MB (fid 0.994); B (p=0.8): fp32 6 MB.
    # value/byte: A fp16 0.9*(1-5*0.006)/5.5 = 0.159/MB > B 0.8/6 = 0.133/MB -> A fp16, then B: 11.5 MB.
    a = Candidate("a", (VariantOption("fp32", 11 * MB, 1.0), VariantOption("fp16", 5_500_000, 0.994)), 0.9)
    b = Candidate("b", (VariantOption("fp32", 6 * MB, 1.0),), 0.8)
    plan = plan_residency([a, b], 12 * MB)
    assert plan.resident == {"a": "fp16", "b": "fp32"}
    assert plan.bytes_used == 11_500_000
    # with room for both at fp32 (17 MB), nobody is downgraded
    assert plan_residency([a, b], 17 * MB).resident == {"a": "fp32", "b": "fp32"}


def test_pinned_and_required_tenants_stay() -> None:
    a = Candidate("a", (VariantOption("fp32", 8 * MB, 1.0),), 0.01, current="fp32", pinned=True)
    b = Candidate("b", (VariantOption("fp32", 4 * MB, 1.0),), 0.0, required=True)
    c = Candidate("c", (VariantOption("fp32", 4 * MB, 1.0),), 0.99)
    # 8 (pinned a) + 4 (required b) = 12 MB: c, though likelier, does not fit
    assert plan_residency([a, b, c], 12 * MB).resident == {"a": "fp32", "b": "fp32"}


def test_evictions_and_loads_diff_against_current() -> None:
    plan = plan_residency([Candidate("a", (VariantOption("int8", MB, 0.999),), 1.0)], 2 * MB)
    assert plan.evictions({"z": "fp32", "a": "fp32"}) == ["z"]
    assert plan.loads({"a": "fp32"}) == {"a": "int8"}


# A tenant (p=0.9) with fp32 10 MB (fid 1.0), fp16 5 MB (fid 0.994) and a "lite" 3 MB (fid 0.95):
# value/byte of the first step: fp16 0.9*(1-5*0.006)/5 = 0.175/MB, lite 0.9*(1-5*0.05)/3 = 0.225/MB.
FLOOR_OPTS = (VariantOption("fp32", 10 * MB, 1.0), VariantOption("fp16", 5 * MB, 0.994),
              VariantOption("lite", 3 * MB, 0.95))


@pytest.mark.parametrize(
    ("floor", "budget", "required", "expected"),
    [
        (0.0, 3 * MB, False, {"a": "lite"}),  # no floor: only lite fits in 3 MB
        (0.99, 3 * MB, False, {}),  # floor 0.99: lite (0.95) is refused, fp16 (5 MB) does not fit
        (0.99, 3 * MB, True, {}),  # ... even with a request waiting: it stays cold, never below its floor
        (0.95, 3 * MB, True, {"a": "lite"}),  # a variant exactly at the floor is acceptable
        (0.99, 6 * MB, True, {"a": "fp16"}),  # required: the smallest acceptable variant, fp16 (5 MB)
        (1.0, 12 * MB, False, {"a": "fp32"}),  # floor 1.0: fp32 only
    ],
)
def test_plan_never_chooses_a_variant_below_the_floor(
    floor: float, budget: int, required: bool, expected: dict[str, str]
) -> None:
    cand = Candidate("a", FLOOR_OPTS, 0.9, min_fidelity=floor, required=required)
    assert dict(plan_residency([cand], budget).resident) == expected


def test_a_pinned_tenant_below_a_raised_floor_is_not_held_there() -> None:
    # a is pinned at lite (fid 0.95) but its floor is now 0.99: the plan moves it to fp16 (5 MB fits
    # in 6 MB) instead of keeping the unacceptable variant
    cand = Candidate("a", FLOOR_OPTS, 0.9, current="lite", pinned=True, min_fidelity=0.99)
    assert dict(plan_residency([cand], 6 * MB).resident) == {"a": "fp16"}


option = st.builds(
    VariantOption, st.sampled_from(["fp32", "fp16", "int8"]), st.integers(1, 20 * MB), st.floats(0.5, 1.0)
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(option, min_size=1, max_size=3, unique_by=lambda o: o.variant),
            st.floats(0.0, 1.0),
            st.booleans(),
        ),
        max_size=12,
    ),
    st.integers(0, 60 * MB),
)
def test_plan_never_exceeds_the_budget(
    items: list[tuple[list[VariantOption], float, bool]], budget: int
) -> None:
    cands = [Candidate(f"t{i}", tuple(opts), p, required=req) for i, (opts, p, req) in enumerate(items)]
    plan = plan_residency(cands, budget)
    assert plan.bytes_used <= budget
    sizes = {(c.tenant, o.variant): o.size_bytes for c in cands for o in c.options}
    assert plan.bytes_used == sum(sizes[(t, v)] for t, v in plan.resident.items())


def test_predictor_warms_with_bursts_and_cools_when_idle() -> None:
    p = ArrivalPredictor(half_life_s=10.0)
    cold = p.p_next("a", 0.0, 5.0)
    for i in range(20):
        p.observe("a", i * 0.2)  # 5 requests/s for 4 s
    hot = p.p_next("a", 4.0, 5.0)
    assert p.rate("a", 4.0) > 1.0
    later = p.p_next("a", 30.0, 5.0)  # 26 s (2.6 half-lives) of silence
    much_later = p.p_next("a", 600.0, 5.0)  # the burst forgotten: no likelier than a new tenant
    assert cold < later < hot
    assert hot > 0.99
    assert much_later <= cold


@pytest.mark.parametrize(
    ("resident", "last_used", "size", "budget", "expected"),
    [
        # 4 + 4 + 5 = 13 > 10: evict a (used at t=1, oldest) -> 4 + 5 = 9 <= 10
        ({"a": 4, "b": 4}, {"a": 1.0, "b": 2.0}, 5, 10, ["a"]),
        # fits already
        ({"a": 4}, {"a": 1.0}, 5, 10, []),
        # larger than the whole budget
        ({"a": 4}, {"a": 1.0}, 11, 10, None),
    ],
)
def test_lru_admit_table(
    resident: dict[str, int], last_used: dict[str, float], size: int, budget: int, expected: list[str] | None
) -> None:
    assert lru_admit("new", size, resident, last_used, budget) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(option, min_size=1, max_size=3, unique_by=lambda o: o.variant),
            st.floats(0.0, 1.0),
            st.booleans(),
            st.floats(0.5, 1.0),
        ),
        max_size=12,
    ),
    st.integers(0, 60 * MB),
)
def test_plan_never_goes_below_any_floor(
    items: list[tuple[list[VariantOption], float, bool, float]], budget: int
) -> None:
    cands = [Candidate(f"t{i}", tuple(opts), p, required=req, min_fidelity=floor)
             for i, (opts, p, req, floor) in enumerate(items)]
    plan = plan_residency(cands, budget)
    fid = {(c.tenant, o.variant): o.fidelity for c in cands for o in c.options}
    floors = {c.tenant: c.min_fidelity for c in cands}
    assert all(fid[(t, v)] >= floors[t] for t, v in plan.resident.items())

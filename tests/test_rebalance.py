"""The rebalancer's hysteresis, table-driven: streaks of windows over SLO, cooldown between moves."""

from __future__ import annotations

import logging

import hypothesis.strategies as st
import pytest
from hypothesis import given

from edgefleet.coordinator.rebalance import (
    RebalancePolicy,
    Streak,
    due,
    forget,
    moved,
    observe,
    observe_predicted,
    observed,
    predicted_observed,
)
from edgefleet.coordinator.rebalance.controller import Move, situation_key, worth_logging
from edgefleet.wire import TenantWindow

POLICY = RebalancePolicy(windows=3, ratio=1.0, cooldown_s=60.0)


def w(p95: float, *, tenant: str = "t", completions: int = 10, slo: float = 50.0) -> TenantWindow:
    return TenantWindow(tenant=tenant, model="m", variant="fp32", slo_ms=slo, completions=completions,
                        latency_p95_ms=p95)


@pytest.mark.parametrize(("p95s", "over"), [
    ((80, 80, 80), 3),          # three bad windows in a row
    ((80, 80, 20, 80), 1),      # a good window breaks the streak
    ((80, 50, 80), 1),          # 50 ms is not over a 50 ms SLO (p95 > 1.0 x SLO is bad)
    ((), 0),
])
def test_streaks_count_consecutive_windows_over_slo(p95s: tuple[float, ...], over: int) -> None:
    streaks: dict[str, Streak] = {}
    for p in p95s:
        streaks = observe(streaks, [w(p)], POLICY, hosted=["t"])
    assert streaks.get("t", Streak()).over == over


def test_idle_windows_and_tenants_elsewhere_do_not_count() -> None:
    streaks = observe({}, [w(80), w(80, tenant="other")], POLICY, hosted=["t"])
    streaks = observe(streaks, [w(0, completions=0)], POLICY, hosted=["t"])  # idle: neither bad nor good
    assert streaks["t"].over == 1 and "other" not in streaks


def test_due_after_the_streak_and_not_again_within_the_cooldown() -> None:
    streaks = {"t": Streak(over=3), "u": Streak(over=2)}
    assert due(streaks, POLICY, now=1000.0) == ["t"]  # u: 2 < 3 windows
    streaks = moved(streaks, "t", now=1000.0)
    streaks["t"] = Streak(over=5, last_move_at=1000.0)
    assert due(streaks, POLICY, now=1059.0) == []  # 59 s < 60 s cooldown
    assert due(streaks, POLICY, now=1060.0) == ["t"]
    assert due(streaks, RebalancePolicy(enabled=False), now=1e9) == []


def test_predicted_streaks_count_windows_the_model_judged_in_violation() -> None:
    streaks: dict[str, Streak] = {}
    for bad in (["t"], ["t", "u"], ["t"]):  # u: predicted over once, then not
        streaks = observe_predicted(streaks, bad, hosted=["t", "u"])
    assert (streaks["t"].predicted, streaks["u"].predicted) == (3, 0)
    assert due(streaks, POLICY, now=0.0) == ["t"]  # 3 predicted windows >= 3
    assert due(streaks, RebalancePolicy(predict=False), now=0.0) == []  # only measured streaks count


def test_a_stuck_attempt_keeps_its_streak_and_a_join_lifts_its_cooldown() -> None:
    streaks = moved({"t": Streak(over=4)}, "t", now=1000.0, stuck=True)
    assert streaks["t"] == Streak(over=4, last_move_at=1000.0, stuck=True)
    assert due(streaks, POLICY, now=1010.0) == []  # 10 s < 60 s cooldown
    assert due(streaks, POLICY, now=1010.0, joined=True) == ["t"]  # a device joined: try again now
    assert due(moved(streaks, "t", now=1010.0), POLICY, now=1010.0, joined=True) == []  # acted: streak reset
    assert forget(streaks, keep=["u"]) == {}


@pytest.mark.parametrize("kwargs", [{"windows": 0}, {"ratio": 0.0}, {"cooldown_s": -1.0}, {"margin": 1.0},
                                    {"margin": -0.1}, {"max_actions": 0}, {"max_actions": 4}, {"max_batch": 0}])
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RebalancePolicy(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(("a", "b", "c")), st.floats(1, 300), st.integers(0, 3)), max_size=6),
       st.dictionaries(st.sampled_from(("a", "b", "c", "z")), st.builds(Streak, st.integers(0, 5)), max_size=4),
       st.lists(st.sampled_from(("a", "b", "c")), max_size=3))
def test_a_window_changes_only_its_own_tenants_streaks(windows: list[tuple[str, float, int]],
                                                       before: dict[str, Streak], hosted: list[str]) -> None:
    """``observed`` returns exactly the entries ``observe`` changes (the rebalancer merges them in place,
    so a window's cost does not grow with the fleet); every other streak is untouched."""
    policy = RebalancePolicy()
    ws = [TenantWindow(tenant=t, model="m", variant="fp32", slo_ms=100.0, completions=c, latency_p95_ms=p95)
          for t, p95, c in windows]
    changed = observed(before, ws, policy, hosted)
    assert observe(before, ws, policy, hosted) == {**before, **changed}
    assert set(changed) <= set(hosted) & {w.tenant for w in ws if w.completions > 0}
    bad = hosted[:1]
    assert observe_predicted(before, bad, hosted) == {**before, **predicted_observed(before, bad, hosted)}


# One warning per tenant and situation: a one-agent fleet after a burst keeps finding ``no_fit`` every
# window; only the first such decision is logged until the outcome's code changes or the tenant recovers.
_NO_FIT = Move(0.0, "a", "migrate", "no_fit: no device fits a: edge-01 p95 81.2 ms > 60 ms", "over SLO")
_NO_FIT_LATER = Move(5.0, "a", "migrate", "no_fit: no device fits a: edge-01 p95 92.0 ms > 60 ms", "over SLO")
_MOVING = Move(10.0, "a", "migrate", "moving", "over SLO")
_STAYS = Move(10.0, "a", "none", "stays", "no plan restores the SLO")


@pytest.mark.parametrize(
    ("last", "move", "logged"),
    [
        (None, _NO_FIT, True),  # first time: news
        (("migrate", "no_fit"), _NO_FIT_LATER, False),  # same code, other figures: already said
        (("migrate", "no_fit"), _STAYS, True),  # another situation
        (("migrate", "moving"), _MOVING, True),  # carried-out actions are always logged
        (("none", "stays"), _STAYS, False),
    ],
)
def test_repeated_rebalance_decisions_are_logged_once(last: tuple[str, str] | None, move: Move,
                                                      logged: bool) -> None:
    assert worth_logging(last, move) is logged
    assert situation_key(_NO_FIT) == situation_key(_NO_FIT_LATER) == ("migrate", "no_fit")


def test_the_rebalancer_logs_a_repeated_no_fit_once_and_again_when_it_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    from typing import Any, cast

    from edgefleet.coordinator.rebalance.controller import Rebalancer

    r = Rebalancer(store=cast(Any, None), tenants=cast(Any, None), policy=POLICY, clock=lambda: 0.0)
    caplog.set_level(logging.DEBUG, logger="edgefleet.coordinator.rebalance.controller")
    for move in (_NO_FIT, _NO_FIT_LATER, _NO_FIT_LATER, _STAYS, _STAYS, _NO_FIT):
        r._record(move)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO]
    # no_fit once, then stays (a new situation), then no_fit again (changed back): three lines for six decisions
    assert [w.split(":")[0] for w in warnings] == ["rebalance migrate a", "rebalance none a", "rebalance migrate a"]
    assert len(r.moves) == 6  # every decision is still kept for inspection

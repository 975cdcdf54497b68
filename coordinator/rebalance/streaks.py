"""When to act on a tenant that keeps missing its SLO: streaks of bad windows, with hysteresis.

Pure bookkeeping over telemetry windows with the clock passed in. Two streaks per tenant, one per
trigger: ``over`` counts consecutive windows whose *measured* p95 was above ``ratio`` x its SLO;
``predicted`` counts consecutive windows of its device at which the performance model, at the demand
just reported, predicted its p95 above ``ratio`` x SLO or its processor's utilisation above the
placement's headroom (a rate change shows here before the queues fill). One bad window — a burst, a
cold start — does nothing. A tenant is *due* when either streak reached ``windows`` and its last
action, or attempt, was at least ``cooldown_s`` ago, so it does not flap while its device's telemetry
settles. A window without completions neither extends nor breaks the observed streak. An attempt that
found nothing to do (``stuck``) keeps the streaks, so it is retried after the cooldown — or at once
when a device joins the fleet, since the newcomer may be where it can go. What is done for due tenants
is decided by ``edgefleet.coordinator.rebalance.planner``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from edgefleet.wire import TenantWindow


@dataclass(frozen=True)
class RebalancePolicy:
    """Thresholds of the rebalancer (config ``[rebalance]``).

    ``windows``: consecutive telemetry windows in violation before acting (>= 1); ``ratio``: a window is
    bad when p95 > ratio x SLO; ``cooldown_s``: seconds between two actions on one tenant; ``predict``:
    also act on violations the model predicts; ``margin``: a plan is carried out only when it predicts
    every tenant it touches at or under (1 - margin) x its SLO and every processor at or under
    (1 - margin) x the headroom — the clear gain, and the band between acting and settling that stops
    flapping; ``max_actions``: commands in one device's plan; ``max_batch``: the largest max_batch a
    batching change may set (rows).
    """

    enabled: bool = True
    windows: int = 3
    ratio: float = 1.0
    cooldown_s: float = 60.0
    predict: bool = True
    margin: float = 0.1
    max_actions: int = 2
    max_batch: int = 32

    def __post_init__(self) -> None:
        if self.windows < 1 or self.ratio <= 0 or self.cooldown_s < 0:
            raise ValueError("rebalance needs windows >= 1, ratio > 0 and cooldown_s >= 0")
        if not (0.0 <= self.margin < 1.0) or not (1 <= self.max_actions <= 3) or not (1 <= self.max_batch <= 1024):
            raise ValueError("rebalance needs margin in [0, 1), max_actions in [1, 3] and max_batch in [1, 1024]")

    @property
    def settle(self) -> float:
        """The worst predicted ratio (p95 / SLO, utilisation / headroom) a plan must reach."""
        return 1.0 - self.margin


@dataclass(frozen=True)
class Streak:
    over: int = 0  # consecutive windows measured over SLO
    last_move_at: float = float("-inf")  # clock seconds of the last action or attempt
    predicted: int = 0  # consecutive windows of its device predicted in violation
    stuck: bool = False  # the last attempt found no plan that restores feasibility


def observed(streaks: Mapping[str, Streak], windows: Iterable[TenantWindow], policy: RebalancePolicy,
             hosted: Iterable[str]) -> dict[str, Streak]:
    """The streaks one device's telemetry window changes (only those: the caller merges them, so a
    window costs what its own tenants cost, not the fleet's); only tenants the coordinator runs there
    count."""
    out: dict[str, Streak] = {}
    here = set(hosted)
    for w in windows:
        if w.tenant not in here or w.completions <= 0:
            continue
        s = out.get(w.tenant) or streaks.get(w.tenant, Streak())
        bad = w.latency_p95_ms > policy.ratio * w.slo_ms
        out[w.tenant] = replace(s, over=s.over + 1 if bad else 0)
    return out


def observe(streaks: Mapping[str, Streak], windows: Iterable[TenantWindow], policy: RebalancePolicy,
            hosted: Iterable[str]) -> dict[str, Streak]:
    """Streaks after one device's telemetry window; only tenants the coordinator runs there count."""
    return {**streaks, **observed(streaks, windows, policy, hosted)}


def predicted_observed(streaks: Mapping[str, Streak], violating: Iterable[str],
                       hosted: Iterable[str]) -> dict[str, Streak]:
    """The streaks changed when the model judged one device at a telemetry window: ``violating`` of
    ``hosted`` (only those, for the caller to merge)."""
    bad = set(violating)
    out: dict[str, Streak] = {}
    for name in hosted:
        s = streaks.get(name, Streak())
        out[name] = replace(s, predicted=s.predicted + 1 if name in bad else 0)
    return out


def observe_predicted(streaks: Mapping[str, Streak], violating: Iterable[str],
                      hosted: Iterable[str]) -> dict[str, Streak]:
    """Streaks after the model judged one device at a telemetry window: ``violating`` of ``hosted``."""
    return {**streaks, **predicted_observed(streaks, violating, hosted)}


def at_risk(s: Streak, policy: RebalancePolicy) -> bool:
    """Whether ``s`` has run long enough for ``due`` to consider its tenant (cooldown aside)."""
    return s.over >= policy.windows or (policy.predict and s.predicted >= policy.windows)


def due(streaks: Mapping[str, Streak], policy: RebalancePolicy, now: float, *, joined: bool = False) -> list[str]:
    """Tenants to act on now, in name order; ``joined``: a device just joined, which lifts the cooldown
    of the tenants whose last attempt found nothing."""
    if not policy.enabled:
        return []
    return sorted(t for t, s in streaks.items()
                  if at_risk(s, policy) and (now - s.last_move_at >= policy.cooldown_s or (joined and s.stuck)))


def moved(streaks: Mapping[str, Streak], tenant: str, now: float, *, stuck: bool = False) -> dict[str, Streak]:
    """After an action the streaks restart and the cooldown runs; after an attempt that found nothing
    (``stuck``) only the cooldown runs."""
    out = dict(streaks)
    s = out.get(tenant, Streak())
    out[tenant] = replace(s, last_move_at=now, stuck=True) if stuck else Streak(0, now)
    return out


def forget(streaks: Mapping[str, Streak], keep: Iterable[str]) -> dict[str, Streak]:
    """Only the streaks of tenants in ``keep`` (the others left the fleet)."""
    names = set(keep)
    return {t: s for t, s in streaks.items() if t in names}

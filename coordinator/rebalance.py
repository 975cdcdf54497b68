"""When to move a tenant that keeps missing its SLO: streaks of bad windows, with hysteresis.

Pure bookkeeping over telemetry windows with the clock passed in. A tenant is *due* for a move when its
measured p95 has been above ``ratio`` x its SLO in ``windows`` consecutive telemetry windows (one bad
window — a burst, a cold start — moves nothing) and its last move, or attempt, was at least
``cooldown_s`` ago (so a tenant does not flap between devices while its new device's telemetry is still
settling). A window without completions neither extends nor breaks a streak. The engine then asks the
placement for another device, as a make-before-break migration; when no device fits, the attempt still
starts the cooldown. Device deaths, new devices and unplaced tenants are handled by the engine itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefleet.wire import TenantWindow


@dataclass(frozen=True)
class RebalancePolicy:
    """``enabled``; ``windows``: consecutive telemetry windows over SLO before a move (>= 1);
    ``ratio``: a window is bad when p95 > ratio x SLO; ``cooldown_s``: seconds between moves of one tenant."""

    enabled: bool = True
    windows: int = 3
    ratio: float = 1.0
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.windows < 1 or self.ratio <= 0 or self.cooldown_s < 0:
            raise ValueError("rebalance needs windows >= 1, ratio > 0 and cooldown_s >= 0")


@dataclass(frozen=True)
class Streak:
    over: int = 0  # consecutive windows over SLO
    last_move_at: float = float("-inf")  # clock seconds of the last move or attempt


def observe(streaks: Mapping[str, Streak], windows: Iterable[TenantWindow], policy: RebalancePolicy,
            hosted: Iterable[str]) -> dict[str, Streak]:
    """Streaks after one device's telemetry window; only tenants the coordinator runs there count."""
    out = dict(streaks)
    here = set(hosted)
    for w in windows:
        if w.tenant not in here or w.completions <= 0:
            continue
        s = out.get(w.tenant, Streak())
        bad = w.latency_p95_ms > policy.ratio * w.slo_ms
        out[w.tenant] = Streak(s.over + 1 if bad else 0, s.last_move_at)
    return out


def due(streaks: Mapping[str, Streak], policy: RebalancePolicy, now: float) -> list[str]:
    """Tenants to move now, in name order."""
    if not policy.enabled:
        return []
    return sorted(t for t, s in streaks.items()
                  if s.over >= policy.windows and now - s.last_move_at >= policy.cooldown_s)


def moved(streaks: Mapping[str, Streak], tenant: str, now: float) -> dict[str, Streak]:
    """After a move (or an attempt that found no device): the streak restarts and the cooldown runs."""
    out = dict(streaks)
    out[tenant] = Streak(0, now)
    return out

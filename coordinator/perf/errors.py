"""How wrong the latency model has been, per tenant: predicted p95 against the p95 agents observed.

Placement trusts the model only as far as it has earned: the coordinator records, for every telemetry
window, the p95 it predicted for the tenant's device and load against the p95 the agent measured, and
publishes the error. Two exponentially weighted moving averages per tenant (weight ``alpha`` on the
newest window): the absolute percentage error |pred - obs| / obs, and the signed ratio error
(pred - obs) / obs whose sign says whether the model is optimistic (< 0, dangerous: SLOs will be missed)
or pessimistic (> 0, wasteful). Windows with no completions carry no p95 and are skipped. Each tenant's
last scored window (``Scored``: where it ran, at which rate, predicted against observed) is kept with
its averages, so the report the coordinator publishes (``coordinator.perf.report``) can show both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Scored:
    """One window the model was scored on: what it predicted, what the agent measured, and for what."""

    predicted_ms: float  # predicted p95
    observed_ms: float  # measured p95
    rate_rps: float = 0.0  # the arrival rate the prediction was made for
    device: str = ""  # the device that served the window
    kind: str = ""  # the book's device kind the prediction used
    model: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True)
class ErrorStat:
    ape: float  # EWMA of |pred - obs| / obs
    bias: float  # EWMA of (pred - obs) / obs
    windows: int
    last: Scored  # the latest window scored


@dataclass(frozen=True)
class ErrorBook:
    alpha: float = 0.2
    stats: Mapping[str, ErrorStat] = field(default_factory=lambda: MappingProxyType({}))

    def record(self, tenant: str, scored: Scored) -> ErrorBook:
        """The book after one window of ``tenant``; unchanged when either p95 is unusable."""
        obs, pred = scored.observed_ms, scored.predicted_ms
        if not (obs > 0.0 and math.isfinite(obs) and math.isfinite(pred)):
            return self
        rel = (pred - obs) / obs
        old = self.stats.get(tenant)
        if old is None:
            new = ErrorStat(abs(rel), rel, 1, scored)
        else:
            a = self.alpha
            new = ErrorStat((1 - a) * old.ape + a * abs(rel), (1 - a) * old.bias + a * rel, old.windows + 1,
                            scored)
        stats = dict(self.stats)
        stats[tenant] = new
        return ErrorBook(self.alpha, MappingProxyType(stats))

    def record_all(self, windows: Iterable[tuple[str, Scored]]) -> ErrorBook:
        book = self
        for tenant, scored in windows:
            book = book.record(tenant, scored)
        return book

    def forget(self, tenant: str) -> ErrorBook:
        if tenant not in self.stats:
            return self
        return ErrorBook(self.alpha, MappingProxyType({k: v for k, v in self.stats.items() if k != tenant}))

    def mean_ape(self) -> float:
        """The fleet-wide figure to publish: mean over tenants of their EWMA APE (nan when empty)."""
        if not self.stats:
            return math.nan
        return sum(s.ape for s in self.stats.values()) / len(self.stats)

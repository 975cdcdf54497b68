"""How wrong the latency model has been, per tenant: predicted p95 against the p95 agents observed.

Placement trusts the model only as far as it has earned: the coordinator records, for every telemetry
window, the p95 it predicted for the tenant's device and load against the p95 the agent measured, and
publishes the error. Two exponentially weighted moving averages per tenant (weight ``alpha`` on the
newest window): the absolute percentage error |pred - obs| / obs, and the signed ratio error
(pred - obs) / obs whose sign says whether the model is optimistic (< 0, dangerous: SLOs will be missed)
or pessimistic (> 0, wasteful). Windows with no completions carry no p95 and are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class ErrorStat:
    ape: float  # EWMA of |pred - obs| / obs
    bias: float  # EWMA of (pred - obs) / obs
    windows: int


@dataclass(frozen=True)
class ErrorBook:
    alpha: float = 0.2
    stats: Mapping[str, ErrorStat] = field(default_factory=lambda: MappingProxyType({}))

    def record(self, tenant: str, predicted_ms: float, observed_ms: float) -> ErrorBook:
        """The book after one window of ``tenant``; unchanged when either figure is unusable."""
        if not (observed_ms > 0.0 and math.isfinite(observed_ms) and math.isfinite(predicted_ms)):
            return self
        rel = (predicted_ms - observed_ms) / observed_ms
        old = self.stats.get(tenant)
        if old is None:
            new = ErrorStat(abs(rel), rel, 1)
        else:
            a = self.alpha
            new = ErrorStat((1 - a) * old.ape + a * abs(rel), (1 - a) * old.bias + a * rel, old.windows + 1)
        stats = dict(self.stats)
        stats[tenant] = new
        return ErrorBook(self.alpha, MappingProxyType(stats))

    def record_all(self, pairs: Iterable[tuple[str, float, float]]) -> ErrorBook:
        book = self
        for tenant, pred, obs in pairs:
            book = book.record(tenant, pred, obs)
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

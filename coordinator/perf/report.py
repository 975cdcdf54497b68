"""The performance model's report card: the error book as a wire message, and when to publish it.

Operators should see how far to trust placement by the model without scraping Prometheus, and a tool
that connects late should see it at once: the coordinator keeps a retained ``ModelReport`` on
``{prefix}/v1/coordinator/model``. ``model_report`` turns the ``ErrorBook`` into that message (one
entry per tenant scored, by name, with its last window and its averages); ``ReportSchedule`` decides
when to publish — at most once per ``period_s`` and only when something but the time changed, so an
idle fleet costs the broker nothing and a busy one at most one retained message per period.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace

import msgspec

from edgefleet.coordinator.perf.accuracy import ErrorBook
from edgefleet.wire import ModelReport, TenantModelError


def model_report(errors: ErrorBook, ts: float, only: Collection[str] | None = None) -> ModelReport:
    """The report of ``errors`` at ``ts`` (Unix seconds), on the tenants in ``only`` when given (the ones
    the coordinator still manages: the book keeps a removed tenant until it is told to forget it)."""
    tenants = [
        TenantModelError(
            tenant=name, device_id=s.last.device, device_kind=s.last.kind, model=s.last.model,
            variant=s.last.variant, predicted_p95_ms=s.last.predicted_ms, observed_p95_ms=s.last.observed_ms,
            arrival_rps=s.last.rate_rps, ape_ratio=s.ape, bias_ratio=s.bias, windows=s.windows,
        )
        for name, s in sorted(errors.stats.items())
        if only is None or name in only
    ]
    mean = sum(t.ape_ratio for t in tenants) / len(tenants) if tenants else None
    return ModelReport(tenants=tenants, mean_ape_ratio=mean, ts=ts)


def same_content(a: ModelReport, b: ModelReport) -> bool:
    """Whether two reports say the same thing (their times aside)."""
    return msgspec.structs.replace(a, ts=0.0) == msgspec.structs.replace(b, ts=0.0)


@dataclass(frozen=True)
class ReportSchedule:
    """When the next report may go out. ``period_s`` 0 never publishes."""

    period_s: float
    sent: ModelReport | None = None  # the last report published
    sent_at: float = -math.inf  # and when (the clock's seconds)

    def ready(self, now: float) -> bool:
        """A period has passed since the last publication (or the clock went back): worth building one."""
        return self.period_s > 0.0 and not (0.0 <= now - self.sent_at < self.period_s)

    def due(self, report: ModelReport, now: float) -> bool:
        """Publish ``report`` now: the period has passed and it differs from the last one published."""
        return self.ready(now) and (self.sent is None or not same_content(self.sent, report))

    def published(self, report: ModelReport, now: float) -> ReportSchedule:
        return replace(self, sent=report, sent_at=now)

"""Learning from telemetry: the book's service curves follow what agents measure, and its error is kept.

One call per telemetry message of a device (whose kind the coordinator knows). The tenants' windows give
their arrival rates; with the book as it stands, the sharing model predicts every tenant's p95 and its
time in service under this co-location. The predicted p95 is recorded against the p95 the agent
measured (``ErrorBook``: the model's own error, to publish, with the device, kind and rate it was made
for). The measured per-batch service times, divided by the predicted co-location slowdown (time in
service with the others / alone), update the recursive least-squares estimator of that (model,
variant, kind), whose curve replaces the book's.
The spread of the service time (its squared coefficient of variation, which sets the service's own p95
and, through Allen–Cunneen, the waits) follows the windows' measured spread of one-row batches, an
EWMA with weight ``SCV_WEIGHT``; it is measured under co-location, so it includes the slowdown's own
variability, which the sharing model adds again (a small double count, on the safe side).
Windows without arrivals predict nothing; windows without completions carry no p95 to compare.
Before any window, a variant profiled at deploy (``profiled``, from the Ack: ``edgefleet.coordinator.perf.deployed``)
gets its first curve and estimator from the device's own measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from edgefleet.coordinator.perf import deployed
from edgefleet.coordinator.perf.accuracy import ErrorBook, Scored
from edgefleet.coordinator.perf.book import PerfBook, ProfileKey
from edgefleet.coordinator.perf.curve import RlsEstimator
from edgefleet.coordinator.perf.sharing import Load, predict
from edgefleet.wire import Telemetry, TenantWindow

SCV_WEIGHT = 0.2  # weight of a window's measured service spread in its running estimate
SCV_CAP = 4.0  # a window's spread is clipped here (a handful of stalls must not dominate)


ARRIVAL_SCV_CAP = 10.0  # beyond this a window's burstiness says more about a stall than about the load


def arrival_scv(w: TenantWindow) -> float:
    """How bursty a window's arrivals were, for the queueing model: the agent's measured squared CV of
    the inter-arrival gaps (capped), or 1 (Poisson) when the window has none to say."""
    if w.arrival_scv <= 0.0 or w.arrivals < 3:
        return 1.0
    return min(w.arrival_scv, ARRIVAL_SCV_CAP)


def _spread(old: float, w: TenantWindow) -> float | None:
    """The profile's squared CV of service after window ``w``: an EWMA of the windows' measured spread
    of one-row batches (``service_scv``, sent by agents since it was added; None when absent)."""
    if w.service_scv <= 0.0 or w.batches_by_size.get(1, 0) < 2:
        return None
    return (1.0 - SCV_WEIGHT) * old + SCV_WEIGHT * min(w.service_scv, SCV_CAP)


@dataclass(frozen=True)
class Learner:
    book: PerfBook
    estimators: Mapping[ProfileKey, RlsEstimator] = field(default_factory=lambda: MappingProxyType({}))
    errors: ErrorBook = field(default_factory=ErrorBook)

    def profiled(
        self,
        kind: str,
        model: str,
        variant: str,
        runtime: str,
        ms_by_batch: Mapping[int, float],
        request_mb: float = 0.0,
    ) -> Learner:
        """The learner after a device of ``kind`` measured ``model:variant`` on ``runtime`` when it loaded
        it (``ms_by_batch``: rows -> ms per batch, alone on the device; the Ack's profile).

        - The book has no profile for (model, variant, kind): one is added, its curve the measurement's,
          its request size and service spread the fp32 profile's of the model on that kind when there is
          one (else ``request_mb`` and the default spread). The variant becomes placeable there.
        - No estimator exists for it yet: one is seeded from the measurement, whose curve replaces the
          book's — the device's measurement replaces the calibration table's prior.
        - An estimator exists: nothing changes. Telemetry windows have already fitted the curve to real
          traffic on that kind, which a few warm-up runs cannot improve.
        """
        key = (model, variant, kind)
        if key in self.estimators:
            return self
        seeded = deployed.seed(self.book, key, runtime, ms_by_batch, request_mb)
        if seeded.estimator is None:
            return self
        return Learner(seeded.book, MappingProxyType({**self.estimators, key: seeded.estimator}), self.errors)

    def observe(self, kind: str, telemetry: Telemetry,
                loops: Mapping[str, tuple[int, float]] | None = None) -> Learner:
        """The learner after one telemetry window of a device of ``kind``. ``loops``: tenants known to run
        closed loops -> (requests in flight, ms outside the device per cycle); they are predicted as
        such (mean value analysis) rather than as open arrivals at the window's rate."""
        loops = loops or {}
        per: dict[str, list[tuple[TenantWindow, Load]]] = {}
        for w in telemetry.tenants:
            if w.arrival_rps <= 0.0:
                continue
            got = self.book.load(
                tenant=w.tenant,
                model=w.model,
                variant=w.variant,
                kind=kind,
                rate_rps=w.arrival_rps,
                slo_ms=w.slo_ms,
                arrival_scv=arrival_scv(w),
                in_flight=loops.get(w.tenant, (0, 0.0))[0],
                think_ms=loops.get(w.tenant, (0, 0.0))[1],
            )
            if not isinstance(got, str):
                per.setdefault(got[0], []).append((w, got[1]))
        book, estimators = self.book, dict(self.estimators)
        scored: list[tuple[str, Scored]] = []  # recorded together: one copy of the error book per window
        processors = self.book.kinds[kind].processors if per else {}
        for pname, items in per.items():
            out = predict(processors[pname], [ld for _, ld in items])
            for (w, ld), p95, in_service in zip(items, out.p95_ms, out.service_ms, strict=True):
                if w.completions > 0:
                    scored.append((w.tenant, Scored(p95, w.latency_p95_ms, w.arrival_rps,
                                                    telemetry.device_id, kind, w.model, w.variant)))
                key = (w.model, w.variant, kind)
                prof = book.profile(*key)
                if prof is None or not w.service_ms_by_batch or not math.isfinite(in_service):
                    continue
                est = estimators.get(key) or RlsEstimator.from_profile(
                    {1: prof.curve.at(1), 8: prof.curve.at(8)}
                )
                est = estimators[key] = est.observe(w, slowdown=in_service / ld.service_ms)
                book = book.with_curve(key, est.curve, _spread(prof.scv, w))
        return Learner(book, MappingProxyType(estimators), self.errors.record_all(scored))

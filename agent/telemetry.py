"""Per-tenant counters and latency samples over one telemetry window, and the device's own readings.

The serving threads record events; the telemetry thread calls ``WindowStats.roll`` once per period to
get the finished window (as wire ``TenantWindow`` values) and start a new one. Latency quantiles are
computed from the window's samples (a bounded reservoir, so memory stays fixed at any rate).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import numpy as np

from edgefleet.wire import TenantSpec, TenantWindow

MAX_SAMPLES = 4096  # latency samples kept per tenant per window (reservoir)


@dataclass
class _Acc:
    arrivals: int = 0
    completions: int = 0
    errors: int = 0
    shed: int = 0
    deadline_misses: int = 0
    slo_misses: int = 0
    warm_starts: int = 0
    cold_starts: int = 0
    batches: int = 0
    batch_rows: int = 0
    service_s: float = 0.0
    queue_s: float = 0.0
    queue_n: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_batch: dict[int, list[float]] = field(default_factory=dict)  # rows -> [batches, seconds]
    single_sq: float = 0.0  # Σ s² over one-row batches (s in seconds), for their spread
    gaps: int = 0  # inter-arrival gaps seen in the window, their sum and sum of squares (seconds)
    gap_s: float = 0.0
    gap_sq: float = 0.0
    seen: int = 0  # latency samples offered to the reservoir
    skipped: int = 0  # stream frames replaced by a newer one before they ran
    ages_ms: list[float] = field(default_factory=list)  # stream frames' age at result time (reservoir)
    ages_seen: int = 0


def _cv2(n: float, total: float, squares: float) -> float:
    """Var/mean² of n samples from their sum and sum of squares: Σx²·n/(Σx)² - 1 (0 with fewer than two)."""
    if n < 2 or total <= 0.0:
        return 0.0
    return max(0.0, squares * n / (total * total) - 1.0)


def _scv(a: _Acc) -> float:
    """Var/mean² of the one-row batches' service times."""
    n, total = a.by_batch.get(1, (0, 0.0))
    return _cv2(n, total, a.single_sq)


class WindowStats:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._acc: dict[str, _Acc] = {}
        self._rng = random.Random(seed)
        self._last_arrival: dict[str, float] = {}  # tenant -> monotonic seconds, across windows

    def _get(self, tenant: str) -> _Acc:
        acc = self._acc.get(tenant)
        if acc is None:
            acc = self._acc[tenant] = _Acc()
        return acc

    def arrival(self, tenant: str, at: float | None = None) -> None:
        """A request for ``tenant`` arrived (``at``: its receipt time, monotonic seconds, which
        measures how bursty the arrivals are)."""
        with self._lock:
            acc = self._get(tenant)
            acc.arrivals += 1
            if at is None:
                return
            last = self._last_arrival.get(tenant)
            self._last_arrival[tenant] = at
            if last is not None and at >= last:
                gap = at - last
                acc.gaps += 1
                acc.gap_s += gap
                acc.gap_sq += gap * gap

    def shed(self, tenant: str) -> None:
        with self._lock:
            self._get(tenant).shed += 1

    def error(self, tenant: str, *, deadline: bool = False) -> None:
        with self._lock:
            acc = self._get(tenant)
            if deadline:
                acc.deadline_misses += 1
            else:
                acc.errors += 1

    def start(self, tenant: str, *, warm: bool) -> None:
        """An admitted request found its model resident (warm) or had to wait for a load (cold)."""
        with self._lock:
            acc = self._get(tenant)
            if warm:
                acc.warm_starts += 1
            else:
                acc.cold_starts += 1

    def batch(self, tenant: str, *, rows: int, service_s: float) -> None:
        with self._lock:
            _add_batch(self._get(tenant), rows, service_s)

    def skipped(self, tenant: str, frames: int) -> None:
        """Stream frames of ``tenant`` replaced by a newer frame of their source before they ran."""
        with self._lock:
            self._get(tenant).skipped += frames

    def frame_age(self, tenant: str, age_ms: float, *, slo_ms: float) -> None:
        """A stream frame's result was published ``age_ms`` after the frame was captured (or received);
        a stream tenant's SLO is judged on this age."""
        with self._lock:
            acc = self._get(tenant)
            if age_ms > slo_ms:
                acc.slo_misses += 1
            acc.ages_seen += 1
            if len(acc.ages_ms) < MAX_SAMPLES:
                acc.ages_ms.append(age_ms)
            else:
                j = self._rng.randrange(acc.ages_seen)
                if j < MAX_SAMPLES:
                    acc.ages_ms[j] = age_ms

    def completion(self, tenant: str, *, latency_s: float, queue_s: float, slo_ms: float) -> None:
        ms = latency_s * 1e3
        with self._lock:
            acc = self._get(tenant)
            acc.completions += 1
            acc.queue_s += queue_s
            acc.queue_n += 1
            if ms > slo_ms:
                acc.slo_misses += 1
            acc.seen += 1
            if len(acc.latencies_ms) < MAX_SAMPLES:
                acc.latencies_ms.append(ms)
            else:
                j = self._rng.randrange(acc.seen)
                if j < MAX_SAMPLES:
                    acc.latencies_ms[j] = ms

    def served(
        self,
        tenant: str,
        *,
        rows: int,
        service_s: float,
        started: float,
        finished: float,
        received: list[float],
        slo_ms: float,
    ) -> None:
        """A batch of ``rows`` rows ran for ``service_s`` from ``started``; its requests (``received``:
        their receipt times) were answered by ``finished`` (monotonic seconds). One lock for the batch
        and every completion in it (what ``batch`` and ``completion`` for each request would record)."""
        with self._lock:
            acc = self._get(tenant)
            _add_batch(acc, rows, service_s)
            lat = acc.latencies_ms
            for at in received:
                ms = (finished - at) * 1e3
                acc.completions += 1
                acc.queue_s += started - at
                acc.queue_n += 1
                if ms > slo_ms:
                    acc.slo_misses += 1
                acc.seen += 1
                if len(lat) < MAX_SAMPLES:
                    lat.append(ms)
                else:
                    j = self._rng.randrange(acc.seen)
                    if j < MAX_SAMPLES:
                        lat[j] = ms

    def roll(
        self, specs: dict[str, TenantSpec], variants: dict[str, str], window_s: float
    ) -> list[TenantWindow]:
        """Finish the window. ``specs``: every tenant assigned to the device; ``variants``: the variant
        resident now for the resident ones (the others are reported with resident=False)."""
        with self._lock:
            acc, self._acc = self._acc, {}
            self._last_arrival = {t: at for t, at in self._last_arrival.items() if t in specs}
        out: list[TenantWindow] = []
        for name in sorted(set(specs) | set(acc)):
            a = acc.get(name, _Acc())
            spec = specs.get(name)
            lat = np.asarray(a.latencies_ms, dtype=np.float64)
            p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist() if lat.size else [0.0, 0.0, 0.0]
            ages = np.asarray(a.ages_ms, dtype=np.float64)
            age50, age95 = np.percentile(ages, [50, 95]).tolist() if ages.size else [0.0, 0.0]
            out.append(
                TenantWindow(
                    tenant=name,
                    model=spec.model if spec else "",
                    variant=variants.get(name, spec.variant if spec else ""),
                    slo_ms=spec.slo_ms if spec else 0.0,
                    arrivals=a.arrivals,
                    completions=a.completions,
                    errors=a.errors,
                    shed=a.shed,
                    deadline_misses=a.deadline_misses,
                    slo_misses=a.slo_misses,
                    warm_starts=a.warm_starts,
                    cold_starts=a.cold_starts,
                    batches=a.batches,
                    batch_size_mean=a.batch_rows / a.batches if a.batches else 0.0,
                    service_ms_mean=1e3 * a.service_s / a.batches if a.batches else 0.0,
                    service_scv=_scv(a),
                    queue_ms_mean=1e3 * a.queue_s / a.queue_n if a.queue_n else 0.0,
                    latency_p50_ms=float(p50),
                    latency_p95_ms=float(p95),
                    latency_p99_ms=float(p99),
                    arrival_rps=a.arrivals / window_s if window_s > 0 else 0.0,
                    arrival_scv=_cv2(a.gaps, a.gap_s, a.gap_sq),
                    service_ms_by_batch={b: 1e3 * sec / n for b, (n, sec) in sorted(a.by_batch.items()) if n},
                    batches_by_size={b: int(n) for b, (n, _) in sorted(a.by_batch.items())},
                    colocated=sorted(t for t in variants if t != name),
                    resident=name in variants,
                    frames_skipped=a.skipped,
                    frame_age_p50_ms=float(age50),
                    frame_age_p95_ms=float(age95),
                )
            )
        return out


def _add_batch(acc: _Acc, rows: int, service_s: float) -> None:
    """One batch of ``rows`` rows that ran ``service_s`` into a tenant's window (caller holds the lock)."""
    acc.batches += 1
    acc.batch_rows += rows
    acc.service_s += service_s
    by = acc.by_batch.setdefault(rows, [0, 0.0])
    by[0] += 1
    by[1] += service_s
    if rows == 1:
        acc.single_sq += service_s * service_s

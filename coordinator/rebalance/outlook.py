"""What the performance model predicts for one device as the rebalancer sees it, batching included.

The rebalancer compares a device before and after candidate commands, so it needs a prediction that
moves with the knobs it can turn: the variant (a different profile in the book) and ``max_batch``.
Placement predicts batch-1 service; here a tenant whose runtime's sessions declare they batch
(``edgefleet.runtime.capabilities_of``: ONNX Runtime) and whose
service curve s(b) = a + c·b has a per-invocation cost a > 0 (so s(b)/b falls with b: batching pays) is
served in batches. The agent's adaptive batcher never waits for requests that have not arrived: it
runs what queued, so batches grow only as the tenant's work nears what its workers can do. The model
takes the batch that keeps the tenant's own work at ``BATCH_TARGET_UTIL`` of its m workers (an
assumption, not a measurement): with arrival rate λ per ms, λ·(a/b + c) = u·m gives
b = λ·a / (u·m − λ·c), clipped to [1, max_batch] (max_batch when u·m <= λ·c). At low load b = 1 and
the prediction is placement's. The sharing model then sees λ/b batches per second of service s(b)
(plus the per-request CPU overhead of the b − 1 other rows), and a request's latency is its batch's.
``Verdict.worst`` is the largest of every tenant's p95 / SLO and every processor's utilisation /
headroom: <= 1 is feasible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from edgefleet.coordinator.fleet import DeviceSnapshot, TenantLoad, resident
from edgefleet.coordinator.perf import Load, ServiceCurve, predict
from edgefleet.coordinator.perf.curve import MIN_MS
from edgefleet.coordinator.scheduling.framework import Model
from edgefleet.runtime import capabilities_of
from edgefleet.wire import TenantSpec

BATCH_TARGET_UTIL = 0.7  # assumed: the batcher's batches grow until the tenant's work is this share of its workers


def Resident(spec: TenantSpec, runtime: str, size_bytes: int, changeable: bool = True,
             movable: bool = True) -> TenantLoad:
    """A tenant on a device as the fleet snapshot holds it (``edgefleet.coordinator.fleet.TenantLoad``): the
    former name of ``edgefleet.coordinator.fleet.resident``, kept for the code and tests written against it."""
    return resident(spec, runtime, size_bytes, changeable=changeable, movable=movable)


def Host(device_id: str, kind: str, online: bool = True, runtimes: frozenset[str] = frozenset(),
         budget_bytes: int = 0, residents: tuple[TenantLoad, ...] = ()) -> DeviceSnapshot:
    """A device of the fleet snapshot (``edgefleet.coordinator.fleet.DeviceSnapshot``) with the book's ``kind``:
    the rebalancer's former view of a device, now the same type."""
    return DeviceSnapshot(device_id=device_id, online=online, device_kind=kind, runtimes=runtimes,
                          memory_budget_bytes=budget_bytes, tenants=tuple(residents), perf_kind=kind)


@dataclass(frozen=True)
class Verdict:
    ratios: Mapping[str, float]  # tenant -> predicted p95 / SLO (inf when its processor is unstable)
    loads: Mapping[str, float]  # processor -> predicted utilisation / headroom
    processor_of: Mapping[str, str]  # tenant -> processor
    p95_ms: Mapping[str, float]
    unmodelled: str = ""  # why the device cannot be predicted ('' when it can)

    @property
    def worst(self) -> float:
        if self.unmodelled:
            return math.inf
        return max((*self.ratios.values(), *self.loads.values()), default=0.0)

    def violating(self, limit: float) -> tuple[str, ...]:
        """Tenants predicted over ``limit`` x SLO, or on a processor over ``limit`` x headroom."""
        return tuple(sorted(t for t, r in self.ratios.items()
                            if r > limit or self.loads.get(self.processor_of[t], 0.0) > limit))


def expected_batch(rate_rps: float, curve: ServiceCurve, concurrency: int, max_batch: int) -> float:
    """Rows per batch the adaptive batcher forms at ``rate_rps`` (see the module docstring)."""
    if max_batch <= 1 or curve.fixed_ms <= 0.0:
        return 1.0
    lam = rate_rps / 1000.0
    room = BATCH_TARGET_UTIL * concurrency - lam * curve.per_row_ms
    if room <= 0.0:
        return float(max_batch)
    return min(float(max_batch), max(1.0, lam * curve.fixed_ms / room))


def batching_pays(curve: ServiceCurve) -> bool:
    return curve.fixed_ms > 0.0


def assess(host: DeviceSnapshot, model: Model, corrections: Mapping[str, float] | None = None) -> Verdict:
    """The model's verdict on ``host``; ``corrections`` multiply tenants' predicted p95 (the measured
    / predicted ratio of tenants the model has been seen to under-predict here)."""
    empty: Mapping[str, float] = {}
    kind = model.book.kinds.get(host.book_kind)
    if kind is None:
        return Verdict(empty, empty, {}, empty, f"unknown device kind {host.book_kind or '(none)'}")
    per: dict[str, list[Load]] = {}
    proc_of: dict[str, str] = {}
    for r in host.residents:
        s = r.spec
        got = model.book.load(tenant=s.name, model=s.model, variant=s.variant, kind=host.book_kind,
                              rate_rps=max(model.rate(s.name), 1e-6), slo_ms=s.slo_ms,
                              arrival_scv=model.burstiness(s.name), in_flight=model.loop(s.name)[0],
                              think_ms=model.loop(s.name)[1])
        prof = model.book.profile(s.model, s.variant, host.book_kind)
        if isinstance(got, str) or prof is None:
            return Verdict(empty, empty, {}, empty, f"{s.name}: {got if isinstance(got, str) else 'no profile'}")
        pname, ld = got
        batches = capabilities_of(r.runtime).batches and not ld.closed  # a closed loop of few in flight: batch 1
        b = expected_batch(ld.rate_rps, prof.curve, ld.concurrency, s.max_batch) if batches else 1.0
        if b > 1.0:
            proc = kind.processors[pname]
            # a batch of b is one job: its payload is b requests' (the per-MB path and background
            # costs scale by themselves); the fixed per-request costs of the other b - 1 are counted
            # as work of the job
            extra = (proc.path_ms + proc.background_ms) * (b - 1.0) if proc.kind == "cpu" else 0.0
            service = max(MIN_MS, prof.curve.fixed_ms + prof.curve.per_row_ms * b) + extra
            ld = dataclasses.replace(ld, rate_rps=ld.rate_rps / b, service_ms=service, request_mb=ld.request_mb * b)
        per.setdefault(pname, []).append(ld)
        proc_of[s.name] = pname
    ratios: dict[str, float] = {}
    p95s: dict[str, float] = {}
    loads: dict[str, float] = {}
    fix = corrections or {}
    for pname, items in per.items():
        out = predict(kind.processors[pname], items)
        # closed loops fill the processor by design (their throughput adapts): only the SLOs judge them
        loads[pname] = 0.0 if any(ld.closed for ld in items) else out.utilisation / model.headroom
        for ld, p95 in zip(items, out.p95_ms, strict=True):
            p95s[ld.name] = p95 * fix.get(ld.name, 1.0)
            ratios[ld.name] = p95s[ld.name] / ld.slo_ms
    return Verdict(MappingProxyType(ratios), MappingProxyType(loads), MappingProxyType(proc_of),
                   MappingProxyType(p95s))

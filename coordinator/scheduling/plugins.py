"""The scheduling plugins: filters (why a device cannot take a tenant, one reason each, in the words of
today's messages) and scores (how good a feasible device is, higher is better).

Filters, memory-only: ``Online``, ``RuntimePresent`` (the variant's runtime is among the device's),
``MemoryFits`` (the device's budget minus the sizes charged to its tenants holds the variant). With the
performance model: ``Profiled`` (the book can model the tenant on the device's kind: the kind is known,
the variant profiled there, a processor runs its runtime) and ``SlosKept`` (every tenant already there
can be modelled, the processor's predicted utilisation stays within the headroom unless closed loops
share it, and every predicted p95 on the processor, the newcomer's included, stays within its SLO;
``fit`` is that check on one processor, which the bulk planner of ``edgefleet.coordinator.placement.planner``
shares). The caller's own ``NotExcluded`` and ``Pinned`` are in ``edgefleet.coordinator.scheduling.framework``.

Scores, memory alone (the knapsack view of arXiv 2201.07312: a device is a bin of its memory budget, a
tenant an item of its variant's size): ``FreeMemory`` (most free memory: worst fit, and the default
policy), ``LeastFreeMemory`` (best fit), ``FirstInOrder`` (first fit: every device scores the same, so
the id order decides), ``FreeShare`` (spread: free memory as a share of the budget). With the
performance model: ``PredictedSlack``, the smallest relative SLO slack on the tenant's processor with it
there (the ``SlosKept`` filter's prediction). The rebalancer's descheduling adds a filter and a score of
its own (``edgefleet.coordinator.rebalance.candidates``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgefleet.coordinator.fleet import DeviceSnapshot, mib
from edgefleet.coordinator.perf import Load, Outlook, Processor, predict
from edgefleet.coordinator.scheduling.framework import CycleState, Request

if TYPE_CHECKING:
    from edgefleet.coordinator.scheduling.framework import Model

NEWCOMER = "newcomer"  # CycleState key: (processor, Load) of the tenant on a device
FIT = "fit"  # CycleState key: (slack score, outlook) of the device's processor with the tenant

KindOf = Callable[[DeviceSnapshot], str]


def reported_kind(device: DeviceSnapshot) -> str:
    """The book's kind as given (``perf_kind``), else the kind the device reported, unmapped."""
    return device.perf_kind or device.device_kind


def mapped_kind(device: DeviceSnapshot) -> str:
    """The book's kind closest to the one the device reported (``DeviceSnapshot.book_kind``)."""
    return device.book_kind


@dataclass(frozen=True)
class Online:
    name: str = "online"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        return None if device.online else "offline"


@dataclass(frozen=True)
class RuntimePresent:
    name: str = "runtime"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        runtime = req.facts.runtime
        return None if runtime in device.runtimes else f"no runtime {runtime}"


@dataclass(frozen=True)
class MemoryFits:
    name: str = "memory"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        free, size = device.free_bytes, req.facts.size_bytes
        return None if free >= size else f"needs {mib(size)}, {mib(max(free, 0))} free"


def load_of(model: Model, tenant: str, model_name: str, variant: str, kind: str,
            slo_ms: float | None = None) -> tuple[str, Load] | str:
    """(processor, Load) of ``tenant`` on ``kind`` at its expected demand, or why the book cannot say.
    ``slo_ms``: the newcomer's (a resident's is its demand's, unknown: no objective)."""
    d = model.demand.get(tenant)
    rate = d.rate_rps if d is not None else model.default_rps
    slo = slo_ms if slo_ms is not None else (d.slo_ms if d is not None else math.inf)
    return model.book.load(
        tenant=tenant, model=model_name, variant=variant, kind=kind, rate_rps=rate, slo_ms=slo,
        arrival_scv=d.arrival_scv if d is not None else 1.0,
        in_flight=d.in_flight if d is not None else 0, think_ms=d.think_ms if d is not None else 0.0,
    )


def fit(proc: Processor, name: str, loads: Sequence[Load], headroom: float) -> tuple[float, Outlook] | str:
    """(score, outlook) of ``proc`` running ``loads`` (the newcomer last), or why it does not fit: the
    utilisation over ``headroom`` (unless a closed loop shares it: they fill the processor by design, so
    only the SLOs judge them) or a p95 over its SLO. The score is the smallest relative slack
    (SLO - p95) / SLO, 1 when no load has an SLO."""
    out = predict(proc, list(loads))
    if out.utilisation > headroom and not any(ld.closed for ld in loads):
        return f"{name} utilisation {out.utilisation:.2f} > headroom {headroom:.2f}"
    score = 1.0
    for ld, p95 in zip(loads, out.p95_ms, strict=True):
        if p95 > ld.slo_ms:
            return f"{ld.name} p95 {p95:.1f} ms > SLO {ld.slo_ms:g} ms"
        if ld.slo_ms < math.inf:
            score = min(score, (ld.slo_ms - p95) / ld.slo_ms)
    return score, out


@dataclass(frozen=True)
class Profiled:
    """The book models the tenant on this device's kind."""

    kind_of: KindOf = reported_kind
    name: str = "profiled"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        assert req.model is not None
        s = req.spec
        got = load_of(req.model, s.name, req.facts.name, req.facts.variant, self.kind_of(device), s.slo_ms)
        if isinstance(got, str):
            return got
        state.write(NEWCOMER, device.device_id, got)
        return None


@dataclass(frozen=True)
class SlosKept:
    """Every resident modelled, the headroom and every SLO on the tenant's processor kept (after
    ``Profiled``, which found the tenant's processor and load)."""

    kind_of: KindOf = reported_kind
    name: str = "slos"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        model = req.model
        assert model is not None
        kind = self.kind_of(device)
        pname, newcomer = state.read(NEWCOMER, device.device_id)
        loads: list[Load] = []
        for t in device.tenants:
            got = load_of(model, t.name, t.model, t.variant, kind)
            if isinstance(got, str):
                return f"resident {t.name}: {got}"
            if got[0] == pname:
                loads.append(got[1])
        r = fit(model.book.kinds[kind].processors[pname], pname, [*loads, newcomer], model.headroom)
        if isinstance(r, str):
            return r
        state.write(FIT, device.device_id, r)
        return None


# -- scores ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FreeMemory:
    name: str = "free-memory"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        return float(device.free_bytes)


@dataclass(frozen=True)
class LeastFreeMemory:
    name: str = "least-free-memory"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        return -float(device.free_bytes)


@dataclass(frozen=True)
class FirstInOrder:
    name: str = "first"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        return 0.0


@dataclass(frozen=True)
class FreeShare:
    name: str = "free-share"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        return device.free_bytes / device.memory_budget_bytes


@dataclass(frozen=True)
class PredictedSlack:
    name: str = "predicted-slack"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        slack: float = state.read(FIT, device.device_id)[0]
        return slack


__all__ = ["FIT", "NEWCOMER", "FirstInOrder", "FreeMemory", "FreeShare", "KindOf", "LeastFreeMemory", "MemoryFits", "Online",
           "PredictedSlack", "Profiled", "RuntimePresent", "SlosKept", "fit", "load_of", "mapped_kind", "reported_kind"]

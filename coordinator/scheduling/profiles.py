"""Today's placement policies as profiles of plugins, each making exactly the choice it made before.

| profile | filters | score (tie-break) |
|---|---|---|
| ``most-free-memory`` (the default) | online, runtime, memory | most free memory (fewer tenants, id) |
| ``first-fit`` / ``best-fit`` / ``worst-fit`` / ``spread-fit`` | online, runtime, memory | none / least free / most free / free share (id) |
| ``predicted-latency`` | online, runtime, profiled, memory, SLOs kept | predicted SLO slack (fewer tenants, id) |
| ``descheduling`` (the rebalancer's targets, ``edgefleet.coordinator.rebalance.candidates``) | the predicted-latency ones, settled | least worst predicted ratio (id) |

``predicted_latency(kind_of=...)``: the coordinator's (``placement = "predicted-latency"``) maps the
kinds agents report onto the book's (``mapped_kind``); ``PredictedLatency``, the policy as benchmarks and
tests call it on a hand-made fleet, reads the kinds as given (``reported_kind``).
"""

from __future__ import annotations

from edgefleet.coordinator.fleet import DeviceSnapshot, mib
from edgefleet.coordinator.scheduling.framework import CycleState, Placed, Profile, Request
from edgefleet.coordinator.scheduling.plugins import (
    FIT,
    NEWCOMER,
    FirstInOrder,
    FreeMemory,
    FreeShare,
    KindOf,
    LeastFreeMemory,
    MemoryFits,
    Online,
    PredictedSlack,
    Profiled,
    RuntimePresent,
    SlosKept,
    mapped_kind,
    reported_kind,
)

MEMORY_FILTERS = (Online(), RuntimePresent(), MemoryFits())


def _most_free(req: Request, device: DeviceSnapshot, state: CycleState) -> Placed:
    size = req.facts.size_bytes
    return Placed(device.device_id, float(device.free_bytes - size),
                  f"most free memory: {mib(device.free_bytes)} free of {mib(device.memory_budget_bytes)}, "
                  f"{req.spec.model}:{req.spec.variant} needs {mib(size)}")


MOST_FREE_MEMORY = Profile("most-free-memory", MEMORY_FILTERS, ((FreeMemory(), 1.0),), _most_free)


def _knapsack(name: str, score: FreeMemory | LeastFreeMemory | FirstInOrder | FreeShare) -> Profile:
    def describe(req: Request, device: DeviceSnapshot, state: CycleState) -> Placed:
        size = req.facts.size_bytes
        return Placed(device.device_id, float(device.free_bytes - size),
                      f"{name}: {mib(device.free_bytes)} free, {req.spec.model}:{req.spec.variant} needs {mib(size)}")
    return Profile(name, MEMORY_FILTERS, ((score, 1.0),), describe, tiebreak="id")


FIRST_FIT = _knapsack("first-fit", FirstInOrder())
BEST_FIT = _knapsack("best-fit", LeastFreeMemory())
WORST_FIT = _knapsack("worst-fit", FreeMemory())
SPREAD_FIT = _knapsack("spread-fit", FreeShare())


def predicted_latency(kind_of: KindOf = mapped_kind) -> Profile:
    def describe(req: Request, device: DeviceSnapshot, state: CycleState) -> Placed:
        pname, load = state.read(NEWCOMER, device.device_id)
        score, outlook = state.read(FIT, device.device_id)
        at = f"{load.rate_rps:g} req/s"
        if load.closed:  # its rate is an outcome: the throughput the model predicts for it there
            at = f"{load.in_flight} in flight ({outlook.throughput_rps[-1]:.3g} req/s)"
        return Placed(device.device_id, score,
                      f"predicted {req.spec.name} on {kind_of(device)}/{pname}: min SLO slack {score:.0%} at {at}")
    filters = (Online(), RuntimePresent(), Profiled(kind_of), MemoryFits(), SlosKept(kind_of))
    return Profile("predicted-latency", filters, ((PredictedSlack(), 1.0),), describe, needs_model=True)


PREDICTED_LATENCY = predicted_latency(mapped_kind)


PROFILES = {p.name: p for p in (MOST_FREE_MEMORY, FIRST_FIT, BEST_FIT, WORST_FIT, SPREAD_FIT, PREDICTED_LATENCY)}

__all__ = ["BEST_FIT", "FIRST_FIT", "MEMORY_FILTERS", "MOST_FREE_MEMORY", "PREDICTED_LATENCY", "PROFILES",
           "SPREAD_FIT", "WORST_FIT", "predicted_latency", "reported_kind"]

"""Score plugins: how good a feasible device is for a tenant (higher is better).

Memory alone (the knapsack view of arXiv 2201.07312: a device is a bin of its memory budget, a tenant an
item of its variant's size): ``FreeMemory`` (most free memory: worst fit, and the default policy),
``LeastFreeMemory`` (best fit), ``FirstInOrder`` (first fit: every device scores the same, so the id
order decides), ``FreeShare`` (spread: free memory as a share of the budget). With the performance
model: ``PredictedSlack``, the smallest relative SLO slack on the tenant's processor with it there (the
``SlosKept`` filter's prediction). The rebalancer's descheduling scores its targets with its own
(``coordinator.rebalance.candidates``).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.fleet import DeviceSnapshot
from coordinator.scheduling.filters import FIT
from coordinator.scheduling.framework import CycleState, Request


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


__all__ = ["FirstInOrder", "FreeMemory", "FreeShare", "LeastFreeMemory", "PredictedSlack"]

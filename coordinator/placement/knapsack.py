"""Knapsack placement by memory alone: the baselines the model-driven policy is measured against.

Each treats a device as a bin of model memory (its budget) and a tenant as an item of its variant's
size, and knows nothing of rates, SLOs or how tenants slow each other down — the "traditional
knapsack hosting" of arXiv 2201.07312. A device is feasible when it is online, runs the model's
runtime and has the memory. Among feasible devices, in device id order:
``FirstFit`` takes the first, ``BestFit`` the one left with the least free memory, ``WorstFit`` the
one left with the most. On a fleet of unequal budgets worst fit fills the biggest devices first, so
``SpreadFit`` is added: the most free memory as a share of the device's budget, which spreads tenants
in proportion to budgets (the strongest memory-only baseline when memory is not what runs out).
Each is a profile of the scheduling framework (``edgefleet.coordinator.scheduling.profiles``): ``place`` is one
scheduling cycle. ``plan`` places many tenants without rebuilding snapshots (the same choices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts, mib
from edgefleet.coordinator.scheduling import BEST_FIT, FIRST_FIT, SPREAD_FIT, WORST_FIT, Profile, schedule
from edgefleet.coordinator.scheduling.framework import Decision, NoFit, Placed
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from edgefleet.coordinator.scheduling.framework import Model

# (free bytes of the feasible devices in id order, their budgets, size) -> index into that list
Chooser = Callable[[Sequence[int], Sequence[int], int], int]


def _first(frees: Sequence[int], budgets: Sequence[int], size: int) -> int:
    return next(i for i, f in enumerate(frees) if f >= size)


def _best(frees: Sequence[int], budgets: Sequence[int], size: int) -> int:
    return min((f, i) for i, f in enumerate(frees) if f >= size)[1]


def _worst(frees: Sequence[int], budgets: Sequence[int], size: int) -> int:
    return -max((f, -i) for i, f in enumerate(frees) if f >= size)[1]


def _spread(frees: Sequence[int], budgets: Sequence[int], size: int) -> int:
    return -max((f / b, -i) for i, (f, b) in enumerate(zip(frees, budgets, strict=True)) if f >= size)[1]


class _Knapsack:
    name = "knapsack"
    choose: Chooser = staticmethod(_first)
    profile: Profile = FIRST_FIT

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision:
        return schedule(spec, model, fleet, profile=self.profile, model=perf)

    def plan(self, tenants: Sequence[tuple[TenantSpec, ModelFacts]], fleet: FleetSnapshot) -> list[Decision]:
        """Place ``tenants`` one after another; the same choices as ``place`` on updated snapshots."""
        online = [d for d in fleet.devices if d.online]
        free = {d.device_id: d.free_bytes for d in online}
        budget = {d.device_id: d.memory_budget_bytes for d in online}
        groups: dict[str, list[str]] = {}  # runtime -> device ids in id order
        for d in online:
            for rt in d.runtimes:
                groups.setdefault(rt, []).append(d.device_id)
        out: list[Decision] = []
        for spec, model in tenants:
            ids = groups.get(model.runtime, [])
            frees = [free[i] for i in ids]
            if not any(f >= model.size_bytes for f in frees):
                out.append(NoFit(f"no online device with {model.runtime} has {mib(model.size_bytes)} free"))
                continue
            did = ids[self.choose(frees, [budget[i] for i in ids], model.size_bytes)]
            free[did] -= model.size_bytes
            out.append(Placed(did, float(free[did]), f"{self.name}: {spec.name}"))
        return out


class FirstFit(_Knapsack):
    name = "first-fit"
    choose = staticmethod(_first)
    profile = FIRST_FIT


class BestFit(_Knapsack):
    name = "best-fit"
    choose = staticmethod(_best)
    profile = BEST_FIT


class WorstFit(_Knapsack):
    name = "worst-fit"
    choose = staticmethod(_worst)
    profile = WORST_FIT


class SpreadFit(_Knapsack):
    name = "spread-fit"
    choose = staticmethod(_spread)
    profile = SPREAD_FIT

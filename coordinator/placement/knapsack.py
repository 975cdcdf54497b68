"""Knapsack placement by memory alone: the baselines the model-driven policy is measured against.

Each treats a device as a bin of model memory (its budget) and a tenant as an item of its variant's
size, and knows nothing of rates, SLOs or how tenants slow each other down — the "traditional
knapsack hosting" of arXiv 2201.07312. A device is feasible when it is online, runs the model's
runtime and has the memory (``memory.rejection``). Among feasible devices, in device id order:
``FirstFit`` takes the first, ``BestFit`` the one left with the least free memory, ``WorstFit`` the
one left with the most. On a fleet of unequal budgets worst fit fills the biggest devices first, so
``SpreadFit`` is added: the most free memory as a share of the device's budget, which spreads tenants
in proportion to budgets (the strongest memory-only baseline when memory is not what runs out).
``plan`` places many tenants without rebuilding snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from coordinator.fleet import FleetSnapshot, ModelFacts, mib
from coordinator.placement.memory import feasible
from coordinator.placement.seam import Decision, NoFit, Placed
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from coordinator.rebalance.outlook import Model

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

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision:
        fits = feasible(fleet, model)
        if isinstance(fits, NoFit):
            return fits
        frees, budgets = [d.free_bytes for d in fits], [d.memory_budget_bytes for d in fits]
        best = fits[self.choose(frees, budgets, model.size_bytes)]
        after = best.free_bytes - model.size_bytes
        return Placed(
            best.device_id,
            float(after),
            f"{self.name}: {mib(best.free_bytes)} free, "
            f"{spec.model}:{spec.variant} needs {mib(model.size_bytes)}",
        )

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


class BestFit(_Knapsack):
    name = "best-fit"
    choose = staticmethod(_best)


class WorstFit(_Knapsack):
    name = "worst-fit"
    choose = staticmethod(_worst)


class SpreadFit(_Knapsack):
    name = "spread-fit"
    choose = staticmethod(_spread)

"""The first placement policy: any device that can run the model and has room, the emptiest first.

Feasible means online, the model's runtime is among the device's runtimes, and the device's free model
memory (its budget minus the variant sizes of the tenants already assigned there) is at least this
variant's size. Among feasible devices the one with the most free memory wins; ties go to the device
with fewer tenants, then to the smaller device id, so the choice is deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, mib
from coordinator.placement.seam import Decision, NoFit, Placed
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from coordinator.rebalance.outlook import Model


def rejection(device: DeviceSnapshot, model: ModelFacts) -> str | None:
    """Why ``model`` cannot go on ``device``, or None when it fits."""
    if not device.online:
        return "offline"
    if model.runtime not in device.runtimes:
        return f"no runtime {model.runtime}"
    free = device.free_bytes
    if free < model.size_bytes:
        return f"needs {mib(model.size_bytes)}, {mib(max(free, 0))} free"
    return None


def feasible(fleet: FleetSnapshot, model: ModelFacts) -> list[DeviceSnapshot] | NoFit:
    """The devices of ``fleet`` that can take ``model``, in id order, or why none can (per device)."""
    if not fleet.devices:
        return NoFit("no devices known")
    fits: list[DeviceSnapshot] = []
    reasons: list[str] = []
    for device in fleet.devices:
        why = rejection(device, model)
        if why is None:
            fits.append(device)
        else:
            reasons.append(f"{device.device_id}: {why}")
    return fits if fits else NoFit("; ".join(reasons))


class MostFreeMemory:
    """Place on the feasible device with the most free model memory."""

    name = "most-free-memory"

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision:
        fits = feasible(fleet, model)
        if isinstance(fits, NoFit):
            return fits
        best = min(fits, key=lambda d: (-d.free_bytes, len(d.tenants), d.device_id))
        after = best.free_bytes - model.size_bytes
        return Placed(
            device_id=best.device_id,
            score=float(after),
            reason=(
                f"most free memory: {mib(best.free_bytes)} free of {mib(best.memory_budget_bytes)}, "
                f"{spec.model}:{spec.variant} needs {mib(model.size_bytes)}"
            ),
        )

"""The first placement policy: any device that can run the model and has room, the emptiest first.

Feasible means online, the model's runtime is among the device's runtimes, and the device's free model
memory (its budget minus the variant sizes of the tenants already assigned there) is at least this
variant's size. Among feasible devices the one with the most free memory wins; ties go to the device
with fewer tenants, then to the smaller device id, so the choice is deterministic. It is the scheduling
framework's ``most-free-memory`` profile (``edgefleet.coordinator.scheduling.profiles``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts
from edgefleet.coordinator.scheduling import MOST_FREE_MEMORY, Request, schedule
from edgefleet.coordinator.scheduling.framework import CycleState, Decision
from edgefleet.coordinator.scheduling.profiles import MEMORY_FILTERS
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from edgefleet.coordinator.scheduling.framework import Model


def rejection(device: DeviceSnapshot, model: ModelFacts) -> str | None:
    """Why ``model`` cannot go on ``device`` by memory alone (offline, no runtime, no room), or None."""
    req = Request(TenantSpec(name="probe", model=model.name, variant=model.variant, slo_ms=1.0), model)
    state = CycleState()
    for f in MEMORY_FILTERS:
        why = f.filter(req, device, state)
        if why is not None:
            return why
    return None


class MostFreeMemory:
    """Place on the feasible device with the most free model memory."""

    name = "most-free-memory"
    profile = MOST_FREE_MEMORY

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision:
        return schedule(spec, model, fleet, profile=self.profile, model=perf)

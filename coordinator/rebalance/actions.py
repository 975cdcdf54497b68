"""What the rebalance planner decides: the actions (a make-before-break move, an in-place
reconfiguration) and, per device, the plan with its trigger, reasons and predicted effect — plain
frozen values that the rebalancer carries out and the engine records."""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.coordinator.fleet import TenantLoad
from edgefleet.wire import TenantSpec


@dataclass(frozen=True)
class Migrate:
    """Move ``tenant`` make-before-break from ``source`` to ``target`` (None: wherever placement says)."""

    tenant: str
    source: str
    target: str | None
    reason: str = ""


@dataclass(frozen=True)
class Reconfigure:
    """Change ``tenant`` in place on ``device_id`` to ``resident.spec`` (same model, a new variant or
    max_batch, with the memory it takes): ``change`` is "batching" or "variant"."""

    tenant: str
    device_id: str
    resident: TenantLoad
    change: str
    reason: str = ""

    @property
    def spec(self) -> TenantSpec:
        return self.resident.spec


Action = Reconfigure | Migrate


@dataclass(frozen=True)
class DevicePlan:
    device_id: str
    trigger: str  # "observed" | "predicted", with ", device joined" when a join lifted a cooldown
    tenants: tuple[str, ...]  # the due tenants that put the device here
    actions: tuple[Action, ...]
    feasible: bool  # the actions settle the device (False: nothing found; no action is taken)
    before: float  # worst predicted ratio before (inf: cannot be predicted)
    after: float
    reason: str


@dataclass(frozen=True)
class Plan:
    devices: tuple[DevicePlan, ...] = ()

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for d in self.devices if d.feasible for a in d.actions)

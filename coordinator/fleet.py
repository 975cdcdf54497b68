"""Immutable snapshots of the fleet and of a model, the only inputs a placement policy sees.

The service hands each decision a snapshot of its database (kept current with every write by
``coordinator.snapshots``); policies never touch the database, MQTT or the clock, so they can be tested
with plain values and replaced without touching the service.
Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

MB = 1_000_000  # decimal megabyte (10^6 bytes): a unit for sizes written in tests and benchmarks
MIB = 1 << 20  # mebibyte: budgets are configured in MiB, so sizes are printed in MiB too


def mib(size_bytes: int) -> str:
    """``10857958`` -> ``"10.4 MiB"``; a budget of ``memory_budget_mib = 512`` prints as ``"512.0 MiB"``."""
    return f"{size_bytes / MIB:.1f} MiB"


mb = mib  # the former name, kept so that code written against it still runs; prints MiB


@dataclass(frozen=True)
class ModelFacts:
    """What placement needs to know about one variant of one zoo model."""

    name: str
    variant: str
    runtime: str  # "onnxruntime" | "litert"
    size_bytes: int  # the variant's file size, the estimate of its resident memory
    fidelity: float = 1.0  # agreement with fp32 measured on real inputs, in [0, 1] (1 for fp32)


@dataclass(frozen=True)
class TenantLoad:
    """A tenant the coordinator has assigned to a device, with the memory it is charged."""

    name: str
    model: str
    variant: str
    size_bytes: int


@dataclass(frozen=True)
class DeviceSnapshot:
    device_id: str
    online: bool
    device_kind: str = ""
    runtimes: frozenset[str] = frozenset()
    memory_budget_bytes: int = 0  # what the agent may spend on resident models
    tenants: tuple[TenantLoad, ...] = ()
    cpu_percent: float | None = None  # from the last telemetry window, if any
    model_memory_bytes: int | None = None  # reported by the agent in its last telemetry window

    @property
    def used_bytes(self) -> int:
        """Memory charged to the tenants assigned here (their variants' sizes)."""
        return sum(t.size_bytes for t in self.tenants)

    @property
    def free_bytes(self) -> int:
        return self.memory_budget_bytes - self.used_bytes

    def with_tenant(self, load: TenantLoad) -> DeviceSnapshot:
        return replace(self, tenants=(*self.tenants, load))


@dataclass(frozen=True)
class FleetSnapshot:
    """Every known device, sorted by id, at one instant (``ts``, Unix seconds)."""

    devices: tuple[DeviceSnapshot, ...] = ()
    ts: float = 0.0
    _index: dict[str, DeviceSnapshot] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.devices, key=lambda d: d.device_id))
        object.__setattr__(self, "devices", ordered)
        self._index.update({d.device_id: d for d in ordered})

    def get(self, device_id: str) -> DeviceSnapshot | None:
        return self._index.get(device_id)

    @property
    def online(self) -> tuple[DeviceSnapshot, ...]:
        return tuple(d for d in self.devices if d.online)

    def excluding(self, device_ids: Iterable[str]) -> FleetSnapshot:
        drop = set(device_ids)
        return FleetSnapshot(tuple(d for d in self.devices if d.device_id not in drop), self.ts)

    def only(self, device_id: str) -> FleetSnapshot:
        return FleetSnapshot(tuple(d for d in self.devices if d.device_id == device_id), self.ts)

    def with_tenant(self, device_id: str, load: TenantLoad) -> FleetSnapshot:
        """The snapshot after assigning ``load`` to ``device_id``."""
        return FleetSnapshot(
            tuple(d.with_tenant(load) if d.device_id == device_id else d for d in self.devices), self.ts
        )

"""Immutable snapshots of the fleet and of a model: the coordinator's one view of the fleet.

The service hands each decision a snapshot of its database (kept current with every write by
``edgefleet.coordinator.snapshots``); the scheduling cycle (``edgefleet.coordinator.scheduling``), the placement policies
and the rebalancer read nothing else, never the database, MQTT or the clock, so they can be tested with
plain values. A device carries what they all need: its online state, runtimes, memory budget, the kind
the agent reported and the performance book's kind for it (``perf_kind``), and its tenants, each with
its spec, runtime and charged size and whether it may be changed (running, no command in flight) or
moved (changeable and not pinned). Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from edgefleet.wire import TenantSpec

MB = 1_000_000  # decimal megabyte (10^6 bytes): a unit for sizes written in tests and benchmarks
MIB = 1 << 20  # mebibyte: budgets are configured in MiB, so sizes are printed in MiB too


def mib(size_bytes: int) -> str:
    """``10857958`` -> ``"10.4 MiB"``; a budget of ``memory_budget_mib = 512`` prints as ``"512.0 MiB"``."""
    return f"{size_bytes / MIB:.1f} MiB"




@dataclass(frozen=True)
class ModelFacts:
    """What placement needs to know about one variant of one zoo model."""

    name: str
    variant: str
    runtime: str  # "onnxruntime" | "litert"
    size_bytes: int  # the variant's file size, the estimate of its resident memory
    fidelity: float = 1.0  # agreement with fp32 measured on real inputs, in [0, 1] (1 for fp32)


def book_kind(device_kind: str) -> str:
    """The calibrated kind of the performance book closest to a device kind an agent reported
    (``x86_64-cpu`` -> ``x86-cpu``, ``jetson-orin-nano`` -> ``jetson-gpu``); "" when none fits."""
    k = device_kind.lower()
    if "jetson" in k:
        return "jetson-gpu"
    if "coral" in k or "edgetpu" in k:
        return "coral-tpu"
    if k.startswith(("x86_64", "amd64", "x86")):
        return "x86-cpu"
    if k.startswith(("aarch64", "arm")):
        return "arm-cpu"
    return ""


UNKNOWN_SLO_MS = 600_000.0  # the SLO of a load known only by its size (the largest a spec may ask)


@dataclass(frozen=True)
class TenantLoad:
    """A tenant the coordinator has assigned to a device: the memory it is charged, its spec and runtime,
    and whether it may be ``changeable`` (running, no command in flight: may be reconfigured) and
    ``movable`` (changeable and not pinned: may be migrated). A load built from its name, model and size
    alone gets a spec of its own with no objective to speak of (``UNKNOWN_SLO_MS``)."""

    name: str
    model: str
    variant: str
    size_bytes: int
    runtime: str = ""
    spec: TenantSpec = None  # type: ignore[assignment]  # filled in __post_init__ when not given
    changeable: bool = True
    movable: bool = True

    def __post_init__(self) -> None:
        if self.spec is None:
            object.__setattr__(self, "spec", TenantSpec(name=self.name, model=self.model, variant=self.variant,
                                                        slo_ms=UNKNOWN_SLO_MS))
        elif (self.spec.name, self.spec.model, self.spec.variant) != (self.name, self.model, self.variant):
            # the spec is what runs: a reconfigured load (``replace(load, spec=...)``) follows it
            object.__setattr__(self, "name", self.spec.name)
            object.__setattr__(self, "model", self.spec.model)
            object.__setattr__(self, "variant", self.spec.variant)


def resident(spec: TenantSpec, runtime: str, size_bytes: int, *, changeable: bool = True,
             movable: bool = True) -> TenantLoad:
    """The load of tenant ``spec`` (its name, model and variant are the spec's)."""
    return TenantLoad(spec.name, spec.model, spec.variant, size_bytes, runtime, spec, changeable, movable)


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
    perf_kind: str = ""  # the performance book's kind for it ("": ``book_kind`` of ``device_kind``)

    @property
    def book_kind(self) -> str:
        """The performance book's kind of this device: ``perf_kind`` when given, else the calibrated kind
        closest to the reported one (``book_kind``), else the reported one."""
        return self.perf_kind or book_kind(self.device_kind) or self.device_kind

    @cached_property
    def used_bytes(self) -> int:
        """Memory charged to the tenants assigned here (their variants' sizes)."""
        return sum(t.size_bytes for t in self.tenants)

    @property
    def free_bytes(self) -> int:
        return self.memory_budget_bytes - self.used_bytes

    @property
    def residents(self) -> tuple[TenantLoad, ...]:
        return self.tenants

    def get(self, tenant: str) -> TenantLoad | None:
        return next((t for t in self.tenants if t.name == tenant), None)

    def with_tenant(self, load: TenantLoad) -> DeviceSnapshot:
        return replace(self, tenants=(*self.tenants, load))

    def without(self, tenant: str) -> DeviceSnapshot:
        return replace(self, tenants=tuple(t for t in self.tenants if t.name != tenant))

    def with_resident(self, load: TenantLoad) -> DeviceSnapshot:
        """This device with ``load`` in place of the tenant of its name (added last)."""
        return replace(self, tenants=(*self.without(load.name).tenants, load))


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

    @classmethod
    def presorted(cls, devices: tuple[DeviceSnapshot, ...], index: Mapping[str, DeviceSnapshot],
                  ts: float) -> FleetSnapshot:
        """A snapshot of ``devices`` already in id order with their ``index``, neither copied nor sorted
        (what ``edgefleet.coordinator.snapshots`` hands out: both are never changed after this call)."""
        fleet = object.__new__(cls)
        object.__setattr__(fleet, "devices", devices)
        object.__setattr__(fleet, "ts", ts)
        object.__setattr__(fleet, "_index", index)
        return fleet

    def at(self, ts: float) -> FleetSnapshot:
        """The same devices at ``ts`` (nothing copied)."""
        return self if ts == self.ts else FleetSnapshot.presorted(self.devices, self._index, ts)

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

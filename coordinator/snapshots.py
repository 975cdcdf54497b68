"""The fleet snapshot that placement decisions read, kept current from the store's writes.

Why a module: every placement decision (a deploy, a retry, a re-placement after a death, a migration,
``edgefleet plan``) reads a ``FleetSnapshot``. Built from SQLite each time, it decoded every device and
tenant row, which made it the coordinator's scaling cost (``edgefleet sim`` at 500 devices and 2000
tenants spent most of its time there). ``SnapshotCache`` keeps the devices' snapshots in memory and,
before it hands one out, re-reads only the rows the store reports written since the last one
(``Store.watch``): births, deaths, telemetry, tenant rows and so memory charges. Decisions between two
writes share one snapshot; a decision after a write — committed or not, in the same transaction —
sees it; a rolled-back transaction makes the next snapshot a full rebuild, so it never shows a write
the database does not hold. ``build_snapshot`` is that full rebuild, and the reference it must equal.
"""

from __future__ import annotations

from dataclasses import replace

from coordinator.fleet import DeviceSnapshot, FleetSnapshot, TenantLoad
from coordinator.store import DeviceRow, Store, TenantRow, TenantState

CHARGED_STATES = (TenantState.PENDING, TenantState.DEPLOYING, TenantState.RUNNING, TenantState.MOVING,
                  TenantState.REMOVING)  # states that hold memory on a device


def charge(t: TenantRow) -> tuple[str, TenantLoad] | None:
    """The device ``t`` is charged to and the load it adds there; None when it holds no memory."""
    if t.device_id is None or t.state not in CHARGED_STATES:
        return None
    return t.device_id, TenantLoad(t.name, t.spec.model, t.spec.variant, t.size_bytes)


def bare(d: DeviceRow) -> DeviceSnapshot:
    """``d`` as placement sees it, before its tenants are added."""
    return DeviceSnapshot(
        device_id=d.device_id, online=d.online, device_kind=d.kind, runtimes=frozenset(d.runtimes),
        memory_budget_bytes=d.memory_budget_bytes, cpu_percent=d.cpu_percent,
        model_memory_bytes=d.model_memory_bytes,
    )


def build_snapshot(store: Store, ts: float) -> FleetSnapshot:
    """The fleet as the store holds it now, every row read (tenants of a device in name order)."""
    loads: dict[str, list[TenantLoad]] = {}
    for t in store.tenants():
        c = charge(t)
        if c is not None:
            loads.setdefault(c[0], []).append(c[1])
    return FleetSnapshot(
        tuple(replace(bare(d), tenants=tuple(loads.get(d.device_id, ()))) for d in store.devices()), ts
    )


class SnapshotCache:
    """``snapshot(ts)`` equals ``build_snapshot(store, ts)`` at every instant, reading only what changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._changes = store.watch()
        self._bare: dict[str, DeviceSnapshot] = {}  # device -> its snapshot without tenants
        self._charges: dict[str, tuple[str, TenantLoad]] = {}  # tenant -> (device, load)
        self._loads: dict[str, dict[str, TenantLoad]] = {}  # device -> tenant -> load
        self._devices: dict[str, DeviceSnapshot] = {}  # device -> its snapshot with tenants
        self._fleet: FleetSnapshot | None = None
        self.rebuilds = 0  # full rebuilds (the first, and after each rollback)
        self.refreshes = 0  # snapshots that re-read some rows

    def snapshot(self, ts: float) -> FleetSnapshot:
        everything, devices, tenants = self._changes.drain()
        if everything or self._fleet is None:
            self._rebuild()
        elif devices or tenants:
            self._refresh(devices, tenants)
        fleet = self._fleet
        assert fleet is not None
        if fleet.ts != ts:
            fleet = self._fleet = FleetSnapshot(fleet.devices, ts)
        return fleet

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self._bare = {d.device_id: bare(d) for d in self.store.devices()}
        self._charges, self._loads = {}, {}
        for t in self.store.tenants():
            self._charge(t.name, charge(t))
        self._devices = {}
        for device_id in self._bare:
            self._restate(device_id)
        self._fleet = FleetSnapshot(tuple(self._devices.values()), 0.0)

    def _refresh(self, devices: frozenset[str], tenants: frozenset[str]) -> None:
        self.refreshes += 1
        touched = set(devices)
        for name in tenants:
            before = self._charges.get(name)
            row = self.store.tenant(name)
            after = charge(row) if row is not None else None
            if after == before:
                continue
            self._charge(name, after)
            touched.update(c[0] for c in (before, after) if c is not None)
        for device_id in devices:
            d = self.store.device(device_id)
            if d is None:
                self._bare.pop(device_id, None)
            else:
                self._bare[device_id] = bare(d)
        changed = False
        for device_id in touched:
            changed = self._restate(device_id) or changed
        if changed:
            self._fleet = FleetSnapshot(tuple(self._devices.values()), 0.0)

    def _charge(self, name: str, to: tuple[str, TenantLoad] | None) -> None:
        before = self._charges.pop(name, None)
        if before is not None:
            self._loads[before[0]].pop(name, None)
        if to is not None:
            self._charges[name] = to
            self._loads.setdefault(to[0], {})[name] = to[1]

    def _restate(self, device_id: str) -> bool:
        """Rebuild ``device_id``'s snapshot from its row and charges; True when it differs."""
        base = self._bare.get(device_id)
        old = self._devices.get(device_id)
        if base is None:
            self._devices.pop(device_id, None)
            return old is not None
        loads = self._loads.get(device_id, {})
        new = replace(base, tenants=tuple(loads[n] for n in sorted(loads)))
        if new == old:
            return False
        self._devices[device_id] = new
        return True


__all__ = ["CHARGED_STATES", "SnapshotCache", "bare", "build_snapshot", "charge"]

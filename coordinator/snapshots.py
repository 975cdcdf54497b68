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

A write costs what it changed, not the fleet: the devices it touched are restated, their slots in the
id-ordered tuple replaced and nothing sorted again (only a device that is new, or gone, re-sorts the
ids); a snapshot at another instant shares the devices of the last one. ``device(id)`` reads one
device without building the fleet (the rebalancer's per-window check). Each tenant carries whether it
may be changed or moved (``charge``): a tenant with a command in flight is busy, and the store reports
a command that starts or stops being outstanding as a write of its tenant.
"""

from __future__ import annotations

import bisect
from dataclasses import replace

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, TenantLoad, book_kind
from edgefleet.coordinator.store import DeviceRow, Store, TenantRow, TenantState

CHARGED_STATES = (TenantState.PENDING, TenantState.DEPLOYING, TenantState.RUNNING, TenantState.MOVING,
                  TenantState.REMOVING)  # states that hold memory on a device


def busy(store: Store, tenant: str) -> bool:
    """``tenant`` has a command in flight (its outcome would change what it is)."""
    return store.in_flight(tenant)


def charge(t: TenantRow, in_flight: bool = False) -> tuple[str, TenantLoad] | None:
    """The device ``t`` is charged to and the load it adds there; None when it holds no memory.
    ``in_flight``: it has a command outstanding (then it may be neither changed nor moved)."""
    if t.device_id is None or t.state not in CHARGED_STATES:
        return None
    changeable = t.state == TenantState.RUNNING and not in_flight
    return t.device_id, TenantLoad(t.name, t.spec.model, t.spec.variant, t.size_bytes, t.runtime, t.spec,
                                   changeable, changeable and t.pinned is None)


def bare(d: DeviceRow) -> DeviceSnapshot:
    """``d`` as placement sees it, before its tenants are added."""
    return DeviceSnapshot(
        device_id=d.device_id, online=d.online, device_kind=d.kind, runtimes=frozenset(d.runtimes),
        memory_budget_bytes=d.memory_budget_bytes, cpu_percent=d.cpu_percent,
        model_memory_bytes=d.model_memory_bytes, perf_kind=book_kind(d.kind) or d.kind,
    )


def build_snapshot(store: Store, ts: float) -> FleetSnapshot:
    """The fleet as the store holds it now, every row read (tenants of a device in name order)."""
    loads: dict[str, list[TenantLoad]] = {}
    for t in store.tenants():
        c = charge(t, busy(store, t.name))
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
        self._ids: list[str] = []  # the devices' ids in order
        self._fleet: FleetSnapshot | None = None  # None: the fleet tuple is to be built from _devices
        self._ts = 0.0
        self.rebuilds = 0  # full rebuilds (the first, and after each rollback)
        self.refreshes = 0  # snapshots that re-read some rows
        self._stale: set[str] = set()  # devices restated since the fleet tuple was built

    def _sync(self) -> None:
        everything, devices, tenants = self._changes.drain()
        if everything:
            self._rebuild()
        elif devices or tenants:
            self._refresh(devices, tenants)

    def device(self, device_id: str) -> DeviceSnapshot | None:
        """One device as the snapshot holds it now (no fleet built)."""
        self._sync()
        return self._devices.get(device_id)

    def snapshot(self, ts: float) -> FleetSnapshot:
        self._sync()
        fleet = self._fleet
        if fleet is None or self._stale:
            fleet = self._build(fleet)
        fleet = self._fleet = fleet.at(ts)
        return fleet

    def _build(self, last: FleetSnapshot | None) -> FleetSnapshot:
        """The fleet tuple: only the restated devices' slots replaced when the ids are unchanged."""
        if last is not None and len(last.devices) == len(self._ids):
            devices = list(last.devices)
            for device_id in self._stale:
                devices[bisect.bisect_left(self._ids, device_id)] = self._devices[device_id]
            index = dict(last._index)
            index.update((i, self._devices[i]) for i in self._stale)
        else:
            devices = [self._devices[i] for i in self._ids]
            index = dict(self._devices)
        self._stale.clear()
        return FleetSnapshot.presorted(tuple(devices), index, self._ts)

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self._bare = {d.device_id: bare(d) for d in self.store.devices()}
        self._charges, self._loads = {}, {}
        for t in self.store.tenants():
            self._charge(t.name, charge(t, busy(self.store, t.name)))
        self._devices = {}
        for device_id in self._bare:
            self._restate(device_id)
        self._ids = sorted(self._devices)
        self._fleet = None
        self._stale.clear()

    def _refresh(self, devices: frozenset[str], tenants: frozenset[str]) -> None:
        self.refreshes += 1
        touched = set(devices)
        for name in tenants:
            before = self._charges.get(name)
            row = self.store.tenant(name)
            after = charge(row, busy(self.store, name)) if row is not None else None
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
        for device_id in touched:
            self._restate(device_id)

    def _charge(self, name: str, to: tuple[str, TenantLoad] | None) -> None:
        before = self._charges.pop(name, None)
        if before is not None:
            self._loads[before[0]].pop(name, None)
        if to is not None:
            self._charges[name] = to
            self._loads.setdefault(to[0], {})[name] = to[1]

    def _restate(self, device_id: str) -> None:
        """Rebuild ``device_id``'s snapshot from its row and charges (a new or gone device re-sorts the
        ids; a changed one is marked for its slot in the next fleet tuple)."""
        base = self._bare.get(device_id)
        old = self._devices.get(device_id)
        if base is None:
            if old is not None:
                del self._devices[device_id]
                self._ids.remove(device_id)
                self._fleet = None
            return
        loads = self._loads.get(device_id, {})
        new = replace(base, tenants=tuple(loads[n] for n in sorted(loads)))
        if new == old:
            return
        self._devices[device_id] = new
        if old is None:
            bisect.insort(self._ids, device_id)
            self._fleet = None
        elif self._fleet is not None:
            self._stale.add(device_id)


__all__ = ["CHARGED_STATES", "SnapshotCache", "bare", "build_snapshot", "busy", "charge"]

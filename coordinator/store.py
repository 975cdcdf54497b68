"""The coordinator's durable state in one SQLite file: devices, telemetry, tenants and the command outbox.

Why a database: a restarted coordinator must know where every tenant was meant to run and must resume
the commands it had not seen acknowledged, with the same command ids (agents apply an id at most once).
WAL mode; one connection, used only by the service's worker thread. The schema is versioned: numbered,
idempotent steps (``MIGRATIONS``) bring an older database up to ``SCHEMA_VERSION`` at open, each step in
its own transaction with the version it reaches; a newer database is refused with a clear error. Each event is applied inside
``atomic()`` so a crash never leaves half of a decision behind. Times are Unix seconds.
A tenant is three rows in three tables, one per owner: its spec (``tenants``: the operator's spec, its
runtime and pin, written by an operator's deploy), its status (``tenant_status``: state, device, the
running spec and the memory charged, written by the lifecycle's applier) and its last metrics
(``tenant_metrics``, written by telemetry at the flush); ``TenantRow`` holds the three.
Every write to a device or tenant row is reported to the ``Changes`` handed out by ``watch()``, so that
what is derived from those rows in memory (the fleet snapshot, ``edgefleet.coordinator.snapshots``) re-reads
only what changed; a command that starts or stops being outstanding counts as a write of its tenant
(the snapshot says whether a tenant is busy); a rolled-back transaction reports everything as changed.

The device and tenant tables are also held in memory, written through: every write goes to SQLite and to
the in-memory rows in the same call, and reads (``devices``, ``device``, ``tenants``, ``tenant``,
``tenants_on``, ``tenants_in``, ``online_ids``) never touch SQLite. This is what keeps a telemetry
window's cost independent of the fleet's size: the hot path writes its rows and reads only its own
device's and tenants' rows, by key. A transaction keeps an undo log of the in-memory rows it changed;
a rollback (of the whole transaction or of a nested block's savepoint) restores them, so memory never
shows a write the database does not hold. ``reread_devices``/``reread_tenants`` read SQLite itself
(the reference the tests compare the in-memory rows with).

What this assumes, and what would change with a shared database (PostgreSQL) and several coordinators:
the in-memory rows are exact only while this ``Store`` sees every write to the rows it reads. With
several coordinators each would own a partition of the devices (telemetry, status and acks split by a
shared subscription hashed on the device id, so a device's messages reach one coordinator) and keep
in memory only its partition's device rows and those devices' tenant rows; a write to another
partition's rows (a migration to a device owned elsewhere, an operator call answered by another
replica) would go through the owner or be announced (PostgreSQL ``LISTEN``/``NOTIFY`` with the row's
key, or a version column checked before use), and the undo log becomes the database's own rollback
plus a re-read of the keys the transaction touched. Nothing else in the coordinator reads the rows
except through these methods.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import sqlite_utils

from edgefleet.wire import Birth, Telemetry, TenantSpec, TenantWindow, encode
from edgefleet.wire.codec import decode


class SchemaError(RuntimeError):
    """The database was written by a newer edgefleet (its schema version is unknown here)."""


def _v1_tables(db: sqlite_utils.Database) -> None:
    """Version 1: devices, telemetry, tenants and commands as first released."""
    db.table("devices").create(
        {"device_id": str, "kind": str, "capabilities": str, "online": int, "boot_id": str,
         "last_seen": float, "reported": str, "model_memory_bytes": int, "cpu_percent": float,
         "detail": str},
        pk="device_id", if_not_exists=True,
    )
    db.table("telemetry").create(
        {"id": int, "device_id": str, "boot_id": str, "seq": int, "window_start": float,
         "window_end": float, "received_at": float, "payload": bytes},
        pk="id", if_not_exists=True,
    )
    db.table("telemetry").create_index(
        ["device_id", "boot_id", "seq"], unique=True, if_not_exists=True, index_name="telemetry_key"
    )
    db.table("tenants").create(
        {"name": str, "spec": str, "runtime": str, "size_bytes": int, "device_id": str, "state": str,
         "detail": str, "tried": str, "pinned": str, "arrival_rps": float, "latency_p50_ms": float,
         "latency_p95_ms": float, "errors": int, "updated_at": float},
        pk="name", if_not_exists=True,
    )
    db.table("commands").create(
        {"seq": int, "command_id": str, "device_id": str, "tenant": str, "kind": str, "payload": bytes,
         "state": str, "attempts": int, "next_attempt_at": float, "created_at": float, "result": str},
        pk="seq", if_not_exists=True,
    )
    db.table("commands").create_index(["command_id"], unique=True, if_not_exists=True)
    db.table("commands").create_index(["state"], if_not_exists=True)


def _v2_moving_from(db: sqlite_utils.Database) -> None:
    """Version 2: planned moves keep the device still serving the tenant."""
    if "moving_from" not in db.table("tenants").columns_dict:
        db.table("tenants").add_column("moving_from", str)


def _v3_requested(db: sqlite_utils.Database) -> None:
    """Version 3: the operator's spec kept apart from the running one (NULL: the running spec is it)."""
    if "requested" not in db.table("tenants").columns_dict:
        db.table("tenants").add_column("requested", str)


def _v4_telemetry_by_age(db: sqlite_utils.Database) -> None:
    """Version 4: telemetry indexed by arrival, so pruning reads only what it deletes."""
    db.table("telemetry").create_index(["received_at"], if_not_exists=True)


def _v5_tenant_spec_status_metrics(db: sqlite_utils.Database) -> None:
    """Version 5: a tenant's spec (``tenants``: the operator's spec, runtime, pin), its status
    (``tenant_status``) and its last metrics (``tenant_metrics``) in three tables."""
    if "state" not in db.table("tenants").columns_dict:
        return  # already split
    db.execute("CREATE TABLE IF NOT EXISTS tenant_status (name TEXT PRIMARY KEY, state TEXT, device_id TEXT,"
               " detail TEXT, tried TEXT, moving_from TEXT, running TEXT, size_bytes INTEGER, updated_at FLOAT)")
    db.execute("CREATE TABLE IF NOT EXISTS tenant_metrics (name TEXT PRIMARY KEY, arrival_rps FLOAT,"
               " latency_p50_ms FLOAT, latency_p95_ms FLOAT, errors INTEGER, updated_at FLOAT)")
    # ``spec`` was what runs and ``requested`` the operator's spec when they differed
    db.execute("INSERT OR REPLACE INTO tenant_status (name, state, device_id, detail, tried, moving_from, running,"
               " size_bytes, updated_at) SELECT name, state, device_id, detail, tried, moving_from,"
               " CASE WHEN requested IS NULL THEN NULL ELSE spec END, size_bytes, updated_at FROM tenants")
    db.execute("INSERT OR REPLACE INTO tenant_metrics (name, arrival_rps, latency_p50_ms, latency_p95_ms, errors,"
               " updated_at) SELECT name, arrival_rps, latency_p50_ms, latency_p95_ms, errors, updated_at FROM tenants")
    db.execute("CREATE TABLE tenants_v5 (name TEXT PRIMARY KEY, spec TEXT, runtime TEXT, pinned TEXT, updated_at FLOAT)")
    db.execute("INSERT INTO tenants_v5 (name, spec, runtime, pinned, updated_at)"
               " SELECT name, COALESCE(requested, spec), runtime, pinned, updated_at FROM tenants")
    db.execute("DROP TABLE tenants")
    db.execute("ALTER TABLE tenants_v5 RENAME TO tenants")


# MIGRATIONS[i] takes a database from version i to i + 1. Every step is idempotent (databases from before
# versioning carry version 1 with some later columns already added), and each runs in one transaction
# with the version it reaches, so a crash half-way leaves the database at the previous version.
MIGRATIONS = (_v1_tables, _v2_moving_from, _v3_requested, _v4_telemetry_by_age, _v5_tenant_spec_status_metrics)
SCHEMA_VERSION = len(MIGRATIONS)

class TenantState(str, Enum):
    """Where a tenant is in its lifecycle (stored by value). ``pending``: created, not yet placed;
    ``deploying``: a Deploy is out to ``device_id``; ``running``: acked there; ``moving``: running on
    ``moving_from`` while a Deploy to ``device_id`` is out (make-before-break); ``unplaced``: no device
    fits (``detail`` says why); ``removing``: an Undeploy is out."""

    PENDING = "pending"
    DEPLOYING = "deploying"
    RUNNING = "running"
    MOVING = "moving"
    UNPLACED = "unplaced"
    REMOVING = "removing"

    def __str__(self) -> str:
        return self.value


_PUT_METRICS = ("INSERT INTO tenant_metrics (name, arrival_rps, latency_p50_ms, latency_p95_ms, errors, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET arrival_rps = excluded.arrival_rps,"
                " latency_p50_ms = excluded.latency_p50_ms, latency_p95_ms = excluded.latency_p95_ms,"
                " errors = excluded.errors, updated_at = excluded.updated_at")
TENANT_STATES = tuple(s.value for s in TenantState)
COMMAND_STATES = ("pending", "sent", "acked", "failed", "cancelled")
OUTSTANDING = ("pending", "sent")


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    online: bool
    kind: str
    runtimes: tuple[str, ...]
    memory_budget_bytes: int
    boot_id: str
    last_seen: float
    reported: tuple[str, ...]  # tenants the device said it hosts (birth, or latest telemetry)
    model_memory_bytes: int | None  # from the latest telemetry window
    cpu_percent: float | None
    detail: str  # why it is offline, when it is


@dataclass(frozen=True)
class TenantStatus:
    """Where a tenant stands: written by the lifecycle's applier (``edgefleet.coordinator.tenants``) alone."""

    state: TenantState
    device_id: str | None  # the device it runs on (or is being deployed or moved to)
    detail: str = ""  # why it is where it is (an unplaced tenant: why nothing fits)
    tried: tuple[str, ...] = ()  # devices tried in the current placement round
    moving_from: str | None = None  # state "moving": the device still serving it until the new one acks
    # The spec that runs when it differs from the asked one (the rebalancer's reconfiguration, taken at
    # the Configure's Ack); None: the asked spec runs.
    running: TenantSpec | None = None
    size_bytes: int = 0  # memory charged to the device (the running variant's size)


@dataclass(frozen=True)
class TenantMetrics:
    """The tenant's figures from its device's last telemetry window (kept apart: the hot path writes them)."""

    arrival_rps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    errors: int = 0


NO_METRICS = TenantMetrics()


@dataclass(frozen=True)
class TenantRow:
    """One tenant: its spec (what the operator asked, and the device it pinned it to), its status and its
    last metrics, each in its own table. The read-only properties name the status's fields and the
    running spec, for readers that do not care which part a field lives in."""

    asked: TenantSpec  # what the operator deployed (an idempotent redeploy sends exactly this)
    runtime: str  # the runtime of the asked variant's model
    status: TenantStatus
    pinned: str | None = None  # the operator asked for this device; the tenant never moves elsewhere
    metrics: TenantMetrics = NO_METRICS

    def __post_init__(self) -> None:
        if self.status.running is not None and self.status.running == self.asked:
            object.__setattr__(self, "status", replace(self.status, running=None))  # one way to say "as asked"

    @classmethod
    def of(cls, spec: TenantSpec, runtime: str, size_bytes: int, device_id: str | None, state: TenantState | str,
           detail: str = "", tried: tuple[str, ...] = (), pinned: str | None = None,
           moving_from: str | None = None) -> TenantRow:
        """A tenant running (or to run) ``spec`` as asked."""
        return cls(asked=spec, runtime=runtime, pinned=pinned,
                   status=TenantStatus(TenantState(state), device_id, detail, tried, moving_from, None, size_bytes))

    def with_status(self, **changes: Any) -> TenantRow:
        """This row with ``changes`` to its status (``TenantStatus``'s fields)."""
        return replace(self, status=replace(self.status, **changes))

    @property
    def name(self) -> str:
        return self.asked.name

    @property
    def spec(self) -> TenantSpec:
        """What runs (or is to run): the asked spec, or the rebalancer's reconfiguration of it."""
        return self.asked if self.status.running is None else self.status.running

    @property
    def requested(self) -> TenantSpec | None:
        """The operator's spec when a reconfiguration changed what runs; None: what runs is as asked."""
        return None if self.status.running is None else self.asked

    @property
    def state(self) -> TenantState:
        return self.status.state

    @property
    def device_id(self) -> str | None:
        return self.status.device_id

    @property
    def detail(self) -> str:
        return self.status.detail

    @property
    def tried(self) -> tuple[str, ...]:
        return self.status.tried

    @property
    def moving_from(self) -> str | None:
        return self.status.moving_from

    @property
    def size_bytes(self) -> int:
        return self.status.size_bytes

    @property
    def arrival_rps(self) -> float:
        return self.metrics.arrival_rps

    @property
    def latency_p50_ms(self) -> float:
        return self.metrics.latency_p50_ms

    @property
    def latency_p95_ms(self) -> float:
        return self.metrics.latency_p95_ms

    @property
    def errors(self) -> int:
        return self.metrics.errors


@dataclass(frozen=True)
class CommandRow:
    seq: int  # creation order; commands for one (device, tenant) are sent in this order
    command_id: str
    device_id: str
    tenant: str
    kind: str  # "deploy" | "undeploy" | "configure"
    payload: bytes  # the encoded Deploy/Undeploy/Configure, resent byte for byte
    state: str  # one of COMMAND_STATES
    attempts: int
    next_attempt_at: float
    created_at: float
    result: str


class Changes:
    """The devices and tenants whose rows were written since the last ``drain`` (see ``Store.watch``).
    ``everything`` is set when the writes cannot be listed (a fresh watch, a rollback)."""

    def __init__(self) -> None:
        self.everything = True
        self.devices: set[str] = set()
        self.tenants: set[str] = set()

    def drain(self) -> tuple[bool, frozenset[str], frozenset[str]]:
        """(everything, devices, tenants) written since the last drain; forgotten here."""
        out = (self.everything, frozenset(self.devices), frozenset(self.tenants))
        self.everything = False
        self.devices.clear()
        self.tenants.clear()
        return out


class Store:
    def __init__(self, path: Path | str) -> None:
        p = Path(path)
        memory = str(p) == ":memory:"
        if not memory:
            p.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: SQLite's own autocommit, with explicit BEGIN/COMMIT in ``atomic``. Writes go
        # through ``db.execute`` so they join an open transaction with sqlite-utils 3.x and 4.x alike.
        conn = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        if not memory:
            self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._depth = 0
        self._watchers: weakref.WeakSet[Changes] = weakref.WeakSet()
        self._migrate()
        # the device and tenant rows in memory, written through (see the module's docstring)
        self._devices: dict[str, DeviceRow] = {}
        self._online: set[str] = set()
        self._tenants: dict[str, TenantRow] = {}
        self._on_device: dict[str, set[str]] = {}  # device -> names of the tenants assigned to it
        self._in_state: dict[str, set[str]] = {}  # state -> names of the tenants in it
        self._undo: list[Callable[[], None]] = []  # restores the memory rows of the open transaction
        self._outstanding: dict[str, CommandRow] = {}  # command id -> the pending or sent command
        self._in_flight: dict[str, int] = {}  # tenant -> how many of its commands are outstanding
        # rows whose telemetry-derived columns changed in memory and are written at the next flush (the end
        # of the transaction: one executemany per batch of windows instead of statements per window)
        self._dirty_devices: set[str] = set()
        self._dirty_tenants: set[str] = set()
        self._flush_at = 0.0  # the time written as the flushed tenants' updated_at
        for d in self.reread_devices():
            self._set_device(d)
        for t in self.reread_tenants():
            self._set_tenant(t.name, t)
        for c in self._commands_from_db(outstanding=True):
            self._restore_command(c.command_id, c)
        self._undo.clear()

    def _migrate(self) -> None:
        """Bring the database to ``SCHEMA_VERSION``, one numbered step at a time (``MIGRATIONS``), each in
        its own transaction with the version it reaches; a database newer than this code is refused."""
        db = self.db
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(f"the database's schema is version {version}; this coordinator knows up to "
                              f"{SCHEMA_VERSION}: run a newer edgefleet")
        for step in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[step](db)
                db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE"
                           " SET value = excluded.value", (str(step + 1),))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def watch(self) -> Changes:
        """A record of every device and tenant row written from now on (held weakly: drop it to stop)."""
        changes = Changes()
        self._watchers.add(changes)
        return changes

    def _device_written(self, device_id: str) -> None:
        for w in self._watchers:
            w.devices.add(device_id)

    def _tenant_written(self, name: str) -> None:
        for w in self._watchers:
            w.tenants.add(name)

    def _all_written(self) -> None:
        for w in self._watchers:
            w.everything = True

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction around the block; rolled back on error. A nested block is a savepoint inside
        the outer transaction: an error in it undoes only its own writes (and propagates), its success
        leaves them to the outer transaction's commit or rollback."""
        if self._depth:
            name = f"sp{self._depth}"
            mark = len(self._undo)
            self.db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                self._rollback_memory(mark)
                raise
            finally:
                self._depth -= 1
            self.db.execute(f"RELEASE {name}")
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            self._rollback_memory(0)
            raise
        try:
            self.flush()
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            self._rollback_memory(0)
            raise
        self._depth = 0
        self.db.execute("COMMIT")
        self._undo.clear()

    def flush(self) -> None:
        """Write the telemetry-derived columns changed in memory since the last flush (``record_window``,
        ``record_tenant_window``); done before every commit and after those calls outside a transaction."""
        if self._dirty_devices:
            rows = [(d.last_seen, d.model_memory_bytes, d.cpu_percent, d.device_id)
                    for d in (self._devices.get(k) for k in self._dirty_devices) if d is not None]
            self._dirty_devices.clear()
            self.db.conn.executemany(
                "UPDATE devices SET last_seen = ?, model_memory_bytes = ?, cpu_percent = ? WHERE device_id = ?", rows)
        if self._dirty_tenants:
            now = self._flush_at
            trows = [(m.arrival_rps, m.latency_p50_ms, m.latency_p95_ms, m.errors, now, k)
                     for k, m in ((k, t.metrics) for k in self._dirty_tenants for t in (self._tenants.get(k),)
                                  if t is not None)]
            self._dirty_tenants.clear()
            self.db.conn.executemany(
                "UPDATE tenant_metrics SET arrival_rps = ?, latency_p50_ms = ?, latency_p95_ms = ?, errors = ?,"
                " updated_at = ? WHERE name = ?", trows)

    def _set_command(self, command_id: str, c: CommandRow | None) -> None:
        """The in-memory outstanding command ``command_id`` becomes ``c`` (None, or settled: dropped)."""
        old = self._outstanding.get(command_id)
        if self._depth:
            self._undo.append(lambda: self._restore_command(command_id, old))
        self._restore_command(command_id, c)

    def _restore_command(self, command_id: str, c: CommandRow | None) -> None:
        if c is None or c.state not in OUTSTANDING:
            gone = self._outstanding.pop(command_id, None)
            if gone is not None:
                self._count_in_flight(gone.tenant, -1)  # no longer busy with this command
        else:
            if command_id not in self._outstanding:
                self._count_in_flight(c.tenant, 1)  # busy with a command in flight
            self._outstanding[command_id] = c

    def _count_in_flight(self, tenant: str, change: int) -> None:
        left = self._in_flight.get(tenant, 0) + change
        if left > 0:
            self._in_flight[tenant] = left
        else:
            self._in_flight.pop(tenant, None)
        self._tenant_written(tenant)

    def in_flight(self, tenant: str) -> bool:
        """``tenant`` has a command outstanding (from memory, by key)."""
        return tenant in self._in_flight

    def _rollback_memory(self, mark: int) -> None:
        """Undo the in-memory writes made since the undo log held ``mark`` entries."""
        while len(self._undo) > mark:
            self._undo.pop()()
        self._all_written()  # what the watchers were told of may be undone

    # -- the in-memory rows (every change goes through these two) ----------------------------------
    def _set_device(self, d: DeviceRow) -> None:
        old = self._devices.get(d.device_id)
        if self._depth:
            self._undo.append(lambda: self._restore_device(d.device_id, old))
        self._restore_device(d.device_id, d)

    def _restore_device(self, device_id: str, d: DeviceRow | None) -> None:
        if d is None:
            self._devices.pop(device_id, None)
            self._online.discard(device_id)
            return
        self._devices[device_id] = d
        if d.online:
            self._online.add(device_id)
        else:
            self._online.discard(device_id)

    def _set_tenant(self, name: str, t: TenantRow | None) -> None:
        old = self._tenants.get(name)
        if self._depth:
            self._undo.append(lambda: self._restore_tenant(name, old))
        self._restore_tenant(name, t)

    def _restore_tenant(self, name: str, t: TenantRow | None) -> None:
        old = self._tenants.pop(name, None)
        if old is not None:
            if old.device_id is not None:
                names = self._on_device.get(old.device_id)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._on_device[old.device_id]
            self._in_state.get(old.state, set()).discard(name)
        if t is None:
            return
        self._tenants[name] = t
        if t.device_id is not None:
            self._on_device.setdefault(t.device_id, set()).add(name)
        self._in_state.setdefault(t.state, set()).add(name)

    def close(self) -> None:
        self.db.close()

    def _upsert(self, table: str, row: dict[str, Any], pk: str) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != pk)
        self.db.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT({pk}) DO UPDATE SET {updates}",
            tuple(row.values()),
        )

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    # -- devices ----------------------------------------------------------------------------------
    @staticmethod
    def _device(r: dict[str, Any]) -> DeviceRow:
        caps = json.loads(r["capabilities"] or "{}")
        return DeviceRow(
            device_id=r["device_id"], online=bool(r["online"]), kind=r["kind"] or "",
            runtimes=tuple(caps.get("runtimes", ())), memory_budget_bytes=int(caps.get("memory_budget_bytes", 0)),
            boot_id=r["boot_id"] or "", last_seen=float(r["last_seen"] or 0.0),
            reported=tuple(json.loads(r["reported"] or "[]")), model_memory_bytes=r["model_memory_bytes"],
            cpu_percent=r["cpu_percent"], detail=r["detail"] or "",
        )

    def reread_devices(self) -> list[DeviceRow]:
        """Every device row as SQLite holds it (a full read: for start-up and checks, never the hot path)."""
        return [self._device(r) for r in self._rows("SELECT * FROM devices ORDER BY device_id")]

    def devices(self) -> list[DeviceRow]:
        """Every device, by id (from memory; sorting makes it O(n log n): not for the hot path)."""
        return [self._devices[k] for k in sorted(self._devices)]

    def device(self, device_id: str) -> DeviceRow | None:
        return self._devices.get(device_id)

    def online_ids(self) -> frozenset[str]:
        """The devices online now (a copy)."""
        return frozenset(self._online)

    def is_online(self, device_id: str) -> bool:
        return device_id in self._online

    def device_count(self) -> tuple[int, int]:
        """(online, offline) devices."""
        return len(self._online), len(self._devices) - len(self._online)

    def record_birth(self, birth: Birth, now: float) -> None:
        caps = birth.capabilities
        reported = sorted(birth.tenants)
        self._upsert(
            "devices",
            {"device_id": birth.device_id, "kind": caps.device_kind,
             "capabilities": encode(caps).decode(), "online": 1, "boot_id": birth.boot_id,
             "last_seen": now, "reported": json.dumps(reported), "detail": ""},
            "device_id",
        )
        old = self._devices.get(birth.device_id)
        self._set_device(DeviceRow(
            device_id=birth.device_id, online=True, kind=caps.device_kind, runtimes=tuple(caps.runtimes),
            memory_budget_bytes=int(caps.memory_budget_bytes), boot_id=birth.boot_id, last_seen=now,
            reported=tuple(reported), model_memory_bytes=old.model_memory_bytes if old is not None else None,
            cpu_percent=old.cpu_percent if old is not None else None, detail="",
        ))
        self._device_written(birth.device_id)

    def _update_device(self, device_id: str, **changes: Any) -> None:
        old = self._devices.get(device_id)
        if old is not None:
            self._set_device(replace(old, **changes))
        self._device_written(device_id)

    def set_offline(self, device_id: str, detail: str) -> None:
        self.db.execute("UPDATE devices SET online = 0, detail = ? WHERE device_id = ?", (detail, device_id))
        self._update_device(device_id, online=False, detail=detail)

    def set_online(self, device_id: str, reported: list[str], now: float) -> None:
        listed = sorted(reported)
        self.db.execute(
            "UPDATE devices SET online = 1, detail = '', reported = ?, last_seen = ? WHERE device_id = ?",
            (json.dumps(listed), now, device_id),
        )
        self._update_device(device_id, online=True, detail="", reported=tuple(listed), last_seen=now)

    def touch(self, device_id: str, now: float) -> None:
        self.db.execute("UPDATE devices SET last_seen = ? WHERE device_id = ?", (now, device_id))
        self._update_device(device_id, last_seen=now)

    def record_window(self, t: Telemetry, now: float) -> None:
        """The device's last window: last seen, model memory and CPU (written to SQLite at the flush)."""
        if t.device_id not in self._devices:
            return
        self._update_device(t.device_id, last_seen=now, model_memory_bytes=t.device.model_memory_bytes,
                            cpu_percent=t.device.cpu_percent)
        self._dirty_devices.add(t.device_id)
        if not self._depth:
            self.flush()

    # -- telemetry --------------------------------------------------------------------------------
    def add_telemetry(self, t: Telemetry, now: float, payload: bytes | None = None) -> bool:
        """Store one window; False (and nothing written) when (device, boot, seq) is already stored.
        ``payload``: the window as it arrived, when its decoding gave ``t`` (stored as is, not encoded again)."""
        cur = self.db.conn.execute(
            "INSERT OR IGNORE INTO telemetry (device_id, boot_id, seq, window_start, window_end, received_at,"
            " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (t.device_id, t.boot_id, t.seq, t.window_start, t.window_end, now,
             encode(t) if payload is None else payload),
        )
        return cur.rowcount == 1

    def telemetry_count(self, device_id: str | None = None) -> int:
        if device_id is None:
            return int(self.db.execute("SELECT count(*) FROM telemetry").fetchone()[0])
        row = self.db.execute("SELECT count(*) FROM telemetry WHERE device_id = ?", (device_id,)).fetchone()
        return int(row[0])

    def prune_telemetry(self, before: float, limit: int = 0) -> int:
        """Delete windows received before ``before`` (at most ``limit`` of the oldest when > 0)."""
        if limit <= 0:
            return self.db.execute("DELETE FROM telemetry WHERE received_at < ?", (before,)).rowcount
        return self.db.execute(
            "DELETE FROM telemetry WHERE id IN (SELECT id FROM telemetry WHERE received_at < ?"
            " ORDER BY received_at LIMIT ?)", (before, limit)).rowcount

    # -- tenants ----------------------------------------------------------------------------------
    @staticmethod
    def _tenant(r: dict[str, Any]) -> TenantRow:
        running = r["running"]
        status = TenantStatus(
            state=TenantState(r["state"]), device_id=r["device_id"], detail=r["detail"] or "",
            tried=tuple(json.loads(r["tried"] or "[]")), moving_from=r["moving_from"],
            running=decode(running.encode(), TenantSpec) if running else None, size_bytes=int(r["size_bytes"] or 0))
        metrics = TenantMetrics(arrival_rps=r["arrival_rps"] or 0.0, latency_p50_ms=r["latency_p50_ms"] or 0.0,
                                latency_p95_ms=r["latency_p95_ms"] or 0.0, errors=int(r["errors"] or 0))
        return TenantRow(asked=decode(r["spec"].encode(), TenantSpec), runtime=r["runtime"], pinned=r["pinned"],
                         status=status, metrics=NO_METRICS if metrics == NO_METRICS else metrics)

    def reread_tenants(self) -> list[TenantRow]:
        """Every tenant row as SQLite holds it (a full read: for start-up and checks, never the hot path)."""
        return [self._tenant(r) for r in self._rows(
            "SELECT t.name, t.spec, t.runtime, t.pinned, s.state, s.device_id, s.detail, s.tried, s.moving_from,"
            " s.running, s.size_bytes, m.arrival_rps, m.latency_p50_ms, m.latency_p95_ms, m.errors"
            " FROM tenants t JOIN tenant_status s USING (name) LEFT JOIN tenant_metrics m USING (name)"
            " ORDER BY t.name")]

    def tenants(self) -> list[TenantRow]:
        """Every tenant, by name (from memory; O(n log n): not for the hot path)."""
        return [self._tenants[k] for k in sorted(self._tenants)]

    def tenant(self, name: str) -> TenantRow | None:
        return self._tenants.get(name)

    def tenants_on(self, device_id: str) -> list[TenantRow]:
        """The tenants assigned to ``device_id``, by name."""
        return [self._tenants[n] for n in sorted(self._on_device.get(device_id, ()))]

    def tenants_in(self, state: str) -> list[TenantRow]:
        """The tenants in ``state``, by name."""
        return [self._tenants[n] for n in sorted(self._in_state.get(state, ()))]

    def tenant_count(self) -> dict[str, int]:
        """Tenants by state (states with none left out)."""
        return {state: len(names) for state, names in sorted(self._in_state.items()) if names}

    def put_tenant(self, t: TenantRow, now: float) -> None:
        """Write ``t``: its status always, its spec and metrics when they differ from the row held."""
        old = self._tenants.get(t.name)
        if old is None or (old.asked, old.runtime, old.pinned) != (t.asked, t.runtime, t.pinned):
            self._upsert("tenants", {"name": t.name, "spec": encode(t.asked).decode(), "runtime": t.runtime,
                                     "pinned": t.pinned, "updated_at": now}, "name")
        st = t.status
        self._upsert(
            "tenant_status",
            {"name": t.name, "state": TenantState(st.state).value, "device_id": st.device_id, "detail": st.detail,
             "tried": json.dumps(list(st.tried)), "moving_from": st.moving_from,
             "running": encode(st.running).decode() if st.running is not None else None,
             "size_bytes": st.size_bytes, "updated_at": now},
            "name",
        )
        if old is None or old.metrics != t.metrics:  # a new tenant's metrics row is there for the flush's UPDATE
            m = t.metrics
            self.db.execute(_PUT_METRICS, (t.name, m.arrival_rps, m.latency_p50_ms, m.latency_p95_ms, m.errors, now))
        self._set_tenant(t.name, t)
        self._tenant_written(t.name)

    def delete_tenant(self, name: str) -> None:
        for table in ("tenants", "tenant_status", "tenant_metrics"):
            self.db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
        self._set_tenant(name, None)
        self._tenant_written(name)

    def record_tenant_window(self, name: str, w: TenantWindow, now: float) -> None:
        """A tenant's last window: rate, latency and errors (written to SQLite at the flush)."""
        old = self._tenants.get(name)
        if old is None:
            return
        self._set_tenant(name, replace(old, metrics=TenantMetrics(w.arrival_rps, w.latency_p50_ms, w.latency_p95_ms,
                                                                  int(w.errors))))
        self._tenant_written(name)
        self._dirty_tenants.add(name)
        self._flush_at = now
        if not self._depth:
            self.flush()

    # -- commands ---------------------------------------------------------------------------------
    @staticmethod
    def _command(r: dict[str, Any]) -> CommandRow:
        return CommandRow(
            seq=int(r["seq"]), command_id=r["command_id"], device_id=r["device_id"], tenant=r["tenant"],
            kind=r["kind"], payload=bytes(r["payload"]), state=r["state"], attempts=int(r["attempts"]),
            next_attempt_at=float(r["next_attempt_at"]), created_at=float(r["created_at"]),
            result=r["result"] or "",
        )

    def add_command(self, *, command_id: str, device_id: str, tenant: str, kind: str, payload: bytes,
                    now: float) -> CommandRow:
        cur = self.db.execute(
            "INSERT INTO commands (command_id, device_id, tenant, kind, payload, state, attempts,"
            " next_attempt_at, created_at, result) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, '')",
            (command_id, device_id, tenant, kind, payload, now, now),
        )
        row = CommandRow(int(cur.lastrowid or 0), command_id, device_id, tenant, kind, payload, "pending", 0,
                         now, now, "")
        self._set_command(command_id, row)
        return row

    def command(self, command_id: str) -> CommandRow | None:
        held = self._outstanding.get(command_id)
        if held is not None:
            return held
        rows = self._rows("SELECT * FROM commands WHERE command_id = ?", (command_id,))
        return self._command(rows[0]) if rows else None

    def commands(self, *, device_id: str | None = None, tenant: str | None = None, kind: str | None = None,
                 outstanding: bool = False) -> list[CommandRow]:
        """Commands in creation order, filtered; ``outstanding`` keeps pending and sent ones (read from
        memory: the outstanding commands are few, whatever the history)."""
        if not outstanding:
            return self._commands_from_db(device_id=device_id, tenant=tenant, kind=kind)
        return sorted((c for c in self._outstanding.values()
                       if (device_id is None or c.device_id == device_id) and (tenant is None or c.tenant == tenant)
                       and (kind is None or c.kind == kind)), key=lambda c: c.seq)

    def _commands_from_db(self, *, device_id: str | None = None, tenant: str | None = None, kind: str | None = None,
                          outstanding: bool = False) -> list[CommandRow]:
        where, params = ["1 = 1"], []
        for column, value in (("device_id", device_id), ("tenant", tenant), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if outstanding:
            where.append("state IN ('pending', 'sent')")
        sql = f"SELECT * FROM commands WHERE {' AND '.join(where)} ORDER BY seq"
        return [self._command(r) for r in self._rows(sql, tuple(params))]

    def mark_sent(self, command_id: str, attempts: int, next_attempt_at: float) -> None:
        self.db.execute(
            "UPDATE commands SET state = 'sent', attempts = ?, next_attempt_at = ? WHERE command_id = ?",
            (attempts, next_attempt_at, command_id),
        )
        held = self._outstanding.get(command_id)
        if held is not None:
            self._set_command(command_id, replace(held, state="sent", attempts=attempts,
                                                  next_attempt_at=next_attempt_at))
        else:
            self._reload_command(command_id)  # a settled command sent again is outstanding again

    def finish_command(self, command_id: str, state: str, result: str) -> None:
        if state not in COMMAND_STATES:
            raise ValueError(f"unknown command state {state!r}")
        self.db.execute(
            "UPDATE commands SET state = ?, result = ? WHERE command_id = ?", (state, result, command_id)
        )
        held = self._outstanding.get(command_id)
        if held is not None:
            self._set_command(command_id, replace(held, state=state, result=result))
        elif state in OUTSTANDING:
            self._reload_command(command_id)

    def _reload_command(self, command_id: str) -> None:
        rows = self._rows("SELECT * FROM commands WHERE command_id = ?", (command_id,))
        if rows:
            self._set_command(command_id, self._command(rows[0]))

    def expedite(self, device_id: str, now: float) -> None:
        """Make every outstanding command to ``device_id`` due now (the device just came back)."""
        self.db.execute(
            "UPDATE commands SET next_attempt_at = ? WHERE device_id = ? AND state IN ('pending', 'sent')"
            " AND next_attempt_at > ?",
            (now, device_id, now),
        )
        for c in list(self._outstanding.values()):
            if c.device_id == device_id and c.next_attempt_at > now:
                self._set_command(c.command_id, replace(c, next_attempt_at=now))

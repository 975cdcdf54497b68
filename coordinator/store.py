"""The coordinator's durable state in one SQLite file: devices, telemetry, tenants and the command outbox.

Why a database: a restarted coordinator must know where every tenant was meant to run and must resume
the commands it had not seen acknowledged, with the same command ids (agents apply an id at most once).
WAL mode; one connection, used only by the service's worker thread. Each event is applied inside
``atomic()`` so a crash never leaves half of a decision behind. Times are Unix seconds.
Every write to a device or tenant row is reported to the ``Changes`` handed out by ``watch()``, so that
what is derived from those rows in memory (the fleet snapshot, ``coordinator.snapshots``) re-reads
only what changed; a rolled-back transaction reports everything as changed.
"""

from __future__ import annotations

import json
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from edgefleet.wire import Birth, Telemetry, TenantSpec, TenantWindow, encode
from edgefleet.wire.codec import decode

SCHEMA_VERSION = 1

TENANT_STATES = ("pending", "deploying", "running", "moving", "unplaced", "removing")
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
class TenantRow:
    spec: TenantSpec  # what runs (or is to run): the operator's spec, or the rebalancer's reconfiguration of it
    runtime: str
    size_bytes: int  # memory charged to the assigned device
    device_id: str | None
    state: str  # one of TENANT_STATES
    detail: str
    tried: tuple[str, ...]  # devices tried in the current placement round
    pinned: str | None = None  # the operator asked for this device; the tenant never moves elsewhere
    moving_from: str | None = None  # state "moving": the device still serving it until the new one acks
    arrival_rps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    errors: int = 0
    # The operator's spec when ``spec`` differs from it (a Configure changed variant or batching); None:
    # ``spec`` is what was asked. A redeploy is compared against this one (see ``asked``).
    requested: TenantSpec | None = None

    def __post_init__(self) -> None:
        if self.requested == self.spec:
            object.__setattr__(self, "requested", None)  # one way to say "as asked"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def asked(self) -> TenantSpec:
        """What the operator deployed (an idempotent redeploy sends exactly this)."""
        return self.spec if self.requested is None else self.requested


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

    def _migrate(self) -> None:
        db = self.db  # every statement is idempotent, so a crash half-way is harmless
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
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
        if "moving_from" not in db.table("tenants").columns_dict:
            db.table("tenants").add_column("moving_from", str)  # databases from before planned moves
        if "requested" not in db.table("tenants").columns_dict:
            # databases from before the operator's spec was kept apart: NULL, taken as the running spec
            db.table("tenants").add_column("requested", str)
        db.table("commands").create(
            {"seq": int, "command_id": str, "device_id": str, "tenant": str, "kind": str, "payload": bytes,
             "state": str, "attempts": int, "next_attempt_at": float, "created_at": float, "result": str},
            pk="seq", if_not_exists=True,
        )
        db.table("commands").create_index(["command_id"], unique=True, if_not_exists=True)
        db.table("commands").create_index(["state"], if_not_exists=True)

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
        """One transaction around the block (nested blocks join the outer one); rolled back on error."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            self._all_written()  # what the watchers were told of may be undone
            raise
        self._depth = 0
        self.db.execute("COMMIT")

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

    def devices(self) -> list[DeviceRow]:
        return [self._device(r) for r in self._rows("SELECT * FROM devices ORDER BY device_id")]

    def device(self, device_id: str) -> DeviceRow | None:
        rows = self._rows("SELECT * FROM devices WHERE device_id = ?", (device_id,))
        return self._device(rows[0]) if rows else None

    def record_birth(self, birth: Birth, now: float) -> None:
        self._upsert(
            "devices",
            {"device_id": birth.device_id, "kind": birth.capabilities.device_kind,
             "capabilities": encode(birth.capabilities).decode(), "online": 1, "boot_id": birth.boot_id,
             "last_seen": now, "reported": json.dumps(sorted(birth.tenants)), "detail": ""},
            "device_id",
        )
        self._device_written(birth.device_id)

    def set_offline(self, device_id: str, detail: str) -> None:
        self.db.execute("UPDATE devices SET online = 0, detail = ? WHERE device_id = ?", (detail, device_id))
        self._device_written(device_id)

    def set_online(self, device_id: str, reported: list[str], now: float) -> None:
        self.db.execute(
            "UPDATE devices SET online = 1, detail = '', reported = ?, last_seen = ? WHERE device_id = ?",
            (json.dumps(sorted(reported)), now, device_id),
        )
        self._device_written(device_id)

    def touch(self, device_id: str, now: float) -> None:
        self.db.execute("UPDATE devices SET last_seen = ? WHERE device_id = ?", (now, device_id))
        self._device_written(device_id)

    def record_window(self, t: Telemetry, now: float) -> None:
        self.db.execute(
            "UPDATE devices SET last_seen = ?, model_memory_bytes = ?, cpu_percent = ? WHERE device_id = ?",
            (now, t.device.model_memory_bytes, t.device.cpu_percent, t.device_id),
        )
        self._device_written(t.device_id)

    # -- telemetry --------------------------------------------------------------------------------
    def add_telemetry(self, t: Telemetry, now: float) -> bool:
        """Store one window; False (and nothing written) when (device, boot, seq) is already stored."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO telemetry (device_id, boot_id, seq, window_start, window_end, received_at,"
            " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (t.device_id, t.boot_id, t.seq, t.window_start, t.window_end, now, encode(t)),
        )
        return cur.rowcount == 1

    def telemetry_count(self, device_id: str | None = None) -> int:
        if device_id is None:
            return int(self.db.execute("SELECT count(*) FROM telemetry").fetchone()[0])
        row = self.db.execute("SELECT count(*) FROM telemetry WHERE device_id = ?", (device_id,)).fetchone()
        return int(row[0])

    def prune_telemetry(self, before: float) -> int:
        return self.db.execute("DELETE FROM telemetry WHERE received_at < ?", (before,)).rowcount

    # -- tenants ----------------------------------------------------------------------------------
    @staticmethod
    def _tenant(r: dict[str, Any]) -> TenantRow:
        requested = r.get("requested")
        return TenantRow(
            spec=decode(r["spec"].encode(), TenantSpec), runtime=r["runtime"], size_bytes=int(r["size_bytes"]),
            device_id=r["device_id"], state=r["state"], detail=r["detail"] or "",
            tried=tuple(json.loads(r["tried"] or "[]")), pinned=r["pinned"], moving_from=r.get("moving_from"),
            arrival_rps=r["arrival_rps"] or 0.0,
            latency_p50_ms=r["latency_p50_ms"] or 0.0, latency_p95_ms=r["latency_p95_ms"] or 0.0,
            errors=int(r["errors"] or 0),
            requested=decode(requested.encode(), TenantSpec) if requested else None,
        )

    def tenants(self) -> list[TenantRow]:
        return [self._tenant(r) for r in self._rows("SELECT * FROM tenants ORDER BY name")]

    def tenant(self, name: str) -> TenantRow | None:
        rows = self._rows("SELECT * FROM tenants WHERE name = ?", (name,))
        return self._tenant(rows[0]) if rows else None

    def tenants_on(self, device_id: str) -> list[TenantRow]:
        rows = self._rows("SELECT * FROM tenants WHERE device_id = ? ORDER BY name", (device_id,))
        return [self._tenant(r) for r in rows]

    def put_tenant(self, t: TenantRow, now: float) -> None:
        self._upsert(
            "tenants",
            {"name": t.name, "spec": encode(t.spec).decode(), "runtime": t.runtime, "size_bytes": t.size_bytes,
             "device_id": t.device_id, "state": t.state, "detail": t.detail, "tried": json.dumps(list(t.tried)),
             "pinned": t.pinned, "moving_from": t.moving_from, "arrival_rps": t.arrival_rps,
             "latency_p50_ms": t.latency_p50_ms,
             "latency_p95_ms": t.latency_p95_ms, "errors": t.errors, "updated_at": now,
             "requested": encode(t.requested).decode() if t.requested is not None else None},
            "name",
        )
        self._tenant_written(t.name)

    def delete_tenant(self, name: str) -> None:
        self.db.execute("DELETE FROM tenants WHERE name = ?", (name,))
        self._tenant_written(name)

    def record_tenant_window(self, name: str, w: TenantWindow, now: float) -> None:
        self.db.execute(
            "UPDATE tenants SET arrival_rps = ?, latency_p50_ms = ?, latency_p95_ms = ?, errors = ?,"
            " updated_at = ? WHERE name = ?",
            (w.arrival_rps, w.latency_p50_ms, w.latency_p95_ms, w.errors, now, name),
        )
        self._tenant_written(name)

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
        return CommandRow(int(cur.lastrowid or 0), command_id, device_id, tenant, kind, payload, "pending", 0,
                          now, now, "")

    def command(self, command_id: str) -> CommandRow | None:
        rows = self._rows("SELECT * FROM commands WHERE command_id = ?", (command_id,))
        return self._command(rows[0]) if rows else None

    def commands(self, *, device_id: str | None = None, tenant: str | None = None, kind: str | None = None,
                 outstanding: bool = False) -> list[CommandRow]:
        """Commands in creation order, filtered; ``outstanding`` keeps pending and sent ones."""
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

    def finish_command(self, command_id: str, state: str, result: str) -> None:
        if state not in COMMAND_STATES:
            raise ValueError(f"unknown command state {state!r}")
        self.db.execute(
            "UPDATE commands SET state = ?, result = ? WHERE command_id = ?", (state, result, command_id)
        )

    def expedite(self, device_id: str, now: float) -> None:
        """Make every outstanding command to ``device_id`` due now (the device just came back)."""
        self.db.execute(
            "UPDATE commands SET next_attempt_at = ? WHERE device_id = ? AND state IN ('pending', 'sent')"
            " AND next_attempt_at > ?",
            (now, device_id, now),
        )

"""The store's in-memory rows equal what SQLite holds after any writes: committed, autocommitted, rolled
back, or undone by a failed savepoint inside a transaction that commits (the coordinator's batches)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from edgefleet.coordinator.fleet import MB
from edgefleet.coordinator.store import TENANT_STATES, Store, TenantRow
from edgefleet.wire import Birth, Capabilities, DeviceWindow, Telemetry, TenantSpec, TenantWindow

DEVICES = ("d1", "d2", "d3")
TENANTS = ("a", "b", "c")
COMMANDS = ("c1", "c2", "c3", "c4")


def birth(device: str, budget_mb: int, tenants: list[str]) -> Birth:
    caps = Capabilities(device_kind="x86_64-cpu", runtimes=["onnxruntime"], accelerators=["cpu"], cpu_count=2,
                        memory_total_bytes=8 << 30, memory_budget_bytes=budget_mb * MB, max_payload_bytes=1 << 20,
                        cached_models=[])
    return Birth(device_id=device, boot_id="b1", capabilities=caps, tenants=tenants, agent_version="t", ts=0.0)


def tenant(name: str, device: str | None, state: str, size_mb: int) -> TenantRow:
    return TenantRow.of(spec=TenantSpec(name=name, model="ocr-rec", slo_ms=50.0), runtime="onnxruntime",
                     size_bytes=size_mb * MB, device_id=device, state=state, detail="", tried=())


def window(device: str, cpu: float) -> Telemetry:
    return Telemetry(device_id=device, boot_id="b1", seq=0, window_start=0.0, window_end=1.0,
                     device=DeviceWindow(cpu_percent=cpu, memory_used_bytes=1, memory_budget_bytes=2,
                                         model_memory_bytes=3 * MB), tenants=[])


def twindow(name: str, p95: float) -> TenantWindow:
    return TenantWindow(tenant=name, model="ocr-rec", variant="fp32", slo_ms=50.0, arrival_rps=2.5,
                        latency_p50_ms=p95 / 2, latency_p95_ms=p95, errors=1)


def add_command(s: Store, cid: str, device: str, name: str) -> None:
    if s.command(cid) is None:
        s.add_command(command_id=cid, device_id=device, tenant=name, kind="deploy", payload=b"x", now=1.0)


def mark_sent(s: Store, cid: str, attempts: int) -> None:
    if s.command(cid) is not None:
        s.mark_sent(cid, attempts, 10.0 + attempts)


def finish(s: Store, cid: str, state: str) -> None:
    if s.command(cid) is not None:
        s.finish_command(cid, state, "done")


Write = Callable[[Store], None]
devices = st.sampled_from(DEVICES)
names = st.sampled_from(TENANTS)
cids = st.sampled_from(COMMANDS)
writes: st.SearchStrategy[Write] = st.one_of(
    st.builds(lambda d, mb, ts: lambda s: s.record_birth(birth(d, mb, ts), 1.0), devices, st.integers(1, 99),
              st.lists(names, max_size=2)),
    st.builds(lambda d: lambda s: s.set_offline(d, "gone"), devices),
    st.builds(lambda d: lambda s: s.set_online(d, ["a"], 2.0), devices),
    st.builds(lambda d: lambda s: s.touch(d, 3.0), devices),
    st.builds(lambda d, cpu: lambda s: s.record_window(window(d, cpu), 4.0), devices, st.floats(0, 100)),
    st.builds(lambda n, d, state, mb: lambda s: s.put_tenant(tenant(n, d, state, mb), 5.0), names,
              st.one_of(st.none(), devices), st.sampled_from(TENANT_STATES), st.integers(1, 30)),
    st.builds(lambda n: lambda s: s.delete_tenant(n), names),
    st.builds(lambda n, p95: lambda s: s.record_tenant_window(n, twindow(n, p95), 6.0), names, st.floats(1, 500)),
    st.builds(lambda c, d, n: lambda s: add_command(s, c, d, n), cids, devices, names),
    st.builds(lambda c, a: lambda s: mark_sent(s, c, a), cids, st.integers(1, 5)),
    st.builds(lambda c, state: lambda s: finish(s, c, state), cids, st.sampled_from(("acked", "failed", "cancelled"))),
    st.builds(lambda d: lambda s: s.expedite(d, 7.0), devices),
)
# a step: writes autocommitted, in a transaction that commits or rolls back, or in a committed transaction
# whose second half is a savepoint that fails (as one bad message in a batch)
steps = st.tuples(st.sampled_from(("plain", "commit", "rollback", "savepoint")), st.lists(writes, min_size=1, max_size=5))


def held_equals_stored(store: Store) -> None:
    stored_devices, stored_tenants = store.reread_devices(), store.reread_tenants()
    assert store.devices() == stored_devices
    assert store.tenants() == stored_tenants
    assert store.online_ids() == {d.device_id for d in stored_devices if d.online}
    for d in (*DEVICES, "never"):
        assert store.tenants_on(d) == [t for t in stored_tenants if t.device_id == d]
    for state in TENANT_STATES:
        assert store.tenants_in(state) == [t for t in stored_tenants if t.state == state]
    assert store.commands(outstanding=True) == [c for c in store.commands() if c.state in ("pending", "sent")]


def apply(store: Store, how: str, batch: list[Write]) -> None:
    if how == "plain":
        for w in batch:
            w(store)
        return
    if how == "savepoint":
        half = len(batch) // 2
        with store.atomic():
            for w in batch[:half]:
                w(store)
            with contextlib.suppress(RuntimeError), store.atomic():
                for w in batch[half:]:
                    w(store)
                raise RuntimeError("one message failed")
        return
    with pytest.raises(RuntimeError) if how == "rollback" else contextlib.nullcontext(), store.atomic():
        for w in batch:
            w(store)
        if how == "rollback":
            raise RuntimeError("roll back")


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, min_size=1, max_size=10))
def test_the_rows_held_in_memory_equal_the_database_after_any_writes(plan: list[tuple[str, list[Write]]]) -> None:
    store = Store(":memory:")
    for how, batch in plan:
        apply(store, how, batch)
        held_equals_stored(store)
    store.close()


def test_a_reopened_store_holds_what_was_committed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.record_birth(birth("d1", 50, ["a"]), 1.0)
    with store.atomic():
        store.put_tenant(tenant("a", "d1", "running", 10), 2.0)
        store.record_window(window("d1", 42.0), 3.0)  # written at the commit's flush
        store.record_tenant_window("a", twindow("a", 80.0), 3.0)
    store.close()
    again = Store(tmp_path / "s.db")
    d1, a = again.device("d1"), again.tenant("a")
    assert d1 is not None and (d1.cpu_percent, d1.last_seen) == (42.0, 3.0)
    assert a is not None and (a.latency_p95_ms, a.arrival_rps, a.errors) == (80.0, 2.5, 1)
    assert again.tenants_on("d1") == [a] and again.tenants_in("running") == [a]
    held_equals_stored(again)
    again.close()


def test_a_failed_savepoint_undoes_only_its_own_writes() -> None:
    store = Store(":memory:")
    with store.atomic():
        store.record_birth(birth("d1", 50, []), 1.0)
        with contextlib.suppress(RuntimeError), store.atomic():
            store.put_tenant(tenant("a", "d1", "running", 10), 2.0)
            store.set_offline("d1", "test")
            raise RuntimeError("this message fails")
        store.put_tenant(tenant("b", "d1", "deploying", 10), 3.0)
    d1 = store.device("d1")
    assert d1 is not None and d1.online  # the failed block's set_offline is undone, the birth stays
    assert [t.name for t in store.tenants()] == ["b"]
    held_equals_stored(store)


def _schema(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])


def test_a_version_1_database_is_migrated_step_by_step_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    import sqlite_utils

    from edgefleet.coordinator.store import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(sqlite3.connect(path))
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.execute("INSERT INTO meta (key, value) VALUES ('schema', '1')")
    MIGRATIONS[0](db)  # the tables as version 1 had them: no moving_from, no requested
    spec_json = '{"name":"a","model":"ocr-rec","slo_ms":50.0}'
    db.execute("INSERT INTO tenants (name, spec, runtime, size_bytes, device_id, state, detail, tried) VALUES"
               " ('a', ?, 'onnxruntime', 10, 'd1', 'running', '', '[]')", (spec_json,))
    db.conn.commit()
    db.conn.close()
    store = Store(path)
    a = store.tenant("a")
    assert a is not None and a.state == "running" and a.moving_from is None and a.requested is None
    store.close()
    assert _schema(path) == SCHEMA_VERSION == len(MIGRATIONS)
    again = Store(path)  # nothing left to do
    assert again.tenant("a") == a
    again.close()


def test_a_fresh_database_is_at_the_current_version_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from edgefleet.coordinator.store import SCHEMA_VERSION, SchemaError

    Store(tmp_path / "s.db").close()
    assert _schema(tmp_path / "s.db") == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(SchemaError, match="newer edgefleet"):
        Store(tmp_path / "s.db")


def test_a_version_4_tenant_keeps_its_asked_and_running_spec_and_metrics_in_version_5(tmp_path: Path) -> None:
    """Version 5 splits the one tenants table into spec, status and metrics: a reconfigured tenant's
    running spec (the old ``spec``) and asked spec (the old ``requested``), its status and its figures move."""
    import sqlite3

    import sqlite_utils

    from edgefleet.coordinator.store import MIGRATIONS, TenantState

    path = tmp_path / "v4.db"
    db = sqlite_utils.Database(sqlite3.connect(path))
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.execute("INSERT INTO meta (key, value) VALUES ('schema', '4')")
    for step in MIGRATIONS[:4]:
        step(db)
    asked = '{"name":"a","model":"ocr-rec","slo_ms":50.0}'
    running = '{"name":"a","model":"ocr-rec","slo_ms":50.0,"max_batch":16}'
    db.execute("INSERT INTO tenants (name, spec, runtime, size_bytes, device_id, state, detail, tried, pinned,"
               " arrival_rps, latency_p50_ms, latency_p95_ms, errors, updated_at, moving_from, requested) VALUES"
               " ('a', ?, 'onnxruntime', 10, 'd2', 'moving', 'moving from d1', '[\"d2\"]', NULL, 2.5, 4.0, 9.0, 1,"
               " 5.0, 'd1', ?)", (running, asked))
    db.conn.commit()
    db.conn.close()
    store = Store(path)
    a = store.tenant("a")
    assert a is not None
    assert (a.asked.max_batch, a.spec.max_batch, a.requested) == (8, 16, a.asked)
    assert (a.state, a.device_id, a.moving_from, a.tried, a.detail, a.size_bytes) == (
        TenantState.MOVING, "d2", "d1", ("d2",), "moving from d1", 10)
    assert (a.arrival_rps, a.latency_p50_ms, a.latency_p95_ms, a.errors) == (2.5, 4.0, 9.0, 1)
    assert store.reread_tenants() == [a] and store.tenants_on("d2") == [a]
    store.close()

"""The cached fleet snapshot equals a full rebuild from the store after any sequence of writes, rolled-back
transactions included, and is shared by decisions between two writes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from edgefleet.coordinator.fleet import MB
from edgefleet.coordinator.snapshots import CHARGED_STATES, SnapshotCache, build_snapshot
from edgefleet.coordinator.store import TENANT_STATES, Store, TenantRow
from edgefleet.wire import Birth, Capabilities, DeviceWindow, Telemetry, TenantSpec

DEVICES = ("d1", "d2", "d3")
TENANTS = ("a", "b", "c", "e")


def birth(device: str, budget_mb: int, boot: str = "b1") -> Birth:
    caps = Capabilities(device_kind="x86_64-cpu", runtimes=["onnxruntime"], accelerators=["cpu"], cpu_count=2,
                        memory_total_bytes=8 << 30, memory_budget_bytes=budget_mb * MB, max_payload_bytes=1 << 20,
                        cached_models=[])
    return Birth(device_id=device, boot_id=boot, capabilities=caps, tenants=[], agent_version="test", ts=0.0)


def tenant(name: str, device: str | None, state: str, size_mb: int, variant: str = "fp32") -> TenantRow:
    return TenantRow.of(spec=TenantSpec(name=name, model="ocr-rec", slo_ms=50.0, variant=variant),
                     runtime="onnxruntime", size_bytes=size_mb * MB, device_id=device, state=state, detail="",
                     tried=())


def window(device: str, cpu: float, model_mb: int) -> Telemetry:
    return Telemetry(device_id=device, boot_id="b1", seq=0, window_start=0.0, window_end=1.0,
                     device=DeviceWindow(cpu_percent=cpu, memory_used_bytes=1, memory_budget_bytes=2,
                                         model_memory_bytes=model_mb * MB),
                     tenants=[])


Write = Callable[[Store], None]

devices = st.sampled_from(DEVICES)
writes: st.SearchStrategy[Write] = st.one_of(
    st.builds(lambda d, mb: lambda s: s.record_birth(birth(d, mb), 1.0), devices, st.integers(1, 100)),
    st.builds(lambda d: lambda s: s.set_offline(d, "test"), devices),
    st.builds(lambda d: lambda s: s.set_online(d, [], 2.0), devices),
    st.builds(lambda d, cpu, mb: lambda s: s.record_window(window(d, cpu, mb), 3.0), devices,
              st.floats(0, 100), st.integers(0, 50)),
    st.builds(lambda n, d, state, mb, v: lambda s: s.put_tenant(tenant(n, d, state, mb, v), 4.0),
              st.sampled_from(TENANTS), st.one_of(st.none(), devices, st.just("never-born")),
              st.sampled_from(TENANT_STATES), st.integers(1, 30), st.sampled_from(("fp32", "int8"))),
    st.builds(lambda n: lambda s: s.delete_tenant(n), st.sampled_from(TENANTS)),
)
# a step: some writes, either autocommitted one by one or in a transaction that commits or rolls back
steps = st.tuples(st.sampled_from(("plain", "commit", "rollback")), st.lists(writes, min_size=1, max_size=4))


def _apply(store: Store, how: str, batch: list[Write], cache: SnapshotCache, ts: float) -> None:
    if how == "plain":
        for w in batch:
            w(store)
            assert cache.snapshot(ts) == build_snapshot(store, ts)
        return
    with pytest.raises(RuntimeError) if how == "rollback" else contextlib.nullcontext(), store.atomic():
        for w in batch:
            w(store)
            assert cache.snapshot(ts) == build_snapshot(store, ts)  # inside the open transaction too
        if how == "rollback":
            raise RuntimeError("roll back")


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, min_size=1, max_size=12))
def test_the_cached_snapshot_equals_a_full_rebuild_after_any_writes(plan: list[tuple[str, list[Write]]]) -> None:
    store = Store(":memory:")
    cache = SnapshotCache(store)
    assert cache.snapshot(0.0) == build_snapshot(store, 0.0)
    for i, (how, batch) in enumerate(plan):
        ts = float(i + 1)
        _apply(store, how, batch, cache, ts)
        assert cache.snapshot(ts) == build_snapshot(store, ts)
    store.close()


def test_decisions_between_writes_share_one_snapshot_and_a_write_shows_at_once() -> None:
    store = Store(":memory:")
    store.record_birth(birth("d1", 50), 1.0)
    store.record_birth(birth("d2", 50), 1.0)
    cache = SnapshotCache(store)
    first = cache.snapshot(5.0)
    assert cache.snapshot(5.0) is first and cache.rebuilds == 1 and cache.refreshes == 0
    store.put_tenant(tenant("a", "d1", "deploying", 20), 5.0)
    charged = cache.snapshot(5.0)
    assert cache.rebuilds == 1 and cache.refreshes == 1  # one row read again, not the fleet
    d1, d2 = charged.get("d1"), charged.get("d2")
    assert d1 is not None and d1.free_bytes == 30 * MB
    assert d2 is first.get("d2")  # an untouched device's snapshot is kept as it was
    store.put_tenant(tenant("a", "d2", "moving", 20), 6.0)  # the charge follows the tenant
    moved = cache.snapshot(6.0)
    assert [t.name for t in moved.devices[0].tenants] == [] and [t.name for t in moved.devices[1].tenants] == ["a"]
    store.put_tenant(tenant("a", "d2", "unplaced", 20), 7.0)  # an unplaced row holds no memory
    assert "unplaced" not in CHARGED_STATES and cache.snapshot(7.0).devices[1].tenants == ()
    store.close()

"""The coordinator's state machine driven directly: a fake clock, a real SQLite store, captured sends."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec
import pytest

from edgefleet.coordinator.commands import Outbox
from edgefleet.coordinator.config import CommandPolicy
from edgefleet.coordinator.engine import Engine
from edgefleet.coordinator.fleet import MB, ModelFacts
from edgefleet.coordinator.models import StaticModels
from edgefleet.coordinator.placement import MostFreeMemory
from edgefleet.coordinator.store import Store
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    Death,
    Deploy,
    DeviceWindow,
    OpReply,
    ServiceProfile,
    Telemetry,
    TenantSpec,
    TenantWindow,
    Topics,
    Undeploy,
    decode_command,
)

MODELS = StaticModels({
    ("ocr-rec", "fp32"): ModelFacts("ocr-rec", "fp32", "onnxruntime", 10_857_958),
    ("ocr-rec", "int8"): ModelFacts("ocr-rec", "int8", "onnxruntime", 2_900_000, fidelity=0.99),
    ("face-detect", "fp32"): ModelFacts("face-detect", "fp32", "litert", 229_714),
})
# sends at t, then t + 1 + 0.5, then + 1 + 1, then declared failed at + 1 + 2
POLICY = CommandPolicy(ack_timeout_s=1.0, max_attempts=3, backoff_s=0.5, backoff_max_s=2.0)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.now = 1000.0
        self.sent: list[tuple[str, Deploy | Undeploy]] = []
        self._settled: list[tuple[str, str, OpReply]] = []
        self.store_path = tmp_path / "c.db"
        self.store = Store(self.store_path)
        self.topics = Topics("ef")
        self.outbox = Outbox(self.store, self.topics, POLICY,
                             lambda topic, payload: self.sent.append((topic, decode_command(payload))))
        self.engine = Engine(store=self.store, outbox=self.outbox, models=MODELS, placement=MostFreeMemory(),
                             clock=lambda: self.now, device_timeout_s=30.0)
        self.boots: dict[str, int] = {}

    @property
    def settled(self) -> list[tuple[str, str, OpReply]]:
        """Every operator call settled so far (taken from the engine's tenants, as the desk takes them)."""
        self._settled.extend(tuple(a) for a in self.engine.tenants.take_answers())
        return self._settled

    def tick(self, advance: float = 0.0) -> list[Deploy | Undeploy]:
        """Advance the clock, run the timer duties, return what was sent."""
        self.now += advance
        before = len(self.sent)
        self.engine.tick()
        return [c for _, c in self.sent[before:]]

    def birth(self, device: str, budget_mb: float = 100, runtimes: tuple[str, ...] = ("onnxruntime",),
              tenants: tuple[str, ...] = (), new_boot: bool = False) -> None:
        if new_boot or device not in self.boots:
            self.boots[device] = self.boots.get(device, 0) + 1
        caps = Capabilities(device_kind="x86_64-cpu", runtimes=list(runtimes), accelerators=["cpu"], cpu_count=4,
                            memory_total_bytes=8 << 30, memory_budget_bytes=int(budget_mb * MB),
                            max_payload_bytes=1 << 20, cached_models=[])
        self.engine.birth(Birth(device_id=device, boot_id=f"boot{self.boots[device]}", capabilities=caps,
                                tenants=list(tenants), agent_version="test", ts=self.now))

    def ack(self, cmd: Deploy | Undeploy, ok: bool = True, result: Literal["applied", "duplicate"] = "applied",
            message: str = "") -> None:
        self.engine.ack(Ack(command_id=cmd.command_id, device_id=cmd.device_id, ok=ok,
                            result=result if ok else "failed", code="" if ok else "load_failed",
                            message=message), cmd.device_id)

    def state(self, name: str) -> tuple[str, str | None]:
        t = self.store.tenant(name)
        assert t is not None
        return t.state, t.device_id


def spec(name: str = "t1", model: str = "ocr-rec") -> TenantSpec:
    return TenantSpec(name=name, model=model, slo_ms=50.0)


@pytest.fixture()
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_deploy_places_and_ack_makes_it_running(rig: Rig) -> None:
    rig.birth("d1", budget_mb=50)
    rig.birth("d2", budget_mb=100)
    assert rig.engine.tenants.deploy(spec()) is None  # the answer comes with the ack
    [cmd] = rig.tick()
    assert isinstance(cmd, Deploy) and cmd.device_id == "d2" and len(cmd.command_id) == 32
    assert rig.sent[-1][0] == "ef/v1/devices/d2/commands"
    assert rig.state("t1") == ("deploying", "d2")
    rig.ack(cmd, message="serving")
    assert rig.state("t1") == ("running", "d2")
    assert rig.settled[-1][:2] == ("t1", "deploy") and rig.settled[-1][2].ok
    assert rig.tick(10) == []  # acked: never sent again


def test_retries_resend_same_id_with_backoff_then_try_another_device(rig: Rig) -> None:
    rig.birth("d1", budget_mb=100)
    rig.birth("d2", budget_mb=50)
    rig.engine.tenants.deploy(spec())
    [first] = rig.tick()
    assert first.device_id == "d1"
    assert rig.tick(1.4) == []  # 1 s ack timeout + 0.5 s backoff not over yet
    [second] = rig.tick(0.1)  # t + 1.5
    assert second == first  # same command id, same bytes
    assert rig.tick(1.9) == []
    [third] = rig.tick(0.1)  # + 1 + 1
    assert third.command_id == first.command_id
    # no ack after 3 sends (+ 1 + 2): failed on d1, so the tenant is tried once on d2
    [moved] = rig.tick(3.0)
    assert isinstance(moved, Deploy) and moved.device_id == "d2" and moved.command_id != first.command_id
    assert rig.state("t1") == ("deploying", "d2")
    assert "d1: no ack after 3 attempts" in rig.store.tenant("t1").detail  # type: ignore[union-attr]
    rig.ack(moved, result="duplicate")  # a duplicate is a success
    assert rig.state("t1") == ("running", "d2")


def test_failed_ack_tries_another_device_once_then_unplaced(rig: Rig) -> None:
    rig.birth("d1")
    rig.birth("d2")
    rig.birth("d3")
    rig.engine.tenants.deploy(spec())
    [a] = rig.tick()
    rig.ack(a, ok=False, message="out of memory")
    [b] = rig.tick()
    assert b.device_id != a.device_id
    rig.ack(b, ok=False, message="out of memory again")
    assert rig.tick() == []  # only one other device is tried
    state, device = rig.state("t1")
    assert (state, device) == ("unplaced", None)
    assert rig.store.tenant("t1").detail == f"{b.device_id}: load_failed: out of memory again"  # type: ignore[union-attr]
    name, kind, reply = rig.settled[-1]
    assert (name, kind, reply.ok, reply.code) == ("t1", "deploy", False, "deploy_failed")


def test_birth_reconciles_missing_and_stray_tenants(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    [cmd] = rig.tick()
    rig.ack(cmd)
    # the device restarts and lists a tenant the coordinator never assigned, but not t1
    rig.birth("d1", tenants=("stray",), new_boot=True)
    sent = rig.tick()
    kinds = sorted((type(c).__name__, c.tenant if isinstance(c, Undeploy) else c.tenant.name) for c in sent)
    assert kinds == [("Deploy", "t1"), ("Undeploy", "stray")]
    redeploy = next(c for c in sent if isinstance(c, Deploy))
    assert redeploy.command_id != cmd.command_id  # a fresh id: the old one was applied already
    assert rig.state("t1") == ("deploying", "d1")
    # the same birth again (the agent republishes after every change) sends nothing new
    rig.birth("d1", tenants=("stray",))
    assert rig.tick() == []


def test_death_moves_tenants_to_another_device(rig: Rig) -> None:
    rig.birth("d1", budget_mb=100)
    rig.birth("d2", budget_mb=50)
    rig.engine.tenants.deploy(spec())
    [cmd] = rig.tick()
    rig.ack(cmd)
    rig.engine.death(Death(device_id="d1", reason="lost", boot_id="boot1"))
    [moved] = rig.tick()
    assert isinstance(moved, Deploy) and moved.device_id == "d2"
    assert rig.state("t1") == ("deploying", "d2")
    assert rig.store.device("d1").online is False  # type: ignore[union-attr]
    # a retained death replayed later changes nothing
    rig.engine.death(Death(device_id="d1", reason="lost", boot_id="boot1"))
    assert rig.tick() == []


def test_death_without_room_leaves_unplaced_until_capacity_appears(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    rig.ack(rig.tick()[0])
    rig.engine.death(Death(device_id="d1", reason="shutdown"))
    assert rig.state("t1") == ("unplaced", None)
    assert "d1 offline (shut down); no device fits" in rig.store.tenant("t1").detail  # type: ignore[union-attr]
    rig.birth("d9")
    [cmd] = rig.tick()
    assert isinstance(cmd, Deploy) and cmd.device_id == "d9"


def test_silent_device_is_declared_dead(rig: Rig) -> None:
    rig.birth("d1", budget_mb=100)
    rig.birth("d2", budget_mb=50)
    rig.engine.tenants.deploy(spec())
    rig.ack(rig.tick()[0])
    rig.now += 20
    rig.birth("d2")  # d2 keeps talking, d1 does not
    [moved] = rig.tick(11)  # d1 silent for 31 s > 30 s
    assert moved.device_id == "d2"
    assert rig.store.device("d1").detail.startswith("silent for")  # type: ignore[union-attr]


def test_a_device_heard_recently_is_not_dead_while_its_messages_wait_in_the_queue(rig: Rig) -> None:
    """Liveness counts arrival (stamped on the network thread), not handling: d1's windows arrived 5 s
    ago but wait behind a backlog, so 31 s after its last *handled* message it is still alive; once
    nothing has arrived for more than 30 s it is declared dead."""
    rig.birth("d1")
    rig.now += 31
    rig.engine.check_liveness({"d1": rig.now - 5})  # arrived 5 s ago, not handled yet
    d1 = rig.store.device("d1")
    assert d1 is not None and d1.online
    rig.now += 26  # the latest arrival is now 31 s old
    rig.engine.check_liveness({"d1": rig.now - 31})
    d1 = rig.store.device("d1")
    assert d1 is not None and not d1.online and d1.detail.startswith("silent for 31 s")


def test_commands_to_an_offline_device_wait(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    rig.ack(rig.tick()[0])
    assert rig.engine.tenants.undeploy("t1") is None  # Undeploy queued, not sent yet
    rig.engine.death(Death(device_id="d1", reason="lost"))
    assert rig.store.tenant("t1") is None  # removed from the plan; the device is told when back
    assert rig.settled[-1][:2] == ("t1", "undeploy")
    assert rig.tick(5) == []  # offline: nothing sent, no attempt spent
    [pending] = rig.outbox.outstanding(device_id="d1")
    assert pending.attempts == 0
    rig.birth("d1", tenants=("t1",), new_boot=True)  # back, still hosting t1
    [cmd] = rig.tick()
    assert isinstance(cmd, Undeploy) and cmd.command_id == pending.command_id  # no second Undeploy
    rig.birth("d1", tenants=("t1",))
    assert rig.tick() == []


def test_undeploy_waits_for_ack_and_orders_after_deploy(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    [dep] = rig.tick()
    assert rig.engine.tenants.undeploy("t1") is None  # removing: answered on the ack
    assert rig.settled[-1][:2] == ("t1", "deploy") and rig.settled[-1][2].code == "cancelled"
    [und] = rig.tick()
    assert isinstance(und, Undeploy)
    assert rig.state("t1") == ("removing", "d1")
    rig.ack(und)
    assert rig.store.tenant("t1") is None
    assert rig.settled[-1][:2] == ("t1", "undeploy") and rig.settled[-1][2].ok
    assert dep.command_id != und.command_id


def test_deploy_conflicts_and_idempotence(rig: Rig) -> None:
    rig.birth("d1")
    assert rig.engine.tenants.deploy(spec()) is None
    rig.ack(rig.tick()[0])
    same = rig.engine.tenants.deploy(spec())
    assert same is not None and same.ok and same.device_id == "d1"
    other = rig.engine.tenants.deploy(TenantSpec(name="t1", model="ocr-rec", slo_ms=99.0))
    assert other is not None and (other.ok, other.code) == (False, "conflict")
    unknown = rig.engine.tenants.deploy(spec("t2", model="nope"))
    assert unknown is not None and unknown.code == "unknown_model"
    nofit = rig.engine.tenants.deploy(spec("t3", model="face-detect"))
    assert nofit is not None and nofit.code == "no_fit" and "d1: no runtime litert" in nofit.message
    pinned = rig.engine.tenants.deploy(spec("t4"), pinned="d7")
    assert pinned is not None and "d7: unknown device" in pinned.message
    gone = rig.engine.tenants.undeploy("never")
    assert gone is not None and gone.code == "unknown_tenant"


def test_placement_counts_memory_of_assigned_tenants(rig: Rig) -> None:
    rig.birth("d1", budget_mb=25)  # room for two 10.9 MB tenants, not three
    assert rig.engine.tenants.deploy(spec("a")) is None
    assert rig.engine.tenants.deploy(spec("b")) is None
    third = rig.engine.tenants.deploy(spec("c"))
    # 25 MB - 2 x 10.9 MB = 3.3 MB free < 10.9 MB, printed in MiB: 10.9e6 / 2^20 = 10.4, 3.3e6 / 2^20 = 3.1
    assert third is not None and third.message.endswith("d1: needs 10.4 MiB, 3.1 MiB free")


def test_decisions_in_one_transaction_see_each_other_and_a_rollback_frees_its_slot(rig: Rig) -> None:
    """The snapshot placement reads is never stale across a write: two deploys in one transaction (as
    the sim and a batch of operator calls do) cannot both take the last free slot, a device gone
    offline earlier in the transaction is not chosen, and what a rolled-back transaction charged is
    free again."""
    rig.birth("d1", budget_mb=15)  # room for one 10.9 MB tenant each
    rig.birth("d2", budget_mb=12)
    rig.birth("d3", budget_mb=40)
    with rig.store.atomic():
        rig.store.set_offline("d3", "test")  # the biggest device leaves first
        assert rig.engine.tenants.deploy(spec("a")) is None
        assert rig.engine.tenants.deploy(spec("b")) is None
        last = rig.engine.tenants.deploy(spec("c"))
    # 15 MB - 10.9 MB = 4.1 MB free on d1, 12 MB - 10.9 MB = 1.1 MB on d2
    assert last is not None and last.code == "no_fit"
    # printed in MiB (/ 1.048576): 10.4, 4.0 and 1.1
    assert "d1: needs 10.4 MiB, 4.0 MiB free" in last.message and "d2: needs 10.4 MiB, 1.1 MiB free" in last.message
    assert (rig.state("a"), rig.state("b")) == (("deploying", "d1"), ("deploying", "d2"))
    with pytest.raises(RuntimeError), rig.store.atomic():
        rig.engine.tenants.undeploy("a")
        rig.store.delete_tenant("a")  # as if d1 had acked: its slot looks free inside the transaction
        assert rig.engine.tenants.deploy(spec("x")) is None
        assert rig.state("x") == ("deploying", "d1")
        raise RuntimeError("rolled back")
    assert rig.store.tenant("x") is None and rig.state("a") == ("deploying", "d1")
    again = rig.engine.tenants.deploy(spec("y"))  # d1 still holds a: the rolled-back charges are gone with it
    assert again is not None and again.code == "no_fit"
    rig.store.set_online("d3", [], rig.now)
    assert rig.engine.tenants.deploy(spec("y")) is None and rig.state("y") == ("deploying", "d3")


def window(device: str, seq: int, boot: str = "boot1", rps: float = 5.0) -> Telemetry:
    return Telemetry(
        device_id=device, boot_id=boot, seq=seq, window_start=seq * 5.0, window_end=seq * 5.0 + 5.0,
        device=DeviceWindow(cpu_percent=10.0, memory_used_bytes=1, memory_budget_bytes=2,
                            model_memory_bytes=11 * MB),
        tenants=[TenantWindow(tenant="t1", model="ocr-rec", variant="fp32", slo_ms=50.0, arrivals=25, errors=2,
                              arrival_rps=rps, latency_p50_ms=7.5, latency_p95_ms=20.0)],
    )


def test_telemetry_stored_once_and_summarised(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    rig.ack(rig.tick()[0])
    rig.engine.telemetry(window("d1", 0))
    rig.engine.telemetry(window("d1", 0, rps=99.0))  # a QoS 1 redelivery
    rig.engine.telemetry(window("d1", 1, rps=6.0))
    assert rig.store.telemetry_count("d1") == 2
    assert rig.engine.duplicate_windows == 1
    t = rig.store.tenant("t1")
    assert t is not None and (t.arrival_rps, t.latency_p50_ms, t.latency_p95_ms, t.errors) == (6.0, 7.5, 20.0, 2)
    assert rig.store.device("d1").model_memory_bytes == 11 * MB  # type: ignore[union-attr]


def test_stray_acks_are_ignored(rig: Rig) -> None:
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    [cmd] = rig.tick()
    rig.engine.ack(Ack(command_id="0" * 32, device_id="d1", ok=True, result="applied"), "d1")
    rig.engine.ack(Ack(command_id=cmd.command_id, device_id="d1", ok=True, result="applied"), "d2")
    assert rig.engine.stray_acks == 2
    assert rig.state("t1") == ("deploying", "d1")


def test_restart_resumes_outstanding_commands(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.birth("d1")
    first.engine.tenants.deploy(spec())
    [cmd] = first.tick()
    first.store.close()
    again = Rig(tmp_path)  # same database file
    again.now = first.now + 60
    again.birth("d1")  # the retained birth arrives again after the restart
    [resent] = again.tick()
    assert resent == cmd


def test_store_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.atomic():
        store.add_command(command_id="c1", device_id="d1", tenant="t1", kind="deploy", payload=b"x", now=1.0)
        with store.atomic():  # nested blocks join the outer transaction
            store.add_command(command_id="c2", device_id="d1", tenant="t1", kind="deploy", payload=b"y", now=1.0)
        raise RuntimeError("boom")
    assert store.commands() == []
    with store.atomic():
        store.add_command(command_id="c3", device_id="d1", tenant="t1", kind="deploy", payload=b"z", now=1.0)
    store.close()
    assert [c.command_id for c in Store(tmp_path / "s.db").commands()] == ["c3"]


def test_a_reconfiguration_takes_effect_at_its_ack_and_a_refused_one_changes_nothing(rig: Rig) -> None:
    import msgspec

    from edgefleet.wire import Configure

    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    [deploy] = rig.tick()
    rig.ack(deploy)
    wider = msgspec.structs.replace(spec(), max_batch=16)
    assert rig.engine.tenants.reconfigure("t1", wider, "batching pays") is None
    [cmd] = rig.tick()
    assert isinstance(cmd, Configure) and cmd.tenant == wider and cmd.device_id == "d1"
    t = rig.store.tenant("t1")
    assert t is not None and t.spec.max_batch == 8 and t.state == "running"  # not before the ack
    # a second change while one is in flight is refused
    reply = rig.engine.tenants.reconfigure("t1", msgspec.structs.replace(spec(), max_batch=2), "x")
    assert reply is not None and reply.code == "conflict"
    rig.ack(cmd)  # type: ignore[arg-type]
    t = rig.store.tenant("t1")
    assert t is not None and t.spec == wider and t.detail.startswith("reconfigured")
    narrower = msgspec.structs.replace(spec(), max_batch=2)
    assert rig.engine.tenants.reconfigure("t1", narrower, "test") is None
    [cmd] = rig.tick()
    rig.ack(cmd, ok=False, message="nope")  # type: ignore[arg-type]
    t = rig.store.tenant("t1")
    assert t is not None and t.spec == wider and "refused" in t.detail
    # another model under the tenant's name is not a reconfiguration
    other = rig.engine.tenants.reconfigure("t1", spec(model="face-detect"), "x")
    assert other is not None and other.code == "bad_request"


def test_an_undeployed_tenant_leaves_the_learning_placement(tmp_path: Path) -> None:
    """The model's expected demand and error book forget a tenant once it is gone, so neither the
    placement nor the published report keeps counting it."""
    from edgefleet.coordinator.perf.calibration import build_book
    from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement

    rig = Rig(tmp_path)
    live = LearnedModel(build_book())
    rig.engine.tenants.placement, rig.engine.tenants.model = ModelPlacement(), live
    rig.birth("d1")
    rig.engine.tenants.deploy(spec())
    [dep] = rig.tick()
    rig.ack(dep)
    t = window("d1", 1)
    done = TenantWindow(**{**msgspec.structs.asdict(t.tenants[0]), "completions": 25})
    rig.engine.telemetry(msgspec.structs.replace(t, tenants=[done]))
    assert "t1" in live.demand and "t1" in live.errors.stats
    rig.engine.tenants.undeploy("t1")
    [und] = rig.tick()
    rig.ack(und)
    assert "t1" not in live.demand and "t1" not in live.errors.stats


def _reconfigure(rig: Rig, new: TenantSpec) -> None:
    """The rebalancer's path: a Configure to the tenant's device, acked."""
    assert rig.engine.tenants.reconfigure(new.name, new, "test") is None
    [cmd] = rig.tick()
    rig.ack(cmd)  # type: ignore[arg-type]


def test_redeploying_the_operators_spec_after_a_reconfiguration_is_idempotent(rig: Rig) -> None:
    """The rebalancer changed variant and batching: the operator's manifest, applied again, is answered
    "already runs" with no command sent; any other spec under the name still conflicts."""
    from edgefleet.cli.fleet import format_status
    from edgefleet.coordinator.ops import fleet_status

    asked = TenantSpec(name="t1", model="ocr-rec", slo_ms=50.0, min_fidelity=0.9)
    rig.birth("d1")
    rig.engine.tenants.deploy(asked)
    rig.ack(rig.tick()[0])
    rig.engine.tenants.deploy(spec("t2"))
    rig.ack(rig.tick()[0])
    faster = msgspec.structs.replace(asked, variant="int8", max_batch=16)
    _reconfigure(rig, faster)
    t = rig.store.tenant("t1")
    assert t is not None and (t.spec, t.requested, t.asked) == (faster, asked, asked)
    assert t.size_bytes == 2_900_000  # charged for what runs

    again = rig.engine.tenants.deploy(asked)
    assert again is not None and (again.ok, again.device_id) == (True, "d1")
    assert again.message == ("t1 already runs on d1, reconfigured by the rebalancer: variant int8 (deployed fp32),"
                             " max_batch 16 (deployed 8)")
    assert rig.tick(10) == []  # nothing redeployed, nothing reconfigured back
    t = rig.store.tenant("t1")
    assert t is not None and t.spec == faster  # the rebalancer's choice stands
    for other in (faster, msgspec.structs.replace(asked, slo_ms=99.0), msgspec.structs.replace(asked, max_batch=16)):
        reply = rig.engine.tenants.deploy(other)
        assert reply is not None and (reply.ok, reply.code) == (False, "conflict")

    view = {v.name: v for v in fleet_status(rig.engine).tenants}
    assert (view["t1"].variant, view["t1"].max_batch, view["t1"].requested) == ("int8", 16, asked)
    assert (view["t2"].variant, view["t2"].max_batch, view["t2"].requested) == ("fp32", 8, None)
    text = format_status(fleet_status(rig.engine))
    assert "t1: variant int8 (deployed fp32), max_batch 16 (deployed 8)" in text and "t2:" not in text
    assert Store(rig.store_path).tenant("t1") == rig.store.tenant("t1")  # kept across a restart

    _reconfigure(rig, msgspec.structs.replace(asked, variant="int8"))  # a second change: still the first ask
    t = rig.store.tenant("t1")
    assert t is not None and t.requested == asked and t.spec.max_batch == 8
    _reconfigure(rig, asked)  # back as deployed: nothing differs, nothing is shown
    t = rig.store.tenant("t1")
    assert t is not None and t.spec == asked and t.requested is None
    assert "reconfigured by the rebalancer" not in format_status(fleet_status(rig.engine))


def test_a_database_from_before_the_requested_spec_is_migrated(tmp_path: Path) -> None:
    """The column is added to an existing database; a row written before it runs as asked (its stored
    spec is all that is known of the request), so redeploying that spec stays idempotent."""
    import sqlite3

    first = Rig(tmp_path)
    first.birth("d1")
    first.engine.tenants.deploy(spec())
    first.ack(first.tick()[0])
    first.store.close()
    with sqlite3.connect(tmp_path / "c.db") as db:
        # the schema before this column (version 2): one tenants table of spec, status and metrics
        db.execute("CREATE TABLE v2 AS SELECT t.name, t.spec, t.runtime, s.size_bytes, s.device_id, s.state, s.detail,"
                   " s.tried, t.pinned, m.arrival_rps, m.latency_p50_ms, m.latency_p95_ms, m.errors, t.updated_at,"
                   " s.moving_from FROM tenants t JOIN tenant_status s USING (name) LEFT JOIN tenant_metrics m USING (name)")
        for table in ("tenants", "tenant_status", "tenant_metrics"):
            db.execute(f"DROP TABLE {table}")
        db.execute("ALTER TABLE v2 RENAME TO tenants")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    again = Rig(tmp_path)
    t = again.store.tenant("t1")
    assert t is not None and t.state == "running" and t.requested is None and t.asked == spec()
    same = again.engine.tenants.deploy(spec())
    assert same is not None and same.ok and same.message == "t1 already runs on d1"
    wider = msgspec.structs.replace(spec(), max_batch=16)
    _reconfigure(again, wider)
    t = again.store.tenant("t1")
    assert t is not None and (t.spec, t.requested) == (wider, spec())


def test_an_acks_profile_makes_its_variant_placeable(tmp_path: Path) -> None:
    """A device that measured ocr-rec:int8 as it loaded it (the Ack of a Configure that swapped to it)
    teaches the learning placement a profile the calibration never had: a new int8 tenant is placed at
    once. A profile of a model the catalog lacks, or in a stray ack, changes nothing."""
    from edgefleet.coordinator.perf.calibration import build_book
    from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement

    rig = Rig(tmp_path)
    live = LearnedModel(build_book())
    rig.engine.tenants.placement, rig.engine.tenants.model = ModelPlacement(), live
    rig.birth("d1")  # reports x86_64-cpu: the book's x86-cpu
    int8 = TenantSpec(name="t2", model="ocr-rec", variant="int8", slo_ms=500.0)
    refused = rig.engine.tenants.deploy(int8)
    assert refused is not None and refused.code == "no_fit" and "no profile for ocr-rec:int8" in refused.message
    rig.engine.tenants.deploy(msgspec.structs.replace(int8, name="t1", variant="fp32"))
    [dep] = rig.tick()
    measured = ServiceProfile(model="ocr-rec", variant="int8", ms_by_batch={1: 12.0, 2: 23.0})

    def ack(profile: ServiceProfile, command_id: str = dep.command_id) -> None:
        rig.engine.ack(Ack(command_id=command_id, device_id="d1", ok=True, result="applied", profile=profile),
                       "d1")

    ack(msgspec.structs.replace(measured, model="no-such-model"))  # not in the catalog: ignored
    ack(measured, command_id="0" * 32)  # no such command: ignored
    assert live.learner.book.profile("ocr-rec", "int8", "x86-cpu") is None
    ack(measured)
    prof = live.learner.book.profile("ocr-rec", "int8", "x86-cpu")
    # the line through (1, 12) and (2, 23): c = 11, a = 1; the runtime is the catalog's
    assert prof is not None and (prof.curve.fixed_ms, prof.curve.per_row_ms, prof.runtime) == (
        pytest.approx(1.0), pytest.approx(11.0), "onnxruntime")
    assert rig.state("t1") == ("running", "d1")  # the ack did its usual work too
    assert rig.engine.tenants.deploy(int8) is None  # placed: the Deploy is on its way

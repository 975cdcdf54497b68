"""The desired state of tenants: where each should run, and how it gets there or moves away.

Placement decisions are taken here (through the ``Placement`` seam, on a snapshot of the store that
``coordinator.snapshots`` keeps current with every write), Deploy/Undeploy commands are queued in the outbox, and Acks move tenants along:
``deploying`` -> ``running`` when acked; a failed Deploy is tried on one other device, then the tenant
is ``unplaced`` with the reason in ``detail``; ``removing`` rows are deleted once the Undeploy is done.
A planned move is make-before-break: ``running`` on A -> ``moving`` (Deploy to B; A keeps serving) ->
``running`` on B when B acks (B is loaded, warm and subscribed), and only then the Undeploy to A; a move
whose Deploy fails goes back to ``running`` on A.
A reconfiguration (the rebalancer's batching or variant change) leaves the tenant ``running`` where it
is: a Configure carries the new spec, and the row takes it only when the device acks (until then the
old spec, and its memory charge, stand; a failed or cancelled Configure changes nothing). The operator's
own spec is kept beside the running one (``TenantRow.requested``): a deploy is idempotent against what
the operator asked, so re-applying a manifest after a reconfiguration answers "already runs", and only
a genuinely different spec conflicts.
An applied Deploy's or Configure's Ack may carry the service profile the device measured as it loaded
the variant; the performance model takes it (``PerfModel.profiled``).
Operator calls waiting on a tenant are told through the ``on_settled`` callback. What an Ack does to a
tenant is decided by the pure ``coordinator.lifecycle.transition`` and carried out here (``_apply``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import replace

from coordinator.commands import Exhausted, Outbox
from coordinator.fleet import FleetSnapshot, ModelFacts
from coordinator.lifecycle import Acked, Cancel, Step, UndeployAsked, moved_back, transition
from coordinator.models import ModelLookup, UnknownModel
from coordinator.placement import Decision, NoFit, Placed, Placement
from coordinator.placement.live import NullModel, PerfModel, demand_at
from coordinator.snapshots import SnapshotCache
from coordinator.store import CommandRow, Store, TenantRow, TenantState
from edgefleet.wire import Ack, Configure, OpReply, ServiceProfile, TenantSpec
from edgefleet.wire.codec import decode

log = logging.getLogger(__name__)

MAX_DEVICES_PER_ROUND = 2  # a failed Deploy is tried on one other device, once

# (tenant, "deploy" | "undeploy", reply): an operator call about ``tenant`` has its final answer.
Settled = Callable[[str, str, OpReply], None]


def reconfigured(running: TenantSpec, asked: TenantSpec) -> str:
    """How ``running`` differs from what was ``asked``: ``"variant int8 (deployed fp32), max_batch 16
    (deployed 8)"``."""
    fields = ("variant", "max_batch", "slo_ms", "min_fidelity")
    diffs = [f"{f} {getattr(running, f)} (deployed {getattr(asked, f)})" for f in fields
             if getattr(running, f) != getattr(asked, f)]
    return ", ".join(diffs) or "as deployed"


class Tenants:
    def __init__(self, *, store: Store, outbox: Outbox, models: ModelLookup, placement: Placement,
                 clock: Callable[[], float], settled: Settled | None = None, model: PerfModel | None = None) -> None:
        self.store = store
        self.outbox = outbox
        self.models = models
        self.placement = placement
        self.model: PerfModel = model if model is not None else NullModel()  # the engine's
        self.clock = clock
        self.on_settled: Settled = settled or (lambda tenant, kind, reply: None)
        self.stray_acks = 0
        self.snapshots = SnapshotCache(store)

    # -- snapshot ---------------------------------------------------------------------------------
    def snapshot(self) -> FleetSnapshot:
        """The fleet now, with every write so far (this transaction's included) applied."""
        return self.snapshots.snapshot(self.clock())

    @staticmethod
    def facts_of(t: TenantRow) -> ModelFacts:
        return ModelFacts(t.spec.model, t.spec.variant, t.runtime, t.size_bytes)

    # -- placing ----------------------------------------------------------------------------------
    def _decide(self, spec: TenantSpec, facts: ModelFacts, *, exclude: tuple[str, ...] = (),
                pinned: str | None = None) -> Decision:
        fleet = self.snapshot()
        if pinned is not None:
            if fleet.get(pinned) is None:
                return NoFit(f"{pinned}: unknown device")
            fleet = fleet.only(pinned)
        candidates = fleet.excluding(exclude)
        if exclude and not candidates.devices:
            return NoFit(f"no device left to try after {', '.join(exclude)}")
        self.model.declare(spec)  # its declared demand is the model's prior from now on
        return self.placement.place(spec, facts, candidates, self.model.predictor())

    def _assign(self, t: TenantRow, placed: Placed, tried: tuple[str, ...], detail: str) -> None:
        now = self.clock()
        row = replace(t, device_id=placed.device_id, state=TenantState.DEPLOYING, tried=tried, detail=detail)
        self.store.put_tenant(row, now)
        self.outbox.deploy(placed.device_id, t.spec, now)
        log.info("tenant %s -> %s (%s)", t.name, placed.device_id, placed.reason)

    def _unplace(self, t: TenantRow, detail: str, *, settle: bool = True) -> None:
        self.store.put_tenant(replace(t, device_id=None, state=TenantState.UNPLACED, detail=detail), self.clock())
        log.warning("tenant %s unplaced: %s", t.name, detail)
        if settle:
            self.on_settled(t.name, "deploy", OpReply(ok=False, code="deploy_failed", message=detail))

    def move_off(self, t: TenantRow, why: str) -> None:
        """Find ``t`` a new device after it lost its own (which is offline and excluded)."""
        if t.pinned is not None:
            self._unplace(t, f"{why}; pinned to {t.pinned}, waiting for it", settle=False)
            return
        decision = self._decide(t.spec, self.facts_of(t))
        if isinstance(decision, Placed):
            self._assign(t, decision, (decision.device_id,), f"moved: {why}")
        else:
            self._unplace(t, f"{why}; no device fits: {decision.reason}", settle=False)

    def deploy_failed(self, cmd: CommandRow, why: str) -> None:
        t = self.store.tenant(cmd.tenant)
        if t is not None and t.device_id == cmd.device_id and t.state == TenantState.MOVING:
            self.move_back(t, f"{cmd.device_id}: {why}")
            return
        if t is None or t.device_id != cmd.device_id or t.state != TenantState.DEPLOYING:
            return  # the tenant moved on since this command was issued
        detail = f"{cmd.device_id}: {why}"
        if t.pinned is not None or len(t.tried) >= MAX_DEVICES_PER_ROUND:
            self._unplace(t, detail)
            return
        decision = self._decide(t.spec, self.facts_of(t), exclude=t.tried)
        if isinstance(decision, Placed):
            self._assign(t, decision, (*t.tried, decision.device_id), f"retrying after {detail}")
        else:
            self._unplace(t, f"{detail}; no other device: {decision.reason}")

    def place_unplaced(self) -> None:
        """Give every unplaced tenant a fresh round (called when capacity appears)."""
        for t in self.store.tenants_in(TenantState.UNPLACED):
            decision = self._decide(t.spec, self.facts_of(t), pinned=t.pinned)
            if isinstance(decision, Placed):
                self._assign(t, decision, (decision.device_id,), decision.reason)

    # -- operator intents -------------------------------------------------------------------------
    def deploy(self, spec: TenantSpec, pinned: str | None = None) -> OpReply | None:
        """Start deploying ``spec``; the reply now, or None when it comes through ``settled`` later."""
        existing = self.store.tenant(spec.name)
        if existing is not None:
            if existing.state == TenantState.REMOVING:
                return OpReply(ok=False, code="conflict", message=f"tenant {spec.name} is being removed")
            if existing.asked != spec:  # the operator's spec, not the rebalancer's reconfiguration of it
                return OpReply(ok=False, code="conflict",
                               message=f"tenant {spec.name} exists with a different spec; undeploy it first")
            if existing.state == TenantState.RUNNING:
                how = ("" if existing.requested is None else
                       f", reconfigured by the rebalancer: {reconfigured(existing.spec, spec)}")
                return OpReply(ok=True, device_id=existing.device_id,
                               message=f"{spec.name} already runs on {existing.device_id}{how}")
            if existing.state != TenantState.UNPLACED:
                return None  # identical and on its way: answer with the same outcome
            pinned = pinned or existing.pinned
        try:
            facts = self.models.facts(spec.model, spec.variant)
        except UnknownModel as exc:
            return OpReply(ok=False, code="unknown_model", message=str(exc))
        decision = self._decide(spec, facts, pinned=pinned)
        if isinstance(decision, NoFit):
            return OpReply(ok=False, code="no_fit", message=f"no device fits {spec.name}: {decision.reason}")
        row = TenantRow(spec=spec, runtime=facts.runtime, size_bytes=facts.size_bytes, device_id=None,
                        state=TenantState.PENDING, detail="", tried=(), pinned=pinned)
        self._assign(row, decision, (decision.device_id,), decision.reason)
        return None

    def plan(self, spec: TenantSpec, rate_rps: float) -> OpReply:
        """Where ``spec`` would go at ``rate_rps``, without deploying anything."""
        try:
            facts = self.models.facts(spec.model, spec.variant)
        except UnknownModel as exc:
            return OpReply(ok=False, code="unknown_model", message=str(exc))
        if self.store.tenant(spec.name) is not None:
            return OpReply(ok=False, code="conflict", message=f"tenant {spec.name} exists; plan under a new name")
        fleet = self.snapshot()
        # the model is asked about a tenant it does not hold: its demand goes with the question only
        decision = self.placement.place(spec, facts, fleet,
                                        self.model.predictor({spec.name: demand_at(spec, rate_rps)}))
        if isinstance(decision, NoFit):
            return OpReply(ok=False, code="no_fit", message=f"{spec.name} would not fit: {decision.reason}")
        return OpReply(ok=True, device_id=decision.device_id,
                       message=f"{spec.name} would run on {decision.device_id}: {decision.reason}")

    def migrate(self, name: str, target: str | None = None) -> OpReply | None:
        """Start a make-before-break move of running tenant ``name`` to ``target`` (or where placement
        says, among the other devices); the reply now, or None when it comes through ``settled``."""
        t = self.store.tenant(name)
        if t is None:
            return OpReply(ok=False, code="unknown_tenant", message=f"no tenant {name}")
        if t.state != TenantState.RUNNING or t.device_id is None:
            return OpReply(ok=False, code="conflict", message=f"{name} is {t.state}; only a running tenant moves")
        if target == t.device_id:
            return OpReply(ok=True, device_id=target, message=f"{name} already runs on {target}")
        if t.pinned is not None and target != t.pinned:
            return OpReply(ok=False, code="conflict", message=f"{name} is pinned to {t.pinned}")
        source = t.device_id
        decision = self._decide(t.spec, self.facts_of(t), exclude=(source,), pinned=target)
        if isinstance(decision, NoFit):
            return OpReply(ok=False, code="no_fit", message=f"no device fits {name}: {decision.reason}")
        now = self.clock()
        row = replace(t, device_id=decision.device_id, state=TenantState.MOVING, moving_from=source,
                      tried=(decision.device_id,), detail=f"moving from {source}: {decision.reason}")
        self.store.put_tenant(row, now)
        self.outbox.deploy(decision.device_id, t.spec, now)
        log.info("tenant %s moving %s -> %s (%s)", name, source, decision.device_id, decision.reason)
        return None

    def reconfigure(self, name: str, spec: TenantSpec, why: str) -> OpReply | None:
        """Send running tenant ``name`` a Configure with ``spec`` (same name and model) on its device;
        None when sent (the row takes ``spec`` at the Ack), else why not."""
        t = self.store.tenant(name)
        if t is None:
            return OpReply(ok=False, code="unknown_tenant", message=f"no tenant {name}")
        if t.state != TenantState.RUNNING or t.device_id is None:
            return OpReply(ok=False, code="conflict", message=f"{name} is {t.state}; only a running tenant changes")
        if spec.name != name or spec.model != t.spec.model:
            return OpReply(ok=False, code="bad_request", message=f"{name}: a reconfiguration keeps name and model")
        if spec == t.spec:
            return OpReply(ok=True, device_id=t.device_id, message=f"{name} already runs as asked")
        if self.outbox.outstanding(tenant=name):
            return OpReply(ok=False, code="conflict", message=f"{name} has a command in flight")
        now = self.clock()
        self.outbox.configure(t.device_id, spec, now)
        self.store.put_tenant(replace(t, detail=f"reconfiguring: {why}"), now)
        log.info("tenant %s on %s: configure %s:%s max_batch %d (%s)", name, t.device_id, spec.model,
                 spec.variant, spec.max_batch, why)
        return None

    def move_back(self, t: TenantRow, why: str) -> None:
        """A move failed before the new device acked: the tenant stays where it still runs."""
        source = self.store.device(t.moving_from) if t.moving_from is not None else None
        self.carry_out(t, moved_back(t, why, source is not None and source.online))

    def undeploy(self, name: str) -> OpReply | None:
        """Start removing tenant ``name``; the reply now, or None when the Undeploy's Ack settles it."""
        t = self.store.tenant(name)
        if t is None:
            return OpReply(ok=False, code="unknown_tenant", message=f"no tenant {name}")
        device = self.store.device(t.device_id) if t.device_id is not None else None
        step = transition(t, UndeployAsked(device_online=device is not None and device.online))
        self.carry_out(t, step)
        return step.answer

    def removed(self, t: TenantRow, reply: OpReply) -> None:
        log.info("tenant %s undeployed from %s", t.name, t.device_id)
        self.store.delete_tenant(t.name)
        self.model.forget(t.name)  # its demand and model error go too
        self.on_settled(t.name, "undeploy", reply)

    # -- acks and timeouts -------------------------------------------------------------------------
    def ack(self, a: Ack, topic_device: str) -> None:
        cmd = self.store.command(a.command_id)
        if cmd is None or cmd.device_id != a.device_id or a.device_id != topic_device:
            self.stray_acks += 1
            log.info("ignoring ack %s from %s: no such command for this device", a.command_id, topic_device)
            return
        self.store.touch(topic_device, self.clock())
        if a.ok and a.profile is not None:
            self._profiled(a.profile, topic_device)
        if cmd.state not in ("pending", "sent"):
            return  # a late or repeated ack of a settled command
        outcome = f"{a.result}: {a.message}" if a.ok else f"{a.result} {a.code}: {a.message}"
        self.store.finish_command(cmd.command_id, "acked" if a.ok else "failed", outcome)
        t = self.store.tenant(cmd.tenant)
        if t is None:
            return  # the tenant is gone since this command was issued
        spec: TenantSpec | None = None
        size: int | None = None
        if cmd.kind == "configure" and a.ok:
            spec = decode(cmd.payload, Configure).tenant
            try:
                size = self.models.facts(spec.model, spec.variant).size_bytes
            except UnknownModel:
                size = None
        event = Acked(kind=cmd.kind, device_id=cmd.device_id, ok=a.ok, message=a.message, code=a.code,
                      result=a.result, spec=spec, size_bytes=size)
        step = transition(t, event)
        self.carry_out(t, step)
        if step.failed_deploy is not None:
            self.deploy_failed(cmd, step.failed_deploy)

    def carry_out(self, t: TenantRow, step: Step) -> None:
        """Carry out one lifecycle step (``coordinator.lifecycle``): the row written (or deleted), its
        commands queued, its calls answered, and a new device found when it needs one."""
        now = self.clock()
        if step.row is None:
            log.info("tenant %s undeployed from %s", t.name, t.device_id)
            self.store.delete_tenant(t.name)
            self.model.forget(t.name)  # its demand and model error go too
        elif step.row is not t:
            self.store.put_tenant(step.row, now)
        for c in step.commands:
            if isinstance(c, Cancel):
                self.outbox.cancel(tenant=t.name, kind=c.kind, device_id=c.device_id, why=c.why)
            else:
                self.outbox.undeploy(c.device_id, t.name, now)
        for s in step.replies:
            self.on_settled(t.name, s.kind, s.reply)
        if step.relocate is not None and step.row is not None:
            self.move_off(step.row, step.relocate)

    def _profiled(self, profile: ServiceProfile, device_id: str) -> None:
        """A device timed a variant as it loaded it: the performance model's book learns it."""
        device = self.store.device(device_id)
        if device is None:
            return
        try:
            runtime = self.models.facts(profile.model, profile.variant).runtime
        except UnknownModel:
            return
        self.model.profiled(device.kind, profile, runtime)

    def send_due(self, online: Collection[str]) -> None:
        """Send due commands; a command that ran out of attempts may start a move, sent at once."""
        for _ in range(MAX_DEVICES_PER_ROUND + 1):
            items = self.outbox.run(self.clock(), online)
            if not items:
                return
            self.exhausted(items)

    def exhausted(self, items: list[Exhausted]) -> None:
        for item in items:
            cmd, why = item.command, f"no ack after {item.attempts} attempts"
            if cmd.kind == "deploy":
                self.deploy_failed(cmd, why)
                continue
            t = self.store.tenant(cmd.tenant)
            if t is not None and t.device_id == cmd.device_id and t.state == TenantState.REMOVING:
                self.removed(t, OpReply(ok=False, code="deadline_exceeded", device_id=cmd.device_id,
                                         message=f"{cmd.device_id}: {why}; removed from the fleet's plan"))

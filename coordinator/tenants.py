"""The tenants' lifecycle carried out: placement decisions taken, lifecycle steps applied.

What happens to a tenant is decided by the pure ``edgefleet.coordinator.lifecycle.transition`` (see its docstring
for every event and state); this module is its applier and nothing else writes a tenant's state. For
each event it takes the placement decision the event needs (``_decide``: the ``Placement`` seam on a
snapshot of the store that ``edgefleet.coordinator.snapshots`` keeps current with every write), builds the event,
calls ``transition`` and applies the ``Step`` (``apply``): the row written (or deleted, when the
performance model forgets the tenant too), the commands queued in the outbox, the operator calls
settled. A step that asks for a follow-up (a failed Deploy's retry decision, a re-placement after a
loss) is followed at once by that event.
The operator calls a step settles wait in ``answers`` until the operator desk takes them
(``take_answers``): the desk calls in, nothing here calls out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import NamedTuple

from edgefleet.coordinator.commands import Exhausted, Outbox
from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.coordinator.lifecycle import (
    MAX_DEVICES_PER_ROUND,
    Acked,
    Cancel,
    ConfigureAsked,
    DeployAsked,
    DeployFailed,
    Listed,
    Lost,
    MigrateAsked,
    PlaceUnplaced,
    Relocate,
    SendConfigure,
    SendDeploy,
    Step,
    UndeployAsked,
    deploy_needs_placement,
    move_needs_placement,
    reconfigured,
    retry_exclude,
    transition,
)
from edgefleet.coordinator.lifecycle import (
    Exhausted as ExhaustedEvent,
)
from edgefleet.coordinator.models import ModelLookup, UnknownModel
from edgefleet.coordinator.placement import Decision, NoFit, Placement
from edgefleet.coordinator.placement.live import NullModel, PerfModel, demand_at
from edgefleet.coordinator.scheduling.framework import profile_of, schedule
from edgefleet.coordinator.snapshots import SnapshotCache
from edgefleet.coordinator.store import CommandRow, Store, TenantRow, TenantState
from edgefleet.wire import Ack, Configure, OpReply, TenantSpec
from edgefleet.wire.codec import decode

log = logging.getLogger(__name__)


class Answer(NamedTuple):
    """An operator call about ``tenant`` has its final answer (``kind``: "deploy" | "migrate" | "undeploy")."""

    tenant: str
    kind: str
    reply: OpReply


class Tenants:
    def __init__(self, *, store: Store, outbox: Outbox, models: ModelLookup, placement: Placement,
                 clock: Callable[[], float], model: PerfModel | None = None) -> None:
        self.store = store
        self.outbox = outbox
        self.models = models
        self.placement = placement
        self.model: PerfModel = model if model is not None else NullModel()  # the engine's
        self.clock = clock
        self.answers: list[Answer] = []  # operator calls settled, oldest first, until ``take_answers``
        self.snapshots = SnapshotCache(store)

    def take_answers(self) -> list[Answer]:
        """The calls settled since the last take (the operator desk answers whoever waits on them)."""
        out, self.answers = self.answers, []
        return out

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
        """One scheduling cycle (``edgefleet.coordinator.scheduling.schedule``) with the placement's profile."""
        self.model.declare(spec)  # its declared demand is the model's prior from now on
        return schedule(spec, facts, self.snapshot(), profile=profile_of(self.placement), exclude=exclude,
                        pinned=pinned, model=self.model.predictor())

    # -- applying a step ----------------------------------------------------------------------------
    def apply(self, t: TenantRow | None, step: Step) -> None:
        """Carry out one lifecycle step for the tenant whose row was ``t``: the row written (or deleted),
        its commands queued, its calls answered, and the follow-up event when it asks for one."""
        now = self.clock()
        name = t.name if t is not None else step.row.name if step.row is not None else None
        if name is None:
            return  # nothing was, nothing is (a deploy answered at once)
        if step.row is None:
            if t is not None:
                log.info("tenant %s undeployed from %s", name, t.device_id)
                self.store.delete_tenant(name)
                self.model.forget(name)  # its demand and model error go too
        elif step.row is not t:
            self.store.put_tenant(step.row, now)
        for c in step.commands:
            if isinstance(c, Cancel):
                self.outbox.cancel(tenant=name, kind=c.kind, device_id=c.device_id, why=c.why)
            elif isinstance(c, SendDeploy):
                self.outbox.deploy(c.device_id, c.spec, now)
            elif isinstance(c, SendConfigure):
                self.outbox.configure(c.device_id, c.spec, now)
            else:
                self.outbox.undeploy(c.device_id, name, now)
        if step.log:  # a tenant left without a device is worth a warning, as it always was
            unplaced = step.row is not None and step.row.state == TenantState.UNPLACED
            log.log(logging.WARNING if unplaced else logging.INFO, "%s", step.log)
        self.answers.extend(Answer(name, s.kind, s.reply) for s in step.replies)
        if step.relocate is not None and step.row is not None:
            self._relocate(step.row, step.relocate)

    def _relocate(self, t: TenantRow, why: str) -> None:
        """Find ``t`` a new device after it lost its own (offline, so no placement picks it)."""
        decision = self._decide(t.spec, self.facts_of(t)) if t.pinned is None else None
        self.apply(t, transition(t, Relocate(why, decision)))

    def _deploy_failed(self, tenant: str, device_id: str, why: str) -> None:
        """The decision after a Deploy of ``tenant`` to ``device_id`` failed: another device, the source
        of a move, or unplaced."""
        t = self.store.tenant(tenant)
        if t is None:
            return
        exclude = retry_exclude(t, device_id)
        decision = self._decide(t.spec, self.facts_of(t), exclude=exclude) if exclude is not None else None
        self.apply(t, transition(t, DeployFailed(device_id, why, self._online(t.moving_from), decision)))

    def _online(self, device_id: str | None) -> bool:
        device = self.store.device(device_id) if device_id is not None else None
        return device is not None and device.online

    # -- capacity and devices ------------------------------------------------------------------------
    def place_unplaced(self) -> None:
        """Give every unplaced tenant a fresh round (called when capacity appears)."""
        for t in self.store.tenants_in(TenantState.UNPLACED):
            decision = self._decide(t.spec, self.facts_of(t), pinned=t.pinned)
            self.apply(t, transition(t, PlaceUnplaced(decision)))

    def lost(self, device_id: str, why: str) -> None:
        """``device_id`` went offline: each tenant there goes back to a move's source, is removed, or
        moves (Undeploys to the device wait until it is back)."""
        for t in self.store.tenants_on(device_id):
            self.apply(t, transition(t, Lost(device_id, why, source_online=self._online(t.moving_from))))

    def reconcile(self, device_id: str, listed: set[str]) -> None:
        """Make ``device_id`` host what the database assigns to it, given the tenants it ``listed``."""
        assigned = self.store.tenants_on(device_id)
        for t in assigned:
            deploying = bool(self.outbox.outstanding(device_id=device_id, tenant=t.name, kind="deploy"))
            self.apply(t, transition(t, Listed(device_id, t.name in listed, deploying)))
        names = {t.name for t in assigned}
        now = self.clock()
        for name in sorted(listed - names):
            row = self.store.tenant(name)
            if row is not None and row.state == TenantState.MOVING and row.moving_from == device_id:
                continue  # the source of a planned move keeps serving until the target acks
            if not self.outbox.outstanding(device_id=device_id, tenant=name, kind="undeploy"):
                log.info("device %s hosts %s, which is not assigned to it: undeploying", device_id, name)
                self.outbox.undeploy(device_id, name, now)

    # -- operator intents (and the rebalancer's) --------------------------------------------------
    def deploy(self, spec: TenantSpec, pinned: str | None = None) -> OpReply | None:
        """Start deploying ``spec``; the reply now, or None when it comes through ``settled`` later."""
        existing = self.store.tenant(spec.name)
        event = DeployAsked(spec, pinned)
        if deploy_needs_placement(existing, spec):
            pinned = pinned or (existing.pinned if existing is not None else None)
            try:
                facts = self.models.facts(spec.model, spec.variant)
            except UnknownModel as exc:
                return OpReply(ok=False, code="unknown_model", message=str(exc))
            event = DeployAsked(spec, pinned, self._decide(spec, facts, pinned=pinned), facts.runtime, facts.size_bytes)
        step = transition(existing, event)
        self.apply(existing, step)
        return step.answer

    def plan(self, spec: TenantSpec, rate_rps: float) -> OpReply:
        """Where ``spec`` would go at ``rate_rps``, without deploying anything."""
        try:
            facts = self.models.facts(spec.model, spec.variant)
        except UnknownModel as exc:
            return OpReply(ok=False, code="unknown_model", message=str(exc))
        if self.store.tenant(spec.name) is not None:
            return OpReply(ok=False, code="conflict", message=f"tenant {spec.name} exists; plan under a new name")
        # the same scheduling cycle as a deploy; the model is asked about a tenant it does not hold, so its
        # demand goes with the question only (not declared)
        decision = schedule(spec, facts, self.snapshot(), profile=profile_of(self.placement),
                            model=self.model.predictor({spec.name: demand_at(spec, rate_rps)}))
        if isinstance(decision, NoFit):
            return OpReply(ok=False, code="no_fit", message=f"{spec.name} would not fit: {decision.reason}")
        return OpReply(ok=True, device_id=decision.device_id,
                       message=f"{spec.name} would run on {decision.device_id}: {decision.reason}")

    def migrate(self, name: str, target: str | None = None) -> OpReply | None:
        """Start a make-before-break move of running tenant ``name`` to ``target`` (or where placement
        says, among the other devices); the reply now, or None when it comes through ``settled``."""
        t = self.store.tenant(name)
        decision = None
        if t is not None and move_needs_placement(t, target):
            decision = self._decide(t.spec, self.facts_of(t), exclude=(t.device_id,) if t.device_id else (),
                                    pinned=target)
        step = transition(t, MigrateAsked(name, target, decision))
        self.apply(t, step)
        return step.answer

    def reconfigure(self, name: str, spec: TenantSpec, why: str) -> OpReply | None:
        """Send running tenant ``name`` a Configure with ``spec`` (same name and model) on its device;
        None when sent (the row takes ``spec`` at the Ack), else why not."""
        t = self.store.tenant(name)
        if t is None:
            return OpReply(ok=False, code="unknown_tenant", message=f"no tenant {name}")
        step = transition(t, ConfigureAsked(spec, why, busy=bool(self.outbox.outstanding(tenant=name))))
        self.apply(t, step)
        return step.answer

    def undeploy(self, name: str) -> OpReply | None:
        """Start removing tenant ``name``; the reply now, or None when the Undeploy's Ack settles it."""
        t = self.store.tenant(name)
        online = t is not None and self._online(t.device_id)
        step = transition(t, UndeployAsked(device_online=online, tenant=name))
        self.apply(t, step)
        return step.answer

    # -- acks and timeouts -------------------------------------------------------------------------
    def acked(self, cmd: CommandRow, a: Ack) -> None:
        """``a`` answers ``cmd`` (checked by the engine: the command exists and went to the device that
        answered): the command is settled and its tenant moves along."""
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
        self.apply(t, step)
        if step.failed_deploy is not None:
            self._deploy_failed(cmd.tenant, cmd.device_id, step.failed_deploy)

    def send_due(self, online: Collection[str]) -> None:
        """Send due commands; a command that ran out of attempts may start a move, sent at once."""
        for _ in range(MAX_DEVICES_PER_ROUND + 1):
            items = self.outbox.run(self.clock(), online)
            if not items:
                return
            self.exhausted(items)

    def exhausted(self, items: list[Exhausted]) -> None:
        for item in items:
            cmd = item.command
            t = self.store.tenant(cmd.tenant)
            if t is None:
                continue
            step = transition(t, ExhaustedEvent(cmd.kind, cmd.device_id, f"no ack after {item.attempts} attempts"))
            self.apply(t, step)
            if step.failed_deploy is not None:
                self._deploy_failed(cmd.tenant, cmd.device_id, step.failed_deploy)


__all__ = ["MAX_DEVICES_PER_ROUND", "Answer", "Tenants", "reconfigured"]

"""The tenant lifecycle as data: everything that happens to a tenant, as one pure function.

``transition(row, event)`` returns a ``Step``: the tenant's row after the event (None: the tenant is
gone, or was never created), the commands the event sends, the operator calls it settles, and the
answer to the operator's own call when it has one now. Nothing here reads the store, the clock or the
fleet: a placement decision an event needs (where to deploy, where to retry, where to move) is taken
by the caller and passed in as a value (``Placed`` / ``NoFit``), and so is every other fact about the
world (is the source of a move online, is a command in flight). The caller (``edgefleet.coordinator.tenants``)
applies a step: it writes the row, queues the commands and answers the calls. Some steps ask the
caller for a decision before the next event: ``failed_deploy`` (a Deploy failed: ``DeployFailed``
follows with a retry decision) and ``relocate`` (the tenant needs another device: ``Relocate``
follows). tests/test_lifecycle.py holds the table of every state and event and a property over
sequences of events.

The events:

- ``DeployAsked``: the operator deploys a spec. A tenant being removed, or one with a different spec,
  is a conflict; an identical one already running answers at once, one on its way answers later;
  otherwise (a new tenant, or an unplaced one) the decision places it: ``deploying`` with a Deploy
  to the chosen device, or the call answered ``no_fit``.
- ``Acked``: a device answered a command. ``deploying`` -> ``running`` when its device acks the
  Deploy; ``moving`` -> ``running`` on the new device, and only then the Undeploy to the source
  (make before break); a ``running`` tenant takes a Configure's spec when its device acks it (a
  refused one changes only the detail); a ``removing`` tenant is gone when its device acks the
  Undeploy (failed or not: the device no longer serves it either way). A failed Deploy asks for the
  decision after it (``failed_deploy``). An Ack from a device the tenant no longer runs on, or in a
  state the command no longer applies to, changes nothing.
- ``Exhausted``: a command ran out of attempts unanswered: a Deploy as a failed one; an Undeploy
  removes a ``removing`` tenant from the plan (the call answered ``deadline_exceeded``).
- ``DeployFailed``: the decision after a failed Deploy. A ``moving`` tenant goes back to its source
  (``moved_back``); a ``deploying`` one is tried on one other device (``MAX_DEVICES_PER_ROUND``) when
  the decision placed it, else it is ``unplaced`` and the deploy call answered.
- ``MigrateAsked``: a make-before-break move of a ``running`` tenant (the operator's, or the
  rebalancer's with the target it chose): ``moving`` with a Deploy to the decided device.
- ``ConfigureAsked``: a reconfiguration of a ``running`` tenant: a Configure with the new spec; the row
  takes it only at the Ack (until then the old spec, and its memory charge, stand).
- ``Lost``: the tenant's device went offline. A ``removing`` tenant is gone (nothing left to undeploy
  there); a ``moving`` one goes back to its source (or needs another device when that is offline too);
  the others need another device (``relocate``).
- ``Relocate``: the re-placement after a loss: ``deploying`` on the decided device, or ``unplaced``
  (a pinned tenant waits for its device).
- ``PlaceUnplaced``: capacity appeared: an ``unplaced`` tenant the decision places is ``deploying``.
- ``Listed``: the tenant's device said (in a birth, or when it came back) whether it hosts the tenant:
  a ``removing`` tenant it no longer hosts is gone; one it lost is deployed again; one it hosts is
  ``running``.
- ``UndeployAsked``: the operator undeploys: the tenant's other commands are cancelled and the calls
  about it settled, the Undeploys sent, and it is ``removing`` (or gone at once with no device or an
  offline one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as _replace
from typing import Any

from edgefleet.coordinator.placement import Decision, NoFit, Placed
from edgefleet.coordinator.store import TenantRow, TenantState
from edgefleet.wire import OpReply, TenantSpec

S = TenantState
MAX_DEVICES_PER_ROUND = 2  # a failed Deploy is tried on one other device, once


# -- events --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployAsked:
    """The operator deploys ``spec`` (pinned to a device, or not), with the placement decision taken
    when ``deploy_needs_placement`` said one is needed (None otherwise); ``runtime`` and ``size_bytes``
    are its variant's facts (what a new row is charged)."""

    spec: TenantSpec
    pinned: str | None = None
    decision: Decision | None = None
    runtime: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class Acked:
    """A device answered a command about the tenant."""

    kind: str  # "deploy" | "configure" | "undeploy"
    device_id: str  # the device the command went to (and that answered)
    ok: bool
    message: str = ""  # the Ack's message
    code: str = ""  # why not, when not ok: an error code
    result: str = ""  # the Ack's result ("applied", "duplicate", "failed", "rejected")
    spec: TenantSpec | None = None  # configure: the spec it carried
    size_bytes: int | None = None  # configure: that spec's memory charge (None: unknown, the old one stands)


@dataclass(frozen=True)
class Exhausted:
    """A ``kind`` command to ``device_id`` was sent its last time and never answered."""

    kind: str  # "deploy" | "configure" | "undeploy"
    device_id: str
    why: str


@dataclass(frozen=True)
class DeployFailed:
    """The decision after a Deploy to ``device_id`` failed: ``decision`` is where to try next (taken
    only when ``retry_exclude`` says a retry is due; None otherwise)."""

    device_id: str
    why: str
    source_online: bool = False  # a moving tenant's source is online (it goes back there)
    decision: Decision | None = None


@dataclass(frozen=True)
class MigrateAsked:
    """A move of tenant ``tenant`` to ``target`` (None: wherever placement says), with the decision taken."""

    tenant: str
    target: str | None
    decision: Decision | None  # None when ``move_needs_placement`` said no decision was needed


@dataclass(frozen=True)
class ConfigureAsked:
    """A reconfiguration of the running tenant to ``spec``, for ``why``."""

    spec: TenantSpec
    why: str
    busy: bool = False  # a command about the tenant is in flight


@dataclass(frozen=True)
class Lost:
    """The tenant's device went offline (a death, or silence)."""

    device_id: str
    why: str
    source_online: bool = False  # a moving tenant's source (``moving_from``) is online


@dataclass(frozen=True)
class Relocate:
    """The tenant needs another device (``why``); ``decision``: where placement puts it (None for a
    pinned tenant, which waits for its own device)."""

    why: str
    decision: Decision | None


@dataclass(frozen=True)
class PlaceUnplaced:
    """Capacity appeared: where placement would now put the unplaced tenant."""

    decision: Decision


@dataclass(frozen=True)
class Listed:
    """``device_id`` said whether it hosts the tenant (a birth, or its return)."""

    device_id: str
    hosts: bool
    deploying: bool = False  # a Deploy of the tenant to that device is outstanding (its Ack settles it)


@dataclass(frozen=True)
class UndeployAsked:
    """The operator undeploys the tenant."""

    device_online: bool  # the tenant's device (when it has one) is online
    tenant: str = ""  # its name (what an answer about a tenant that does not exist names)


Event = (DeployAsked | Acked | Exhausted | DeployFailed | MigrateAsked | ConfigureAsked | Lost | Relocate
         | PlaceUnplaced | Listed | UndeployAsked)


# -- what a step does ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SendDeploy:
    device_id: str
    spec: TenantSpec


@dataclass(frozen=True)
class SendConfigure:
    device_id: str
    spec: TenantSpec


@dataclass(frozen=True)
class SendUndeploy:
    device_id: str


@dataclass(frozen=True)
class Cancel:
    """The tenant's outstanding ``kind`` commands (to ``device_id``, or anywhere when None) are cancelled."""

    kind: str  # "deploy" | "configure" | "undeploy"
    device_id: str | None
    why: str


Command = SendDeploy | SendConfigure | SendUndeploy | Cancel


@dataclass(frozen=True)
class Settle:
    """An operator call about the tenant gets its final answer."""

    kind: str  # "deploy" | "migrate" | "undeploy"
    reply: OpReply


@dataclass(frozen=True)
class Step:
    row: TenantRow | None  # the row after the event; None: the tenant is gone (or was never created)
    commands: tuple[Command, ...] = ()
    replies: tuple[Settle, ...] = ()
    failed_deploy: str | None = None  # a Deploy to the tenant's device failed, for this reason: DeployFailed next
    relocate: str | None = None  # the tenant needs another device, for this reason: Relocate next
    answer: OpReply | None = None  # the operator's answer now (None: a later event settles the call)
    log: str = ""  # one line for the coordinator's log ("" when nothing worth saying happened)


# -- the facts an event needs, asked before it is built -----------------------------------------------
def deploy_needs_placement(row: TenantRow | None, spec: TenantSpec) -> bool:
    """Whether the operator's deploy of ``spec`` reaches the point where a placement decision is read
    (the caller takes one only then: deciding also declares the tenant's demand to the model)."""
    return _deploy_now(row, spec) is None


def move_needs_placement(row: TenantRow | None, target: str | None) -> bool:
    """Whether a move of ``row`` to ``target`` reaches the point where a placement decision is read."""
    return row is not None and _migrate_now(row, target) is None


def retry_exclude(row: TenantRow | None, device_id: str) -> tuple[str, ...] | None:
    """The devices a retry after a failed Deploy to ``device_id`` must avoid; None: no retry is due
    (the tenant moved on, is moving, pinned, or tried enough devices)."""
    if row is None or row.device_id != device_id or row.state != S.DEPLOYING:
        return None
    if row.pinned is not None or len(row.tried) >= MAX_DEVICES_PER_ROUND:
        return None
    return row.tried


def _deploy_now(row: TenantRow | None, spec: TenantSpec) -> Step | None:
    """The answer to a deploy that needs no placement (a conflict, or the tenant already there or on
    its way); None when it is to be placed."""
    if row is None or (row.state == S.UNPLACED and row.asked == spec):
        return None
    name = spec.name
    if row.state == S.REMOVING:
        return Step(row, answer=OpReply(ok=False, code="conflict", message=f"tenant {name} is being removed"))
    if row.asked != spec:  # the operator's spec, not the rebalancer's reconfiguration of it
        return Step(row, answer=OpReply(ok=False, code="conflict",
                                        message=f"tenant {name} exists with a different spec; undeploy it first"))
    if row.state == S.RUNNING:
        how = "" if row.requested is None else f", reconfigured by the rebalancer: {reconfigured(row.spec, spec)}"
        return Step(row, answer=OpReply(ok=True, device_id=row.device_id,
                                        message=f"{name} already runs on {row.device_id}{how}"))
    return Step(row)  # identical and on its way: answered with the same outcome


def _migrate_now(row: TenantRow, target: str | None) -> Step | None:
    name = row.name
    if row.state != S.RUNNING or row.device_id is None:
        return Step(row, answer=OpReply(ok=False, code="conflict",
                                        message=f"{name} is {row.state}; only a running tenant moves"))
    if target == row.device_id:
        return Step(row, answer=OpReply(ok=True, device_id=target, message=f"{name} already runs on {target}"))
    if row.pinned is not None and target != row.pinned:
        return Step(row, answer=OpReply(ok=False, code="conflict", message=f"{name} is pinned to {row.pinned}"))
    return None


def reconfigured(running: TenantSpec, asked: TenantSpec) -> str:
    """How ``running`` differs from what was ``asked``: ``"variant int8 (deployed fp32), max_batch 16
    (deployed 8)"``."""
    fields = ("variant", "max_batch", "slo_ms", "min_fidelity")
    diffs = [f"{f} {getattr(running, f)} (deployed {getattr(asked, f)})" for f in fields
             if getattr(running, f) != getattr(asked, f)]
    return ", ".join(diffs) or "as deployed"


def _unknown(name: str) -> Step:
    return Step(None, answer=OpReply(ok=False, code="unknown_tenant", message=f"no tenant {name}"))


# -- the cases ---------------------------------------------------------------------------------
def _deploy(row: TenantRow | None, event: DeployAsked) -> Step:
    now = _deploy_now(row, event.spec)
    if now is not None:
        return now
    spec = event.spec
    decision = event.decision if event.decision is not None else NoFit("no placement decision")
    if isinstance(decision, NoFit):
        return Step(row, answer=OpReply(ok=False, code="no_fit", message=f"no device fits {spec.name}: {decision.reason}"))
    new = TenantRow.of(spec, event.runtime, event.size_bytes, decision.device_id, S.DEPLOYING, decision.reason,
                       (decision.device_id,), pinned=event.pinned)
    return Step(new, (SendDeploy(decision.device_id, spec),),
                log=f"tenant {spec.name} -> {decision.device_id} ({decision.reason})")


def _unplace(row: TenantRow, detail: str, *, settle: bool) -> Step:
    replies = (Settle("deploy", OpReply(ok=False, code="deploy_failed", message=detail)),) if settle else ()
    return Step(row.with_status(device_id=None, state=S.UNPLACED, moving_from=None, detail=detail), (), replies,
                log=f"tenant {row.name} unplaced: {detail}")


def _assign(row: TenantRow, placed: Placed, tried: tuple[str, ...], detail: str) -> Step:
    new = row.with_status(device_id=placed.device_id, state=S.DEPLOYING, moving_from=None, tried=tried, detail=detail)
    return Step(new, (SendDeploy(placed.device_id, row.spec),),
                log=f"tenant {row.name} -> {placed.device_id} ({placed.reason})")


def moved_back(row: TenantRow, why: str, source_online: bool) -> Step:
    """A move failed before the new device acked: the tenant stays where it still runs (its source), or,
    with the source offline too, needs another device. Whatever the target loaded is released."""
    target, source = row.device_id, row.moving_from
    commands: tuple[Command, ...] = ((Cancel("deploy", target, "move abandoned"), SendUndeploy(target))
                                     if target is not None else ())
    settle = Settle("migrate", OpReply(ok=False, code="move_failed", device_id=source,
                                       message=f"{row.name} stays on {source}: {why}"))
    if source is None or not source_online:
        return Step(row.with_status(moving_from=None), commands, (settle,),
                    relocate=f"move failed ({why}) and {source} is offline")
    back = row.with_status(device_id=source, state=S.RUNNING, moving_from=None, tried=(),
                   detail=f"move to {target} failed: {why}")
    return Step(back, commands, (settle,))


def _deploy_failed(row: TenantRow, event: DeployFailed) -> Step:
    if row.device_id == event.device_id and row.state == S.MOVING:
        return moved_back(row, f"{event.device_id}: {event.why}", event.source_online)
    if row.device_id != event.device_id or row.state != S.DEPLOYING:
        return Step(row)  # the tenant moved on since the Deploy was issued
    detail = f"{event.device_id}: {event.why}"
    if retry_exclude(row, event.device_id) is None:
        return _unplace(row, detail, settle=True)
    decision = event.decision if event.decision is not None else NoFit("no placement decision")
    if isinstance(decision, Placed) and decision.device_id not in row.tried:
        return _assign(row, decision, (*row.tried, decision.device_id), f"retrying after {detail}")
    reason = decision.reason if isinstance(decision, NoFit) else f"{decision.device_id} was tried"
    return _unplace(row, f"{detail}; no other device: {reason}", settle=True)


def _migrate(row: TenantRow, event: MigrateAsked) -> Step:
    now = _migrate_now(row, event.target)
    if now is not None:
        return now
    name, source, decision = row.name, row.device_id, event.decision
    if decision is None or isinstance(decision, NoFit) or decision.device_id == source:
        reason = decision.reason if isinstance(decision, NoFit) else "no other device decided"
        return Step(row, answer=OpReply(ok=False, code="no_fit", message=f"no device fits {name}: {reason}"))
    moving = row.with_status(device_id=decision.device_id, state=S.MOVING, moving_from=source,
                     tried=(decision.device_id,), detail=f"moving from {source}: {decision.reason}")
    return Step(moving, (SendDeploy(decision.device_id, row.spec),),
                log=f"tenant {name} moving {source} -> {decision.device_id} ({decision.reason})")


def _configure(row: TenantRow, event: ConfigureAsked) -> Step:
    name, spec = row.name, event.spec
    if row.state != S.RUNNING or row.device_id is None:
        return Step(row, answer=OpReply(ok=False, code="conflict",
                                        message=f"{name} is {row.state}; only a running tenant changes"))
    if spec.name != name or spec.model != row.spec.model:
        return Step(row, answer=OpReply(ok=False, code="bad_request",
                                        message=f"{name}: a reconfiguration keeps name and model"))
    if spec == row.spec:
        return Step(row, answer=OpReply(ok=True, device_id=row.device_id, message=f"{name} already runs as asked"))
    if event.busy:
        return Step(row, answer=OpReply(ok=False, code="conflict", message=f"{name} has a command in flight"))
    return Step(row.with_status(detail=f"reconfiguring: {event.why}"), (SendConfigure(row.device_id, spec),),
                log=(f"tenant {name} on {row.device_id}: configure {spec.model}:{spec.variant} max_batch "
                     f"{spec.max_batch} ({event.why})"))


def _lost(row: TenantRow, event: Lost) -> Step:
    if row.device_id != event.device_id:
        return Step(row)
    name, device = row.name, event.device_id
    if row.state == S.REMOVING:
        gone = f"{name} removed; {device} went offline before acking"
        return Step(None, (), (Settle("undeploy", OpReply(ok=True, device_id=device, message=gone)),))
    offline = (Cancel("deploy", device, f"{device} offline"), Cancel("configure", device, f"{device} offline"))
    if row.state == S.MOVING:
        back = moved_back(row, f"{device} went offline ({event.why})", event.source_online)
        return _replace(back, commands=offline + back.commands)
    return Step(row, offline, relocate=f"{device} offline ({event.why})")


def _relocate(row: TenantRow, event: Relocate) -> Step:
    if row.state in (S.REMOVING, S.UNPLACED) or row.moving_from is not None:
        return Step(row)  # on its way out, waiting for capacity, or a move that settles itself
    if row.pinned is not None:
        return _unplace(row, f"{event.why}; pinned to {row.pinned}, waiting for it", settle=False)
    decision = event.decision if event.decision is not None else NoFit("no placement decision")
    if isinstance(decision, Placed):
        return _assign(row, decision, (decision.device_id,), f"moved: {event.why}")
    return _unplace(row, f"{event.why}; no device fits: {decision.reason}", settle=False)


def _place_unplaced(row: TenantRow, event: PlaceUnplaced) -> Step:
    if row.state != S.UNPLACED or not isinstance(event.decision, Placed):
        return Step(row)
    return _assign(row, event.decision, (event.decision.device_id,), event.decision.reason)


def _listed(row: TenantRow, event: Listed) -> Step:
    device = event.device_id
    if row.device_id != device:
        return Step(row)
    if row.state == S.REMOVING:
        if event.hosts:
            return Step(row)  # the Undeploy's Ack settles it
        reply = OpReply(ok=True, device_id=device, message=f"{row.name} removed")
        return Step(None, (Cancel("undeploy", device, "already gone"),), (Settle("undeploy", reply),))
    if event.deploying:
        return Step(row)  # its Ack will settle it
    if not event.hosts:
        state = S.MOVING if row.state == S.MOVING else S.DEPLOYING  # a move stays make-before-break
        return Step(row.with_status(state=state, detail=f"{device} lost it; redeploying"), (SendDeploy(device, row.spec),))
    if row.state == S.MOVING:  # the target hosts it: the move landed
        source = row.moving_from
        moved = row.with_status(state=S.RUNNING, moving_from=None, detail=f"moved from {source}")
        reply = OpReply(ok=True, device_id=device, message=f"{row.name} moved from {source} to {device}")
        return Step(moved, (SendUndeploy(source),) if source is not None else (), (Settle("migrate", reply),))
    if row.state != S.RUNNING:
        return Step(row.with_status(state=S.RUNNING))
    return Step(row)


def _undeploy(row: TenantRow, event: UndeployAsked) -> Step:
    """An operator's undeploy: the tenant's other commands are cancelled and the calls about it settled;
    an Undeploy goes to its device (and to a move's source). With no device, or an offline one (which
    undeploys it when back), the tenant is gone at once; otherwise it is ``removing`` until the Ack."""
    name = row.name
    if row.state == S.REMOVING:
        return Step(row)  # already on its way out: the Undeploy's Ack answers
    cancelled = OpReply(ok=False, code="cancelled", message=f"{name} was undeployed")
    replies = [] if row.state == S.RUNNING else [Settle("deploy", cancelled)]
    commands: list[Command] = [Cancel("deploy", None, "tenant undeployed"), Cancel("configure", None, "tenant undeployed")]
    if row.state == S.MOVING and row.moving_from is not None:
        commands.append(SendUndeploy(row.moving_from))
        replies.append(Settle("migrate", cancelled))
    if row.device_id is None:
        unplaced = OpReply(ok=True, message=f"{name} removed (it was not placed)")
        return Step(None, tuple(commands), tuple(replies), answer=unplaced)
    commands.append(SendUndeploy(row.device_id))
    if not event.device_online:
        offline = f"{name} removed; {row.device_id} is offline and will undeploy it when back"
        answer = OpReply(ok=True, device_id=row.device_id, message=offline)
        return Step(None, tuple(commands), tuple(replies), answer=answer)
    return Step(row.with_status(state=S.REMOVING, moving_from=None, detail=""), tuple(commands), tuple(replies))


def _acked(row: TenantRow, event: Acked) -> Step:
    here = row.device_id == event.device_id
    name = row.name
    if event.kind == "deploy":
        if not event.ok:
            return Step(row, failed_deploy=f"{event.code or event.result}: {event.message}")
        if here and row.state == S.MOVING:
            source = row.moving_from
            moved = row.with_status(state=S.RUNNING, moving_from=None, detail=f"moved from {source}")
            reply = OpReply(ok=True, device_id=event.device_id, message=f"{name} moved from {source} to {event.device_id}")
            undeploy = (SendUndeploy(source),) if source is not None else ()
            return Step(moved, undeploy, (Settle("migrate", reply),))
        if here and row.state == S.DEPLOYING:
            why = f" ({row.detail})" if row.detail else ""
            reply = OpReply(ok=True, device_id=event.device_id, message=f"{name} running on {event.device_id}{why}")
            return Step(row.with_status(state=S.RUNNING), (), (Settle("deploy", reply),))
        return Step(row)
    if event.kind == "configure":
        if not (here and row.state == S.RUNNING):
            return Step(row)
        if not event.ok or event.spec is None:
            return Step(row.with_status(detail=f"reconfiguration refused: {event.code}: {event.message}"))
        size = event.size_bytes if event.size_bytes is not None else row.size_bytes
        return Step(row.with_status(running=event.spec, size_bytes=size,
                            detail=f"reconfigured: {event.message}"))
    if event.kind == "undeploy" and here and row.state == S.REMOVING:
        reply = OpReply(ok=event.ok, code="" if event.ok else (event.code or "undeploy_failed"),
                        device_id=event.device_id, message=event.message or f"{name} removed")
        return Step(None, (), (Settle("undeploy", reply),))
    return Step(row)


def _exhausted(row: TenantRow, event: Exhausted) -> Step:
    if event.kind == "deploy":
        return Step(row, failed_deploy=event.why)
    if event.kind == "undeploy" and row.device_id == event.device_id and row.state == S.REMOVING:
        reply = OpReply(ok=False, code="deadline_exceeded", device_id=event.device_id,
                        message=f"{event.device_id}: {event.why}; removed from the fleet's plan")
        return Step(None, (), (Settle("undeploy", reply),))
    return Step(row)


# what each event does to an existing tenant (a DeployAsked is handled before: it may create one)
_HANDLERS: dict[type, Callable[[TenantRow, Any], Step]] = {Acked: _acked, Exhausted: _exhausted, DeployFailed: _deploy_failed, MigrateAsked: _migrate,
             ConfigureAsked: _configure, Lost: _lost, Relocate: _relocate, PlaceUnplaced: _place_unplaced,
             Listed: _listed, UndeployAsked: _undeploy}


def transition(row: TenantRow | None, event: Event) -> Step:
    """What ``event`` does to the tenant whose row is ``row`` (None: there is none); the same row object
    when nothing changes."""
    if isinstance(event, DeployAsked):
        return _deploy(row, event)
    if row is None:  # only the operator's calls about a tenant that does not exist are answered
        if isinstance(event, (MigrateAsked, ConfigureAsked, UndeployAsked)):
            return _unknown(event.spec.name if isinstance(event, ConfigureAsked) else event.tenant)
        return Step(None)
    return _HANDLERS[type(event)](row, event)


__all__ = ["MAX_DEVICES_PER_ROUND", "Acked", "Cancel", "Command", "ConfigureAsked", "DeployAsked", "DeployFailed",
           "Event", "Exhausted", "Listed", "Lost", "MigrateAsked", "PlaceUnplaced", "Relocate", "SendConfigure",
           "SendDeploy", "SendUndeploy", "Settle", "Step", "UndeployAsked", "deploy_needs_placement", "move_needs_placement",
           "moved_back", "reconfigured", "retry_exclude", "transition"]

"""The tenant lifecycle as data: what an acknowledged command does to a tenant, as one pure function.

``transition(row, event)`` returns a ``Step``: the tenant's row after the event (None: the tenant is
gone), the commands the event sends, the operator calls it settles, and ``failed_deploy`` when a Deploy
failed — what happens then needs a placement decision over the fleet (try another device, go back to
the source of a move, or stay unplaced), which the caller makes (``Tenants.deploy_failed``). The caller
applies a step: it writes the row, queues the commands and answers the calls. tests/test_lifecycle.py
holds the table of every state and event.

An Ack moves a tenant along (see ``coordinator.tenants``): ``deploying`` -> ``running`` when its device
acks the Deploy; ``moving`` -> ``running`` on the new device, and only then the Undeploy to the source
(make before break); a ``running`` tenant takes a Configure's spec when its device acks it (a refused
one changes only the detail); a ``removing`` tenant is gone when its device acks the Undeploy (failed or
not: the device no longer serves it either way). An Ack from a device the tenant no longer runs on, or
in a state the command no longer applies to, changes nothing: the tenant has moved on.
An operator's undeploy (``UndeployAsked``) cancels the tenant's other commands and settles the calls
about it, sends the Undeploys, and makes it ``removing`` (or gone at once when it has no device or an
offline one). A device going offline (``Lost``) removes a ``removing`` tenant (nothing left to undeploy there), sends a
``moving`` tenant back to its source (``moved_back``), and asks for another device for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator.store import TenantRow, TenantState
from edgefleet.wire import OpReply, TenantSpec


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
class Lost:
    """The tenant's device went offline (a death, or silence)."""

    device_id: str
    why: str
    source_online: bool = False  # a moving tenant's source (``moving_from``) is online


@dataclass(frozen=True)
class UndeployAsked:
    """The operator undeploys the tenant."""

    device_online: bool  # the tenant's device (when it has one) is online


Event = Acked | Lost | UndeployAsked


@dataclass(frozen=True)
class SendUndeploy:
    device_id: str


@dataclass(frozen=True)
class Cancel:
    """The tenant's outstanding ``kind`` commands (to ``device_id``, or anywhere when None) are cancelled."""

    kind: str  # "deploy" | "configure"
    device_id: str | None
    why: str


Command = SendUndeploy | Cancel


@dataclass(frozen=True)
class Settle:
    """An operator call about the tenant gets its final answer."""

    kind: str  # "deploy" | "migrate" | "undeploy"
    reply: OpReply


@dataclass(frozen=True)
class Step:
    row: TenantRow | None  # the row after the event; None: the tenant is gone
    commands: tuple[Command, ...] = ()
    replies: tuple[Settle, ...] = ()
    failed_deploy: str | None = None  # a Deploy to the tenant's device failed, for this reason
    relocate: str | None = None  # the tenant needs another device (a placement decision), for this reason
    answer: OpReply | None = None  # the operator's answer now (None: a later event settles the call)


def moved_back(row: TenantRow, why: str, source_online: bool) -> Step:
    """A move failed before the new device acked: the tenant stays where it still runs (its source), or,
    with the source offline too, needs another device. Whatever the target loaded is released."""
    target, source = row.device_id, row.moving_from
    commands: tuple[Command, ...] = ((Cancel("deploy", target, "move abandoned"), SendUndeploy(target))
                                     if target is not None else ())
    settle = Settle("migrate", OpReply(ok=False, code="move_failed", device_id=source,
                                       message=f"{row.name} stays on {source}: {why}"))
    if source is None or not source_online:
        return Step(replace(row, moving_from=None), commands, (settle,),
                    relocate=f"move failed ({why}) and {source} is offline")
    back = replace(row, device_id=source, state=TenantState.RUNNING, moving_from=None, tried=(),
                   detail=f"move to {target} failed: {why}")
    return Step(back, commands, (settle,))


def _undeploy(row: TenantRow, event: UndeployAsked) -> Step:
    """An operator's undeploy: the tenant's other commands are cancelled and the calls about it settled;
    an Undeploy goes to its device (and to a move's source). With no device, or an offline one (which
    undeploys it when back), the tenant is gone at once; otherwise it is ``removing`` until the Ack."""
    name = row.name
    if row.state == TenantState.REMOVING:
        return Step(row)  # already on its way out: the Undeploy's Ack answers
    cancelled = OpReply(ok=False, code="cancelled", message=f"{name} was undeployed")
    replies = [] if row.state == TenantState.RUNNING else [Settle("deploy", cancelled)]
    commands: list[Command] = [Cancel("deploy", None, "tenant undeployed"), Cancel("configure", None, "tenant undeployed")]
    if row.state == TenantState.MOVING and row.moving_from is not None:
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
    return Step(replace(row, state=TenantState.REMOVING, detail=""), tuple(commands), tuple(replies))


def transition(row: TenantRow, event: Event) -> Step:
    """What ``event`` does to the tenant whose row is ``row`` (the same row object when nothing changes)."""
    if isinstance(event, UndeployAsked):
        return _undeploy(row, event)
    here = row.device_id == event.device_id
    name = row.name
    if isinstance(event, Lost):
        if not here:
            return Step(row)
        if row.state == TenantState.REMOVING:
            gone = f"{name} removed; {event.device_id} went offline before acking"
            return Step(None, (), (Settle("undeploy", OpReply(ok=True, device_id=event.device_id, message=gone)),))
        if row.state == TenantState.MOVING:
            return moved_back(row, f"{event.device_id} went offline ({event.why})", event.source_online)
        return Step(row, relocate=f"{event.device_id} offline ({event.why})")
    if event.kind == "deploy":
        if not event.ok:
            return Step(row, failed_deploy=f"{event.code or event.result}: {event.message}")
        if here and row.state == TenantState.MOVING:
            source = row.moving_from
            moved = replace(row, state=TenantState.RUNNING, moving_from=None, detail=f"moved from {source}")
            reply = OpReply(ok=True, device_id=event.device_id, message=f"{name} moved from {source} to {event.device_id}")
            undeploy = (SendUndeploy(source),) if source is not None else ()
            return Step(moved, undeploy, (Settle("migrate", reply),))
        if here and row.state == TenantState.DEPLOYING:
            why = f" ({row.detail})" if row.detail else ""
            reply = OpReply(ok=True, device_id=event.device_id, message=f"{name} running on {event.device_id}{why}")
            return Step(replace(row, state=TenantState.RUNNING), (), (Settle("deploy", reply),))
        return Step(row)
    if event.kind == "configure":
        if not (here and row.state == TenantState.RUNNING):
            return Step(row)
        if not event.ok or event.spec is None:
            return Step(replace(row, detail=f"reconfiguration refused: {event.code}: {event.message}"))
        size = event.size_bytes if event.size_bytes is not None else row.size_bytes
        return Step(replace(row, spec=event.spec, size_bytes=size, requested=row.asked,
                            detail=f"reconfigured: {event.message}"))
    if event.kind == "undeploy" and here and row.state == TenantState.REMOVING:
        reply = OpReply(ok=event.ok, code="" if event.ok else (event.code or "undeploy_failed"),
                        device_id=event.device_id, message=event.message or f"{name} removed")
        return Step(None, (), (Settle("undeploy", reply),))
    return Step(row)


__all__ = ["Acked", "Cancel", "Command", "Event", "Lost", "SendUndeploy", "Settle", "Step", "UndeployAsked",
           "moved_back", "transition"]

"""The durable outbox of commands to agents: fresh ids, QoS 1 sends, retries of the same id, give-up.

A command is written to SQLite before it is sent and stays *outstanding* (pending, then sent) until
its Ack arrives, it is cancelled, or ``max_attempts`` sends went unanswered. Resends carry the same
command id and bytes, because an agent applies an id at most once and answers a repeat "duplicate".
Commands to an offline device wait (no attempt is spent) until it is back. Commands for one
(device, tenant) pair go out strictly in creation order: a later one waits until the earlier is done,
so an Undeploy can never overtake the Deploy it follows.
Just before a Deploy is published, the broker is asked to let the device host the tenant
(``edgefleet.coordinator.grants``): a refusal keeps the Deploy unsent (the attempt counts, and the reason is the
command's result if attempts run out); a grant the broker is still applying holds it back briefly,
spending no attempt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

from edgefleet.coordinator.config import CommandPolicy
from edgefleet.coordinator.grants import GrantRefused, Grants, NullGrants, Settling
from edgefleet.coordinator.store import CommandRow, Store
from edgefleet.wire import Configure, Deploy, TenantSpec, Topics, Undeploy, encode
from edgefleet.wire.codec import decode

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]  # (topic, payload), QoS 1, not retained


def new_command_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Exhausted:
    """A command that was sent ``attempts`` times without an Ack."""

    command: CommandRow
    attempts: int


class Outbox:
    def __init__(self, store: Store, topics: Topics, policy: CommandPolicy, publish: Publish,
                 grants: Grants | None = None) -> None:
        self.store = store
        self.topics = topics
        self.policy = policy
        self._publish = publish
        self.grants: Grants = grants if grants is not None else NullGrants()
        self._held_until: dict[str, float] = {}  # command id -> not before (its grant is settling)
        self._refused: dict[str, str] = {}  # command id -> why the broker last refused its grant
        self.sends = 0
        self.resends = 0

    # -- creating and cancelling --------------------------------------------------------------------
    def deploy(self, device_id: str, spec: TenantSpec, now: float) -> CommandRow:
        cid = new_command_id()
        msg = Deploy(command_id=cid, device_id=device_id, tenant=spec, issued_at=now)
        return self.store.add_command(
            command_id=cid, device_id=device_id, tenant=spec.name, kind="deploy", payload=encode(msg), now=now
        )

    def undeploy(self, device_id: str, tenant: str, now: float) -> CommandRow:
        cid = new_command_id()
        msg = Undeploy(command_id=cid, device_id=device_id, tenant=tenant, issued_at=now)
        return self.store.add_command(
            command_id=cid, device_id=device_id, tenant=tenant, kind="undeploy", payload=encode(msg), now=now
        )

    def configure(self, device_id: str, spec: TenantSpec, now: float) -> CommandRow:
        cid = new_command_id()
        msg = Configure(command_id=cid, device_id=device_id, tenant=spec, issued_at=now)
        return self.store.add_command(
            command_id=cid, device_id=device_id, tenant=spec.name, kind="configure", payload=encode(msg), now=now
        )

    def outstanding(self, *, device_id: str | None = None, tenant: str | None = None,
                    kind: str | None = None) -> list[CommandRow]:
        return self.store.commands(device_id=device_id, tenant=tenant, kind=kind, outstanding=True)

    def cancel(self, *, tenant: str, kind: str, device_id: str | None = None, why: str) -> int:
        """Cancel the outstanding ``kind`` commands for ``tenant`` (on ``device_id``, or anywhere)."""
        rows = self.outstanding(device_id=device_id, tenant=tenant, kind=kind)
        for row in rows:
            self.store.finish_command(row.command_id, "cancelled", why)
        return len(rows)

    # -- sending ----------------------------------------------------------------------------------
    def run(self, now: float, online: Collection[str]) -> list[Exhausted]:
        """Send every due command to an online device; return those that ran out of attempts."""
        exhausted: list[Exhausted] = []
        busy: set[tuple[str, str]] = set()  # (device, tenant) pairs with an earlier outstanding command
        outstanding = self.store.commands(outstanding=True)
        ids = {c.command_id for c in outstanding}
        self._held_until = {k: v for k, v in self._held_until.items() if k in ids}
        self._refused = {k: v for k, v in self._refused.items() if k in ids}
        for cmd in outstanding:
            key = (cmd.device_id, cmd.tenant)
            if key in busy:
                continue
            busy.add(key)
            if cmd.device_id not in online or max(cmd.next_attempt_at, self._held_until.get(cmd.command_id, now)) > now:
                continue
            if cmd.attempts >= self.policy.max_attempts:
                refused = self._refused.pop(cmd.command_id, None)
                why = f"not granted by the broker: {refused}" if refused else f"no ack after {cmd.attempts} attempts"
                self.store.finish_command(cmd.command_id, "failed", why)
                exhausted.append(Exhausted(cmd, cmd.attempts))
                continue
            attempts = cmd.attempts + 1
            if cmd.kind == "deploy":
                outcome = self.grants.allow(cmd.device_id, decode(cmd.payload, Deploy).tenant)
                if isinstance(outcome, Settling):
                    self._held_until[cmd.command_id] = now + outcome.retry_after_s
                    continue
                self._held_until.pop(cmd.command_id, None)
                if isinstance(outcome, GrantRefused):
                    log.warning("not sending deploy %s of %s to %s: %s", cmd.command_id, cmd.tenant,
                                cmd.device_id, outcome.reason)
                    self._refused[cmd.command_id] = outcome.reason
                    self.store.mark_sent(cmd.command_id, attempts, now + self.policy.retry_delay_s(attempts))
                    continue
                self._refused.pop(cmd.command_id, None)
            self.store.mark_sent(cmd.command_id, attempts, now + self.policy.retry_delay_s(attempts))
            try:
                self._publish(self.topics.commands(cmd.device_id), cmd.payload)
            except Exception:  # the attempt counts; the next one comes after the usual delay
                log.exception("publishing command %s failed", cmd.command_id)
            self.sends += 1
            if attempts > 1:
                self.resends += 1
                log.info("resent %s %s to %s (attempt %d)", cmd.kind, cmd.command_id, cmd.device_id, attempts)
        return exhausted

    def next_due_at(self, online: Collection[str]) -> float | None:
        """When the next command that ``run`` could send is due (None: nothing can be sent now)."""
        heads: dict[tuple[str, str], CommandRow] = {}
        for cmd in self.store.commands(outstanding=True):
            heads.setdefault((cmd.device_id, cmd.tenant), cmd)
        return min((max(c.next_attempt_at, self._held_until.get(c.command_id, c.next_attempt_at))
                    for c in heads.values() if c.device_id in online), default=None)

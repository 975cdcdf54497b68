"""The operator API: MQTT 5 request/response calls (deploy, undeploy, migrate, plan, status) answered on the worker.

A request carries a ResponseTopic and CorrelationData; the answer is one ``OpReply`` published to that
topic with the same correlation data. Deploy, undeploy and migrate are answered when the agent's Ack
settles them, or after ``timeout_s`` with the state so far, so the worker thread never blocks on an agent.
A request that does not decode gets ``bad_request`` if it said where to answer; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.coordinator.engine import Engine
from edgefleet.wire import (
    DeviceView,
    FleetStatus,
    ModelReport,
    OpDeploy,
    OpMigrate,
    OpPlan,
    OpReply,
    OpStatus,
    OpUndeploy,
    TenantView,
    WireError,
    decode_op,
)

log = logging.getLogger(__name__)

Reply = Callable[[str, bytes | None, OpReply], None]  # (response topic, correlation data, reply)


@dataclass(frozen=True)
class Waiter:
    tenant: str
    kind: str  # "deploy" | "undeploy" | "migrate"
    response_topic: str
    correlation_data: bytes | None
    deadline: float  # clock seconds


def usable_response_topic(topic: str | None) -> bool:
    return topic is not None and 0 < len(topic) < 1024 and not any(c in topic for c in "+#\x00")


def fleet_status(engine: Engine) -> FleetStatus:
    """What ``edgefleet status`` shows, from the database, with the performance model's report."""
    store = engine.store
    tenants = store.tenants()
    assigned: dict[str, list[str]] = {}
    for t in tenants:
        if t.device_id is not None:
            assigned.setdefault(t.device_id, []).append(t.name)
    snap = engine.tenants.snapshot()
    devices = []
    for d in store.devices():
        charged = snap.get(d.device_id)
        used = d.model_memory_bytes if d.model_memory_bytes is not None else (charged.used_bytes if charged else 0)
        devices.append(DeviceView(
            device_id=d.device_id, online=d.online, device_kind=d.kind, runtimes=list(d.runtimes),
            memory_budget_bytes=d.memory_budget_bytes, memory_used_bytes=used,
            tenants=sorted(assigned.get(d.device_id, [])), last_seen=d.last_seen,
        ))
    views = [
        TenantView(
            name=t.name, model=t.spec.model, variant=t.spec.variant, slo_ms=t.spec.slo_ms, state=t.state,
            device_id=t.device_id, arrival_rps=t.arrival_rps, latency_p50_ms=t.latency_p50_ms,
            latency_p95_ms=t.latency_p95_ms, errors=t.errors, detail=t.detail, max_batch=t.spec.max_batch,
            requested=t.requested,
        )
        for t in tenants
    ]
    now = engine.clock()
    return FleetStatus(devices=devices, tenants=views, ts=now, model=model_report(engine, now))


def model_report(engine: Engine, now: float) -> ModelReport | None:
    """The performance model's error on the tenants the coordinator manages: what it publishes on
    ``{prefix}/v1/coordinator/model`` and what ``op.status`` carries. None without a performance model."""
    return engine.model.report(now, {t.name for t in engine.store.tenants()})


class OpsDesk:
    """Decodes operator calls, starts them on the engine's tenants and answers each exactly once. The desk
    calls the engine, never the other way: the calls the engine settles later wait in its tenants'
    ``answers`` until the desk takes them (``answer_settled``, from ``handle`` and ``expire``)."""

    def __init__(self, engine: Engine, reply: Reply, clock: Callable[[], float], timeout_s: float) -> None:
        self.engine = engine
        self._reply = reply
        self.clock = clock
        self.timeout_s = timeout_s
        self._waiters: list[Waiter] = []
        self.malformed = 0
        self.handled = 0

    def _send(self, topic: str | None, corr: bytes | None, reply: OpReply) -> None:
        if topic is None or not usable_response_topic(topic):
            return
        try:
            self._reply(topic, corr, reply)
        except Exception:
            log.exception("could not publish the reply to %r", topic)

    def handle(self, payload: bytes, response_topic: str | None, corr: bytes | None) -> None:
        self.handled += 1
        try:
            op = decode_op(payload)
        except WireError as exc:
            self.malformed += 1
            log.warning("malformed operator request: %s", exc.message)
            self._send(response_topic, corr, OpReply(ok=False, code="bad_request", message=exc.message))
            return
        if not usable_response_topic(response_topic) and response_topic:
            self.malformed += 1
            log.warning("operator request with unusable response topic %r", response_topic)
        try:
            if isinstance(op, OpStatus):
                self._send(response_topic, corr, OpReply(ok=True, status=fleet_status(self.engine)))
                return
            if isinstance(op, OpPlan):
                self._send(response_topic, corr, self.engine.tenants.plan(op.tenant, op.rate_rps))
                return
            if isinstance(op, OpDeploy):
                name, kind = op.tenant.name, "deploy"
                reply = self.engine.tenants.deploy(op.tenant, op.device_id)
            elif isinstance(op, OpUndeploy):
                name, kind = op.tenant, "undeploy"
                reply = self.engine.tenants.undeploy(op.tenant)
            elif isinstance(op, OpMigrate):
                name, kind = op.tenant, "migrate"
                reply = self.engine.tenants.migrate(op.tenant, op.device_id)
            else:  # pragma: no cover - decode_op returns one of the four
                return
        except Exception as exc:  # a bug: the caller hears about it, the worker rolls back and goes on
            self._send(response_topic, corr, OpReply(ok=False, code="internal",
                                                     message=f"coordinator failed: {type(exc).__name__}: {exc}"))
            raise
        self.answer_settled()  # calls settled by this one (an undeploy cancels a deploy) before it waits
        if reply is not None:
            self._send(response_topic, corr, reply)
        elif response_topic is not None and usable_response_topic(response_topic):
            self._waiters.append(Waiter(name, kind, response_topic, corr, self.clock() + self.timeout_s))

    def answer_settled(self) -> None:
        """Answer the calls the engine's tenants settled since the last time (``Tenants.take_answers``)."""
        for tenant, kind, reply in self.engine.tenants.take_answers():
            self.settled(tenant, kind, reply)

    def settled(self, tenant: str, kind: str, reply: OpReply) -> None:
        """Answer everyone waiting on (tenant, kind)."""
        done = [w for w in self._waiters if w.tenant == tenant and w.kind == kind]
        if not done:
            return
        self._waiters = [w for w in self._waiters if not (w.tenant == tenant and w.kind == kind)]
        for w in done:
            self._send(w.response_topic, w.correlation_data, reply)

    def expire(self) -> None:
        """Answer the calls settled since the last time, then the callers whose deadline passed with where
        their request stands (the service's timer, after every batch)."""
        self.answer_settled()
        now = self.clock()
        late = [w for w in self._waiters if w.deadline <= now]
        if not late:
            return
        self._waiters = [w for w in self._waiters if w.deadline > now]
        for w in late:
            t = self.engine.store.tenant(w.tenant)
            where = "gone" if t is None else f"{t.state} on {t.device_id or 'no device'}"
            detail = f" ({t.detail})" if t is not None and t.detail else ""
            message = f"{w.tenant}: no answer from the device within {self.timeout_s:g} s; now {where}{detail}"
            self._send(w.response_topic, w.correlation_data,
                       OpReply(ok=False, code="deadline_exceeded", message=message,
                               device_id=t.device_id if t is not None else None))

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self._waiters), default=None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

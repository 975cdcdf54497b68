"""Per-tenant request queues with earliest-deadline-first dispatch, admission control and batching.

The policy parts are pure functions (``admit``, ``pick_tenant``); ``Scheduler`` is the thread-safe
container the MQTT thread submits to and the inference workers take batches from.

Admission: a request is shed at once ("overloaded") when its tenant's queue is full or when the work
already queued on the device, spread over the workers, plus its own service time would end after its
deadline. So queues stay bounded at any offered load and nobody waits for an answer that will be late.
Dispatch: earliest deadline first across tenants, with a fair-share guard — a tenant that has used
more than ``FAIR_SHARE_FACTOR`` times the recent worker time of the least-served waiting tenant (plus
a grace) yields to the others, so one hot tenant cannot starve the others however tight its own deadlines are.
Batching: from the chosen tenant's queue, the compatible requests at its head are offered to the
adaptive controller (``edgefleet.agent.batching.choose_batch``), which picks how many run together; nothing ever
waits for requests that have not arrived, so at low load a request runs at once. Whatever the batch
policy (edgefleet.agent.batching.BatchPolicy), requests are admitted by the same rule and a request that could not
finish by its deadline even run alone now is answered ``deadline_exceeded`` before a batch forms.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgefleet.agent.batching import BatchPolicy, ServiceModel, hopeless
from edgefleet.agent.slots import Slots, TenantSlot

FAIR_SHARE_FACTOR = 2.0  # a tenant above this multiple of the least-served waiting tenant's usage yields
FAIR_SHARE_GRACE_S = 0.05  # ... plus this many seconds, so light imbalances stay plain EDF
USAGE_HALF_LIFE_S = 1.0  # recent worker usage decays with this half-life


@dataclass(slots=True)
class Request:
    tenant: str
    tensors: dict[str, np.ndarray]
    rows: int  # batch rows carried by this request (>= 1)
    received: float  # monotonic seconds
    deadline: float  # monotonic seconds
    response_topic: str | None = None
    correlation: bytes | None = None
    qos: int = 0
    batch_key: object = None  # requests with equal non-None keys can run as one batch
    image: bytes | None = None  # an encoded frame (JPEG/PNG) the worker prepares into ``tensors``
    stream: object = None  # a stream tenant's frame (edgefleet.agent.stream.StreamFrame); None: a request
    stream_key: str | None = None  # its source topic: a newer frame of the same source replaces it


@dataclass(frozen=True)
class Admission:
    ok: bool
    reason: str = ""


ADMITTED = Admission(True)
ADMISSION_SAFETY = 1.2  # expected finish times are stretched by this much before comparing to deadlines


def admit(
    *,
    now: float,
    deadline: float,
    queue_len: int,
    max_queue: int,
    queued_work_s: float,
    service_s: float,
    workers: int,
    safety: float = 1.0,
) -> Admission:
    """Admit a request unless it cannot be expected to finish by its deadline.

    Expected finish = now + safety * (queued_work_s / workers + service_s). Example: 30 ms of queued
    work over 2 workers + 5 ms service = now + 20 ms; with a deadline 15 ms away it is shed. ``safety``
    (>= 1) covers the spread of service times around their mean: a request admitted on the mean alone
    misses its deadline about half the times the estimate is exactly at the edge.
    """
    if now >= deadline:
        return Admission(False, "deadline already passed on arrival")
    if queue_len >= max_queue:
        return Admission(False, f"queue full ({queue_len} requests)")
    finish = now + safety * (queued_work_s / max(1, workers) + service_s)
    if finish > deadline:
        return Admission(
            False,
            f"expected finish in {1e3 * (finish - now):.1f} ms, deadline in {1e3 * (deadline - now):.1f} ms",
        )
    return ADMITTED


def pick_tenant(heads: Mapping[str, float], usage: Mapping[str, float] | None = None) -> str | None:
    """Earliest deadline first among the tenants' head requests; ties by name for determinism.

    Fair-share guard: with ``usage`` (recent worker seconds per tenant), a waiting tenant whose usage
    exceeds FAIR_SHARE_FACTOR x the least-served waiting tenant's usage + FAIR_SHARE_GRACE_S yields.
    Example: hot 0.06 s, calm 0.00 s: 0.06 > 2 x 0.00 + 0.05 -> hot yields, calm runs although its
    deadline is later. hot 0.04 s, calm 0.00 s: 0.04 <= 0.05 -> plain EDF.
    """
    if not heads:
        return None
    eligible = dict(heads)
    if usage and len(heads) > 1:
        least = min(usage.get(t, 0.0) for t in heads)
        limit = FAIR_SHARE_FACTOR * least + FAIR_SHARE_GRACE_S
        under = {t: d for t, d in heads.items() if usage.get(t, 0.0) <= limit}
        if under:
            eligible = under
    return min(eligible.items(), key=lambda kv: (kv[1], kv[0]))[0]


@dataclass
class Batch:
    tenant: str
    requests: list[Request]
    expired: list[Request]


class Scheduler:
    """The queues of the agent's tenant slots, guarded by one condition. ``submit`` from the request path,
    ``take`` from worker threads; loads, unloads and removals wait on the same condition."""

    def __init__(
        self,
        *,
        workers: int,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        policy: BatchPolicy | None = None,
        slots: Slots | None = None,
        admission_safety: float = ADMISSION_SAFETY,
    ) -> None:
        self.workers = workers
        self.admission_safety = admission_safety
        self.policy = policy or BatchPolicy()
        self.max_queue = max_queue
        self.clock = clock
        self.slots = slots if slots is not None else Slots()
        self._usage_at = clock()
        self._cond = threading.Condition()
        self._watchers = 0  # threads in wait_idle (woken by every finished batch)
        self._closed = False

    def _slot(self, tenant: str) -> TenantSlot | None:
        slot = self.slots.get(tenant)
        return slot if slot is not None and slot.scheduled else None

    # -- tenants -----------------------------------------------------------------------------------
    def add_tenant(
        self, tenant: str, *, max_batch: int, model: ServiceModel | None = None, ready: bool = True
    ) -> None:
        slot = self.slots.ensure(tenant)
        with self._cond:
            slot.scheduled = True
            slot.max_batch = max_batch
            if model is not None:
                slot.service = model
            if ready:
                slot.ready = True
            self._cond.notify_all()

    def set_ready(
        self, tenant: str, ready: bool, model: ServiceModel | None = None, concurrency: int | None = None
    ) -> None:
        """Mark a tenant's model resident (dispatchable) or not; ``model`` replaces its service model
        (a different variant serves at a different speed); ``concurrency`` is how many batches its
        session runs at once (1 for sessions that are not re-entrant: a second worker on the same
        tenant would only wait for the first while a core idles)."""
        with self._cond:
            slot = self._slot(tenant)
            if slot is None:
                return
            if model is not None:
                slot.service = model
            if concurrency is not None:
                slot.concurrency = max(1, concurrency)
            slot.ready = ready
            self._cond.notify_all()

    def set_max_batch(self, tenant: str, max_batch: int) -> None:
        """The largest batch formed for ``tenant`` from now on (a reconfigured tenant)."""
        with self._cond:
            slot = self._slot(tenant)
            if slot is not None:
                slot.max_batch = max(1, max_batch)
                self._cond.notify_all()

    def inflight(self, tenant: str) -> int:
        with self._cond:
            slot = self.slots.get(tenant)
            return slot.inflight if slot is not None else 0

    def pending(self, tenant: str) -> int:
        with self._cond:
            slot = self.slots.get(tenant)
            return len(slot.queue) if slot is not None else 0

    def remove_tenant(self, tenant: str) -> list[Request]:
        """Stop scheduling a tenant; returns requests still queued (the caller answers them)."""
        with self._cond:
            slot = self.slots.get(tenant)
            if slot is None:
                return []
            left = list(slot.queue)
            slot.queue.clear()
            slot.scheduled = slot.ready = False
            slot.usage_s = 0.0
            slot.running = 0
            slot.concurrency = None
            if slot.spec is None and slot.hosted is None:  # scheduled alone: nothing else holds it
                self.slots.remove(tenant)
            self._cond.notify_all()
            return left

    def model(self, tenant: str) -> ServiceModel | None:
        slot = self._slot(tenant)
        return slot.service if slot is not None else None

    def queued(self, tenant: str) -> int:
        with self._cond:
            slot = self.slots.get(tenant)
            return slot.busy if slot is not None else 0

    def observe(self, tenant: str, rows: int, service_s: float) -> None:
        """Record a finished batch: feeds the batch-size model and the fair-share usage."""
        with self._cond:
            slot = self.slots.get(tenant)
            if slot is not None:
                self._observe(slot, rows, service_s)

    def _observe(self, slot: TenantSlot, rows: int, service_s: float) -> None:
        slot.service.observe(rows, service_s)
        self._decay()
        slot.usage_s += service_s

    def _decay(self) -> None:
        now = self.clock()
        dt = now - self._usage_at
        if dt > 0:
            f = math.pow(0.5, dt / USAGE_HALF_LIFE_S)
            for slot in self.slots:
                slot.usage_s *= f
            self._usage_at = now

    # -- producer side -----------------------------------------------------------------------------
    def admission(self, slot: TenantSlot, deadline: float) -> Admission:
        """Would a request with ``deadline`` be admitted now? (No lock: a cheap early estimate that
        lets the request path shed before it decodes anything; ``submit`` decides under the lock.)"""
        return self._admit(slot, deadline, self.clock())

    def _admit(self, slot: TenantSlot, deadline: float, now: float) -> Admission:
        # queued and running requests, at the best measured cost per request; the new one then
        # needs at least a batch-1 run of its own model
        work = 0.0
        for other in self.slots:
            n = len(other.queue) + other.inflight
            if n:
                work += n * other.service.per_request()
        return admit(
            now=now,
            deadline=deadline,
            queue_len=len(slot.queue),
            max_queue=self.max_queue,
            queued_work_s=work,
            service_s=slot.service.estimate(1),
            workers=self.workers,
            safety=self.admission_safety,
        )

    def submit(self, req: Request) -> Admission:
        with self._cond:
            slot = self._slot(req.tenant)
            if slot is None or self._closed:
                return Admission(False, "tenant not hosted here")
            decision = self._admit(slot, req.deadline, self.clock())
            if decision.ok:
                slot.queue.append(req)
                self._cond.notify()
            return decision

    def offer_latest(self, req: Request) -> int | None:
        """Queue a stream frame in place of the frames of its source still waiting (newest frame wins:
        no admission, no queue). Returns how many it replaced (skipped), or None when the tenant is not
        scheduled here."""
        with self._cond:
            slot = self._slot(req.tenant)
            if slot is None or self._closed:
                return None
            q = slot.queue
            key = req.stream_key
            skipped = sum(1 for r in q if r.stream_key == key)
            if skipped:
                kept = [r for r in q if r.stream_key != key]
                q.clear()
                q.extend(kept)
            q.append(req)
            self._cond.notify()
            return skipped

    # -- consumer side -----------------------------------------------------------------------------
    def take(self, timeout: float) -> Batch | None:
        """Block up to ``timeout`` s for work; return the next batch (possibly only expired requests)."""
        with self._cond:
            end = self.clock() + timeout
            while not self._closed:
                now = self.clock()
                heads: dict[str, float] = {}
                usage: dict[str, float] = {}
                by_name: dict[str, TenantSlot] = {}
                for slot in self.slots:
                    q = slot.queue
                    if not q or not slot.scheduled:
                        continue
                    if not slot.ready:  # waiting for a load: still answer the expired
                        if q[0].deadline <= now:
                            expired = []
                            while q and q[0].deadline <= now:
                                expired.append(q.popleft())
                            return Batch(slot.name, [], expired)
                        continue
                    limit = slot.concurrency if slot.concurrency is not None else self.workers
                    if slot.running < limit:
                        heads[slot.name] = q[0].deadline
                        usage[slot.name] = slot.usage_s
                        by_name[slot.name] = slot
                if len(heads) > 1:
                    self._decay()
                    usage = {t: by_name[t].usage_s for t in heads}
                tenant = pick_tenant(heads, usage)
                chosen = by_name[tenant] if tenant is not None else None
                hold = self._hold(chosen, now) if chosen is not None else 0.0
                if chosen is not None and hold <= 0:
                    return self._form(chosen)
                remaining = end - self.clock()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, hold) if hold > 0 else remaining)
            return None

    def _hold(self, slot: TenantSlot, now: float) -> float:
        if self.policy.kind == "adaptive":
            return 0.0
        q = slot.queue
        return self.policy.hold(queued=len(q), head_age_s=now - q[0].received, max_batch=slot.max_batch)

    def _form(self, slot: TenantSlot) -> Batch:
        q = slot.queue
        now = self.clock()
        expired: list[Request] = []
        model = slot.service
        while q and (q[0].deadline <= now or hopeless(now=now, deadline=q[0].deadline, model=model)):
            expired.append(q.popleft())
        if not q:
            return Batch(slot.name, [], expired)
        head = q[0]
        limit = slot.max_batch
        candidates = [head]
        rows = head.rows
        if head.batch_key is not None:
            for r in itertools.islice(q, 1, None):
                if r.batch_key != head.batch_key or r.deadline <= now or rows + r.rows > limit:
                    break
                candidates.append(r)
                rows += r.rows
        n = 1
        if len(candidates) > 1:
            n = self.policy.count(
                now=now,
                candidates_deadlines=[r.deadline for r in candidates],
                rows=[r.rows for r in candidates],
                max_rows=limit,
                model=model,
                tenant=slot.name,
            )
        batch = [q.popleft() for _ in range(max(1, n))]
        slot.inflight += len(batch)
        slot.running += 1
        return Batch(slot.name, batch, expired)

    def done(self, batch: Batch, *, rows: int = 0, service_s: float | None = None) -> None:
        """A batch finished (``service_s``: how long it ran, which feeds the service model and the
        fair share, as ``observe`` would: one lock for both)."""
        with self._cond:
            slot = self.slots.get(batch.tenant)
            if slot is not None:
                slot.inflight = max(0, slot.inflight - len(batch.requests))
                if batch.requests:
                    slot.running = max(0, slot.running - 1)
                    if self.policy.learns_from_batches:
                        now = self.clock()
                        missed = any(now > r.deadline for r in batch.requests)
                        self.policy.finished(batch.tenant, missed=missed, max_batch=slot.max_batch)
                if service_s is not None:
                    self._observe(slot, rows, service_s)
            # the worker that ran the batch takes the next one itself: wake another worker only for
            # queued work, and everyone only when someone waits for a tenant to go idle
            if self._watchers:
                self._cond.notify_all()
            elif slot is not None and slot.queue:
                self._cond.notify()

    def wait_idle(self, tenant: str, timeout: float, *, queued_too: bool = False) -> bool:
        """Wait until no batch of ``tenant`` runs (``queued_too``: and none is queued); False on timeout.
        Woken by ``done``: no polling."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                slot = self.slots.get(tenant)
                if slot is None or (slot.busy if queued_too else slot.inflight) == 0:
                    return True
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._watchers += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._watchers -= 1

    def wait_drained(self, tenant: str, timeout: float) -> bool:
        return self.wait_idle(tenant, timeout, queued_too=True)

    def close(self) -> list[Request]:
        with self._cond:
            self._closed = True
            left = [r for slot in self.slots for r in slot.queue]
            for slot in self.slots:
                slot.queue.clear()
            self._cond.notify_all()
            return left

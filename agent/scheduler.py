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
adaptive controller (``agent.batching.choose_batch``), which picks how many run together; nothing ever
waits for requests that have not arrived, so at low load a request runs at once.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.batching import BatchPolicy, ServiceModel, hopeless

FAIR_SHARE_FACTOR = 2.0  # a tenant above this multiple of the least-served waiting tenant's usage yields
FAIR_SHARE_GRACE_S = 0.05  # ... plus this many seconds, so light imbalances stay plain EDF
USAGE_HALF_LIFE_S = 1.0  # recent worker usage decays with this half-life


@dataclass
class Request:
    tenant: str
    tensors: dict[str, np.ndarray]
    rows: int  # batch rows carried by this request (>= 1)
    received: float  # monotonic seconds
    deadline: float  # monotonic seconds
    response_topic: str | None = None
    correlation: bytes | None = None
    qos: int = 0
    started: float = 0.0
    batch_key: object = None  # requests with equal non-None keys can run as one batch
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Admission:
    ok: bool
    reason: str = ""


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
    return Admission(True)


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
    """Thread-safe queues. ``submit`` from the MQTT thread, ``take`` from worker threads."""

    def __init__(
        self,
        *,
        workers: int,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        policy: BatchPolicy | None = None,
    ) -> None:
        self.workers = workers
        self.policy = policy or BatchPolicy()
        self.max_queue = max_queue
        self.clock = clock
        self._queues: dict[str, deque[Request]] = {}
        self._models: dict[str, ServiceModel] = {}  # measured service time by batch size
        self._max_batch: dict[str, int] = {}
        self._usage: dict[str, float] = {}  # decayed worker seconds
        self._usage_at = clock()
        self._cond = threading.Condition()
        self._closed = False
        self._inflight: dict[str, int] = {}  # requests in running batches
        self._running: dict[str, int] = {}  # batches running
        self._concurrency: dict[str, int] = {}  # batches a tenant's session can run at once
        self._ready: set[str] = set()  # tenants whose model is resident: only these are dispatched

    # -- tenants -----------------------------------------------------------------------------------
    def add_tenant(
        self, tenant: str, *, max_batch: int, model: ServiceModel | None = None, ready: bool = True
    ) -> None:
        with self._cond:
            self._queues.setdefault(tenant, deque())
            self._max_batch[tenant] = max_batch
            self._models[tenant] = model or self._models.get(tenant) or ServiceModel()
            if ready:
                self._ready.add(tenant)
            self._cond.notify_all()

    def set_ready(
        self, tenant: str, ready: bool, model: ServiceModel | None = None, concurrency: int | None = None
    ) -> None:
        """Mark a tenant's model resident (dispatchable) or not; ``model`` replaces its service model
        (a different variant serves at a different speed); ``concurrency`` is how many batches its
        session runs at once (1 for LiteRT/EdgeTPU interpreters, which are not re-entrant: a second
        worker on the same tenant would only wait for the first while a core idles)."""
        with self._cond:
            if tenant not in self._queues:
                return
            if model is not None:
                self._models[tenant] = model
            if concurrency is not None:
                self._concurrency[tenant] = max(1, concurrency)
            if ready:
                self._ready.add(tenant)
            else:
                self._ready.discard(tenant)
            self._cond.notify_all()

    def set_max_batch(self, tenant: str, max_batch: int) -> None:
        """The largest batch formed for ``tenant`` from now on (a reconfigured tenant)."""
        with self._cond:
            if tenant in self._queues:
                self._max_batch[tenant] = max(1, max_batch)
                self._cond.notify_all()

    def inflight(self, tenant: str) -> int:
        with self._cond:
            return self._inflight.get(tenant, 0)

    def pending(self, tenant: str) -> int:
        with self._cond:
            return len(self._queues.get(tenant, ()))

    def remove_tenant(self, tenant: str) -> list[Request]:
        """Forget a tenant; returns requests still queued (the caller answers them)."""
        with self._cond:
            left = list(self._queues.pop(tenant, deque()))
            self._max_batch.pop(tenant, None)
            self._models.pop(tenant, None)
            self._usage.pop(tenant, None)
            self._ready.discard(tenant)
            self._running.pop(tenant, None)
            self._concurrency.pop(tenant, None)
            return left

    def model(self, tenant: str) -> ServiceModel | None:
        return self._models.get(tenant)

    def queued(self, tenant: str) -> int:
        with self._cond:
            return len(self._queues.get(tenant, ())) + self._inflight.get(tenant, 0)

    def observe(self, tenant: str, rows: int, service_s: float) -> None:
        """Record a finished batch: feeds the batch-size model and the fair-share usage."""
        with self._cond:
            m = self._models.get(tenant)
            if m is not None:
                m.observe(rows, service_s)
            self._decay()
            self._usage[tenant] = self._usage.get(tenant, 0.0) + service_s

    def _decay(self) -> None:
        now = self.clock()
        dt = now - self._usage_at
        if dt > 0:
            f = math.pow(0.5, dt / USAGE_HALF_LIFE_S)
            for t in self._usage:
                self._usage[t] *= f
            self._usage_at = now

    def _cost(self, tenant: str) -> float:
        m = self._models.get(tenant)
        return m.per_request() if m is not None else 0.0

    # -- producer side -----------------------------------------------------------------------------
    def submit(self, req: Request) -> Admission:
        with self._cond:
            q = self._queues.get(req.tenant)
            if q is None or self._closed:
                return Admission(False, "tenant not hosted here")
            # queued and running requests, at the best measured cost per request; the new one then
            # needs at least a batch-1 run of its own model
            work = sum((len(qq) + self._inflight.get(t, 0)) * self._cost(t) for t, qq in self._queues.items())
            model = self._models.get(req.tenant)
            decision = admit(
                now=self.clock(),
                deadline=req.deadline,
                queue_len=len(q),
                max_queue=self.max_queue,
                queued_work_s=work,
                service_s=model.estimate(1) if model is not None else 0.0,
                workers=self.workers,
                safety=ADMISSION_SAFETY,
            )
            if decision.ok:
                q.append(req)
                self._cond.notify()
            return decision

    # -- consumer side -----------------------------------------------------------------------------
    def take(self, timeout: float) -> Batch | None:
        """Block up to ``timeout`` s for work; return the next batch (possibly only expired requests)."""
        with self._cond:
            end = self.clock() + timeout
            while not self._closed:
                now = self.clock()
                for t, q in self._queues.items():  # waiting for a load: still answer the expired
                    if t not in self._ready and q and q[0].deadline <= now:
                        expired = []
                        while q and q[0].deadline <= now:
                            expired.append(q.popleft())
                        return Batch(t, [], expired)
                heads = {
                    t: q[0].deadline
                    for t, q in self._queues.items()
                    if q
                    and t in self._ready
                    and self._running.get(t, 0) < self._concurrency.get(t, self.workers)
                }
                if len(heads) > 1:
                    self._decay()
                tenant = pick_tenant(heads, self._usage)
                hold = self._hold(tenant, now) if tenant is not None else 0.0
                if tenant is not None and hold <= 0:
                    return self._form(tenant)
                remaining = end - self.clock()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, hold) if hold > 0 else remaining)
            return None

    def _hold(self, tenant: str, now: float) -> float:
        if self.policy.kind == "adaptive":
            return 0.0
        q = self._queues[tenant]
        return self.policy.hold(
            queued=len(q), head_age_s=now - q[0].received, max_batch=self._max_batch.get(tenant, 1)
        )

    def _form(self, tenant: str) -> Batch:
        q = self._queues[tenant]
        now = self.clock()
        expired: list[Request] = []
        model = self._models[tenant]
        while q and (
            q[0].deadline <= now
            or (self.policy.kind == "adaptive" and hopeless(now=now, deadline=q[0].deadline, model=model))
        ):
            expired.append(q.popleft())
        if not q:
            return Batch(tenant, [], expired)
        head = q[0]
        limit = self._max_batch.get(tenant, 1)
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
                model=self._models[tenant],
            )
        batch = [q.popleft() for _ in range(max(1, n))]
        self._inflight[tenant] = self._inflight.get(tenant, 0) + len(batch)
        self._running[tenant] = self._running.get(tenant, 0) + 1
        return Batch(tenant, batch, expired)

    def done(self, batch: Batch) -> None:
        with self._cond:
            n = self._inflight.get(batch.tenant, 0) - len(batch.requests)
            self._inflight[batch.tenant] = max(0, n)
            if batch.requests:
                self._running[batch.tenant] = max(0, self._running.get(batch.tenant, 0) - 1)
            self._cond.notify_all()

    def wait_drained(self, tenant: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._queues.get(tenant, ())) + self._inflight.get(tenant, 0) > 0:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def close(self) -> list[Request]:
        with self._cond:
            self._closed = True
            left = [r for q in self._queues.values() for r in q]
            for q in self._queues.values():
                q.clear()
            self._cond.notify_all()
            return left

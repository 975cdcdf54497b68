"""Runs the memory policy against the device: which tenants' models are resident, and which variant.

Policies (config ``memory_policy``):
``static``     every assigned tenant resident at its preferred variant; a deploy that does not fit fails
               with ``no_memory`` (what a placement that counts bytes expects).
``lru``        the baseline: a request for a cold tenant loads its preferred variant, evicting the least
               recently used idle tenants.
``predictive`` every ``tick_s`` the planner (``edgefleet.agent.memory.planner``) chooses the resident set from the
               Bayesian forecast of each tenant's next requests, downgrading before evicting, and the
               manager loads ahead of demand (prefetch) and evicts; a request for a cold tenant makes it
               required and triggers a plan at once.

A tenant with requests queued or running, or one that had a request in the last ``active_s`` seconds, is
pinned: it is never unloaded under its requests. Loads and unloads run on the ``ef-memory`` thread;
the scheduler only dispatches tenants marked ready, so a swap never pulls a model from under a batch:
it marks the tenant not ready and waits on the scheduler's condition until its running batches end.
Everything per tenant lives in its ``TenantSlot`` (``edgefleet.agent.slots``); the request path only counts
arrivals there, and this thread folds the counts into the forecast once per tick.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from edgefleet.agent.host import DeployError, Hosted, ModelHost, warm_up
from edgefleet.agent.memory.lru import lru_admit
from edgefleet.agent.memory.planner import Candidate, VariantOption, plan_residency
from edgefleet.agent.memory.predictor import ArrivalPredictor
from edgefleet.agent.profiling import service_profile
from edgefleet.agent.scheduler import Scheduler
from edgefleet.agent.slots import TenantSlot
from edgefleet.wire import ServiceProfile, TenantSpec

log = logging.getLogger(__name__)

POLICIES = ("static", "lru", "predictive")


class MemoryManager:
    def __init__(
        self,
        host: ModelHost,
        scheduler: Scheduler,
        *,
        policy: str = "predictive",
        tick_s: float = 1.0,
        horizon_s: float = 30.0,
        active_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"memory_policy must be one of {POLICIES}, got {policy!r}")
        self.host = host
        self.scheduler = scheduler
        self.policy = policy
        self.tick_s = tick_s
        self.horizon_s = horizon_s
        self.active_s = active_s
        self.clock = clock
        self.predictor = ArrivalPredictor()
        self.slots = scheduler.slots
        if host.slots is not self.slots:
            raise ValueError("the host and the scheduler must share one slot table")
        self._last_used: dict[str, float] = {}
        self._lock = threading.RLock()  # guards assignments and every load/unload
        self._demand: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ef-memory", daemon=True)
        self.loads = 0
        self.evictions = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._demand.put(None)
        self._thread.join(10)

    @property
    def assigned(self) -> dict[str, TenantSlot]:
        """The tenants assigned to this device, by name."""
        return self.slots.assigned()

    # -- assignments (command thread) --------------------------------------------------------------
    def assign(self, spec: TenantSpec) -> None:
        """Host a tenant: resolve its acceptable variants and make it resident now (a deploy is
        acknowledged warm). Other tenants may be downgraded or evicted to make room (not ``static``)."""
        options = self.host.options(spec)
        smallest = min(r.size_bytes for r in options.values())
        if smallest > self.host.budget_bytes:
            raise DeployError(
                "no_memory",
                f"{spec.model} needs at least {smallest / 2**20:.1f} MiB; the "
                f"device's budget is {self.host.budget_bytes / 2**20:.0f} MiB",
            )
        with self._lock:
            slot = self.slots.ensure(spec.name)
            slot.spec, slot.options = spec, options
            self.scheduler.add_tenant(spec.name, max_batch=spec.max_batch, ready=False)
            try:
                self._make_resident(spec.name)
            except DeployError:
                self.scheduler.remove_tenant(spec.name)
                self.slots.remove(spec.name)
                raise

    def reconfigure(self, spec: TenantSpec) -> str:
        """Change an assigned tenant in place (same model): its batching at once, and its variant
        make-before-break when the budget holds both sessions — the new one is loaded and warmed
        beside the old, dispatch pauses only while batches already running on the old one finish,
        then the new one serves and the old one is closed. When the budget cannot hold both, the old
        one is dropped first and queued requests wait for the new one. Any failure restores the
        previous spec (and its session) and raises DeployError. Returns what now serves, for the Ack."""
        _same_model(self.assigned.get(spec.name), spec)
        options = self.host.options(spec)
        if spec.variant not in options:
            raise DeployError("variant_unavailable", f"{spec.model}:{spec.variant} is not available here "
                              f"at min_fidelity {spec.min_fidelity} (have {', '.join(options)})")
        with self._lock:
            a = _same_model(self.assigned.get(spec.name), spec)  # again: it may have left meanwhile
            before = (a.spec, a.options)
            a.spec, a.options = spec, options
            self.scheduler.set_max_batch(spec.name, spec.max_batch)
            hosted = self.host.get(spec.name)
            try:
                if hosted is not None and hosted.variant != spec.variant:
                    room = self.host.memory_used() + options[spec.variant].size_bytes <= self.host.budget_bytes
                    if room:
                        self._swap(spec.name, spec.variant)
                    else:
                        self._unload(spec.name)
                        self._make_resident(spec.name)
                elif hosted is not None:
                    hosted.spec = spec
            except DeployError:
                a.spec, a.options = before
                self.scheduler.set_max_batch(spec.name, a.spec.max_batch)
                if self.host.get(spec.name) is None:
                    self._make_resident(spec.name)
                raise
            now = self.host.get(spec.name)
            variant = now.variant if now is not None else "not resident"
            return f"{spec.name} reconfigured: {spec.model}:{variant}, max_batch {spec.max_batch}"

    def _swap(self, name: str, variant: str) -> None:
        """Make-before-break variant switch (the budget holds both sessions; see ``reconfigure``)."""
        a = self._slot(name)
        new = self.host.open(a.spec, variant, a.options[variant])
        model = warm_up(new, a)
        self.scheduler.set_ready(name, False)
        self.scheduler.wait_idle(name, timeout=5.0)  # batches already running on the old session end
        old = self.host.install(new)
        a.profile = service_profile(a.spec.model, variant, new.profile)
        self.loads += 1
        self.scheduler.set_ready(name, True, model, concurrency=_concurrency(new))
        if old is not None:
            old.session.close()
        log.info("%s switched to %s:%s make-before-break", name, a.spec.model, variant)

    def unassign(self, name: str) -> None:
        with self._lock:
            slot = self.slots.get(name)
            if slot is not None:
                slot.spec = None
            self.predictor.forget(name)
            self._last_used.pop(name, None)
            if self.host.get(name) is not None:
                self.host.unload(name)
            self.slots.remove(name)

    def take_profile(self, name: str) -> ServiceProfile | None:
        """The service profile measured when ``name``'s model was last loaded and warmed, once: a second
        call returns None until another load (so a command that loaded nothing reports nothing)."""
        with self._lock:
            a = self.slots.get(name)
            if a is None or a.spec is None:
                return None
            profile, a.profile = a.profile, None
            return profile

    def is_assigned(self, name: str) -> bool:
        slot = self.slots.get(name)
        return slot is not None and slot.spec is not None

    def _slot(self, name: str) -> _Assigned:
        slot = self.slots.get(name)
        if slot is None or slot.spec is None:
            raise KeyError(name)
        return slot  # type: ignore[return-value]

    # -- demand (request path: must not block) ---------------------------------------------------
    def arrival(self, tenant: str) -> bool:
        """A request for ``tenant`` arrived; True if its model is resident (a warm start)."""
        slot = self.slots.get(tenant)
        if slot is None:
            return False
        return self.arrived(slot)

    def arrived(self, slot: TenantSlot) -> bool:
        """A request for ``slot`` arrived: counted in the slot (the forecast takes the counts on the
        next tick); True if its model is resident (a warm start), else a load is asked for."""
        slot.last_arrival = self.clock()
        slot.arrivals += 1
        if slot.hosted is not None:
            return True
        self._demand.put(slot.name)
        return False

    def _fold_arrivals(self) -> None:
        """Move the slots' arrival counts into the forecast and the LRU clock (memory thread)."""
        for slot in self.slots:
            n, slot.arrivals = slot.arrivals, 0
            if n:
                self.predictor.observe(slot.name, slot.last_arrival, n)
                self._last_used[slot.name] = slot.last_arrival

    # -- the ef-memory thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        next_tick = self.clock() + self.tick_s
        while not self._stop.is_set():
            try:
                tenant = self._demand.get(timeout=max(0.0, next_tick - self.clock()))
            except queue.Empty:
                tenant = None
            if self._stop.is_set():
                return
            try:
                self._fold_arrivals()
                if tenant is not None:
                    with self._lock:
                        if self.is_assigned(tenant) and self.host.get(tenant) is None:
                            self._make_resident(tenant)
                if self.clock() >= next_tick:
                    next_tick = self.clock() + self.tick_s
                    if self.policy == "predictive":
                        with self._lock:
                            self._apply_plan(required=None)
            except DeployError as exc:
                log.warning("could not make %s resident: %s", tenant, exc.message)
            except Exception:
                log.exception("memory manager step failed")

    # -- mechanics ---------------------------------------------------------------------------------
    def _pinned(self, name: str, now: float) -> bool:
        busy = self.scheduler.queued(name) > 0
        a = self.slots.get(name)
        recent = a is not None and now - a.last_arrival < self.active_s
        return self.host.get(name) is not None and (busy or recent)

    def _make_resident(self, name: str) -> None:
        if self.policy == "predictive":
            self._apply_plan(required=name)
        else:
            a = self._slot(name)
            variant = next(iter(a.options))  # the preferred variant
            if self.policy == "lru":
                self._lru_room(name, a.options[variant].size_bytes)
            self._load(name, variant)
        if self.host.get(name) is None:
            raise DeployError(
                "no_memory", f"{name}: no room in the memory budget even after evicting idle tenants"
            )

    def _lru_room(self, name: str, size: int) -> None:
        self._fold_arrivals()
        now = self.clock()
        resident = {t: h.memory_bytes for t, h in self.host.tenants().items()}
        pinned = frozenset(t for t in resident if self._pinned(t, now))
        victims = lru_admit(name, size, resident, self._last_used, self.host.budget_bytes, pinned)
        for t in victims or []:
            self._unload(t)

    def _apply_plan(self, required: str | None) -> None:
        self._fold_arrivals()
        now = self.clock()
        current = {t: h.variant for t, h in self.host.tenants().items()}
        cands = []
        for name, a in self.assigned.items():
            assert a.spec is not None
            opts = tuple(VariantOption(v, r.size_bytes, r.fidelity) for v, r in a.options.items())
            if name in current and current[name] in a.options:
                # account what the resident session really takes
                h = self.host.get(name)
                if h is not None:
                    opts = tuple(
                        VariantOption(
                            o.variant, h.memory_bytes if o.variant == h.variant else o.size_bytes, o.fidelity
                        )
                        for o in opts
                    )
            p = 1.0 if name == required else self.predictor.p_next(name, now, self.horizon_s)
            cands.append(
                Candidate(
                    name,
                    opts,
                    p,
                    current.get(name),
                    pinned=self._pinned(name, now),
                    required=name == required,
                    min_fidelity=a.spec.min_fidelity,  # host.options filtered already; the plan holds it too
                )
            )
        plan = plan_residency(cands, self.host.budget_bytes)
        loads = plan.loads(current)
        # free first (evictions, and the old session of every variant switch), then load
        for t in [*plan.evictions(current), *(t for t in loads if t in current)]:
            self._unload(t)
        for t, v in loads.items():
            self._load(t, v)

    def _load(self, name: str, variant: str) -> None:
        a = self._slot(name)
        hosted = self.host.load(a.spec, variant, a.options[variant])
        model = warm_up(hosted, a)
        a.profile = service_profile(a.spec.model, variant, hosted.profile)
        self.loads += 1
        self.scheduler.set_ready(name, True, model, concurrency=_concurrency(hosted))
        log.info("%s resident as %s:%s (%.1f MiB)", name, a.spec.model, variant, hosted.memory_bytes / 2**20)

    def _unload(self, name: str) -> None:
        self.scheduler.set_ready(name, False)
        self.scheduler.wait_idle(name, timeout=5.0)  # batches already running end first
        self.host.unload(name)
        self.evictions += 1
        log.info("%s evicted from memory", name)


class _Assigned(TenantSlot):
    """A slot with a spec (for the type checker: ``_slot`` returns only those)."""

    spec: TenantSpec


def _concurrency(hosted: Hosted) -> int | None:
    """Batches a session may run at once: every worker if it is re-entrant, else one."""
    return None if hosted.capabilities.reentrant else 1


def _same_model(current: TenantSlot | None, spec: TenantSpec) -> _Assigned:
    """The tenant's slot, if ``spec`` may reconfigure it in place (it is hosted, same model)."""
    if current is None or current.spec is None:
        raise DeployError("unknown_tenant", f"{spec.name} is not hosted here")
    if current.spec.model != spec.model:
        raise DeployError("bad_request", f"{spec.name} runs {current.spec.model}, not {spec.model}: "
                          "a new model is a new deploy")
    return current  # type: ignore[return-value]

"""One ``TenantSlot`` per tenant: the single record the agent keeps for it.

Before, a tenant had five owners (the scheduler's parallel per-tenant collections, the memory manager's
assignment, the host's loaded session, the serving code and the durable state) that had to agree. Now
every part reads and writes the tenant's slot, each under its own rule:

- ``spec``/``options`` (what is wanted; written by the reconcile on the command thread, under the
  memory manager's lock);
- ``hosted`` and what the model declares (``inputs``, ``capabilities``, batch axes; written by loads);
- the queue and its counters (``queue``, ``inflight``, ``running``, ``ready``...; only under the
  scheduler's condition, which is also what loads and unloads wait on);
- demand (``last_arrival``, ``arrivals``; counters written on the request path and folded into the
  forecast by the memory thread).

``Slots`` is the table; adding and removing are the only structural changes and are atomic dict
operations, so readers on the request path never take a lock to find a slot.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.agent.batching import ServiceModel
from edgefleet.runtime import Capabilities, Session, TensorSpec
from edgefleet.runtime.base import UNKNOWN_CAPABILITIES
from edgefleet.wire import ServiceProfile, TenantSpec

if TYPE_CHECKING:
    from edgefleet.agent.scheduler import Request


@dataclass(frozen=True)
class ResolvedModel:
    """A verified model file for one variant: where, which runtime, its size and fidelity."""

    path: Path
    runtime: str
    size_bytes: int
    fidelity: float


@dataclass
class Hosted:
    """The session a tenant has resident now (one variant of its model)."""

    spec: TenantSpec
    variant: str  # the variant resident now (may be smaller than the spec's preferred one)
    session: Session
    runtime: str
    memory_bytes: int  # what the budget accounts: the variant's weights as shipped (deterministic)
    measured_bytes: int  # resident-memory growth measured around the load (noisy: allocator reuse)
    fidelity: float
    loaded_at: float
    served: int = 0  # batches run; the first one is the tenant's cold start
    profile: dict[int, float] = field(default_factory=dict)  # rows -> ms per batch measured at warm-up

    @property
    def capabilities(self) -> Capabilities:
        return self.session.capabilities


@dataclass(eq=False)
class TenantSlot:
    """Everything the agent holds for one tenant (see the module docstring for who writes what)."""

    name: str
    spec: TenantSpec | None = None
    options: dict[str, ResolvedModel] = field(default_factory=dict)  # acceptable variants, preferred first
    # -- the session and what its model declares (all variants share inputs and outputs) ------------
    hosted: Hosted | None = None
    inputs: tuple[TensorSpec, ...] = ()
    runtime: str = ""
    capabilities: Capabilities = UNKNOWN_CAPABILITIES
    in_axes: dict[str, int | None] = field(default_factory=dict)  # batch axis per input
    out_axes: dict[str, int] | None = None  # batch axis per output; None: never batched
    profile: ServiceProfile | None = None  # measured at the last load, until a command's Ack takes it
    # what a request header's signature (``RequestFrame.signature``) was checked to carry: (rows, batch
    # key), for headers whose layout does not depend on tensor contents; replaced by an empty dict
    # whenever the inputs, capabilities or batch axes above change
    layouts: dict[bytes, tuple[int, object]] = field(default_factory=dict)
    # -- the queue (only under the scheduler's condition) -------------------------------------------
    queue: deque[Request] = field(default_factory=deque)
    service: ServiceModel = field(default_factory=ServiceModel)  # measured service time by batch size
    max_batch: int = 1
    scheduled: bool = False  # takes requests
    ready: bool = False  # its model is resident: only ready slots are dispatched
    inflight: int = 0  # requests in running batches
    running: int = 0  # batches running
    concurrency: int | None = None  # batches its session may run at once (None: every worker)
    usage_s: float = 0.0  # decayed worker seconds (fair share)
    # -- demand --------------------------------------------------------------------------------------
    last_arrival: float = float("-inf")  # monotonic seconds
    arrivals: int = 0  # requests since the memory thread last folded them into the forecast

    @property
    def busy(self) -> int:
        """Requests queued or running."""
        return len(self.queue) + self.inflight


class Slots:
    """The agent's tenants by name."""

    def __init__(self) -> None:
        self._slots: dict[str, TenantSlot] = {}
        self._all: tuple[TenantSlot, ...] = ()  # the slots, replaced (never edited) when one comes or goes
        self._lock = threading.Lock()  # makes ensure() atomic; lookups need none

    def get(self, name: str) -> TenantSlot | None:
        return self._slots.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[TenantSlot]:
        return iter(self._all)

    def names(self) -> list[str]:
        return list(self._slots)

    def ensure(self, name: str) -> TenantSlot:
        """The slot of ``name``, made empty if there was none."""
        slot = self._slots.get(name)
        if slot is None:
            with self._lock:
                slot = self._slots.get(name)
                if slot is None:
                    slot = self._slots[name] = TenantSlot(name)
                    self._all = (*self._all, slot)
        return slot

    def remove(self, name: str) -> TenantSlot | None:
        with self._lock:
            slot = self._slots.pop(name, None)
            if slot is not None:
                self._all = tuple(s for s in self._all if s is not slot)
            return slot

    def assigned(self) -> dict[str, TenantSlot]:
        """Slots with a spec: the tenants assigned to this device."""
        return {s.name: s for s in list(self._slots.values()) if s.spec is not None}

    def resident(self) -> dict[str, Hosted]:
        """The sessions resident now, by tenant."""
        return {s.name: s.hosted for s in list(self._slots.values()) if s.hosted is not None}

"""The placement seam: one pure function from (tenant, model, fleet snapshot) to a decision.

The coordinator asks a ``Placement`` where a tenant should run and never how; a later policy (driven by
a learned latency model) replaces the simple one without touching the service. Expected negatives are
values (``NoFit``), never exceptions, so the caller handles them in the same branch as success.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from coordinator.rebalance.outlook import Model


@dataclass(frozen=True)
class Placed:
    device_id: str
    score: float  # higher is better; the policy says what it measures
    reason: str  # one line for operators, e.g. "most free memory: 40.0 MB free, needs 10.9 MB"


@dataclass(frozen=True)
class NoFit:
    reason: str  # why no device fits, per device: "d1: no runtime litert; d2: needs 10.9 MB, 3.1 MB free"


Decision = Placed | NoFit


class Placement(Protocol):
    """Chooses a device for one tenant. Must be pure: same inputs, same answer, no I/O. ``perf`` is the
    performance model's predictor for this decision (None without one: memory-only policies ignore it)."""

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision: ...

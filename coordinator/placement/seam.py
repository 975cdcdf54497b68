"""The placement seam: one pure function from (tenant, model, fleet snapshot) to a decision.

The coordinator asks a ``Placement`` where a tenant should run and never how. Every placement is a
profile of the scheduling framework's plugins (``edgefleet.coordinator.scheduling``): ``place`` is one scheduling
cycle with that profile, and the coordinator's own paths call ``schedule`` with ``placement.profile``
directly (adding the exclusions and the pinned device). Expected negatives are values (``NoFit``), never
exceptions, so the caller handles them in the same branch as success.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.coordinator.scheduling.framework import Decision, NoFit, Placed, profile_of
from edgefleet.wire import TenantSpec

if TYPE_CHECKING:
    from edgefleet.coordinator.scheduling.framework import Model


class Placement(Protocol):
    """Chooses a device for one tenant. Must be pure: same inputs, same answer, no I/O. ``perf`` is the
    performance model's predictor for this decision (None without one: memory-only policies ignore it).
    The policies of this package are profiles (their ``profile`` attribute, see
    ``edgefleet.coordinator.scheduling.framework.profile_of``)."""

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision: ...


__all__ = ["Decision", "NoFit", "Placed", "Placement", "profile_of"]

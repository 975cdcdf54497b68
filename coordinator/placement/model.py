"""Model-driven placement: put a tenant where every predicted p95 on the device stays under its SLO.

The policy behind the ``Placement`` seam that uses the performance model (edgefleet.coordinator.perf): filter
the devices that cannot host the tenant — offline, no runtime, no profile for the model on the kind,
not enough memory, the processor's predicted utilisation above ``headroom``, or any tenant's predicted
p95 (the residents' and the newcomer's) above its SLO — and among the rest pick the one that keeps the
most relative SLO slack. This is the placement of Liang et al., "Model-driven Cluster Resource
Management for AI Workloads in Edge Clouds" (arXiv 2201.07312), with the sharing models of this
project's agents; knapsack placement by memory alone (edgefleet.coordinator.placement.knapsack) is kept beside it.

A snapshot carries no request rates or SLOs for the tenants already placed, so the policy takes them
as input: ``demand`` maps tenant name -> Demand(rate, SLO), typically the arrival rates the agents
reported in their last telemetry windows; a tenant without an entry is expected at ``default_rps`` and,
when resident, is only counted as load (its own SLO unknown). A new tenant's SLO is its spec's.

``place`` (the seam) is one scheduling cycle of the ``predicted-latency`` profile
(``edgefleet.coordinator.scheduling``): it checks every device and reports why each one does not fit. ``planner``
gives the incremental form for planning many tenants at once; with ``probe`` set it checks only the
least utilised few devices per pool, which keeps 10k tenants on 2k devices well within a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.placement.planner import Planner
from edgefleet.coordinator.scheduling import Profile, predicted_latency, schedule
from edgefleet.coordinator.scheduling.framework import Decision, Demand, Model
from edgefleet.coordinator.scheduling.plugins import reported_kind
from edgefleet.wire import TenantSpec

DEFAULT_HEADROOM = 0.8
DEFAULT_PROBE = 3


class PredictedLatency:
    """Place where the performance model predicts every SLO on the device is kept (the book's kinds read
    as the fleet gives them)."""

    name = "predicted-latency"
    profile: Profile = predicted_latency(reported_kind)

    def __init__(
        self,
        book: PerfBook,
        *,
        demand: Mapping[str, Demand] | None = None,
        default_rps: float = 1.0,
        headroom: float = DEFAULT_HEADROOM,
        probe: int | None = DEFAULT_PROBE,
    ) -> None:
        if not (0.0 < headroom <= 1.0):
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        if default_rps <= 0.0 or (probe is not None and probe < 1):
            raise ValueError("default_rps must be > 0 and probe >= 1")
        self.book = book
        self.demand: Mapping[str, Demand] = MappingProxyType(dict(demand or {}))
        self.default_rps = default_rps
        self.headroom = headroom
        self.probe = probe

    def with_demand(self, demand: Mapping[str, Demand]) -> PredictedLatency:
        """The same policy expecting ``demand`` (e.g. rates refreshed from telemetry)."""
        return PredictedLatency(
            self.book, demand=demand, default_rps=self.default_rps, headroom=self.headroom, probe=self.probe
        )

    def planner(self, fleet: FleetSnapshot, *, exhaustive: bool = False) -> Planner:
        return Planner(
            fleet,
            self.book,
            demand=self.demand,
            default_rps=self.default_rps,
            headroom=self.headroom,
            probe=None if exhaustive else self.probe,
        )

    @property
    def model(self) -> Model:
        """The predictor this policy places with: its book, demand and headroom."""
        return Model(self.book, self.demand, self.headroom, self.default_rps)

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot,
              perf: Model | None = None) -> Decision:
        return schedule(spec, model, fleet, profile=self.profile, model=self.model)

    def plan(self, tenants: list[tuple[TenantSpec, ModelFacts]], fleet: FleetSnapshot) -> list[Decision]:
        """Place ``tenants`` one after another on ``fleet``, each seeing the ones before it."""
        planner = self.planner(fleet)
        return [planner.place(spec, model) for spec, model in tenants]


def spec_demand(spec: TenantSpec, rate_rps: float) -> tuple[str, Demand]:
    """A ``demand`` entry for ``spec`` at ``rate_rps``."""
    return spec.name, Demand(rate_rps, spec.slo_ms)


__all__ = ["DEFAULT_HEADROOM", "DEFAULT_PROBE", "Demand", "PredictedLatency", "spec_demand"]

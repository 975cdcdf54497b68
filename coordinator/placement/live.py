"""The performance model the engine owns, learnt from the fleet, and the placement that reads it.

``PerfModel`` is what the engine keeps and feeds: ``observe`` each stored telemetry window, ``profiled``
each deploy-time profile an Ack carries, ``declare`` a tenant's declared demand before it is placed,
``forget`` a tenant that left, ``report`` its prediction error, and ``predictor`` an immutable
``Model`` (book, expected demand, headroom) for one decision, which placement and the rebalancer read.
A question about a tenant that does not exist yet (``edgefleet plan --add`` at a rate) passes its
demand to ``predictor``; the model itself never changes for it. ``NullModel`` is the memory-only
coordinator's: it learns nothing, reports nothing and predicts nothing, so no caller asks which
placement it has.

``LearnedModel`` is ``placement = "predicted-latency"``'s. Each telemetry window updates, in order,
the performance model (``edgefleet.coordinator.perf.learner``: the service curves follow what the agents measure,
and the predicted p95 is scored against the measured one) and the expected demand
(``edgefleet.coordinator.perf.demand``: the kind the tenant's spec declares — Poisson, periodic, or a closed loop
— is the prior, and each window's measured rate and gap spread, or a closed loop's time outside the
device, take over; with its SLO); the profile a device measured when it loaded a variant (carried by the
Ack of the Deploy or Configure) seeds that variant's curve on the device's kind. ``ModelPlacement`` is
then the scheduling framework's ``predicted-latency`` profile over the predictor it is handed — a pure function of it. Device kinds
that agents report (``x86_64-cpu``, ``jetson-orin-nano``, ``coral-usb``...) are mapped onto the
calibrated kinds of the book (``x86-cpu``, ``jetson-gpu``, ``coral-tpu``, ``arm-cpu``) by
``edgefleet.coordinator.fleet.book_kind`` (re-exported here).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Protocol

from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.coordinator.fleet import book_kind as book_kind  # re-exported: where callers found it
from edgefleet.coordinator.perf import ErrorBook, PerfBook
from edgefleet.coordinator.perf.demand import Expected, declared, observed
from edgefleet.coordinator.perf.learner import Learner
from edgefleet.coordinator.perf.report import model_report
from edgefleet.coordinator.scheduling import PREDICTED_LATENCY, schedule
from edgefleet.coordinator.scheduling.framework import Decision, Demand, Model
from edgefleet.wire import ModelReport, ServiceProfile, Telemetry, TenantSpec


class PerfModel(Protocol):
    """The performance model as the engine sees it (worker thread)."""

    @property
    def errors(self) -> ErrorBook: ...

    def observe(self, device_kind: str, telemetry: Telemetry) -> None: ...

    def profiled(self, device_kind: str, profile: ServiceProfile, runtime: str) -> None: ...

    def declare(self, spec: TenantSpec) -> None: ...

    def forget(self, tenant: str) -> None: ...

    def report(self, ts: float, only: Collection[str] | None = None) -> ModelReport | None: ...

    def predictor(self, extra: Mapping[str, Demand] | None = None, *, frozen: bool = False) -> Model | None: ...


class NullModel:
    """The model of a coordinator that places by memory alone: learns, reports and predicts nothing."""

    errors = ErrorBook()

    def observe(self, device_kind: str, telemetry: Telemetry) -> None:
        return None

    def profiled(self, device_kind: str, profile: ServiceProfile, runtime: str) -> None:
        return None

    def declare(self, spec: TenantSpec) -> None:
        return None

    def forget(self, tenant: str) -> None:
        return None

    def report(self, ts: float, only: Collection[str] | None = None) -> ModelReport | None:
        return None

    def predictor(self, extra: Mapping[str, Demand] | None = None, *, frozen: bool = False) -> Model | None:
        return None


def demand_at(spec: TenantSpec, rate_rps: float) -> Demand:
    """The demand of ``spec`` expected at ``rate_rps`` (what ``edgefleet plan --add`` asks about): its
    declared kind, at that rate."""
    return _demand(declared(spec.demand, rate_rps), spec.slo_ms)


class LearnedModel:
    """The ``PerfModel`` of ``placement = "predicted-latency"``: the learner and the expected demand."""

    def __init__(self, book: PerfBook, *, default_rps: float = 1.0, headroom: float = 0.8) -> None:
        self.learner = Learner(book)
        self.demand: dict[str, Demand] = {}
        self.expected: dict[str, Expected] = {}  # tenant -> its demand: the declared kind, then measured
        self.default_rps = default_rps
        self.headroom = headroom

    @property
    def errors(self) -> ErrorBook:
        return self.learner.errors

    def report(self, ts: float, only: Collection[str] | None = None) -> ModelReport:
        """The model's prediction error per tenant (those in ``only`` when given), as published on the
        coordinator's model topic and shown by ``edgefleet status``."""
        return model_report(self.learner.errors, ts, only)

    def observe(self, device_kind: str, telemetry: Telemetry) -> None:
        """Learn from one window of a device (worker thread)."""
        kind = book_kind(device_kind)
        if kind in self.learner.book.kinds:
            # the closed loops among this window's own tenants (all the learner reads): not the fleet's
            expected = self.expected
            loops = {w.tenant: (e.in_flight, e.cycle_outside_ms) for w in telemetry.tenants
                     if (e := expected.get(w.tenant)) is not None and e.closed}
            self.learner = self.learner.observe(kind, telemetry, loops)
        for w in telemetry.tenants:
            if w.arrivals > 0 or w.tenant not in self.demand:
                prior = self.expected.get(w.tenant) or Expected(self.default_rps)
                got = self.expected[w.tenant] = observed(prior, w)
                self.demand[w.tenant] = _demand(got, w.slo_ms)

    def declare(self, spec: TenantSpec) -> None:
        """Take ``spec``'s declared demand as the tenant's prior. What its windows measured stays unless the
        spec declares something new: another population or think time (a closed loop), or a change
        between open and closed."""
        prior = declared(spec.demand, self.default_rps)
        old = self.expected.get(spec.name)
        if old is not None and (spec.demand is None or (old.in_flight, old.think_ms) == (prior.in_flight,
                                                                                          prior.think_ms)):
            return
        self.expected[spec.name] = prior
        self.demand[spec.name] = _demand(prior, spec.slo_ms)

    def profiled(self, device_kind: str, profile: ServiceProfile, runtime: str, request_mb: float = 0.0) -> None:
        """Learn from a device's deploy-time profile of a variant (an Ack's; worker thread): see
        ``Learner.profiled`` — a variant the book lacks becomes placeable on that kind."""
        kind = book_kind(device_kind)
        self.learner = self.learner.profiled(kind, profile.model, profile.variant, runtime, profile.ms_by_batch,
                                             request_mb)

    def forget(self, tenant: str) -> None:
        self.demand.pop(tenant, None)
        self.expected.pop(tenant, None)
        self.learner = dataclasses.replace(self.learner, errors=self.learner.errors.forget(tenant))

    def predictor(self, extra: Mapping[str, Demand] | None = None, *, frozen: bool = False) -> Model:
        """The model's inputs for one decision; ``extra`` adds (or overrides) the demand of tenants being
        asked about. ``frozen`` copies the demand (a plan kept beyond this call); otherwise it is lent
        read-only, for a decision that ends before the next window changes it."""
        base: Mapping[str, Demand] = dict(self.demand) if frozen else MappingProxyType(self.demand)
        demand = base if not extra else collections.ChainMap(dict(extra), base)  # type: ignore[arg-type]
        return Model(self.learner.book, demand, self.headroom, self.default_rps)


class ModelPlacement:
    """``placement = "predicted-latency"``: the scheduling framework's ``predicted-latency`` profile over
    the predictor it is handed (pure), the devices' kinds mapped onto the book's."""

    name = "predicted-latency"
    profile = PREDICTED_LATENCY

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot, perf: Model | None = None) -> Decision:
        return schedule(spec, model, fleet, profile=self.profile, model=perf)


def _demand(e: Expected, slo_ms: float) -> Demand:
    """Placement's view of a tenant's expected demand."""
    return Demand(max(e.rate_rps, 1e-3), slo_ms, e.arrival_scv, e.in_flight, e.cycle_outside_ms)

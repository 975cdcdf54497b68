"""Model-driven placement that learns from the fleet: ``PredictedLatency`` fed by every telemetry window.

The coordinator's worker owns one ``LivePredictedLatency``. Each telemetry window updates, in order,
the performance model (``coordinator.perf.learner``: the service curves follow what the agents measure,
and the predicted p95 is scored against the measured one) and the expected demand
(``coordinator.perf.demand``: the kind the tenant's spec declares — Poisson, periodic, or a closed loop
— is the prior, and each window's measured rate and gap spread, or a closed loop's time outside the
device, take over; with its SLO); the profile a device measured when it loaded a variant (carried by the
Ack of the Deploy or Configure) seeds that variant's curve on the device's kind. A placement decision
is then ``PredictedLatency.place`` over the current book and demand — a pure function of that state,
which changes only between decisions on the same thread. Device kinds that agents report (``x86_64-cpu``, ``jetson-orin-nano``, ``coral-usb``...) are
mapped onto the calibrated kinds of the book (``x86-cpu``, ``jetson-gpu``, ``coral-tpu``, ``arm-cpu``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from coordinator.fleet import FleetSnapshot, ModelFacts
from coordinator.perf import ErrorBook, PerfBook
from coordinator.perf.demand import Expected, declared, observed
from coordinator.perf.learner import Learner
from coordinator.perf.report import model_report
from coordinator.placement.model import PredictedLatency
from coordinator.placement.planner import Demand
from coordinator.placement.seam import Decision
from edgefleet.wire import ModelReport, ServiceProfile, Telemetry, TenantSpec


def book_kind(device_kind: str) -> str:
    """The calibrated kind closest to a device kind an agent reported ("" when none fits)."""
    k = device_kind.lower()
    if "jetson" in k:
        return "jetson-gpu"
    if "coral" in k or "edgetpu" in k:
        return "coral-tpu"
    if k.startswith(("x86_64", "amd64", "x86")):
        return "x86-cpu"
    if k.startswith(("aarch64", "arm")):
        return "arm-cpu"
    return ""


class LivePredictedLatency:
    """The ``Placement`` the coordinator uses with ``placement = "predicted-latency"``."""

    name = "predicted-latency"

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
            self.learner = self.learner.observe(kind, telemetry)
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

    def place_at(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot, rate_rps: float) -> Decision:
        """``place`` for a tenant expected at ``rate_rps`` (what ``edgefleet plan`` asks)."""
        saved = self.demand.get(spec.name)
        self.demand[spec.name] = _demand(declared(spec.demand, rate_rps), spec.slo_ms)
        try:
            return self.place(spec, model, fleet)
        finally:
            if saved is None:
                del self.demand[spec.name]
            else:
                self.demand[spec.name] = saved

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot) -> Decision:
        self.declare(spec)
        mapped = FleetSnapshot(tuple(
            dataclasses.replace(d, device_kind=book_kind(d.device_kind) or d.device_kind) for d in fleet.devices
        ), fleet.ts)
        policy = PredictedLatency(self.learner.book, demand=self.demand, default_rps=self.default_rps,
                                  headroom=self.headroom, probe=None)
        return policy.place(spec, model, mapped)


def _demand(e: Expected, slo_ms: float) -> Demand:
    """Placement's view of a tenant's expected demand."""
    return Demand(max(e.rate_rps, 1e-3), slo_ms, e.arrival_scv, e.in_flight, e.cycle_outside_ms)

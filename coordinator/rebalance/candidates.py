"""Candidate actions for one device in violation, cheapest first: a larger ``max_batch`` where the
service curve says batching pays, a faster variant the book profiles and the tenant's fidelity floor
allows, a migration to the device placement accepts that stays settled with it. Each is a pure
function of the host, the model and the policy; the planner combines them into sets.

The rebalancer is a descheduler: it decides which tenant should leave an overloaded device; where it goes
is one scheduling cycle (``edgefleet.coordinator.scheduling.schedule``) with the source excluded, in the
``descheduling`` profile: the predicted-latency filters, plus ``Settled`` (the target stays settled
with the tenant), scored by ``LeastWorst`` (the target's worst predicted ratio, the lower the better;
ties: the smaller id)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad, resident
from edgefleet.coordinator.rebalance.actions import Action, Migrate, Reconfigure
from edgefleet.coordinator.rebalance.outlook import assess, batching_pays, expected_batch
from edgefleet.coordinator.rebalance.streaks import RebalancePolicy
from edgefleet.coordinator.scheduling import CycleState, Placed, Profile, Request, predicted_latency, schedule
from edgefleet.coordinator.scheduling.framework import Model
from edgefleet.coordinator.scheduling.plugins import reported_kind
from edgefleet.runtime import capabilities_of
from edgefleet.wire import TenantSpec

WORST = "worst"  # CycleState key: the target's worst predicted ratio with the tenant
ACCEPTING = predicted_latency(reported_kind)  # the filters a target must pass (kinds as the snapshot gives them)


@dataclass(frozen=True)
class Settled:
    """Filter: the target with the tenant is predicted settled, its worst ratio at or under ``settle``
    (the rebalancer's margin under every SLO and the headroom)."""

    settle: float
    name: str = "settled"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        assert req.model is not None
        load = resident(req.spec, req.facts.runtime, req.facts.size_bytes)
        worst = assess(device.with_resident(load), req.model).worst
        if worst > self.settle:
            return f"predicted at worst {worst:.2f}x > settled {self.settle:.2f}x"
        state.write(WORST, device.device_id, worst)
        return None


@dataclass(frozen=True)
class LeastWorst:
    """Score: the lower the target's worst predicted ratio with the tenant, the better (``Settled``'s)."""

    name: str = "least-worst"

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float:
        worst: float = state.read(WORST, device.device_id)
        return -worst


def _to(req: Request, device: DeviceSnapshot, state: CycleState) -> Placed:
    worst: float = state.read(WORST, device.device_id)
    return Placed(device.device_id, -worst,
                  f"to {device.device_id}, which placement accepts and predicts at worst {worst:.2f}x")


def descheduling(settle: float) -> Profile:
    """Where the rebalancer sends a tenant off an overloaded device (see the module docstring)."""
    return Profile("descheduling", (*ACCEPTING.filters, Settled(settle)), ((LeastWorst(), 1.0),), _to,
                   tiebreak="id", needs_model=True)


@dataclass(frozen=True)
class Candidate:
    action: Action
    rank: int  # 0 batching, 1 swap, 2 migration


def snapshot(hosts: Sequence[DeviceSnapshot]) -> FleetSnapshot:
    return FleetSnapshot(tuple(hosts))


def facts_of(r: TenantLoad) -> ModelFacts:
    return ModelFacts(r.spec.model, r.spec.variant, r.runtime, r.size_bytes)


def accepts(target: DeviceSnapshot, incoming: Sequence[TenantLoad], model: Model) -> DeviceSnapshot | None:
    """``target`` with ``incoming`` added when placement accepts each in turn, else None."""
    host = target
    for r in incoming:
        if not isinstance(schedule(r.spec, facts_of(r), snapshot([host]), profile=ACCEPTING, model=model), Placed):
            return None
        host = host.with_resident(r)
    return host


def batching(host: DeviceSnapshot, r: TenantLoad, model: Model, policy: RebalancePolicy,
              settled: float, fix: Mapping[str, float]) -> Candidate | None:
    prof = model.book.profile(r.spec.model, r.spec.variant, host.book_kind)
    if prof is None or not capabilities_of(r.runtime).batches or not batching_pays(prof.curve):
        return None
    got = model.book.load(tenant=r.name, model=r.spec.model, variant=r.spec.variant, kind=host.book_kind,
                          rate_rps=max(model.rate(r.name), 1e-6))
    conc = 1 if isinstance(got, str) else got[1].concurrency
    if expected_batch(model.rate(r.name), prof.curve, conc, policy.max_batch) <= r.spec.max_batch:
        return None  # its batches are not capped by max_batch: a larger one changes nothing
    ladder: list[int] = []
    b = r.spec.max_batch * 2
    while b < policy.max_batch:
        ladder.append(b)
        b *= 2
    if r.spec.max_batch < policy.max_batch:
        ladder.append(policy.max_batch)
    choice = None
    for b in ladder:
        choice = dataclasses.replace(r, spec=spec(r, max_batch=b))
        if assess(host.with_resident(choice), model, fix).worst <= settled:
            break
    if choice is None:
        return None
    reason = f"batching pays for {r.spec.model}: max_batch {r.spec.max_batch} -> {choice.spec.max_batch}"
    return Candidate(Reconfigure(r.name, host.device_id, choice, "batching", reason), 0)


def spec(r: TenantLoad, **changes: Any) -> TenantSpec:
    return msgspec.structs.replace(r.spec, **changes)


def swaps(host: DeviceSnapshot, r: TenantLoad, model: Model, variants: Mapping[tuple[str, str], ModelFacts]) -> Iterator[Candidate]:
    here = model.book.profile(r.spec.model, r.spec.variant, host.book_kind)
    if here is None:
        return
    for (m, v), facts in sorted(variants.items()):
        if m != r.spec.model or v == r.spec.variant or facts.fidelity < r.spec.min_fidelity:
            continue
        prof = model.book.profile(m, v, host.book_kind)
        if prof is None or prof.curve.at(1) >= here.curve.at(1):
            continue
        if host.free_bytes + r.size_bytes < facts.size_bytes:
            continue
        swapped = dataclasses.replace(r, spec=spec(r, variant=v), size_bytes=facts.size_bytes)
        reason = (f"{m}:{v} serves in {prof.curve.at(1):.2f} ms vs {here.curve.at(1):.2f} ms for "
                  f"{r.spec.variant}, fidelity {facts.fidelity:.3f} >= {r.spec.min_fidelity:g}")
        yield Candidate(Reconfigure(r.name, host.device_id, swapped, "variant", reason), 1)


def migration(source: DeviceSnapshot, r: TenantLoad, fleet: Mapping[str, DeviceSnapshot], model: Model,
              settled: float) -> Candidate | None:
    """Where ``r`` should go off ``source``: one scheduling cycle with the source excluded."""
    got = schedule(r.spec, facts_of(r), FleetSnapshot(tuple(fleet.values())), profile=descheduling(settled),
                   exclude=(source.device_id,), model=model)
    if not isinstance(got, Placed):
        return None
    return Candidate(Migrate(r.name, source.device_id, got.device_id, got.reason), 2)

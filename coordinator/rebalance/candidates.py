"""Candidate actions for one device in violation, cheapest first: a larger ``max_batch`` where the
service curve says batching pays, a faster variant the book profiles and the tenant's fidelity floor
allows, a migration to the device placement accepts that stays settled with it. Each is a pure
function of the host, the model and the policy; the planner combines them into sets."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from coordinator.placement.model import PredictedLatency
from coordinator.placement.seam import Placed
from coordinator.rebalance.actions import Action, Migrate, Reconfigure
from coordinator.rebalance.outlook import (
    Host,
    Model,
    Resident,
    assess,
    batching_pays,
    expected_batch,
)
from coordinator.rebalance.streaks import RebalancePolicy
from edgefleet.runtime import capabilities_of
from edgefleet.wire import TenantSpec


@dataclass(frozen=True)
class Candidate:
    action: Action
    rank: int  # 0 batching, 1 swap, 2 migration


def snapshot(hosts: Sequence[Host]) -> FleetSnapshot:
    return FleetSnapshot(tuple(
        DeviceSnapshot(device_id=h.device_id, online=h.online, device_kind=h.kind, runtimes=h.runtimes,
                       memory_budget_bytes=h.budget_bytes,
                       tenants=tuple(TenantLoad(r.name, r.spec.model, r.spec.variant, r.size_bytes)
                                     for r in h.residents))
        for h in hosts))


def accepts(target: Host, incoming: Sequence[Resident], model: Model) -> Host | None:
    """``target`` with ``incoming`` added when placement accepts each in turn, else None."""
    policy = PredictedLatency(model.book, demand=model.demand, default_rps=model.default_rps,
                              headroom=model.headroom, probe=None)
    host = target
    for r in incoming:
        facts = ModelFacts(r.spec.model, r.spec.variant, r.runtime, r.size_bytes)
        if not isinstance(policy.place(r.spec, facts, snapshot([host])), Placed):
            return None
        host = host.with_resident(r)
    return host


def batching(host: Host, r: Resident, model: Model, policy: RebalancePolicy,
              settled: float, fix: Mapping[str, float]) -> Candidate | None:
    prof = model.book.profile(r.spec.model, r.spec.variant, host.kind)
    if prof is None or not capabilities_of(r.runtime).batches or not batching_pays(prof.curve):
        return None
    got = model.book.load(tenant=r.name, model=r.spec.model, variant=r.spec.variant, kind=host.kind,
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


def spec(r: Resident, **changes: Any) -> TenantSpec:
    return msgspec.structs.replace(r.spec, **changes)


def swaps(host: Host, r: Resident, model: Model, variants: Mapping[tuple[str, str], ModelFacts]) -> Iterator[Candidate]:
    here = model.book.profile(r.spec.model, r.spec.variant, host.kind)
    if here is None:
        return
    for (m, v), facts in sorted(variants.items()):
        if m != r.spec.model or v == r.spec.variant or facts.fidelity < r.spec.min_fidelity:
            continue
        prof = model.book.profile(m, v, host.kind)
        if prof is None or prof.curve.at(1) >= here.curve.at(1):
            continue
        if host.free_bytes + r.size_bytes < facts.size_bytes:
            continue
        swapped = dataclasses.replace(r, spec=spec(r, variant=v), size_bytes=facts.size_bytes)
        reason = (f"{m}:{v} serves in {prof.curve.at(1):.2f} ms vs {here.curve.at(1):.2f} ms for "
                  f"{r.spec.variant}, fidelity {facts.fidelity:.3f} >= {r.spec.min_fidelity:g}")
        yield Candidate(Reconfigure(r.name, host.device_id, swapped, "variant", reason), 1)


def migration(source: Host, r: Resident, fleet: Mapping[str, Host], model: Model,
               settled: float) -> Candidate | None:
    best: tuple[float, str] | None = None
    for did, target in sorted(fleet.items()):
        if did == source.device_id or not target.online or r.runtime not in target.runtimes:
            continue
        if target.free_bytes < r.size_bytes:
            continue
        after = accepts(target, [r], model)
        if after is None:
            continue
        worst = assess(after, model).worst
        if worst <= settled and (best is None or (worst, did) < best):
            best = (worst, did)
    if best is None:
        return None
    reason = f"to {best[1]}, which placement accepts and predicts at worst {best[0]:.2f}x"
    return Candidate(Migrate(r.name, source.device_id, best[1], reason), 2)

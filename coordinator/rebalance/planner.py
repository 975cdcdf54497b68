"""The rebalance planner: for each device in violation, the fewest, cheapest commands that fix it.

A pure function of plain data — the fleet (``Host``s), the model (learnt book and demand), each
tenant's last measured p95, the streaks and the policy, and ``now`` — returning a ``Plan``: per device,
the actions with their reasons, or why nothing restores feasibility (a value, never an exception).

A device is planned when one of its tenants is due (``streaks.due``): measured over SLO, or predicted
over, for ``windows`` windows in a row. Its verdict before (``outlook.assess``) corrects each tenant
measured over SLO by its measured / predicted p95 (at least 1), so a model that is too optimistic about
this device still sees the violation it is told about. Candidate actions, cheapest first:

1. batching: a tenant whose curve says batching pays and whose batches are capped by its
   ``max_batch`` gets the smallest doubling of it (up to the policy's ``max_batch``) that settles the
   device, else the largest;
2. variant swap: another variant of the tenant's model that the book profiles on this kind, is
   faster at batch 1, keeps the tenant's ``min_fidelity`` and fits the device's memory;
3. migration of a movable tenant to the device that placement accepts for it (memory, runtime,
   headroom, every predicted p95 there) and that stays settled with it, the most settled one.

Sets of up to ``max_actions`` actions (one per tenant) are tried in order of (migrations, swaps, batch
changes) — no migration while reconfiguring suffices, single moves before pairs — and within a level
the set leaving the smallest worst ratio wins (on a tie, the one moving fewer bytes). A set is accepted only if the source device and every
target are predicted *settled*: every p95 at or under (1 - margin) x SLO and every processor at or
under (1 - margin) x headroom — the clear gain that is the planner's hysteresis, on top of the
streaks and the per-tenant cooldown. Devices are planned in id order on a working copy of the fleet,
so a later device sees where earlier plans sent tenants. Without a model (memory-only placement) a
due tenant is migrated wherever placement chooses, as before. Device deaths are not planned here:
the engine re-places a dead device's tenants at once with the placement (``Tenants.move_off``), which
admits no predicted violation; any that remains is then caught here by the predicted trigger.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts, TenantLoad
from coordinator.placement.model import PredictedLatency
from coordinator.placement.seam import Placed
from coordinator.rebalance.outlook import (
    BATCHING_RUNTIMES,
    Host,
    Model,
    Resident,
    Verdict,
    assess,
    batching_pays,
    expected_batch,
)
from coordinator.rebalance.streaks import RebalancePolicy, Streak, due
from edgefleet.wire import TenantSpec


@dataclass(frozen=True)
class Migrate:
    """Move ``tenant`` make-before-break from ``source`` to ``target`` (None: wherever placement says)."""

    tenant: str
    source: str
    target: str | None
    reason: str = ""


@dataclass(frozen=True)
class Reconfigure:
    """Change ``tenant`` in place on ``device_id`` to ``resident.spec`` (same model, a new variant or
    max_batch, with the memory it takes): ``change`` is "batching" or "variant"."""

    tenant: str
    device_id: str
    resident: Resident
    change: str
    reason: str = ""

    @property
    def spec(self) -> TenantSpec:
        return self.resident.spec


Action = Reconfigure | Migrate


@dataclass(frozen=True)
class DevicePlan:
    device_id: str
    trigger: str  # "observed" | "predicted", with ", device joined" when a join lifted a cooldown
    tenants: tuple[str, ...]  # the due tenants that put the device here
    actions: tuple[Action, ...]
    feasible: bool  # the actions settle the device (False: nothing found; no action is taken)
    before: float  # worst predicted ratio before (inf: cannot be predicted)
    after: float
    reason: str


@dataclass(frozen=True)
class Plan:
    devices: tuple[DevicePlan, ...] = ()

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for d in self.devices if d.feasible for a in d.actions)


@dataclass(frozen=True)
class Situation:
    """The planner's inputs besides the streaks: the fleet, the model (None: memory-only placement),
    the facts of every variant of the models in the fleet, and each tenant's last measured p95 (ms)."""

    hosts: tuple[Host, ...]
    model: Model | None = None
    variants: Mapping[tuple[str, str], ModelFacts] = dataclasses.field(default_factory=dict)
    observed_p95_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)


# -- candidate actions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidate:
    action: Action
    rank: int  # 0 batching, 1 swap, 2 migration


def _snapshot(hosts: Sequence[Host]) -> FleetSnapshot:
    return FleetSnapshot(tuple(
        DeviceSnapshot(device_id=h.device_id, online=h.online, device_kind=h.kind, runtimes=h.runtimes,
                       memory_budget_bytes=h.budget_bytes,
                       tenants=tuple(TenantLoad(r.name, r.spec.model, r.spec.variant, r.size_bytes)
                                     for r in h.residents))
        for h in hosts))


def _accepts(target: Host, incoming: Sequence[Resident], model: Model) -> Host | None:
    """``target`` with ``incoming`` added when placement accepts each in turn, else None."""
    policy = PredictedLatency(model.book, demand=model.demand, default_rps=model.default_rps,
                              headroom=model.headroom, probe=None)
    host = target
    for r in incoming:
        facts = ModelFacts(r.spec.model, r.spec.variant, r.runtime, r.size_bytes)
        if not isinstance(policy.place(r.spec, facts, _snapshot([host])), Placed):
            return None
        host = host.with_resident(r)
    return host


def _batching(host: Host, r: Resident, model: Model, policy: RebalancePolicy,
              settled: float, fix: Mapping[str, float]) -> _Candidate | None:
    prof = model.book.profile(r.spec.model, r.spec.variant, host.kind)
    if prof is None or r.runtime not in BATCHING_RUNTIMES or not batching_pays(prof.curve):
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
        choice = dataclasses.replace(r, spec=_spec(r, max_batch=b))
        if assess(host.with_resident(choice), model, fix).worst <= settled:
            break
    if choice is None:
        return None
    reason = f"batching pays for {r.spec.model}: max_batch {r.spec.max_batch} -> {choice.spec.max_batch}"
    return _Candidate(Reconfigure(r.name, host.device_id, choice, "batching", reason), 0)


def _spec(r: Resident, **changes: Any) -> TenantSpec:
    return msgspec.structs.replace(r.spec, **changes)


def _swaps(host: Host, r: Resident, model: Model, variants: Mapping[tuple[str, str], ModelFacts]) -> Iterator[_Candidate]:
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
        swapped = dataclasses.replace(r, spec=_spec(r, variant=v), size_bytes=facts.size_bytes)
        reason = (f"{m}:{v} serves in {prof.curve.at(1):.2f} ms vs {here.curve.at(1):.2f} ms for "
                  f"{r.spec.variant}, fidelity {facts.fidelity:.3f} >= {r.spec.min_fidelity:g}")
        yield _Candidate(Reconfigure(r.name, host.device_id, swapped, "variant", reason), 1)


def _migration(source: Host, r: Resident, fleet: Mapping[str, Host], model: Model,
               settled: float) -> _Candidate | None:
    best: tuple[float, str] | None = None
    for did, target in sorted(fleet.items()):
        if did == source.device_id or not target.online or r.runtime not in target.runtimes:
            continue
        if target.free_bytes < r.size_bytes:
            continue
        after = _accepts(target, [r], model)
        if after is None:
            continue
        worst = assess(after, model).worst
        if worst <= settled and (best is None or (worst, did) < best):
            best = (worst, did)
    if best is None:
        return None
    reason = f"to {best[1]}, which placement accepts and predicts at worst {best[0]:.2f}x"
    return _Candidate(Migrate(r.name, source.device_id, best[1], reason), 2)


# -- evaluating sets -----------------------------------------------------------------------------------
def _apply(source: Host, actions: Sequence[Action], fleet: Mapping[str, Host],
           model: Model) -> tuple[Host, dict[str, Host]] | None:
    """The source and the targets after ``actions``, or None when a target would refuse."""
    incoming: dict[str, list[Resident]] = {}
    for act in actions:
        if isinstance(act, Reconfigure):
            source = source.with_resident(act.resident)
        else:
            r = source.get(act.tenant)
            assert r is not None and act.target is not None
            source = source.without(act.tenant)
            incoming.setdefault(act.target, []).append(r)
    if source.free_bytes < 0:
        return None
    targets: dict[str, Host] = {}
    for did, rs in incoming.items():
        after = _accepts(fleet[did], rs, model)
        if after is None:
            return None
        targets[did] = after
    return source, targets


def _size(host: Host, tenant: str) -> int:
    got = host.get(tenant)
    return got.size_bytes if got is not None else 0


def _sets(cands: Sequence[_Candidate], most: int) -> list[tuple[_Candidate, ...]]:
    out: list[tuple[_Candidate, ...]] = []
    for n in range(1, most + 1):
        for combo in itertools.combinations(cands, n):
            if len({c.action.tenant for c in combo}) == n:
                out.append(combo)
    return sorted(out, key=lambda s: (sum(c.rank == 2 for c in s), sum(c.rank == 1 for c in s), len(s)))


def _level(s: tuple[_Candidate, ...]) -> tuple[int, int, int]:
    return sum(c.rank == 2 for c in s), sum(c.rank == 1 for c in s), len(s)


def _search(host: Host, fleet: Mapping[str, Host], sit: Situation, model: Model, policy: RebalancePolicy,
            fix: Mapping[str, float]) -> tuple[tuple[Action, ...], float, dict[str, Host]] | None:
    settled = policy.settle
    cands: list[_Candidate] = []
    for r in host.residents:
        if not r.changeable:
            continue
        got = _batching(host, r, model, policy, settled, fix)
        if got is not None:
            cands.append(got)
        cands.extend(_swaps(host, r, model, sit.variants))
        if r.movable:
            mig = _migration(host, r, fleet, model, settled)
            if mig is not None:
                cands.append(mig)
    best: tuple[tuple[float, int, tuple[str, ...]], tuple[Action, ...], Host, dict[str, Host]] | None = None
    level: tuple[int, int, int] | None = None
    for combo in _sets(cands, policy.max_actions):
        if level is not None and _level(combo) != level:
            break  # a set was found at a cheaper level
        actions = tuple(c.action for c in combo)
        applied = _apply(host, actions, fleet, model)
        if applied is None:
            continue
        source, targets = applied
        keep = {t: f for t, f in fix.items() if source.get(t) is not None}
        worst = max([assess(source, model, keep).worst, *(assess(t, model).worst for t in targets.values())])
        moved = sum(_size(host, a.tenant) for a in actions if isinstance(a, Migrate))
        key = (worst, moved, tuple(a.tenant for a in actions))  # ties: fewer bytes to load elsewhere
        if worst <= settled and (best is None or key < best[0]):
            best, level = (key, actions, source, targets), _level(combo)
    if best is None:
        return None
    return best[1], best[0][0], {host.device_id: best[2], **best[3]}


# -- the plan ------------------------------------------------------------------------------------------
def _corrections(host: Host, raw: Verdict, sit: Situation, streaks: Mapping[str, Streak],
                 policy: RebalancePolicy) -> dict[str, float]:
    fix: dict[str, float] = {}
    for r in host.residents:
        s, seen = streaks.get(r.name), sit.observed_p95_ms.get(r.name)
        ratio = raw.ratios.get(r.name, math.inf)
        if s is None or s.over < policy.windows or seen is None or not (0.0 < ratio < math.inf):
            continue
        fix[r.name] = max(1.0, seen / r.spec.slo_ms / ratio)
    return fix


def _describe(verdict: Verdict, host: Host, limit: float) -> str:
    parts = []
    for t in sorted(t for t, ratio in verdict.ratios.items() if ratio > limit):
        r = host.get(t)
        slo = r.spec.slo_ms if r is not None else math.nan
        parts.append(f"{t} p95 {verdict.p95_ms.get(t, math.nan):.1f} ms vs SLO {slo:g} ms")
    for p, load in sorted(verdict.loads.items()):
        if load > limit:
            parts.append(f"{p} at {load:.2f}x headroom")
    return "; ".join(parts) or f"worst {verdict.worst:.2f}x"


def plan(sit: Situation, streaks: Mapping[str, Streak], policy: RebalancePolicy, now: float, *,
         joined: bool = False) -> Plan:
    """What to do now for every device with a due tenant (see the module docstring)."""
    names = set(due(streaks, policy, now, joined=joined))
    fleet = {h.device_id: h for h in sit.hosts}
    out: list[DevicePlan] = []
    for did in sorted(fleet):
        host = fleet[did]
        here = tuple(r.name for r in host.residents if r.name in names and r.changeable)
        names -= set(here)  # planned once per round, wherever an earlier device's plan sent it
        if not here or not host.online:
            continue
        observed = any(streaks[t].over >= policy.windows for t in here)
        trigger = ("observed" if observed else "predicted") + (
            ", device joined" if joined and any(streaks[t].stuck for t in here) else "")
        if sit.model is None or assess(host, sit.model).unmodelled:
            why = "no performance model" if sit.model is None else assess(host, sit.model).unmodelled
            moves = tuple(Migrate(t, did, None, f"{why}: placement chooses") for t in here
                          if (r := host.get(t)) is not None and r.movable and streaks[t].over >= policy.windows)
            out.append(DevicePlan(did, trigger, here, moves, bool(moves), math.inf, math.inf,
                                  f"{why}; measured over SLO: moved where placement chooses" if moves
                                  else f"{why}: nothing can be planned"))
            continue
        model = sit.model
        raw = assess(host, model)
        fix = _corrections(host, raw, sit, streaks, policy)
        before = assess(host, model, fix)
        if before.worst <= policy.ratio:
            out.append(DevicePlan(did, trigger, here, (), False, before.worst, before.worst,
                                  f"no violation predicted now (worst {before.worst:.2f}x)"))
            continue
        problem = _describe(before, host, policy.ratio)
        found = _search(host, fleet, sit, model, policy, fix)
        if found is None:
            out.append(DevicePlan(did, trigger, here, (), False, before.worst, before.worst,
                                  f"{trigger}: {problem}; nothing restores feasibility within "
                                  f"{policy.max_actions} action(s) and margin {policy.margin:g}"))
            continue
        actions, after, changed = found
        fleet.update(changed)
        names -= {a.tenant for a in actions}
        reason = (f"{trigger}: {problem}; worst {before.worst:.2f}x -> {after:.2f}x "
                  f"(settled at <= {policy.settle:.2f}x)")
        out.append(DevicePlan(did, trigger, here, actions, True, before.worst, after, reason))
    return Plan(tuple(out))

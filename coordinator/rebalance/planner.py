"""The rebalance planner: for each device in violation, the fewest, cheapest commands that fix it.

A pure function of plain data — the fleet (``DeviceSnapshot``s), the model (learnt book and demand), each
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
3. migration of a movable tenant: the planner decides which tenant leaves (a descheduler); where it
   goes is one scheduling cycle with the source excluded (``edgefleet.coordinator.scheduling.schedule``, the
   ``descheduling`` profile of ``candidates``): a device that placement accepts for it (memory, runtime,
   headroom, every predicted p95 there) and that stays settled with it, the most settled one.

Sets of up to ``max_actions`` actions (one per tenant) are tried in order of (migrations, swaps, batch
changes) — no migration while reconfiguring suffices, single moves before pairs — and within a level
the set leaving the smallest worst ratio wins (on a tie, the one moving fewer bytes). A set is accepted only if the source device and every
target are predicted *settled*: every p95 at or under (1 - margin) x SLO and every processor at or
under (1 - margin) x headroom — the clear gain that is the planner's hysteresis, on top of the
streaks and the per-tenant cooldown. Devices are planned in id order on a working copy of the fleet,
so a later device sees where earlier plans sent tenants. Without a model (memory-only placement) a
due tenant is migrated wherever placement chooses, as before. Device deaths are not planned here:
the engine re-places a dead device's tenants at once with the placement (the lifecycle's ``Relocate``), which
admits no predicted violation; any that remains is then caught here by the predicted trigger.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.coordinator.fleet import DeviceSnapshot, ModelFacts, TenantLoad
from edgefleet.coordinator.rebalance import candidates
from edgefleet.coordinator.rebalance.actions import Action, DevicePlan, Migrate, Plan, Reconfigure
from edgefleet.coordinator.rebalance.candidates import Candidate
from edgefleet.coordinator.rebalance.outlook import Verdict, assess
from edgefleet.coordinator.rebalance.streaks import RebalancePolicy, Streak, due
from edgefleet.coordinator.scheduling.framework import Model

__all__ = ["Action", "DevicePlan", "Migrate", "Plan", "Reconfigure", "Situation", "plan"]


@dataclass(frozen=True)
class Situation:
    """The planner's inputs besides the streaks: the fleet, the model (None: memory-only placement),
    the facts of every variant of the models in the fleet, and each tenant's last measured p95 (ms)."""

    hosts: tuple[DeviceSnapshot, ...]
    model: Model | None = None
    variants: Mapping[tuple[str, str], ModelFacts] = dataclasses.field(default_factory=dict)
    observed_p95_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)


# -- evaluating sets -----------------------------------------------------------------------------------
def _apply(source: DeviceSnapshot, actions: Sequence[Action], fleet: Mapping[str, DeviceSnapshot],
           model: Model) -> tuple[DeviceSnapshot, dict[str, DeviceSnapshot]] | None:
    """The source and the targets after ``actions``, or None when a target would refuse."""
    incoming: dict[str, list[TenantLoad]] = {}
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
    targets: dict[str, DeviceSnapshot] = {}
    for did, rs in incoming.items():
        after = candidates.accepts(fleet[did], rs, model)
        if after is None:
            return None
        targets[did] = after
    return source, targets


def _size(host: DeviceSnapshot, tenant: str) -> int:
    got = host.get(tenant)
    return got.size_bytes if got is not None else 0


def _sets(cands: Sequence[Candidate], most: int) -> list[tuple[Candidate, ...]]:
    out: list[tuple[Candidate, ...]] = []
    for n in range(1, most + 1):
        for combo in itertools.combinations(cands, n):
            if len({c.action.tenant for c in combo}) == n:
                out.append(combo)
    return sorted(out, key=_level)


def _level(s: tuple[Candidate, ...]) -> tuple[int, int, int]:
    return sum(c.rank == 2 for c in s), sum(c.rank == 1 for c in s), len(s)


def _search(host: DeviceSnapshot, fleet: Mapping[str, DeviceSnapshot], sit: Situation, model: Model, policy: RebalancePolicy,
            fix: Mapping[str, float]) -> tuple[tuple[Action, ...], float, dict[str, DeviceSnapshot]] | None:
    settled = policy.settle
    cands: list[Candidate] = []
    for r in host.residents:
        if not r.changeable:
            continue
        got = candidates.batching(host, r, model, policy, settled, fix)
        if got is not None:
            cands.append(got)
        cands.extend(candidates.swaps(host, r, model, sit.variants))
        if r.movable:
            mig = candidates.migration(host, r, fleet, model, settled)
            if mig is not None:
                cands.append(mig)
    best: tuple[tuple[float, int, tuple[str, ...]], tuple[Action, ...], DeviceSnapshot, dict[str, DeviceSnapshot]] | None = None
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
def _corrections(host: DeviceSnapshot, raw: Verdict, sit: Situation, streaks: Mapping[str, Streak],
                 policy: RebalancePolicy) -> dict[str, float]:
    fix: dict[str, float] = {}
    for r in host.residents:
        s, seen = streaks.get(r.name), sit.observed_p95_ms.get(r.name)
        ratio = raw.ratios.get(r.name, math.inf)
        if s is None or s.over < policy.windows or seen is None or not (0.0 < ratio < math.inf):
            continue
        fix[r.name] = max(1.0, seen / r.spec.slo_ms / ratio)
    return fix


def _describe(verdict: Verdict, host: DeviceSnapshot, limit: float) -> str:
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

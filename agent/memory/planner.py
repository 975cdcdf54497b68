"""The resident-set plan: which variant of which tenant's model to keep loaded, within the budget.

Each tenant offers its variants, each with a size and a fidelity, and declares a floor
(``min_fidelity``): a variant below it is never chosen, whatever it would save. Each acceptable one has a
value ``p * (1 - FIDELITY_WEIGHT * (1 - fidelity))`` where ``p`` is the predicted probability of a
request soon. Choosing at most one variant per tenant under the byte budget is a multiple-choice
knapsack; the greedy on incremental efficiency (value gained per byte added, over each tenant's
upgrade path) solves its relaxation and is within one item of optimal. Because a small variant buys
most of a tenant's value for a fraction of the bytes, the plan downgrades tenants before it evicts any.
Tenants with a request queued or running are pinned: they stay resident (at their current variant) so
nothing in flight loses its model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

FIDELITY_WEIGHT = 5.0  # a variant 1% less faithful is worth 5% less than the full-fidelity one


@dataclass(frozen=True)
class VariantOption:
    variant: str
    size_bytes: int
    fidelity: float


@dataclass(frozen=True)
class Candidate:
    tenant: str
    options: tuple[VariantOption, ...]  # its model's variants, any order
    p_next: float  # predicted probability of a request within the planning horizon
    current: str | None = None  # variant resident now
    pinned: bool = False  # requests queued or running: must stay at ``current`` (if acceptable)
    required: bool = False  # a request is waiting for it: must be resident, at least its smallest variant
    min_fidelity: float = 0.0  # the tenant's floor: variants less faithful are never chosen

    def acceptable(self) -> tuple[VariantOption, ...]:
        """The options at or above the tenant's floor (a variant exactly at the floor is acceptable)."""
        return tuple(o for o in self.options if o.fidelity >= self.min_fidelity)


@dataclass(frozen=True)
class Plan:
    resident: Mapping[str, str]  # tenant -> variant to keep loaded
    bytes_used: int
    value: float

    def evictions(self, current: Mapping[str, str]) -> list[str]:
        return sorted(t for t in current if t not in self.resident)

    def loads(self, current: Mapping[str, str]) -> dict[str, str]:
        return {t: v for t, v in self.resident.items() if current.get(t) != v}


def value_of(p: float, fidelity: float) -> float:
    return p * max(0.0, 1.0 - FIDELITY_WEIGHT * (1.0 - fidelity))


def plan_residency(candidates: Sequence[Candidate], budget_bytes: int) -> Plan:
    """Choose the resident variants. Worked example, budget 12 MB: A (p=0.9) offers fp32 11 MB
    (fid 1.0) or fp16 5.5 MB (fid 0.994), B (p=0.8) offers fp32 6 MB only. Greedy steps by value/byte:
    B fp32 0.8/6 = 0.133/MB, A fp16 0.873/5.5 = 0.159/MB -> A fp16 first, then B (11.5 MB used);
    A's upgrade to fp32 (+5.5 MB, +0.027) no longer fits. Both stay resident; LRU would evict one.
    Options below a candidate's ``min_fidelity`` are dropped first; a pinned tenant whose current variant
    is below its floor (its floor was raised) is not held there."""
    candidates = [replace(c, options=c.acceptable()) for c in candidates]
    chosen: dict[str, VariantOption] = {}
    used = 0
    for c in candidates:
        if c.pinned and c.current is not None:
            opt = next((o for o in c.options if o.variant == c.current), None)
            if opt is not None:
                chosen[c.tenant] = opt
                used += opt.size_bytes
    steps: list[tuple[float, float, int, str, VariantOption]] = []
    by_tenant = {c.tenant: c for c in candidates}
    floor: dict[str, VariantOption] = {}  # required tenants start from their smallest variant
    for c in candidates:
        if c.required and c.tenant not in chosen and c.options:
            smallest = min(c.options, key=lambda o: (o.size_bytes, -o.fidelity))
            if used + smallest.size_bytes <= budget_bytes:
                floor[c.tenant] = smallest
                chosen[c.tenant] = smallest
                used += smallest.size_bytes
    # each tenant's efficient upgrade path: options sorted by size, keeping only value-increasing ones
    paths: dict[str, list[VariantOption]] = {}
    for c in candidates:
        if (c.tenant in chosen and c.tenant not in floor) or c.p_next <= 0:
            continue
        path: list[VariantOption] = []
        for o in sorted(c.options, key=lambda o: (o.size_bytes, -o.fidelity)):
            if not path or value_of(c.p_next, o.fidelity) > value_of(c.p_next, path[-1].fidelity):
                path.append(o)
        paths[c.tenant] = path
    level = {t: -1 for t in paths}
    for t, o in floor.items():  # required tenants already hold their first step
        if t in paths and paths[t] and paths[t][0] == o:
            level[t] = 0

    def next_step(t: str) -> tuple[float, float, int, str, VariantOption] | None:
        path, i = paths[t], level[t]
        if i + 1 >= len(path):
            return None
        p = by_tenant[t].p_next
        nxt = path[i + 1]
        prev_v = value_of(p, path[i].fidelity) if i >= 0 else 0.0
        prev_s = path[i].size_bytes if i >= 0 else 0
        dv = value_of(p, nxt.fidelity) - prev_v
        ds = max(1, nxt.size_bytes - prev_s)
        # prefer keeping what is resident (no load cost) on ties
        bonus = 1e-9 if by_tenant[t].current == nxt.variant else 0.0
        return (dv / ds + bonus, dv, ds, t, nxt)

    for t in paths:
        s = next_step(t)
        if s is not None:
            steps.append(s)
    while steps:
        steps.sort(key=lambda s: (-s[0], s[3]))
        _, _, ds, t, opt = steps.pop(0)
        if used + ds > budget_bytes:
            continue  # this upgrade does not fit; others (smaller) still may
        used += ds
        level[t] += 1
        chosen[t] = opt
        s = next_step(t)
        if s is not None:
            steps.append(s)
    value = sum(value_of(by_tenant[t].p_next, o.fidelity) for t, o in chosen.items())
    return Plan({t: o.variant for t, o in chosen.items()}, sum(o.size_bytes for o in chosen.values()), value)

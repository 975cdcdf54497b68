"""``edgefleet bench memory``: the predictive memory manager vs LRU on one bursty multi-tenant trace.

The trace: tenants of real zoo models (sizes and variant fidelities from the catalog, load times
measured here by opening each variant), each switching between active bursts (Poisson requests) and
idle gaps, with heterogeneous popularity; the models together take more than twice the budget.
The same trace is replayed through (a) the predictive manager (Bayesian arrival forecast + knapsack
plan that downgrades before evicting, prefetching every ``tick_s``), (b) LRU with each tenant's
preferred variant, and (c) the predictive manager restricted to fp32 variants.

A *start* is a request that arrives after its tenant was idle for ``idle_gap_s`` (the first request of
a burst): ``warm_start_ratio`` is the share of starts that found a variant resident. Also reported:
``warm_request_ratio`` (all requests), ``resident_tenants_mean`` (time-average), ``fidelity_loss``
(mean over requests of 1 - fidelity of the variant that served it).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.memory import ArrivalPredictor, Candidate, VariantOption, lru_admit, plan_residency
from bench.harness import finish, machine, pyplot

MB = 1024 * 1024


@dataclass(frozen=True)
class TenantModel:
    name: str
    model: str
    options: tuple[VariantOption, ...]  # acceptable variants
    preferred: str
    burst_rate_rps: float  # request rate inside a burst
    mean_gap_s: float  # mean idle time between bursts
    mean_burst_s: float


def tenants_from_catalog(
    min_fidelity: float = 0.99,
) -> tuple[list[TenantModel], dict[tuple[str, str], float]]:
    from edgefleet.runtime import SessionOptions, get_runtime
    from edgefleet.zoo import load_catalog, model_path

    cat = load_catalog()
    mix = [  # (model, copies): several cameras/streams per model, as on a shared box
        ("ocr-rec", 3),
        ("ocr-det", 2),
        ("pose-landmark", 1),
        ("hand-landmark", 1),
        ("vad", 1),
        ("ocr-cls", 1),
        ("selfie-seg", 1),
        ("face-detect", 1),
    ]
    load_s: dict[tuple[str, str], float] = {}
    out: list[TenantModel] = []
    rng = random.Random(11)
    for model, copies in mix:
        entry = cat.get(model)
        opts = []
        for v, rec in entry.variants.items():
            if (
                not rec.available
                or rec.fidelity is None
                or rec.fidelity < min_fidelity
                or rec.size_bytes is None
            ):
                continue
            opts.append(VariantOption(v, int(rec.size_bytes), float(rec.fidelity)))
            path = model_path(model, v)
            t0 = time.perf_counter()
            get_runtime(entry.runtime).open(path, SessionOptions()).close()
            load_s[(model, v)] = time.perf_counter() - t0
        for i in range(copies):
            popularity = rng.choice([0.3, 1.0, 3.0])  # some tenants burst often, some rarely
            out.append(
                TenantModel(
                    f"{model}-{i}",
                    model,
                    tuple(opts),
                    "fp32",
                    burst_rate_rps=5.0,
                    mean_gap_s=60.0 / popularity,
                    mean_burst_s=8.0,
                )
            )
    return out, load_s


def make_trace(tenants: list[TenantModel], duration_s: float, seed: int = 3) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    events: list[tuple[float, str]] = []
    for t in tenants:
        now = rng.expovariate(1.0 / t.mean_gap_s)
        while now < duration_s:
            end = now + rng.expovariate(1.0 / t.mean_burst_s)
            while now < min(end, duration_s):
                events.append((now, t.name))
                now += rng.expovariate(t.burst_rate_rps)
            now = end + rng.expovariate(1.0 / t.mean_gap_s)
    events.sort()
    return events


@dataclass
class Outcome:
    starts: int = 0
    warm_starts: int = 0
    requests: int = 0
    warm_requests: int = 0
    fidelity_sum: float = 0.0
    resident_time: float = 0.0  # integral of resident tenant count over time
    load_seconds: float = 0.0

    def result(self, duration_s: float) -> dict[str, float]:
        return {
            "warm_start_ratio": self.warm_starts / self.starts if self.starts else 0.0,
            "warm_request_ratio": self.warm_requests / self.requests if self.requests else 0.0,
            "resident_tenants_mean": self.resident_time / duration_s,
            "fidelity_loss": 1.0 - self.fidelity_sum / self.requests if self.requests else 0.0,
            "starts": self.starts,
            "requests": self.requests,
            "load_seconds": self.load_seconds,
        }


def replay(
    policy: str,
    tenants: list[TenantModel],
    trace: list[tuple[float, str]],
    budget: int,
    load_s: dict[tuple[str, str], float],
    *,
    duration_s: float,
    tick_s: float = 1.0,
    idle_gap_s: float = 5.0,
    horizon_s: float = 30.0,
) -> dict[str, float]:
    by_name = {t.name: t for t in tenants}
    fp32_only = policy == "predictive-fp32"
    opts = {t.name: tuple(o for o in t.options if not fp32_only or o.variant == "fp32") for t in tenants}
    resident: dict[str, str] = {}
    last_used: dict[str, float] = {}
    predictor = ArrivalPredictor(half_life_s=120.0)
    out = Outcome()
    clock = 0.0
    next_tick = 0.0

    def size(t: str, v: str) -> int:
        return next(o.size_bytes for o in opts[t] if o.variant == v)

    def fid(t: str, v: str) -> float:
        return next(o.fidelity for o in opts[t] if o.variant == v)

    def advance(to: float) -> None:
        nonlocal clock
        out.resident_time += len(resident) * (to - clock)
        clock = to

    def apply(plan_resident: dict[str, str]) -> None:
        for t in [t for t in resident if t not in plan_resident]:
            del resident[t]
        for t, v in plan_resident.items():
            if resident.get(t) != v:
                out.load_seconds += load_s[(by_name[t].model, v)]
                resident[t] = v

    def replan(now: float, demand: str | None) -> None:
        # a tenant in an active burst (a request within idle_gap_s) keeps its model, as one with
        # requests queued does in the agent
        cands = [
            Candidate(
                t.name,
                opts[t.name],
                1.0 if t.name == demand else predictor.p_next(t.name, now, horizon_s),
                resident.get(t.name),
                pinned=t.name in resident and now - last_used.get(t.name, -math.inf) < idle_gap_s,
                required=t.name == demand,
            )
            for t in tenants
        ]
        apply(dict(plan_residency(cands, budget).resident))

    for ts, name in trace:
        if policy != "lru":
            while next_tick <= ts:  # prefetch/evict on the periodic plan
                advance(next_tick)
                replan(next_tick, None)
                next_tick += tick_s
        advance(ts)
        out.requests += 1
        start = (ts - last_used.get(name, -math.inf)) >= idle_gap_s
        out.starts += start
        warm = name in resident
        out.warm_requests += warm
        out.warm_starts += start and warm
        if policy == "lru":
            if not warm:
                pref = by_name[name].preferred
                victims = lru_admit(
                    name, size(name, pref), {t: size(t, v) for t, v in resident.items()}, last_used, budget
                )
                for v in victims or []:
                    del resident[v]
                if victims is not None:
                    resident[name] = pref
                    out.load_seconds += load_s[(by_name[name].model, pref)]
        else:
            predictor.observe(name, ts)
            if not warm:
                replan(ts, name)
        out.fidelity_sum += fid(name, resident[name]) if name in resident else 1.0
        last_used[name] = ts
    advance(duration_s)
    return out.result(duration_s)


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    tenants, load_s = tenants_from_catalog()
    duration = 1800.0 if quick else 7200.0
    trace = make_trace(tenants, duration)
    total = sum(max(o.size_bytes for o in t.options) for t in tenants)
    budget = int(total * 0.4)
    results = {
        p: replay(p, tenants, trace, budget, load_s, duration_s=duration)
        for p in ("predictive", "lru", "predictive-fp32")
    }
    pred, lru, fp32 = results["predictive"], results["lru"], results["predictive-fp32"]
    data: dict[str, Any] = {
        "benchmark": "memory",
        "quick": quick,
        "machine": machine(),
        "trace": {
            "duration_s": duration,
            "requests": len(trace),
            "tenants": len(tenants),
            "model_bytes_total": total,
            "budget_bytes": budget,
            "ratio_total_to_budget": total / budget,
        },
        "load_seconds_measured": {f"{m}:{v}": round(s, 4) for (m, v), s in load_s.items()},
        "policies": results,
        "warm_start_gain_vs_lru": pred["warm_start_ratio"] / lru["warm_start_ratio"]
        if lru["warm_start_ratio"]
        else None,
        "resident_gain_vs_fp32": pred["resident_tenants_mean"] / fp32["resident_tenants_mean"]
        if fp32["resident_tenants_mean"]
        else None,
        "resident_gain_vs_lru_fp32": pred["resident_tenants_mean"] / lru["resident_tenants_mean"]
        if lru["resident_tenants_mean"]
        else None,
        "fidelity_loss": pred["fidelity_loss"],
        "goals": {"warm_start_gain_vs_lru": 1.6, "resident_gain_vs_fp32": 2.0, "fidelity_loss_max": 0.01},
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], png: Path) -> None:
    plt = pyplot()

    pol = list(data["policies"])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    for ax, key in zip(axes, ("warm_start_ratio", "resident_tenants_mean", "fidelity_loss"), strict=True):
        ax.bar(pol, [data["policies"][p][key] for p in pol], color=["tab:green", "tab:gray", "tab:blue"])
        ax.set_title(key)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("edgefleet bench memory (same trace, same budget)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

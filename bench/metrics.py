"""The benchmarks' metrics as pure functions, so each figure's arithmetic is defined once and tested.

A benchmark measures (processes, clocks, sockets); what it reports is computed here from plain numbers.
Conventions every function keeps:

- A ratio whose denominator is zero (or missing) is ``None``, never an exception or an infinity: "no
  baseline hosted anything" is an outcome to report, not a crash.
- A request that failed, was shed or never answered is *beyond* any SLO: it enters a percentile as
  ``inf`` (:func:`p95_counting_failures`), it does not drop out of it.
- Percentiles interpolate linearly between order statistics (NumPy's default), so the p95 of 1..20 is
  19.05 (rank 0.95 * 19 = 18.05: 19 + 0.05 * (20 - 19)).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; ``nan`` for no values. Infinite values
    (failures) sort last and propagate when the percentile reaches them."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    frac = rank - lo
    if frac == 0.0 or ordered[lo] == ordered[hi]:
        return float(ordered[lo])
    return float(ordered[lo] + frac * (ordered[hi] - ordered[lo]))


def p95_counting_failures(latencies_ms: Sequence[float], failures: int) -> float:
    """p95 of answered requests' latencies with each failed/shed/unanswered request counted as ``inf``."""
    if failures < 0:
        raise ValueError("failures cannot be negative")
    return percentile(list(latencies_ms) + [math.inf] * failures, 95.0)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or ``None`` when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def ape(predicted: float, measured: float) -> float:
    """Absolute percentage error |predicted - measured| / measured. A measured ``inf`` (the requests
    failed) against a finite prediction is an error of 1.0 (the prediction missed entirely); both
    infinite is 0."""
    if measured <= 0:
        raise ValueError(f"measured value must be positive, got {measured}")
    if math.isinf(measured):
        return 0.0 if math.isinf(predicted) else 1.0
    if math.isinf(predicted):
        return 1.0
    return abs(predicted - measured) / measured


def mape(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Mean of :func:`ape` over (predicted, measured) pairs; ``None`` for none."""
    errors = [ape(p, m) for p, m in pairs]
    return sum(errors) / len(errors) if errors else None


def spread(values: Iterable[float]) -> dict[str, float | None]:
    """min / median / max of a figure over trials or seeds (all ``None`` for no values)."""
    v = sorted(values)
    if not v:
        return {"min": None, "median": None, "max": None}
    return {"min": v[0], "median": float(statistics.median(v)), "max": v[-1]}


def admission_score(history: Sequence[tuple[int, int]]) -> int:
    """A placement policy's score over a stream of arrivals.

    ``history[i]`` is (tenants accepted so far, accepted tenants violating their SLO) judged after
    arrival ``i``. The score is the number accepted at the *last* point with no violation (0 if there
    is none): accepting a tenant that breaks someone's SLO stops the count until the fleet is clean
    again, and a policy gets no credit for tenants it hosts while others are in violation.
    """
    score = 0
    for accepted, violating in history:
        if violating < 0 or accepted < 0:
            raise ValueError("counts cannot be negative")
        if violating == 0:
            score = accepted
    return score


def normalized_gain(concurrent_rps: Mapping[str, float], solo_rps: Mapping[str, float]) -> float:
    """Sum over tenants of (rate served concurrently / rate served alone): 1.0 means co-location only
    split the device, n (for n tenants) means each ran as fast as alone. A tenant with no solo rate
    contributes nothing."""
    return sum(concurrent_rps.get(m, 0.0) / r for m, r in solo_rps.items() if r > 0)


def serial_rps(solo_rps: Mapping[str, float]) -> float:
    """Aggregate rate of serving the tenants one after another with equal request counts: the harmonic
    combination n / sum(1 / r_i)."""
    rates = [r for r in solo_rps.values() if r > 0]
    return len(rates) / sum(1.0 / r for r in rates) if rates else 0.0


def ledger_diff(produced: Iterable[Hashable], stored: Iterable[Hashable]) -> dict[str, int]:
    """Compare what a producer's own ledger says it produced with what the consumer stored.

    ``lost``: produced items never stored (a lost tail included: the ledger knows the last one).
    ``duplicated``: extra copies stored of an item. ``unknown``: stored items never produced.
    """
    p, s = Counter(produced), Counter(stored)
    return {
        "produced": sum(p.values()),
        "stored": sum(s.values()),
        "lost": sum(1 for k in p if k not in s),
        "duplicated": sum(c - 1 for k, c in s.items() if c > 1),
        "unknown": sum(c for k, c in s.items() if k not in p),
    }


def goal_met(measured: float | None, goal: float, *, higher_is_better: bool) -> bool | None:
    """Whether a figure meets its goal; ``None`` when it was not measured."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return None
    return measured >= goal if higher_is_better else measured <= goal


def floor_violations(served: Iterable[tuple[float, float]]) -> int:
    """Requests served by a variant less faithful than its tenant's floor. ``served`` holds one
    (fidelity of the variant that served it, the tenant's ``min_fidelity``) pair per served request; a
    variant exactly at the floor meets it."""
    return sum(1 for fidelity, floor in served if fidelity < floor)


def warm_share(waits_s: Sequence[float]) -> float | None:
    """Share of requests (or starts) that waited for no model load: wait 0. A request never served
    (wait ``inf``) is cold. ``None`` for none."""
    if not waits_s:
        return None
    return sum(1 for w in waits_s if w <= 0.0) / len(waits_s)


def time_average_count(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """How many of ``intervals`` ([from, to) each: a model resident and ready) cover a moment of
    [``start``, ``end``), averaged over that window. Intervals are clipped to the window; an empty or
    reversed one (evicted before it was ready) adds nothing."""
    if end <= start:
        raise ValueError(f"the window must not be empty: start {start}, end {end}")
    covered = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
    return covered / (end - start)


def fidelity_loss(fidelities: Sequence[float]) -> float | None:
    """1 - the mean fidelity of the variants that served the requests; ``None`` for no request."""
    if not fidelities:
        return None
    return 1.0 - sum(fidelities) / len(fidelities)


# ---- batching ------------------------------------------------------------------------------------------


def batching_point(latencies_ms: Sequence[float], *, sent: int, duration_s: float, slo_ms: float) -> dict[str, float]:
    """One policy at one load (``edgefleet bench batching``), from the latencies of the requests answered
    with a result and the number sent (shed, dropped and failed requests are in ``sent`` only).

    ``slo_attainment`` = answered within the SLO / sent; ``goodput_rps`` = answered within the SLO per
    second of the sending window; ``mean_latency_ms`` over every result, late ones included (the SLO when
    there is none); ``utility`` = goodput_rps * max(0, 1 - 0.5 * mean_latency_ms / slo_ms): the rate of
    useful answers, discounted by how much of the SLO they used on average (half when answers take the
    whole SLO)."""
    if duration_s <= 0 or slo_ms <= 0:
        raise ValueError("duration_s and slo_ms must be positive")
    if sent < len(latencies_ms):
        raise ValueError(f"{len(latencies_ms)} answers for {sent} requests sent")
    good = sum(1 for x in latencies_ms if x <= slo_ms)
    goodput = good / duration_s
    mean = sum(latencies_ms) / len(latencies_ms) if latencies_ms else slo_ms
    return {
        "sent": sent,
        "answered": len(latencies_ms),
        "within_slo": good,
        "slo_attainment": good / sent if sent else 0.0,
        "goodput_rps": goodput,
        "mean_latency_ms": mean,
        "utility": goodput * max(0.0, 1.0 - 0.5 * mean / slo_ms),
    }


def pooled_point(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One policy at one load over several seeds: attainment pooled over every request sent (sum of
    within-SLO / sum of sent), utility and goodput the mean over seeds."""
    if not per_seed:
        raise ValueError("no seeds to pool")
    sent = sum(p["sent"] for p in per_seed)
    good = sum(p["within_slo"] for p in per_seed)
    n = len(per_seed)
    return {
        "sent": sent,
        "within_slo": good,
        "slo_attainment": good / sent if sent else 0.0,
        "goodput_rps": sum(p["goodput_rps"] for p in per_seed) / n,
        "utility": sum(p["utility"] for p in per_seed) / n,
    }


def best_configuration(totals: Mapping[str, float]) -> str | None:
    """The configuration with the highest total (ties: the first name in sorted order); None for none."""
    if not totals:
        return None
    return min(totals.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def utility_gain_vs_best(
    adaptive: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]]
) -> tuple[float | None, str | None]:
    """(adaptive's total utility over the sweep / the best single baseline configuration's, that
    configuration). ``adaptive`` is load -> utility; ``baselines`` is configuration -> load -> utility.
    One configuration for the whole sweep: the one with the highest total over the adaptive policy's
    loads (a load a configuration lacks counts 0)."""
    loads = list(adaptive)
    totals = {name: sum(by_load.get(x, 0.0) for x in loads) for name, by_load in baselines.items()}
    best = best_configuration(totals)
    if best is None:
        return None, None
    return ratio(sum(adaptive.values()), totals[best]), best


def min_attainment_where_reachable(
    adaptive: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]], threshold: float = 0.99
) -> float | None:
    """The adaptive policy's lowest SLO attainment over the loads where at least one baseline
    configuration reaches ``threshold``; None when no baseline reaches it at any load."""
    reached = [
        a for load, a in adaptive.items() if any(by_load.get(load, 0.0) >= threshold for by_load in baselines.values())
    ]
    return min(reached) if reached else None


def calibration_choice(totals: Mapping[str, Mapping[str, float]]) -> str | None:
    """The candidate constant whose totals are best across models, each model's total taken relative to
    the best candidate's on that model (so a model served at thousands of requests per second does not
    outvote one served at hundreds): argmax over candidates of the sum over models of total / best
    total. ``totals`` is candidate -> model -> total utility on the calibration seeds. Ties: the first
    name in sorted order."""
    models = {m for by_model in totals.values() for m in by_model}
    best = {m: max(by_model.get(m, 0.0) for by_model in totals.values()) for m in models}
    scores = {
        c: sum(by_model.get(m, 0.0) / best[m] for m in models if best[m] > 0) for c, by_model in totals.items()
    }
    return best_configuration(scores)

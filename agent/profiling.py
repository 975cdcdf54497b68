"""Profiling a model variant when it is loaded: what one batch costs on this device, for the coordinator.

The warm-up (``edgefleet.agent.host.warm_up``) runs a freshly loaded model a few times so that the first request
is warm. Those runs are timed: the median of the runs after the first (which pays lazy initialisation)
is the batch-1 time. Where the tenant can batch (its inputs have a batch axis and its outputs split on
one) one larger batch is timed too, as cheaply as is useful: the largest of ``min(max_batch, 8)``, its
half, its quarter... (at least 2) whose runs — one unmeasured for the new shape, then ``runs`` timed —
are predicted to fit ``BUDGET_S``, predicting as if batching gained nothing (b x the batch-1 time, the
slow side). So a deploy of a slow model (OCR detection or recognition, ~20 ms a row here) waits no
longer for it, and one of a fast model (OCR angle classifier, ~1 ms) pays about 30 ms more. The
measurement travels in the Ack of the Deploy or Configure (``ServiceProfile`` in the wire contract)
and seeds the coordinator's performance model for this variant on this device kind.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

from edgefleet.wire import ServiceProfile

MAX_PROBE_BATCH = 8  # the larger batch profiled (when the tenant may batch that far)
BUDGET_S = 0.1  # at most this much more deploy time for the larger batch
RUNS = 3  # timed runs per batch size (after one untimed run)


def probe_batch(batch1_s: float, max_batch: int, *, runs: int = RUNS, budget_s: float = BUDGET_S) -> int | None:
    """The larger batch to profile for a model whose batch-1 run takes ``batch1_s``, or None when none
    is cheap enough (or the tenant never batches)."""
    b = min(max_batch, MAX_PROBE_BATCH)
    while b >= 2 and (runs + 1) * b * batch1_s > budget_s:
        b //= 2
    return b if b >= 2 else None


def timed(run: Callable[[], object], runs: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds each of ``runs`` calls of ``run`` took."""
    out: list[float] = []
    for _ in range(runs):
        t0 = clock()
        run()
        out.append(clock() - t0)
    return out


def median_ms(samples_s: list[float]) -> float:
    return statistics.median(samples_s) * 1e3


def service_profile(model: str, variant: str, ms_by_batch: Mapping[int, float]) -> ServiceProfile | None:
    """The wire profile of these measurements, or None when they cannot be one (nothing measured at
    batch 1, or a time the contract refuses, such as a clock that did not move)."""
    try:
        return ServiceProfile(model=model, variant=variant, ms_by_batch=dict(ms_by_batch))
    except ValueError:
        return None

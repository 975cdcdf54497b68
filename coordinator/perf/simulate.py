"""The hardware sharing behaviours as a discrete-event simulation, to check the analytic model against.

Independent of the formulas in ``sharing`` (it shares only the Processor and Load descriptions): each
tenant gets Poisson arrivals and service times with the profile mean and a lognormal spread of the
load's Cs², and each processor serves them as the hardware does —
``cpu``: a pool of ``servers`` workers, requests dispatched FCFS across tenants, a tenant at most
``concurrency`` requests at a time (LiteRT 1); a request that starts while k workers are busy (itself
included) takes (1 + contention·(k-1+X))·max(1, (k+X)/c) times its service time, X the cores the
request path and other processes keep busy on average. Before the pool every request passes the
agent's request path, one FCFS server of ``path_of(load)`` ms per request (Lindley's recursion); its
wait there, and ``dispatch_ms``, are in the latency, the path's own time is not (it is spent before
receipt and after the reply); after its run a request holds its worker, and its tenant's slot, for
``hold_ms`` more. ``gpu``: egalitarian processor sharing
among at most ``servers`` requests in service, the rest waiting FCFS for a slot. ``tpu``: one FCFS
queue where a request for a model (group) other than the previous request's first pays that model's
parameter reload; Lindley's recursion W(n+1) = max(0, W(n) + S(n) - A(n+1)), vectorised as the running
minimum of partial sums. Every measured request is served to completion, however long the queue.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from edgefleet.coordinator.perf.sharing import Load, Processor


def draws(seed: int, load: Load, horizon_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrival times in [0, horizon) and lognormal service times (ms) of one tenant; the same
    ``seed`` gives the same draws wherever the tenant is placed."""
    rng = np.random.default_rng(seed)
    mean_gap = 1000.0 / load.rate_rps
    n = int(horizon_ms / mean_gap * 1.2 + 50)
    arr = np.cumsum(rng.exponential(mean_gap, n))
    while arr[-1] < horizon_ms:
        arr = np.concatenate([arr, arr[-1] + np.cumsum(rng.exponential(mean_gap, n))])
    arr = arr[arr < horizon_ms]
    sigma = math.sqrt(math.log(1.0 + load.scv))
    svc = load.service_ms * rng.lognormal(-sigma * sigma / 2.0, sigma, arr.size)
    return arr, svc


def _path(proc: Processor, loads: Sequence[Load], arr: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(time each request leaves the request path, its wait there) per tenant: one FCFS server."""
    g = np.concatenate([np.full(a.size, proc.path_of(ld)) for ld, a in zip(loads, arr, strict=True)])
    t = np.concatenate(arr)
    order = np.argsort(t, kind="stable")
    ts, gs = t[order], g[order]
    free = -math.inf
    leave = np.empty_like(ts)
    for k in range(ts.size):  # Lindley: start = max(arrival, previous departure)
        start = ts[k] if ts[k] > free else free
        free = leave[k] = start + gs[k]
    out = np.empty_like(ts)
    out[order] = leave
    wait = out - t - g
    cuts = np.cumsum([a.size for a in arr])[:-1]
    return list(np.split(out, cuts)), list(np.split(wait, cuts))


def _pool(proc: Processor, arr: list[np.ndarray], svc: list[np.ndarray], conc: list[int],
          aside: float = 0.0) -> list[np.ndarray]:
    """CPU worker pool: FCFS across tenants, per-tenant concurrency, contention at start; ``arr`` are the
    times requests reach the pool, latencies run from there to the end of their run."""
    c, kappa, hold = proc.servers, proc.contention, proc.hold_ms
    lat = [np.zeros(a.size) for a in arr]
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(arr)])
    order = np.argsort(np.concatenate(arr), kind="stable")
    queues: list[deque[int]] = [deque() for _ in arr]
    running = [0] * len(arr)
    ready: list[tuple[float, int]] = []
    listed = [False] * len(arr)
    done: list[tuple[float, int, int]] = []
    busy = 0

    def dispatch(now: float) -> None:
        nonlocal busy
        while busy < c and ready:
            _, i = heapq.heappop(ready)
            listed[i] = False
            r = queues[i].popleft()
            running[i] += 1
            busy += 1
            others = busy - 1 + aside
            stretch = (1.0 + kappa * min(others, c - 1.0)) * max(1.0, (others + 1.0) / c)
            end = now + svc[i][r] * stretch
            lat[i][r] = end - arr[i][r]
            heapq.heappush(done, (end + hold, i, r))
            if queues[i] and running[i] < conc[i]:
                heapq.heappush(ready, (arr[i][queues[i][0]], i))
                listed[i] = True

    def finish() -> None:
        nonlocal busy
        t, i, _ = heapq.heappop(done)
        busy -= 1
        running[i] -= 1
        if queues[i] and not listed[i]:
            heapq.heappush(ready, (arr[i][queues[i][0]], i))
            listed[i] = True
        dispatch(t)

    seq = [0] * len(arr)
    for k in order.tolist():
        i = int(owner[k])
        r = seq[i]
        seq[i] += 1
        t = arr[i][r]
        while done and done[0][0] <= t:
            finish()
        queues[i].append(r)
        if running[i] < conc[i] and not listed[i]:
            heapq.heappush(ready, (arr[i][queues[i][0]], i))
            listed[i] = True
        dispatch(t)
    while done:
        finish()
    return lat


def _sharing(proc: Processor, arr: list[np.ndarray], svc: list[np.ndarray]) -> list[np.ndarray]:
    """GPU: processor sharing among at most ``servers`` requests in service, the rest FCFS."""
    lat = [np.zeros(a.size) for a in arr]
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(arr)]).tolist()
    times = np.concatenate(arr)
    order = np.argsort(times, kind="stable").tolist()
    index = np.concatenate([np.arange(a.size) for a in arr]).tolist()
    active: list[list[float]] = []  # [remaining work, tenant, request]
    waiting: deque[tuple[int, int]] = deque()
    now = 0.0
    pos, n = 0, len(order)
    while pos < n or active:
        t_arr = float(times[order[pos]]) if pos < n else math.inf
        k = len(active)
        t_done = now + min(a[0] for a in active) * k if k else math.inf
        t = min(t_arr, t_done)
        if k:
            step = (t - now) / k
            for a in active:
                a[0] -= step
        now = t
        if t_done <= t_arr:
            j = min(range(k), key=lambda x: active[x][0])
            _, i, r = active.pop(j)
            lat[int(i)][int(r)] = now - arr[int(i)][int(r)]
            if waiting:
                wi, wr = waiting.popleft()
                active.append([svc[wi][wr], wi, wr])
        else:
            k_ = order[pos]
            pos += 1
            i, r = owner[k_], index[k_]
            if len(active) < proc.servers:
                active.append([svc[i][r], i, r])
            else:
                waiting.append((i, r))
    return lat


def _tpu(loads: list[Load], arr: list[np.ndarray], svc: list[np.ndarray]) -> list[np.ndarray]:
    """TPU: one FCFS queue; a request for another model than the previous one pays its reload."""
    times = np.concatenate(arr)
    owner = np.concatenate([np.full(a.size, i) for i, a in enumerate(arr)])
    groups = {g: j for j, g in enumerate(sorted({ld.group for ld in loads}))}
    group_of = np.array([groups[ld.group] for ld in loads])[owner]
    switch = np.array([ld.switch_ms for ld in loads])[owner]
    order = np.argsort(times, kind="stable")
    t, g, sw, own = times[order], group_of[order], switch[order], owner[order]
    s = np.concatenate(svc)[order] + sw * np.concatenate([[True], g[1:] != g[:-1]])
    x = np.concatenate([[0.0], np.cumsum(s[:-1] - np.diff(t))])
    wait = x - np.minimum.accumulate(np.minimum(x, 0.0))
    total = wait + s
    lat = [np.zeros(a.size) for a in arr]
    for i in range(len(arr)):
        lat[i] = total[own == i]
    return lat


def simulate(
    proc: Processor, members: Sequence[tuple[int, Load]], horizon_ms: float, warmup_ms: float
) -> list[tuple[int, float]]:
    """(seed, simulated p95 ms) of every (seed, load) sharing ``proc``; requests arriving before
    ``warmup_ms`` are served but not measured."""
    drawn = [draws(seed, ld, horizon_ms) for seed, ld in members]
    arr, svc = [d[0] for d in drawn], [d[1] for d in drawn]
    loads = [ld for _, ld in members]
    if proc.kind == "cpu":
        at_pool, path_wait = _path(proc, loads, arr)
        aside = sum(ld.rate_rps / 1000.0 * (proc.path_of(ld) + proc.background_of(ld)) for ld in loads)
        got = _pool(proc, at_pool, svc, [ld.concurrency for ld in loads], aside)
        lat = [g + w + proc.dispatch_ms for g, w in zip(got, path_wait, strict=True)]
    elif proc.kind == "gpu":
        lat = _sharing(proc, arr, svc)
    else:
        lat = _tpu(loads, arr, svc)
    out = []
    for (idx, _), a, la in zip(members, arr, lat, strict=True):
        kept = la[a >= warmup_ms]
        out.append((idx, float(np.percentile(kept, 95)) if kept.size else math.nan))
    return out

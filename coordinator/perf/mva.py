"""Closed loops on a shared processor: mean value analysis over the sharing laws of ``sharing``.

A closed tenant keeps N requests in flight and sends the next one ``think_ms`` after a reply (a video
pipeline back to back: N = 1, think 0 but for the round trip). An open model cannot say what it does —
its rate is not an input but an outcome — so closed tenants are solved by mean value analysis
(Reiser & Lavenberg, "Mean-value analysis of closed multichain queuing networks", JACM 1980): the
device is one station, each closed tenant a class with population N and a delay ``think_ms`` outside.
By the arrival theorem a request that arrives finds the device as it is with one request fewer of its
own class, so with Q_j(n) the mean requests of class j at the device at population vector n:

    R_i(n) = residence_i(what an arrival finds: Q(n - e_i), X(n - e_i))
    X_i(n) = n_i / (R_i(n) + Z_i)        (Little's law over the cycle)
    Q_i(n) = X_i(n) · R_i(n)             (Little's law at the device)

Exact MVA runs this recursion over every population vector up to N (Π(N_i + 1) of them, at most
``EXACT_STATES``); beyond that, Schweitzer's approximation (Schweitzer 1979; Bard 1979) solves it at N
alone, an arrival of class i finding Q_j · (N_j - δ_ij) / N_j, by damped fixed-point iteration.

``residence_i`` is the sharing law of the processor, the same as the open model's (``sharing``):

- ``gpu``, processor sharing among at most w requests in service: with A others present a request
  shares with min(A, w - 1) of them, R = s·(1 + min(A, w - 1)) (the MVA of a processor-sharing
  station, R = D·(1 + Q), exact and insensitive to the service distribution), and the A - (w - 1)
  beyond the slots are ahead of it, each worth the mean service of those present: + (A - (w-1))⁺·s̄.
- ``tpu``, one FCFS server where a request for another model than the previous one first reloads its
  parameters: S_j = s_j + (1 - p_j)·σ_j with p_j the share of requests for j's model among those
  served (the throughputs), and R = S_i + Σ_j A_j·S_j: the request waits for every one it finds, the
  one in service counted whole — in a loop without think time a request arrives as another ends, so
  the one in service has just begun (a residual correction, right for random arrivals, would there
  let the throughput pass the server's capacity).
- ``cpu``, the agent's worker pool of c workers at slowdown f (``sharing._slowdown``: contention with the
  others busy, time-sharing once the workers and the cores kept busy aside fill the cores): a request
  runs s·f after ``dispatch_ms`` and holds its worker ``hold_ms`` more. It waits for a worker when the
  E requests it finds eligible for one (each tenant's present ones up to its concurrency m) fill the
  pool: W_pool = (Σ_j e_j·o_j − (c − 1)·ō)⁺ / c, o the occupancy s·f + hold and ō their mean — the
  (E − (c − 1))⁺ requests ahead of it leave the pool one every ō / c (3 tenants of s back to back on
  2 workers: each waits s/2, as the exact schedule does); a tenant of concurrency m also waits for its
  own requests ahead, W_own = (A_i − (m − 1))⁺·o_i / m. An arrival that finds its own slots full
  (p_own = min(1, (A_i − (m − 1))⁺)) waits for its own request ahead and then for the worker that one
  frees behind the other tenants' requests found waiting (the pool's wait over the others alone, W'),
  the rest wait for the pool: W = W_own + p_own·W' + (1 − p_own)·W_pool (a single-flight loop of 1 ms
  with a second request in flight beside a 4 ms loop on the other worker waits 1 ms for its own and
  nothing more: 1000 req/s, as the schedule does). Another tenant found with a backlog beyond its
  concurrency (share b_j = min(1, (A_j − m_j)⁺)) keeps its m_j workers, each freed one going to its own
  next request, so the pool this arrival waits for has c' = c − Σ b_j·m_j workers; where the backlogs
  could fill every worker (c' < 1), it waits first come first served behind all it found. With
  backlogs beside other tenants this is an approximation that alone may pass the pool's capacity (an
  ONNX loop of 3 in flight beside two single-flight loops, all of 1 ms on 2 workers: 1500 + 400 + 400
  req/s); the solution is then held to it (``_within_pool``: each tenant's throughput at most its m
  workers' worth, all of them at most the c workers the open tenants leave, the cut cycles' extra time
  spent waiting).
  The agent's serial request path (interpreter lock) is one server more: the X_j·g_j requests of
  class j found in it are ahead, Σ_j X_j·g_j·g_j. The cycle's own CPU work outside the latency — the path
  before receipt and after the reply (path − dispatch) and what the app and broker spend per request
  where they share the cores (``background_ms``) — runs on the same cores: when the workers and the
  work aside fill them, it is time-shared like the rest, max(1, (k + X + 1)/c), and the cycle
  lengthens by that work times the stretch − 1.

Open tenants on the same processor (Poisson or periodic) are held at their rates: a closed arrival
finds their mean number present, λ·R by Little, and they are predicted by the open model
(``sharing.predict_open``) with each closed tenant as an open stream at its throughput; the two are
iterated ``OPEN_ROUNDS`` times. A closed loop's requests reach the device as its cycles end, so its gaps
vary as its cycle does: squared CV (Var[R] / (R + Z)²) for one in flight, and N such streams merged
tend to Poisson, (c₁² + N − 1) / N (a simple superposition rule).

Latency is the time at the device (dispatch, waits, service); the p95 takes the wait as the open model
does (an atom at zero, a gamma tail, ``queueing.latency_p95``), with P(wait) the chance an arrival
finds the pool full. Closed loops are always stable: their throughput adapts, so ``utilisation`` is
the busy share they and the open tenants keep, 1 (c cores) at most.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgefleet.coordinator.perf.queueing import latency_p95, service_p95, wait_shape
from edgefleet.coordinator.perf.sharing import Load, Outlook, Processor, _slowdown, predict_open

EXACT_STATES = 4096  # population vectors the exact recursion may visit; beyond: Schweitzer
ROUNDS = 2000  # Schweitzer iterations at most
TOLERANCE = 1e-9  # relative change of every Q_i that ends the iteration
DAMPING = 0.5  # share of the new Q taken per Schweitzer iteration
OPEN_ROUNDS = 6  # alternations between the closed solution and the open tenants' prediction


@dataclass(frozen=True, slots=True)
class Found:
    """What an arriving request finds at the device, per load (closed and open): the mean number
    present, and the throughputs (per ms) of the rest of the network as the arrival sees it."""

    present: tuple[float, ...]
    rate_per_ms: tuple[float, ...]
    busy: tuple[float, ...]  # cpu: workers each load keeps computing (X·s·f), for the contention


@dataclass(frozen=True, slots=True)
class Stay:
    """One request's time at the device by the sharing law."""

    mean_ms: float  # dispatch + waits + service
    run_ms: float  # time in service (co-location included)
    occupancy_ms: float  # time it holds its server (run + the reply's hold on a CPU worker)
    wait_ms: float  # mean wait (for a worker, a slot or the server)
    p_wait: float  # probability it waits at all
    run_scv: float  # squared CV of the time in service
    outside_extra_ms: float = 0.0  # cpu: how much longer the cycle's CPU work outside the device takes


Law = Callable[[int, Found], Stay]


def _cpu_law(proc: Processor, loads: Sequence[Load]) -> Law:
    c, kappa, h, d = proc.servers, proc.contention, proc.hold_ms, proc.dispatch_ms
    conc = [min(ld.concurrency, c) for ld in loads]
    path = [proc.path_of(ld) for ld in loads]
    aside_per = [proc.path_of(ld) + proc.background_of(ld) for ld in loads]

    def law(i: int, f: Found) -> Stay:
        ld = loads[i]
        aside = sum(r * a for r, a in zip(f.rate_per_ms, aside_per, strict=True)) + proc.external_cores
        # busy when it starts: the others' busy workers, and its own only up to its other slots (m - 1)
        others = min(float(c - 1), sum(f.busy) - f.busy[i] + min(f.busy[i], conc[i] - 1.0))
        slow, spread = _slowdown(c, kappa, others, aside)
        run = ld.service_ms * slow
        occ = run + h
        # occupancies of the others found, each at its own slowdown ~ the same f (one pool). Another
        # tenant found with a backlog beyond its concurrency (share b_j = min(1, (A_j - m_j)⁺)) keeps
        # its m_j workers: each one it frees goes to its own next request, queued earlier. So the pool
        # this arrival waits for has c' = c - Σ b_j·m_j workers (at least one), drained by the others.
        backlog = [0.0 if j == i else min(1.0, max(0.0, n - m)) for j, (n, m) in enumerate(zip(f.present, conc,
                                                                                                strict=True))]
        pool = c - sum(b * m for b, m in zip(backlog, conc, strict=True))
        eligible = [min(n, float(m)) * (1.0 - b) for n, m, b in zip(f.present, conc, backlog, strict=True)]
        w_pool, p_pool = _pool_wait(max(1.0, pool), eligible, loads, slow, h)
        if pool < 1.0:  # the backlogged could fill every worker: it waits behind all of it, first come first served
            ahead = [n if j != i else min(n, float(conc[i])) for j, n in enumerate(f.present)]
            w_all, p_all = _pool_wait(float(c), ahead, loads, slow, h)
            share = max(0.0, pool)
            w_pool, p_pool = share * w_pool + (1.0 - share) * w_all, share * p_pool + (1.0 - share) * p_all
        own = f.present[i]
        m = conc[i]
        w_own = max(0.0, own - (m - 1)) * occ / m
        p_own = min(1.0, max(0.0, own - (m - 1)))
        # an arrival that finds its own slots full waits for its own request ahead, and then for the
        # worker it frees only behind the others found waiting for the pool (the pool's wait over the
        # others alone); the rest wait for the pool
        rest = [0.0 if j == i else e for j, e in enumerate(eligible)]
        w_others, _ = _pool_wait(max(1.0, pool), rest, loads, slow, h)
        wait = w_own + p_own * w_others + (1.0 - p_own) * w_pool
        p = p_own + (1.0 - p_own) * p_pool
        # the serial path: each request found in it (X_j·g_j of class j, at most one in all) is ahead
        rho_g = min(sum(r * g for r, g in zip(f.rate_per_ms, path, strict=True)), 1.0)
        w_path = sum(r * g * g for r, g in zip(f.rate_per_ms, path, strict=True))
        p = 1.0 - (1.0 - p) * (1.0 - rho_g)
        scv = (1.0 + ld.scv) * (1.0 + spread) - 1.0
        # the cycle's CPU outside the latency (the path before receipt and after the reply, the app and
        # broker where they share these cores: background) is time-shared too once the cores are full
        outside_cpu = max(0.0, proc.path_of(ld) - d) + proc.background_of(ld)
        shared = max(1.0, (others + aside + 1.0) / c)
        return Stay(d + run + wait + w_path, run, occ, wait + w_path, p, scv, outside_cpu * (shared - 1.0))

    return law


def _gpu_law(proc: Processor, loads: Sequence[Load], inflate: float) -> Law:
    w = proc.servers

    def law(i: int, f: Found) -> Stay:
        s = loads[i].service_ms * inflate
        found = sum(f.present)
        shared = min(found, w - 1.0)
        queued = max(0.0, found - (w - 1.0))
        mean_s = sum(n * ld.service_ms for n, ld in zip(f.present, loads, strict=True)) / found if found > 0 else s
        run = s * (1.0 + shared)
        wait = queued * mean_s * inflate
        return Stay(run + wait, run, run, wait, min(1.0, queued), loads[i].scv)

    return law


def _tpu_law(loads: Sequence[Load], share: Callable[[], list[float]], inflate: float) -> Law:
    def law(i: int, f: Found) -> Stay:
        p = share()
        served = [ld.service_ms + (1.0 - p[j]) * ld.switch_ms for j, ld in enumerate(loads)]
        ahead = sum(n * s for n, s in zip(f.present, served, strict=True))
        wait = (ahead + served[i]) * inflate - served[i]
        found = sum(f.present)
        return Stay(served[i] + wait, served[i], served[i], wait, min(1.0, found), loads[i].scv)

    return law


def outside_ms(proc: Processor, ld: Load) -> float:
    """A closed loop's time per cycle outside its latency at the device: its think time, and never less
    than the agent's own work on the request outside that latency (a CPU's request path before receipt
    and after the reply is sent: path - dispatch), which no loop can skip."""
    if proc.kind != "cpu":
        return ld.think_ms
    return max(ld.think_ms, proc.path_of(ld) - proc.dispatch_ms)


def _pool_wait(pool: float, eligible: Sequence[float], loads: Sequence[Load], slow: float, hold: float
               ) -> tuple[float, float]:
    """(mean wait, P(wait)) for a worker of a pool of ``pool`` workers, finding ``eligible`` requests of
    each load ahead, each holding a worker s·f + hold: W = (Σ e_j·o_j − (c − 1)·ō)⁺ / c."""
    total = sum(eligible)
    if total <= pool - 1:
        return 0.0, 0.0
    work = sum(e * (loads[j].service_ms * slow + hold) for j, e in enumerate(eligible))
    mean_occ = work / total
    return max(0.0, work - (pool - 1) * mean_occ) / pool, min(1.0, total - (pool - 1))


def _exact(law: Law, closed: list[int], loads: Sequence[Load], fixed: Found, think: Sequence[float],
           cpu: bool) -> dict[int, tuple[float, Stay]]:
    """Exact MVA over every population vector up to the tenants' N: class -> (throughput per ms, Stay)."""
    pops = [loads[i].in_flight for i in closed]
    k = len(closed)
    q: dict[tuple[int, ...], list[float]] = {}
    x: dict[tuple[int, ...], list[float]] = {}
    b: dict[tuple[int, ...], list[float]] = {}
    last: dict[int, Stay] = {}
    zero = (0,) * k
    q[zero], x[zero], b[zero] = [0.0] * k, [0.0] * k, [0.0] * k
    for n in sorted(itertools.product(*(range(p + 1) for p in pops)), key=sum):
        if n == zero:
            continue
        qn, xn, bn = [0.0] * k, [0.0] * k, [0.0] * k
        for a in range(k):
            if n[a] == 0:
                continue
            prev = tuple(v - (1 if idx == a else 0) for idx, v in enumerate(n))
            st = law(closed[a], _found(fixed, closed, q[prev], x[prev], b[prev]))
            xa = n[a] / (st.mean_ms + think[closed[a]] + st.outside_extra_ms)
            xn[a], qn[a] = xa, xa * st.mean_ms
            bn[a] = xa * st.run_ms if cpu else 0.0
            if n == tuple(pops):
                last[closed[a]] = st
        q[n], x[n], b[n] = qn, xn, bn
    full = tuple(pops)
    return {closed[a]: (x[full][a], last[closed[a]]) for a in range(k)}


def _found(fixed: Found, closed: list[int], q: list[float], x: list[float], b: list[float]) -> Found:
    present, rate, busy = list(fixed.present), list(fixed.rate_per_ms), list(fixed.busy)
    for a, i in enumerate(closed):
        present[i], rate[i], busy[i] = q[a], x[a], b[a]
    return Found(tuple(present), tuple(rate), tuple(busy))


def _schweitzer(law: Law, closed: list[int], loads: Sequence[Load], fixed: Found, think: Sequence[float],
                cpu: bool) -> dict[int, tuple[float, Stay]]:
    """Schweitzer–Bard approximate MVA at the tenants' N: class -> (throughput per ms, Stay)."""
    k = len(closed)
    pops = [loads[i].in_flight for i in closed]
    q = [p / 2.0 for p in pops]
    x = [0.0] * k
    b = [0.0] * k
    stays: dict[int, Stay] = {}
    for _ in range(ROUNDS):
        new_q, new_x, new_b = [0.0] * k, [0.0] * k, [0.0] * k
        for a in range(k):
            scale = [(pops[j] - (1 if j == a else 0)) / pops[j] for j in range(k)]
            st = law(closed[a], _found(fixed, closed, [q[j] * scale[j] for j in range(k)],
                                       [x[j] * scale[j] for j in range(k)], [b[j] * scale[j] for j in range(k)]))
            xa = pops[a] / (st.mean_ms + think[closed[a]] + st.outside_extra_ms)
            new_x[a], new_q[a], new_b[a] = xa, xa * st.mean_ms, xa * st.run_ms if cpu else 0.0
            stays[closed[a]] = st
        change = max(abs(nq - oq) / max(nq, 1e-12) for nq, oq in zip(new_q, q, strict=True))
        q = [DAMPING * nq + (1.0 - DAMPING) * oq for nq, oq in zip(new_q, q, strict=True)]
        x, b = new_x, new_b
        if change < TOLERANCE:
            break
    return {closed[a]: (x[a], stays[closed[a]]) for a in range(k)}


def cycle_scv(in_flight: int, mean_ms: float, p95_ms: float, think_ms: float) -> float:
    """Squared CV of a closed loop's gaps as an open tenant sees them (module docstring): one in flight,
    the cycle's (its spread from the p95, normal-like, over the cycle's mean); N merged, toward 1."""
    sd = max(0.0, p95_ms - mean_ms) / 1.6448536269514722
    cycle = mean_ms + think_ms
    one = min(1.0, (sd / cycle) ** 2) if cycle > 0 else 1.0
    return (one + in_flight - 1.0) / in_flight


def predict_closed(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """``sharing.predict`` for a set of loads with at least one closed loop (module docstring)."""
    if proc.kind == "cpu":
        return _cpu_mixed(proc, loads)
    return _single_server_mixed(proc, loads)


def _solve(proc: Processor, law: Law, closed: list[int], loads: Sequence[Load], fixed: Found,
           cpu: bool) -> dict[int, tuple[float, Stay]]:
    states = math.prod(loads[i].in_flight + 1 for i in closed)
    think = [outside_ms(proc, ld) for ld in loads]
    return (_exact if states <= EXACT_STATES else _schweitzer)(law, closed, loads, fixed, think, cpu)


def _single_server_mixed(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """gpu and tpu: one station of unit capacity. Open tenants at utilisation U_o stretch every closed
    request by 1 / (1 - U_o) (they are served in between), and an open request meets the closed
    requests present, R_o = S_o·(1 + Σ Q_closed) / (1 - U_o): the mixed-network solution of a
    product-form station (Lazowska et al., Quantitative System Performance, 1984, §7.4)."""
    n = len(loads)
    closed = [i for i, ld in enumerate(loads) if ld.closed]
    opened = [i for i, ld in enumerate(loads) if not ld.closed]
    zeros = tuple(0.0 for _ in range(n))
    shares = [1.0 / n] * n
    result: dict[int, tuple[float, Stay]] = {}
    served = [ld.service_ms for ld in loads]
    u_open = 0.0
    for _ in range(OPEN_ROUNDS if proc.kind == "tpu" else 1):
        served = [ld.service_ms + ((1.0 - shares[j]) * ld.switch_ms if proc.kind == "tpu" else 0.0)
                  for j, ld in enumerate(loads)]
        u_open = sum(loads[i].rate_rps / 1000.0 * served[i] for i in opened)
        if u_open >= 1.0:
            inf = (math.inf,) * n
            return Outlook(u_open, inf, inf, inf, tuple(ld.rate_rps if not ld.closed else 0.0 for ld in loads))
        inflate = 1.0 / (1.0 - u_open)
        snapshot = list(shares)

        def now_shares(fixed: list[float] = snapshot) -> list[float]:
            return fixed

        law = _gpu_law(proc, loads, inflate) if proc.kind == "gpu" else _tpu_law(loads, now_shares, inflate)
        result = _solve(proc, law, closed, loads, Found(zeros, zeros, zeros), False)
        thru = [result[i][0] if i in result else loads[i].rate_rps / 1000.0 for i in range(n)]
        total = sum(thru)
        by_group: dict[str, float] = {}
        for ld, r in zip(loads, thru, strict=True):
            by_group[ld.group or ld.name] = by_group.get(ld.group or ld.name, 0.0) + r
        shares = [by_group[ld.group or ld.name] / total for ld in loads]
    q_closed = sum(x * st.mean_ms for x, st in result.values())
    means: list[float] = []
    p95s: list[float] = []
    services: list[float] = []
    thru_rps: list[float] = []
    busy = u_open
    for i, ld in enumerate(loads):
        if ld.closed:
            x, st = result[i]
            means.append(st.mean_ms)
            p95s.append(latency_p95(st.run_ms, service_p95(st.run_ms, st.run_scv), st.p_wait, st.wait_ms,
                                    wait_shape(min(1.0, st.p_wait), st.run_scv)))
            services.append(st.run_ms)
            thru_rps.append(x * 1000.0)
            busy += x * served[i]
        else:
            mean = served[i] * (1.0 + q_closed) / (1.0 - u_open)
            p_busy = min(1.0, busy_share(result, served) + u_open)
            means.append(mean)
            p95s.append(latency_p95(served[i], service_p95(served[i], ld.scv), p_busy, mean - served[i],
                                    wait_shape(p_busy, ld.scv)))
            services.append(served[i])
            thru_rps.append(ld.rate_rps)
    return Outlook(min(busy, 1.0), tuple(means), tuple(p95s), tuple(services), tuple(thru_rps))


def busy_share(result: dict[int, tuple[float, Stay]], served: list[float]) -> float:
    """The share of time the closed tenants keep a unit-capacity station busy."""
    return sum(x * served[i] for i, (x, _st) in result.items())


def _cpu_mixed(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """cpu: the closed tenants by MVA, finding the open ones' mean number present and busy workers; the
    open ones by the open model with each closed tenant as a stream at its throughput; alternated."""
    closed = [i for i, ld in enumerate(loads) if ld.closed]
    opened = [i for i, ld in enumerate(loads) if not ld.closed]
    rates = [ld.rate_rps / 1000.0 if not ld.closed else 0.0 for ld in loads]
    # to begin with, an open tenant is present while in service (no wait)
    present = [rates[i] * (ld.service_ms + proc.hold_ms) if not ld.closed else 0.0 for i, ld in enumerate(loads)]
    busy = [rates[i] * ld.service_ms if not ld.closed else 0.0 for i, ld in enumerate(loads)]
    law = _cpu_law(proc, loads)
    open_out: Outlook | None = None
    result: dict[int, tuple[float, Stay]] = {}
    for _ in range(OPEN_ROUNDS if opened else 1):
        result = _solve(proc, law, closed, loads, Found(tuple(present), tuple(rates), tuple(busy)), True)
        opened_work = sum(busy[i] + rates[i] * proc.hold_ms for i in opened)
        result = _within_pool(proc, loads, result, opened_work)
        if not opened:
            break
        as_open = [ld if not ld.closed else _as_stream(ld, result[i][0], result[i][1]) for i, ld in enumerate(loads)]
        open_out = predict_open(proc, as_open)
        if not all(math.isfinite(m) for m in open_out.mean_ms):
            break
        for i in opened:
            present[i] = rates[i] * open_out.mean_ms[i]
            busy[i] = rates[i] * open_out.service_ms[i]
    return _outlook(proc, loads, result, open_out, rates)


def _within_pool(proc: Processor, loads: Sequence[Load], result: dict[int, tuple[float, Stay]],
                 opened_work: float) -> dict[int, tuple[float, Stay]]:
    """The closed tenants' throughputs held to what the pool can do, where the pool law's approximation
    passes it: a tenant keeps at most min(m, c) workers busy (X·o <= m, o its occupancy) and the closed
    ones together at most the c workers the open ones leave (Σ X·o <= c - open work). Where a throughput
    is cut, the cycle lengthens by Little's law over it (N / X), and the extra is time spent waiting:
    R' = N / X' - (outside time). Three single-flight loops of 10, 12 and 12 ms on 2 workers, the first
    with 7 ms outside, sum to 2.002 workers by the wait law; cut by 2 / 2.002, each waits that much more."""
    c = proc.servers
    cut: dict[int, float] = {}
    for i, (x, st) in result.items():
        work = x * st.occupancy_ms
        most = min(loads[i].concurrency, c)
        cut[i] = x * most / work if work > most else x
    total = sum(x * result[i][1].occupancy_ms for i, x in cut.items())
    free = c - opened_work
    if free > 0.0 and total > free:
        cut = {i: x * free / total for i, x in cut.items()}
    held: dict[int, tuple[float, Stay]] = {}
    for i, (x, st) in result.items():
        new = cut[i]
        if new >= x or new <= 0.0:
            held[i] = (x, st)
            continue
        outside = outside_ms(proc, loads[i]) + st.outside_extra_ms
        extra = max(0.0, loads[i].in_flight / new - outside - st.mean_ms)
        held[i] = (new, dataclasses.replace(st, mean_ms=st.mean_ms + extra, wait_ms=st.wait_ms + extra,
                                            p_wait=max(st.p_wait, min(1.0, extra / max(st.mean_ms + extra, 1e-12)))))
    return held


def _as_stream(ld: Load, x_per_ms: float, st: Stay) -> Load:
    p95 = latency_p95(st.run_ms, service_p95(st.run_ms, st.run_scv), st.p_wait, st.wait_ms)
    scv = cycle_scv(ld.in_flight, st.mean_ms, p95, max(0.0, ld.in_flight / max(x_per_ms, 1e-12) - st.mean_ms))
    return dataclasses.replace(ld, rate_rps=max(x_per_ms * 1000.0, 1e-9), arrival_scv=scv, in_flight=0, think_ms=0.0)


def _outlook(proc: Processor, loads: Sequence[Load], result: dict[int, tuple[float, Stay]],
             open_out: Outlook | None, rates: list[float]) -> Outlook:
    means: list[float] = []
    p95s: list[float] = []
    services: list[float] = []
    thru: list[float] = []
    busy = 0.0
    aside = 0.0
    for i, ld in enumerate(loads):
        if ld.closed:
            x, st = result[i]
            lead = proc.dispatch_ms
            shape = wait_shape(min(1.0, st.p_wait), st.run_scv)
            means.append(st.mean_ms)
            p95s.append(latency_p95(st.run_ms + lead, service_p95(st.run_ms, st.run_scv) + lead, st.p_wait,
                                    st.wait_ms, shape))
            services.append(st.run_ms)
            thru.append(x * 1000.0)
            busy += x * st.run_ms
            aside += x * (proc.path_of(ld) + proc.background_of(ld))
        else:
            assert open_out is not None
            means.append(open_out.mean_ms[i])
            p95s.append(open_out.p95_ms[i])
            services.append(open_out.service_ms[i])
            thru.append(ld.rate_rps)
            busy += rates[i] * open_out.service_ms[i]
            aside += rates[i] * (proc.path_of(ld) + proc.background_of(ld))
    util = min(1.0, (busy + aside + proc.external_cores) / proc.servers)  # closed loops fill what is free, never past it
    if open_out is not None and open_out.utilisation >= 1.0:
        util = max(util, open_out.utilisation)
    return Outlook(util, tuple(means), tuple(p95s), tuple(services), tuple(thru))


__all__ = ["EXACT_STATES", "Found", "Stay", "cycle_scv", "predict_closed"]

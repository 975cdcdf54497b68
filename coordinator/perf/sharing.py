"""How one processor shared by several tenants turns their arrival rates into latencies.

Open tenants (Poisson, or periodic: a low ``arrival_scv``, see ``edgefleet.coordinator.perf.demand``) are
predicted by the formulas below. Tenants that run closed loops (``Load.in_flight`` > 0: N requests in
flight, the next one sent when a reply comes back) have no arrival rate to put in them: ``predict``
hands any set with one among it to mean value analysis over the same sharing laws
(``edgefleet.coordinator.perf.mva``), which predicts their throughput as well as their latency.

Each kind of hardware shares differently, so each has its own model (all rates arrive in requests per
second and are used per ms; times are ms; ``service_ms`` is the tenant's batch-1 time alone):

- ``cpu``: the agent's worker pool, ``servers`` workers on as many cores, shared by every tenant, with
  LiteRT tenants limited to one request at a time and ONNX tenants spread over the workers
  (``Load.concurrency``). Busy cores slow each other (memory bandwidth): a job that starts while k
  other workers are busy runs ``1 + contention·k`` times slower. The number of others busy at a start
  is taken from M/M/c with B Erlangs (PASTA: n < c in service -> n others, else it waited and starts
  with c - 1 others), whose mean gives the slowdown f (and its spread over k the service spread, see below);
  when the tenants' concurrencies add up to at most c nobody waits for a worker and the others busy
  are the other tenants' own busy workers instead (independent, tenant j busy λ_j·s_j·f on average).
  B = D·f for D = Σλs is solved by fixed-point iteration. The pool is then G/G/c (Allen–Cunneen, with
  the rate-weighted mean of the tenants' measured arrival Ca² for the merged stream); a
  tenant whose concurrency m < c, or any tenant when nobody waits for the pool, also queues behind its
  own requests (M/G/m of its own, utilisation ρ): a request finds them running with probability ρ and
  then waits for them, else for the pool, so W = W_own + (1 - ρ)·W_pool, P(W > 0) = P_own + (1 - ρ)·P_pool.
  The agent's own work per request outside the model (reading the MQTT packet, decoding, encoding and
  publishing the reply: ``path_ms`` + ``path_ms_per_mb`` x the request's size) runs in Python under one
  interpreter lock, so it is a single server of its own, utilisation ρ_g = Σλ·g: a request's worker
  waits for it once, a G/D/1 wait (Kingman, P(W > 0) = ρ_g) combined with the pool's
  (means add, P(W > 0) = 1 - (1 - P)(1 - ρ_g)); it is not in the tenants' service time. That work,
  and the CPU other processes spend per request on the same cores (``background_ms`` +
  ``background_ms_per_mb`` x size: a broker or an app on the box), and whatever else keeps cores busy
  whatever the tenants do (``external_cores``: other processes), keep X cores busy on average
  besides the workers: they count among the others busy for the contention, and when the workers and
  X together exceed the cores the workers are time-shared, so f = (1 + contention·min(k + X, c-1)) ·
  max(1, (k + 1 + X)/c) for k other workers busy, its mean and spread taken over k (binomial over the
  c - 1 others with the mean above); the cores are full when B + X >= c. Two parts
  of that path sit on a request's own timeline: ``dispatch_ms`` from receipt to the start of service
  with a worker free (decoding, admission, waking the worker) is in its latency, and ``hold_ms`` after
  the runtime returns (splitting outputs, encoding and publishing the reply) keeps its worker, and its
  tenant's slot, busy for the next request without being in its own latency: the queues above see
  occupancies s·f + ``hold_ms`` (the CPU it costs is already the path's, so utilisation leaves it out).
- ``gpu``: processor sharing among the requests in service (time-slicing kernels of concurrent
  sessions), at most w = ``servers`` at once. The others present on arrival N follow the M/M/1 law
  P(N >= n) = ρ^n; a job of size s shares with min(N, w-1) of them, so it takes s·(1 + min(N, w-1)):
  mean s·(1 + Σ_{n<w} ρ^n), p95 s·(1 + min(w-1, ln 0.05 / ln ρ)). With all w slots taken
  (probability ρ^w) it first waits for one, an exponential wait of mean E[S²]/E[S]/(1-ρ) (the
  size-biased job that holds the slots, M/M/1 waiting once waiting).
- ``tpu``: one FCFS queue for every tenant on the TPU (the Edge TPU runs one invocation at a time),
  where a request for another model than the previous one first reloads that model's parameters
  (``switch_ms``). With p_g the share of requests for model g in the Poisson mix, the previous request
  was another model with probability 1 - p_g, so E[S_g] = s_g + (1-p_g)·σ_g and
  E[S²] = Σ p_g·((1-p_g)(s_g+σ_g)² + p_g·s_g² + s_g²·Cs²); the wait is M/G/1 (Pollaczek–Khinchine),
  scaled to G/G/1 by Kingman's (Ca² + Cs²)/(1 + Cs²) for arrivals that are not Poisson.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.coordinator.perf.queueing import TAIL, latency_p95, mgc_wait, service_p95, wait_shape

KINDS = ("cpu", "gpu", "tpu")
CONTENTION_ROUNDS = 6  # fixed-point iterations for the CPU slowdown (converges in 3-4 for stable loads)


@dataclass(frozen=True, slots=True)
class Processor:
    kind: str  # "cpu" | "gpu" | "tpu"
    servers: int = 1  # cpu: workers = cores used; gpu: requests in service at once; tpu: 1
    contention: float = 0.0  # cpu: fractional slowdown per other busy core
    path_ms: float = 0.0  # cpu: the agent's serial (interpreter-lock) work per request outside the model
    path_ms_per_mb: float = 0.0  # cpu: ... and per MB of request payload
    background_ms: float = 0.0  # cpu: CPU per request spent by other processes on these cores
    background_ms_per_mb: float = 0.0  # cpu: ... and per MB of request payload
    dispatch_ms: float = 0.0  # cpu: receipt to start of service with a worker free (in the latency)
    hold_ms: float = 0.0  # cpu: worker time per request after the runtime returns (reply; not in latency)
    external_cores: float = 0.0  # cpu: cores kept busy by work that is not the tenants' (other processes)

    def __post_init__(self) -> None:
        costs = (self.contention, self.path_ms, self.path_ms_per_mb, self.background_ms, self.background_ms_per_mb,
                 self.dispatch_ms, self.hold_ms, self.external_cores)
        if self.kind not in KINDS or self.servers < 1 or min(costs) < 0.0:
            raise ValueError(f"bad processor {self}")

    def path_of(self, load: Load) -> float:
        """ms of the agent's serial request path one request of ``load`` costs."""
        return self.path_ms + self.path_ms_per_mb * load.request_mb

    def background_of(self, load: Load) -> float:
        """ms of other processes' CPU one request of ``load`` costs on these cores: the load's own
        measured figure where it has one, else the processor's per request and per MB."""
        if load.background_ms is not None:
            return load.background_ms
        return self.background_ms + self.background_ms_per_mb * load.request_mb


@dataclass(frozen=True, slots=True)
class Load:
    """One tenant's demand on a processor."""

    name: str
    rate_rps: float
    service_ms: float  # batch-1 service time alone on this processor
    slo_ms: float = math.inf  # p95 objective
    scv: float = 0.04  # squared coefficient of variation of the service time
    concurrency: int = 1  # requests of this tenant that may run at once (LiteRT 1, ONNX the workers)
    switch_ms: float = 0.0  # tpu: parameter reload when the previous request was another model
    group: str = ""  # tpu: tenants of one group share the model's parameters (no reload between them)
    request_mb: float = 0.0  # size of one request's payload in MB (10^6 bytes)
    arrival_scv: float = 1.0  # squared CV of the inter-arrival times at the device (1: Poisson)
    in_flight: int = 0  # closed loop: requests outstanding at all times (0: open, at ``rate_rps``)
    think_ms: float = 0.0  # closed loop: time outside the device per cycle (app, broker, think time)
    background_ms: float | None = None  # other processes' CPU per request, as measured (None: the processor's)

    @property
    def closed(self) -> bool:
        return self.in_flight > 0


@dataclass(frozen=True, slots=True)
class Outlook:
    utilisation: float  # busy share of the processor, slowdowns and reloads included; >= 1 is unstable
    mean_ms: tuple[float, ...]  # per load, in the order given; inf when unstable
    p95_ms: tuple[float, ...]
    service_ms: tuple[float, ...] = ()  # mean time in service per load (co-location included, no wait)
    throughput_rps: tuple[float, ...] = ()  # per load: an open load's rate, a closed loop's predicted throughput


def predict(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """Mean and p95 latency of every load sharing ``proc`` (and each one's throughput). Open loads only:
    the queueing formulas below; with closed loops among them, mean value analysis
    (``edgefleet.coordinator.perf.mva``) over the same sharing laws."""
    if not loads:
        return Outlook(0.0, (), (), (), ())
    if any(ld.closed for ld in loads):
        from edgefleet.coordinator.perf.mva import predict_closed

        return predict_closed(proc, loads)
    return _with_rates(predict_open(proc, loads), loads)


def _with_rates(out: Outlook, loads: Sequence[Load]) -> Outlook:
    return Outlook(out.utilisation, out.mean_ms, out.p95_ms, out.service_ms, tuple(ld.rate_rps for ld in loads))


def predict_open(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """``predict`` for open loads (every load's ``rate_rps`` is its arrival rate; ``in_flight`` ignored)."""
    if not loads:
        return Outlook(0.0, (), (), ())
    if proc.kind == "cpu":
        return _cpu(proc, loads)
    if proc.kind == "gpu":
        return _gpu(proc, loads)
    return _tpu(loads)


def _unstable(util: float, n: int) -> Outlook:
    inf = (math.inf,) * n
    return Outlook(max(util, 1.0), inf, inf, inf)


def _others_busy(c: int, offered: float) -> float:
    """Mean number of other busy workers a job finds when it starts in M/M/c with ``offered`` Erlangs:
    n < c in service on arrival (P ∝ A^n/n!) -> n others; queued -> c - 1."""
    term = total = 1.0
    m1 = 0.0
    for n in range(1, c):
        term *= offered / n
        total += term
        m1 += n * term
    tail = term * offered / c * c / (c - offered)  # a_c · c / (c - A)
    wait = tail / (total + tail)  # Erlang C
    return (1.0 - wait) * m1 / total + (c - 1) * wait


def _slowdown(c: int, kappa: float, others: float, aside: float) -> tuple[float, float]:
    """Mean and squared CV of a job's slowdown when ``others`` other workers are busy on average (spread
    binomially over the c - 1 others) and ``aside`` cores are kept busy outside the workers: with k
    others, f(k) = (1 + κ·min(k + X, c - 1)) · max(1, (k + 1 + X)/c). The expectation is taken over k,
    not f at the mean k: time-sharing starts only when the cores are full, so the mean would miss it."""
    n = c - 1
    q = min(max(others / n, 0.0), 1.0) if n > 0 else 0.0
    m1 = m2 = 0.0
    pk = (1.0 - q) ** n
    for k in range(n + 1):
        if k:
            pk *= (n - k + 1) / k * (q / (1.0 - q)) if q < 1.0 else (1.0 if k == n else 0.0)
        f = (1.0 + kappa * min(k + aside, n)) * max(1.0, (k + 1.0 + aside) / c)
        m1 += pk * f
        m2 += pk * f * f
    if q >= 1.0:  # every other worker busy: k = n for certain
        f = (1.0 + kappa * min(n + aside, n)) * max(1.0, (n + 1.0 + aside) / c)
        return f, 0.0
    return m1, max(0.0, m2 / (m1 * m1) - 1.0)


def _cpu(proc: Processor, loads: Sequence[Load]) -> Outlook:
    c, kappa = proc.servers, proc.contention
    demand = total = m2 = own = 0.0  # Σλs, Σλ, Σλs²(1+Cs²), Σλ²s
    path = path2 = extra = ca2 = 0.0  # Σλg, Σλg², Σλ·background (g: serial path ms per request), Σλ·Ca²
    slots = 0
    for ld in loads:
        r, s, g = ld.rate_rps / 1000.0, ld.service_ms, proc.path_of(ld)
        demand += r * s
        total += r
        m2 += r * s * s * (1.0 + ld.scv)
        own += r * r * s
        slots += min(ld.concurrency, c)
        path += r * g
        path2 += r * g * g
        extra += r * proc.background_of(ld)
        ca2 += r * ld.arrival_scv
    ca2 /= total  # the merged stream's, by the stationary-interval approximation (Whitt 1982)
    if path >= 1.0:
        return _unstable(path, len(loads))
    aside = path + extra + proc.external_cores  # cores kept busy outside the workers, on average
    pooled = slots > c  # else every request in service has a worker: nobody waits for the pool
    busy, slow, spread = demand, 1.0, 0.0
    for _ in range(CONTENTION_ROUNDS):
        if busy + aside >= c:
            return _unstable((busy + aside) / c, len(loads))
        # pooled: M/M/c at a start; else the other tenants' own busy workers, each tenant independently
        mean = _others_busy(c, busy) if pooled else slow * (demand - own / total)
        slow, spread = _slowdown(c, kappa, mean, aside)
        busy = demand * slow
    if busy + aside >= c:
        return _unstable((busy + aside) / c, len(loads))
    h = proc.hold_ms
    es = busy / total + h  # a worker's occupancy per request: the run, then the reply
    es2 = (m2 * slow * slow * (1.0 + spread) + 2.0 * h * busy) / total + h * h
    if pooled and total * es >= c:
        return _unstable(total * es / c, len(loads))
    p_pool, w_pool = mgc_wait(c, total, es, es2 / (es * es) - 1.0, ca2) if pooled else (0.0, 0.0)
    # Kingman, G/D/1 of the serial request path: (Ca² + 0)/2 · ρ_g/(1 - ρ_g) · E[g], E[g] = Σλg²/Σλg
    w_path = ca2 * path2 / (2.0 * (1.0 - path))
    means: list[float] = []
    p95s: list[float] = []
    for ld in loads:
        s = ld.service_ms * slow
        scv = (1.0 + ld.scv) * (1.0 + spread) - 1.0
        m = min(ld.concurrency, c)
        if pooled and m == c:
            p, w = p_pool, w_pool
            shape = wait_shape(total * es / c, es2 / (es * es) - 1.0)
        else:  # finds its own requests running with probability ρ_own and waits for them, else the pool
            occ = s + h
            rho = ld.rate_rps / 1000.0 * occ / m
            if rho >= 1.0:
                return _unstable(max(rho, (busy + aside) / c), len(loads))
            p_own, w_own = mgc_wait(m, ld.rate_rps / 1000.0, occ, scv * (s / occ) ** 2, ld.arrival_scv)
            p, w = p_own + (1.0 - rho) * p_pool, w_own + (1.0 - rho) * w_pool
            shape = wait_shape(rho, scv * (s / occ) ** 2) if w_own >= (1.0 - rho) * w_pool else 1.0
        p, w = 1.0 - (1.0 - min(p, 1.0)) * (1.0 - path), w + w_path
        lat = s + proc.dispatch_ms
        means.append(lat + w)
        p95s.append(latency_p95(lat, service_p95(s, scv) + proc.dispatch_ms, p, w, shape))
    return Outlook((busy + aside) / c, tuple(means), tuple(p95s), tuple(ld.service_ms * slow for ld in loads))


def _gpu(proc: Processor, loads: Sequence[Load]) -> Outlook:
    rho = total = m2 = 0.0  # Σλs, Σλ, Σλs²(1+Cs²)
    for ld in loads:
        r = ld.rate_rps / 1000.0
        rho += r * ld.service_ms
        total += r
        m2 += r * ld.service_ms**2 * (1.0 + ld.scv)
    if rho >= 1.0:
        return _unstable(rho, len(loads))
    w = proc.servers
    shared_mean = sum(rho**n for n in range(1, w))  # E[min(N, w - 1)], P(N >= n) = ρ^n
    shared_q95 = min(w - 1.0, math.log(TAIL) / math.log(rho)) if rho > TAIL else 0.0
    p_slot = rho**w  # all slots taken on arrival
    theta = m2 / rho / (1.0 - rho)  # slot wait once waiting: size-biased job / (1 - ρ)
    q_slot = theta * math.log(p_slot / TAIL) if p_slot > TAIL else 0.0
    means: list[float] = []
    p95s: list[float] = []
    for ld in loads:
        s = ld.service_ms
        means.append(s * (1.0 + shared_mean) + p_slot * theta)
        spread = service_p95(s, ld.scv) - s
        p95s.append(s * (1.0 + shared_q95) + math.hypot(spread, q_slot))
    return Outlook(rho, tuple(means), tuple(p95s), tuple(ld.service_ms * (1.0 + shared_mean) for ld in loads))


def _tpu(loads: Sequence[Load]) -> Outlook:
    by_group: dict[str, list[float]] = {}  # group -> [rate, rate·service, switch, rate·scv]
    ca2 = sum(ld.rate_rps * ld.arrival_scv for ld in loads) / max(sum(ld.rate_rps for ld in loads), 1e-12)
    for ld in loads:
        g = by_group.setdefault(ld.group or ld.name, [0.0, 0.0, 0.0, 0.0])
        r = ld.rate_rps / 1000.0
        g[0] += r
        g[1] += r * ld.service_ms
        g[2] = max(g[2], ld.switch_ms)
        g[3] += r * ld.scv
    total = sum(g[0] for g in by_group.values())
    es = es2 = 0.0
    for rate, work, sigma, scv_w in by_group.values():
        p, s, scv = rate / total, work / rate, scv_w / rate
        es += p * (s + (1.0 - p) * sigma)
        es2 += p * ((1.0 - p) * (s + sigma) ** 2 + p * s * s + s * s * scv)
    rho = total * es
    if rho >= 1.0:
        return _unstable(rho, len(loads))
    cs2 = max(0.0, es2 / (es * es) - 1.0)
    wait = total * es2 / (2.0 * (1.0 - rho)) * (ca2 + cs2) / (1.0 + cs2)
    means: list[float] = []
    p95s: list[float] = []
    services: list[float] = []
    for ld in loads:
        rate = by_group[ld.group or ld.name][0]
        miss = 1.0 - rate / total  # the previous request was for another model
        mean_s = ld.service_ms + miss * ld.switch_ms
        q_s = service_p95(ld.service_ms, ld.scv) + (ld.switch_ms if miss > TAIL else 0.0)
        means.append(mean_s + wait)
        services.append(mean_s)
        p95s.append(latency_p95(mean_s, q_s, rho, wait))
    return Outlook(rho, tuple(means), tuple(p95s), tuple(services))


__all__ = ["Load", "Outlook", "Processor", "predict", "predict_open"]

"""How one processor shared by several tenants turns their arrival rates into latencies.

Each kind of hardware shares differently, so each has its own model (all rates arrive in requests per
second and are used per ms; times are ms; ``service_ms`` is the tenant's batch-1 time alone):

- ``cpu``: the agent's worker pool, ``servers`` workers on as many cores, shared by every tenant, with
  LiteRT tenants limited to one request at a time and ONNX tenants spread over the workers
  (``Load.concurrency``). Busy cores slow each other (memory bandwidth): a job that starts while k
  other workers are busy runs ``1 + contention·k`` times slower. The number of others busy at a start
  is taken from M/M/c with B Erlangs (PASTA: n < c in service -> n others, else it waited and starts
  with c - 1 others), whose mean gives the slowdown f and whose variance widens the service spread;
  when the tenants' concurrencies add up to at most c nobody waits for a worker and the others busy
  are the other tenants' own busy workers instead (independent, tenant j busy λ_j·s_j·f on average).
  B = D·f for D = Σλs is solved by fixed-point iteration. The pool is then M/G/c (Allen–Cunneen); a
  tenant whose concurrency m < c, or any tenant when nobody waits for the pool, also queues behind its
  own requests (M/G/m of its own, utilisation ρ): a request finds them running with probability ρ and
  then waits for them, else for the pool, so W = W_own + (1 - ρ)·W_pool, P(W > 0) = P_own + (1 - ρ)·P_pool.
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
  E[S²] = Σ p_g·((1-p_g)(s_g+σ_g)² + p_g·s_g² + s_g²·Cs²); the wait is M/G/1 (Pollaczek–Khinchine).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.perf.queueing import TAIL, latency_p95, mgc_wait, service_p95

KINDS = ("cpu", "gpu", "tpu")
CONTENTION_ROUNDS = 6  # fixed-point iterations for the CPU slowdown (converges in 3-4 for stable loads)


@dataclass(frozen=True, slots=True)
class Processor:
    kind: str  # "cpu" | "gpu" | "tpu"
    servers: int = 1  # cpu: workers = cores used; gpu: requests in service at once; tpu: 1
    contention: float = 0.0  # cpu: fractional slowdown per other busy core
    overhead_ms: float = 0.0  # cpu: CPU time per request outside the model (MQTT, decoding, replying)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.servers < 1 or self.contention < 0.0 or self.overhead_ms < 0.0:
            raise ValueError(f"bad processor {self}")


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


@dataclass(frozen=True, slots=True)
class Outlook:
    utilisation: float  # busy share of the processor, slowdowns and reloads included; >= 1 is unstable
    mean_ms: tuple[float, ...]  # per load, in the order given; inf when unstable
    p95_ms: tuple[float, ...]
    service_ms: tuple[float, ...] = ()  # mean time in service per load (co-location included, no wait)


def predict(proc: Processor, loads: Sequence[Load]) -> Outlook:
    """Mean and p95 latency of every load sharing ``proc``."""
    if not loads:
        return Outlook(0.0, (), (), ())
    if proc.kind == "cpu":
        if proc.overhead_ms > 0.0:  # the cores also spend this on every request: count it as work
            loads = [dataclasses.replace(ld, service_ms=ld.service_ms + proc.overhead_ms) for ld in loads]
        return _cpu(proc, loads)
    if proc.kind == "gpu":
        return _gpu(proc, loads)
    return _tpu(loads)


def _unstable(util: float, n: int) -> Outlook:
    inf = (math.inf,) * n
    return Outlook(max(util, 1.0), inf, inf, inf)


def _others_busy(c: int, offered: float) -> tuple[float, float]:
    """Mean and variance of the other busy workers a job finds when it starts in M/M/c with
    ``offered`` Erlangs: n < c in service on arrival (P ∝ A^n/n!) -> n others; queued -> c - 1."""
    term = total = m1 = m2 = 1.0
    m1 = m2 = 0.0
    for n in range(1, c):
        term *= offered / n
        total += term
        m1 += n * term
        m2 += n * n * term
    tail = term * offered / c * c / (c - offered)  # a_c · c / (c - A)
    wait = tail / (total + tail)  # Erlang C
    mean = (1.0 - wait) * m1 / total + (c - 1) * wait
    return mean, (1.0 - wait) * m2 / total + (c - 1) ** 2 * wait - mean * mean


def _cpu(proc: Processor, loads: Sequence[Load]) -> Outlook:
    c, kappa = proc.servers, proc.contention
    demand = total = m2 = own = own2 = 0.0  # Σλs, Σλ, Σλs²(1+Cs²), Σλ²s, Σ(λs)²/m
    slots = 0
    for ld in loads:
        r, s = ld.rate_rps / 1000.0, ld.service_ms
        demand += r * s
        total += r
        m2 += r * s * s * (1.0 + ld.scv)
        own += r * r * s
        own2 += (r * s) ** 2 / min(ld.concurrency, c)
        slots += min(ld.concurrency, c)
    pooled = slots > c  # else every request in service has a worker: nobody waits for the pool
    busy, slow, spread = demand, 1.0, 0.0
    for _ in range(CONTENTION_ROUNDS):
        if busy >= c:
            return _unstable(busy / c, len(loads))
        if pooled:
            mean, var = _others_busy(c, busy)
        else:  # the other tenants' busy workers, each tenant busy independently
            mean, var = slow * (demand - own / total), max(0.0, busy - slow * slow * own2)
        slow = 1.0 + kappa * mean
        spread = kappa * kappa * var / (slow * slow)  # squared CV of the slowdown
        busy = demand * slow
    if busy >= c:
        return _unstable(busy / c, len(loads))
    es = busy / total
    es2 = m2 * slow * slow * (1.0 + spread) / total
    p_pool, w_pool = mgc_wait(c, total, es, es2 / (es * es) - 1.0) if pooled else (0.0, 0.0)
    means: list[float] = []
    p95s: list[float] = []
    for ld in loads:
        s = ld.service_ms * slow
        scv = (1.0 + ld.scv) * (1.0 + spread) - 1.0
        m = min(ld.concurrency, c)
        if pooled and m == c:
            p, w = p_pool, w_pool
        else:  # finds its own requests running with probability ρ_own and waits for them, else the pool
            rho = ld.rate_rps / 1000.0 * s / m
            p_own, w_own = mgc_wait(m, ld.rate_rps / 1000.0, s, scv)
            p, w = p_own + (1.0 - rho) * p_pool, w_own + (1.0 - rho) * w_pool
        means.append(s + w)
        p95s.append(latency_p95(s, service_p95(s, scv), p, w))
    return Outlook(busy / c, tuple(means), tuple(p95s), tuple(ld.service_ms * slow for ld in loads))


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
    wait = total * es2 / (2.0 * (1.0 - rho))
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


__all__ = ["Load", "Outlook", "Processor", "predict"]

"""The placement judge: a world of edge devices whose truth comes from measurements, not from the
performance model, so a placement policy cannot be graded by its own assumptions.

It imports nothing from the coordinator (an import-linter contract holds it to that). Its parts:

- **Service times** are drawn from the distributions recorded on this box by
  ``edgefleet bench record-service`` (bench/data/service_times.json): a request that starts while ``k``
  other requests are in service on the same processor draws from the samples taken beside ``k``
  co-running models. The agent runs at most one worker per core, so ``k`` is capped at this box's
  cores minus one: a 4-core board's co-runners each have a core, as this box's one co-runner had
  (assumed for those boards). No slowdown formula.
- **The request path** (MQTT, decode, reply) is charged as a delay drawn from the recorded light-load
  end-to-end calls to a real agent minus the model's median service time alone.
- **Devices** (``DEVICE_CLASSES``): ``x86-cpu`` is this machine as measured (its cores, its samples).
  The others are real device classes we cannot run here, *derived from public figures* and marked so:
  a Raspberry-Pi-class quad Arm board, a Jetson Nano 4 GB (ONNX on the GPU, LiteRT on the Arm cores,
  memory shared) and a Coral Dev Board 1 GB (LiteRT on the Edge TPU, ONNX on the Arm cores). Their
  service times are this box's samples times a ratio from the public tables in
  bench/data/public_devices.json: the median over Coral's table of (board CPU or Edge TPU time) /
  (desktop CPU time), and for the Jetson GPU that Arm ratio times the GPU/CPU ratio of the model's named
  analogue in OpenCV Zoo's Jetson Nano table (1 without one).
- **Sharing**: a CPU processor is a pool of ``workers`` (the agent runs min(4, cores)), FCFS; a LiteRT
  tenant has one request in service at a time (one interpreter), an ONNX tenant as many as there are
  workers; the GPU and the TPU serve one request at a time, and the TPU reloads parameters when it
  switches models and the resident models' int8 parameters exceed its on-chip memory.
- **Arrivals**: Poisson per tenant, each tenant's arrivals and draws from its own seed, the same under
  every policy; the p95 is over the requests that arrived after ``warmup_s``.
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.metrics import percentile

DATA_DIR = Path(__file__).resolve().parent / "data"
SERVICE_TIMES = DATA_DIR / "service_times.json"
PUBLIC = DATA_DIR / "public_devices.json"

SINGLE_FLIGHT = frozenset({"litert"})  # the agent runs one request at a time per LiteRT tenant

# kind -> how the world builds it. memory_mib: what the agent may spend on resident models; source says
# whether it is this machine or a public-derived class.
DEVICE_CLASSES: dict[str, dict[str, Any]] = {
    "x86-cpu": {
        "about": "this 2-core x86-64 machine, as measured (bench/data/service_times.json)",
        "source": "measured here",
        "memory_mib": 1024,
        "processors": {"cpu": {"kind": "cpu", "speed": "x86"}},
        "runtimes": {"onnxruntime": "cpu", "litert": "cpu"},
    },
    "arm-cpu": {
        "about": "Raspberry-Pi-class quad Cortex-A board, 2 GB (half for models)",
        "source": "public-derived",
        "memory_mib": 1024,
        "processors": {"cpu": {"kind": "cpu", "speed": "arm", "cores": 4}},
        "runtimes": {"onnxruntime": "cpu", "litert": "cpu"},
    },
    "jetson-gpu": {
        "about": "Jetson Nano 4 GB: memory shared by CPU and GPU; ONNX Runtime on the GPU, LiteRT on the "
                 "quad Cortex-A57",
        "source": "public-derived",
        "memory_mib": 1536,
        "processors": {"cpu": {"kind": "cpu", "speed": "arm", "cores": 4}, "gpu": {"kind": "gpu", "speed": "gpu"}},
        "runtimes": {"onnxruntime": "gpu", "litert": "cpu"},
    },
    "coral-tpu": {
        "about": "Coral Dev Board 1 GB: LiteRT on the Edge TPU (8 MiB on-chip parameter memory), ONNX "
                 "Runtime on the quad Cortex-A53",
        "source": "public-derived",
        "memory_mib": 384,
        "processors": {"cpu": {"kind": "cpu", "speed": "arm", "cores": 4}, "tpu": {"kind": "tpu", "speed": "tpu"}},
        "runtimes": {"onnxruntime": "cpu", "litert": "tpu"},
    },
}


@dataclass(frozen=True)
class JudgedTenant:
    """One tenant as the world sees it (its true rate, not an estimate)."""

    idx: int  # stream position; with the seed, it fixes the tenant's draws
    model: str
    runtime: str
    rate_rps: float
    slo_ms: float


@cache
def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def service_data(path: Path = SERVICE_TIMES) -> dict[str, Any]:
    return _load(path)


def public_data(path: Path = PUBLIC) -> dict[str, Any]:
    return _load(path)


def resident_mib(model: str) -> float:
    return float(service_data()["models"][model]["resident_mib"])


def _sorted(samples: Sequence[float]) -> np.ndarray:
    return np.sort(np.asarray(samples, dtype=float))


@cache
def _distributions(model: str) -> tuple[np.ndarray, ...]:
    """Sorted service samples (ms) of ``model`` on this box beside k = 0, 1, 2, ... co-runners."""
    m = service_data()["models"][model]
    beside = m["beside_ms"]
    return (_sorted(m["alone_ms"]), *(_sorted(beside[k]["samples"]) for k in sorted(beside, key=int)))


@cache
def _path_delays(model: str) -> np.ndarray:
    m = service_data()["models"][model]
    alone = statistics.median(m["alone_ms"])
    return _sorted([max(0.0, e - alone) for e in m["agent_e2e_ms"]])


@cache
def speed_ratio(model: str, speed: str) -> float:
    """How many times this box's service time a model takes on a processor of ``speed``."""
    if speed == "x86":
        return 1.0
    pub = public_data()
    rows = pub["coral"]["rows"].values()  # [desktop CPU, desktop + USB TPU, Dev Board CPU, Dev Board TPU]

    def median_ratio(col: int) -> float:
        return float(statistics.median(r[col] / r[0] for r in rows))

    if speed == "arm":
        return median_ratio(2)
    if speed == "tpu":
        return median_ratio(3)
    if speed == "gpu":  # the Arm figure times the GPU-over-CPU ratio of the named Jetson Nano analogue
        analogue = pub["gpu_analogue"].get(model)
        g = pub["opencv_zoo"]["rows"][analogue] if analogue else None
        return median_ratio(2) * (float(g[1] / g[0]) if g else 1.0)
    raise ValueError(f"unknown speed {speed!r}")


def tpu_switch_ms(model: str) -> float:
    """Reloading a model's int8 parameters (a quarter of its fp32 file) at the public transfer rate."""
    pub = public_data()["edgetpu"]
    return float(service_data()["models"][model].get("file_bytes", 0)) * 0.25 / (float(pub["mb_per_s"]) * 1e6) * 1e3


def workers(kind: str, proc: str) -> int:
    p = DEVICE_CLASSES[kind]["processors"][proc]
    if p["kind"] != "cpu":
        return 1
    cores = int(p.get("cores") or service_data()["cores"])
    return min(4, cores)


def processor_of(kind: str, runtime: str) -> str:
    return str(DEVICE_CLASSES[kind]["runtimes"][runtime])


def _draw(sorted_samples: np.ndarray, u: float) -> float:
    return float(sorted_samples[min(int(u * len(sorted_samples)), len(sorted_samples) - 1)])


def simulate_processor(
    kind: str, proc: str, tenants: Sequence[JudgedTenant], *, seed: int, horizon_s: float, warmup_s: float
) -> dict[int, float]:
    """p95 latency (ms) of each tenant sharing one processor of one device of ``kind``."""
    spec = DEVICE_CLASSES[kind]["processors"][proc]
    speed, pkind = spec["speed"], spec["kind"]
    servers = workers(kind, proc)
    requests: list[tuple[float, int, float, float]] = []  # (arrival s, tenant pos, u service, path ms)
    for pos, t in enumerate(tenants):
        rng = np.random.default_rng([seed, t.idx])
        n = int(rng.poisson(t.rate_rps * horizon_s))
        arrivals = np.sort(rng.uniform(0.0, horizon_s, n))
        us = rng.uniform(0.0, 1.0, n)
        paths = _path_delays(t.model)
        scale = speed_ratio(t.model, "arm") if speed != "x86" else 1.0  # the path runs on the board's CPU
        pu = rng.uniform(0.0, 1.0, n)
        requests += [(float(a), pos, float(u), _draw(paths, float(p)) * scale)
                     for a, u, p in zip(arrivals, us, pu, strict=True)]
    requests.sort()
    dists = [_distributions(t.model) for t in tenants]
    ratios = [speed_ratio(t.model, speed) for t in tenants]
    single = [t.runtime in SINGLE_FLIGHT for t in tenants]
    tpu_reload = pkind == "tpu" and sum(
        service_data()["models"][t.model].get("file_bytes", 0) * 0.25 for t in {t.model: t for t in tenants}.values()
    ) > public_data()["edgetpu"]["sram_bytes"]
    switch = [tpu_switch_ms(t.model) if tpu_reload else 0.0 for t in tenants]
    box_cores = int(service_data()["cores"])
    free = [0.0] * servers  # each server's next free time (ms)
    heapq.heapify(free)
    tenant_free = [0.0] * len(tenants)
    last_model = ""
    lat: list[list[float]] = [[] for _ in tenants]
    warm_ms = warmup_s * 1e3
    for arr_s, pos, u, path_ms in requests:
        arr = arr_s * 1e3
        server_free = heapq.heappop(free)
        start = max(arr, server_free)
        if single[pos]:
            start = max(start, tenant_free[pos])
        # co-runners: the other servers still busy when this one starts; past this box's cores the
        # samples would be of time-slicing, which a pool of at most one worker per core never does
        k = min(sum(1 for f in free if f > start), box_cores - 1)
        d = dists[pos]
        svc = _draw(d[min(k, len(d) - 1)], u) * ratios[pos]
        if pkind == "tpu" and tenants[pos].model != last_model:
            svc += switch[pos]
        last_model = tenants[pos].model
        finish = start + svc
        heapq.heappush(free, finish)
        tenant_free[pos] = finish
        if arr >= warm_ms:
            lat[pos].append(finish - arr + path_ms)
    return {t.idx: (percentile(lat[i], 95.0) if lat[i] else 0.0) for i, t in enumerate(tenants)}


def judge_device(
    kind: str, tenants: Sequence[JudgedTenant], *, seed: int, horizon_s: float, warmup_s: float
) -> dict[int, float]:
    """p95 (ms) of every tenant on one device: each processor simulated with the tenants it serves."""
    by_proc: dict[str, list[JudgedTenant]] = {}
    for t in tenants:
        by_proc.setdefault(processor_of(kind, t.runtime), []).append(t)
    out: dict[int, float] = {}
    for proc, members in sorted(by_proc.items()):
        out.update(simulate_processor(kind, proc, members, seed=seed, horizon_s=horizon_s, warmup_s=warmup_s))
    return out


def violations(tenants: Sequence[JudgedTenant], p95_ms: Mapping[int, float]) -> int:
    return sum(1 for t in tenants if not p95_ms.get(t.idx, math.inf) <= t.slo_ms)


def telemetry_rate(rate_rps: float, *, seed: int, idx: int, window_s: float) -> float:
    """A rate as an agent's telemetry window reports it: the arrivals counted in one window over its
    length (Poisson noise included)."""
    rng = np.random.default_rng([seed, idx, 7])
    return float(rng.poisson(rate_rps * window_s)) / window_s


def describe_world() -> dict[str, Any]:
    """What the JSON records about the world: each class, its source, workers and per-model ratios."""
    models = sorted(service_data()["models"])
    out: dict[str, Any] = {}
    for kind, spec in DEVICE_CLASSES.items():
        procs = {}
        for name, p in spec["processors"].items():
            procs[name] = {"kind": p["kind"], "workers": workers(kind, name),
                           "service_ratio_vs_this_box": {m: round(speed_ratio(m, p["speed"]), 4) for m in models}}
        out[kind] = {**{k: v for k, v in spec.items() if k != "processors"}, "processors": procs}
    return out


__all__ = [
    "DEVICE_CLASSES",
    "JudgedTenant",
    "describe_world",
    "judge_device",
    "resident_mib",
    "telemetry_rate",
    "violations",
]


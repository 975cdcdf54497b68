"""``edgefleet bench planning``: time to place 10k tenants on 2k simulated devices, latency-aware.

Also the simulated fleet and tenant stream the ``placement`` benchmark runs on (so both measure the
same thing). The fleet mixes four kinds from the calibration file (coordinator/perf/calibration.json):
x86 boxes, Arm boards, Jetson-class boards (ONNX on the GPU) and Coral-class boards (LiteRT on the Edge
TPU), with model-memory budgets per kind. The stream draws tenants of the eight zoo models with a rate
and an SLO each from the menus below: camera-like frame rates for the vision models, 32 ms audio
frames for VAD, a few pages or text lines per second for OCR. The menus, kind shares and budgets are
choices (a plausible mixed edge fleet), not measurements.

``seconds`` is the wall time of planning the whole stream on the empty fleet with ``PredictedLatency``
(its planner built from the snapshot, then one decision per tenant, each committed before the next),
the median of ``repeats`` runs; the goal is <= 1 s. ``--quick`` changes nothing: this size is quick.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from pathlib import Path
from typing import Any

from edgefleet.bench.harness import finish, machine, pyplot
from edgefleet.coordinator.fleet import MB, DeviceSnapshot, FleetSnapshot, ModelFacts
from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import build_book, read
from edgefleet.coordinator.placement import Demand, PredictedLatency
from edgefleet.wire import TenantSpec

DEVICES, TENANTS, SEED = 2000, 10_000, 7

# kind -> (share of the fleet, model-memory budget in MB)
KINDS = {"x86-cpu": (0.2, 2048), "arm-cpu": (0.4, 1024), "jetson-gpu": (0.2, 1024), "coral-tpu": (0.2, 512)}

# model -> (request rates in req/s, p95 SLOs in ms) to draw from
MENU: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "face-detect": ((15, 30), (20, 50, 100)),
    "selfie-seg": ((15, 30), (33, 66, 100)),
    "hand-landmark": ((15, 30), (33, 66, 100)),
    "pose-landmark": ((15, 30), (50, 100, 200)),
    "ocr-det": ((2, 4, 8), (200, 500)),
    "ocr-rec": ((10, 20, 40), (100, 250)),
    "ocr-cls": ((10, 20, 40), (20, 50)),
    "vad": ((31.25,), (32, 100)),
}

Tenant = tuple[TenantSpec, ModelFacts, float]  # spec, model facts, request rate


def fleet(devices: int = DEVICES, seed: int = SEED) -> FleetSnapshot:
    rng = random.Random(seed)
    kinds = list(KINDS)
    book_kinds = read()["kinds"]
    out = []
    for i in range(devices):
        kind = rng.choices(kinds, weights=[KINDS[k][0] for k in kinds])[0]
        runtimes = frozenset(book_kinds[kind]["runtimes"])
        out.append(DeviceSnapshot(f"dev{i:05d}", True, kind, runtimes, KINDS[kind][1] * MB))
    return FleetSnapshot(tuple(out))


def stream(tenants: int = TENANTS, seed: int = SEED) -> list[Tenant]:
    rng = random.Random(seed + 1)
    models = read()["models"]
    names = sorted(MENU)
    out: list[Tenant] = []
    for i in range(tenants):
        m = rng.choice(names)
        rates, slos = MENU[m]
        facts = ModelFacts(m, "fp32", models[m]["runtime"], int(models[m]["size_bytes"]))
        spec = TenantSpec(name=f"t{i:05d}-{m}", model=m, slo_ms=float(rng.choice(slos)), max_batch=1)
        out.append((spec, facts, float(rng.choice(rates))))
    return out


def policy(book: PerfBook, tenants: list[Tenant]) -> PredictedLatency:
    return PredictedLatency(book, demand={s.name: Demand(rate, s.slo_ms) for s, _, rate in tenants})


def run(json_path: Path, *, quick: bool = False, plot: bool = True, repeats: int = 3) -> dict[str, Any]:
    book = build_book()
    snap, tenants = fleet(), stream()
    pol = policy(book, tenants)
    pairs = [(s, f) for s, f, _ in tenants]
    runs: list[float] = []
    trace: list[float] = []
    placed = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        planner = pol.planner(snap)
        marks = []
        for spec, facts in pairs:
            planner.place(spec, facts)
            marks.append(time.perf_counter() - t0)
        runs.append(time.perf_counter() - t0)
        trace = marks
        placed = len(planner.predictions())
    data = {
        "benchmark": "planning",
        "quick": quick,
        "machine": machine(),
        "policy": pol.name,
        "probe": pol.probe,
        "headroom": pol.headroom,
        "tenants": len(tenants),
        "devices": len(snap.devices),
        "placed": placed,
        "unplaced": len(tenants) - placed,
        "seconds": statistics.median(runs),
        "seconds_runs": runs,
        "us_per_decision": statistics.median(runs) / len(tenants) * 1e6,
        "goal": {"seconds": 1.0},
    }
    return finish(json_path, data, functools.partial(_plot, trace) if plot else None)


def _plot(trace: list[float], data: dict[str, Any], png: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(trace) + 1), trace)
    ax.axhline(data["goal"]["seconds"], color="gray", lw=0.5, ls="--")
    ax.set_xlabel("tenants decided")
    ax.set_ylabel("seconds since start")
    ax.set_title(
        f"{data['tenants']} tenants on {data['devices']} devices: {data['seconds']:.2f} s "
        f"({data['placed']} placed)"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

"""``edgefleet bench perfmodel``: the performance model's predicted p95 against real agents.

One real agent process on this machine (``LocalFleet``), real zoo models, several co-location mixes at
two loads (total offered work 20% and 50% of the two cores). For each (mix, load) every tenant receives
Poisson arrivals through the SDK for a while; its measured p95 is taken at the device — queueing plus
service, from each answer's ``queue_ms`` and ``service_ms`` — which is what the model predicts (the
broker's round trip is not part of it). The prediction is ``coordinator.perf``: the calibrated book for
``x86-cpu`` and the CPU sharing model for the same tenants and rates. Tenants run with ``max_batch`` 1,
the regime the model describes. ``mape`` = mean over tenants and runs of |predicted - measured| /
measured (goal <= 0.10).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import finish, machine, pyplot
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.wire import TenantSpec

MIXES = (
    ("ocr-cls",),
    ("hand-landmark", "ocr-cls"),
    ("pose-landmark", "vad", "ocr-cls"),
    ("ocr-rec", "hand-landmark"),
)
LOADS = (0.2, 0.5)  # offered work as a share of the device's two cores
KIND = "x86-cpu"
# CPU per request spent on this machine by the load generator (Python SDK) and Mosquitto, which share the
# device's cores here but not on a real fleet: measured by `edgefleet bench serving` (MLP, concurrency 32:
# client 0.53 ms + broker 0.08 ms per request).
COLOCATED_MS = 0.61


def _predict(mix: tuple[str, ...], rates: dict[str, float], *, as_deployed: bool) -> dict[str, float]:
    """p95 per tenant: from the calibrated ``x86-cpu`` kind as it is, or (``as_deployed``) with this
    device's real worker count and the co-located processes' CPU per request added to the overhead."""
    import dataclasses
    import os

    from coordinator.perf.calibration import build_book
    from coordinator.perf.sharing import Load, predict

    book = build_book()
    per: dict[str, list[Load]] = {}
    for i, model in enumerate(mix):
        got = book.load(tenant=f"t{i}-{model}", model=model, variant="fp32", kind=KIND, rate_rps=rates[model])
        if isinstance(got, str):
            raise RuntimeError(got)
        per.setdefault(got[0], []).append(got[1])
    out: dict[str, float] = {}
    for name, loads in per.items():
        proc = book.kinds[KIND].processors[name]
        if as_deployed:
            workers = min(4, os.cpu_count() or 1)  # what the agent runs with workers = 0
            proc = dataclasses.replace(proc, servers=workers, overhead_ms=proc.overhead_ms + COLOCATED_MS)
        outlook = predict(proc, loads)
        for ld, p95 in zip(loads, outlook.p95_ms, strict=True):
            out[ld.name] = p95
    return out


def _ape(pred: float, meas: float) -> float | None:
    """|pred - meas| / meas; a prediction of "unstable" (inf) against a finite measurement counts 1."""
    if not (meas > 0 and np.isfinite(meas)):
        return None
    return 1.0 if not np.isfinite(pred) else float(abs(pred - meas) / meas)


def _service_ms(model: str) -> float:
    from coordinator.perf.calibration import build_book

    prof = build_book().profile(model, "fp32", KIND)
    assert prof is not None
    return float(prof.curve.at(1))


async def _drive(fleet: LocalFleet, tenant: str, model: str, rate: float, seconds: float, seed: int) -> list[float]:
    from edgefleet.sdk import AsyncInferenceClient, InferenceError
    from edgefleet.zoo import sample_inputs

    feeds = dict(sample_inputs(model))
    device_ms: list[float] = []
    rng = random.Random(seed)
    async with AsyncInferenceClient(fleet.settings, prefix=fleet.prefix) as client:

        async def one() -> None:
            try:
                r = await client.infer_with_meta(tenant, feeds, timeout_s=5.0)
            except InferenceError:
                return
            device_ms.append(float(r.meta.get("queue_ms", 0.0)) + float(r.meta.get("service_ms", 0.0)))

        tasks = []
        start = time.monotonic()
        at = start
        while at < start + seconds:
            at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return device_ms


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    seconds = 6.0 if quick else 15.0
    runs: list[dict[str, Any]] = []
    with LocalFleet(agents=[AgentPlan("pm-a", budget_mb=256)], prefix=f"pm{time.monotonic_ns() % 10**8}") as fleet:
        for mix in MIXES:
            for load in LOADS:
                # each tenant offers an equal share of `load` x 2 cores of batch-1 work
                rates = {m: load * 2.0 / len(mix) / (_service_ms(m) / 1e3) for m in mix}
                names = {m: f"t{i}-{m}" for i, m in enumerate(mix)}
                # an overloaded run may have cost the agent its broker connection for a while (the
                # co-located load generator starves it): start each run with the device online
                fleet.wait_online(["pm-a"], 60)
                for m in mix:
                    fleet.deploy(TenantSpec(name=names[m], model=m, slo_ms=10_000.0, max_batch=1))

                async def all_tenants(mix: tuple[str, ...] = mix, rates: dict[str, float] = rates,
                                      names: dict[str, str] = names) -> list[list[float]]:
                    return await asyncio.gather(*(_drive(fleet, names[m], m, rates[m], seconds, i)
                                                  for i, m in enumerate(mix)))

                measured = asyncio.run(all_tenants())
                predicted = _predict(mix, rates, as_deployed=True)
                book_only = _predict(mix, rates, as_deployed=False)
                for m, samples in zip(mix, measured, strict=True):
                    meas = float(np.percentile(samples, 95)) if samples else float("nan")
                    pred, plain = predicted[names[m]], book_only[names[m]]
                    runs.append({"mix": "+".join(mix), "load": load, "tenant": names[m], "model": m,
                                 "rate_rps": rates[m], "requests": len(samples), "measured_p95_ms": meas,
                                 "predicted_p95_ms": pred, "ape": _ape(pred, meas),
                                 "predicted_p95_ms_book_only": plain, "ape_book_only": _ape(plain, meas)})
                for m in mix:
                    fleet.undeploy(names[m])
    apes = [r["ape"] for r in runs if r["ape"] is not None]
    raw = [r["ape_book_only"] for r in runs if r["ape_book_only"] is not None]
    data: dict[str, Any] = {
        "benchmark": "perfmodel",
        "quick": quick,
        "seconds_per_run": seconds,
        "kind": KIND,
        "mape": float(np.mean(apes)) if apes else None,
        "median_ape": float(np.median(apes)) if apes else None,
        "mape_book_only": float(np.mean(raw)) if raw else None,
        "unstable_predictions": sum(1 for r in runs if not np.isfinite(r["predicted_p95_ms"])),
        "optimistic_share": (sum(1 for r in runs if r["ape"] is not None and r["predicted_p95_ms"]
                                 < r["measured_p95_ms"]) / len(runs)) if runs else None,
        "colocated_ms_per_request": COLOCATED_MS,
        "goal": {"mape": 0.10},
        "runs": runs,
        "machine": machine(),
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 6))
    xs = [r["measured_p95_ms"] for r in data["runs"]]
    ys = [r["predicted_p95_ms"] for r in data["runs"]]
    ax.scatter(xs, ys)
    for r in data["runs"]:
        ax.annotate(f"{r['model']} {r['load']:.0%}", (r["measured_p95_ms"], r["predicted_p95_ms"]), fontsize=6)
    top = max([*xs, *ys, 1.0])
    ax.plot([0, top], [0, top], "--", color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured p95 at the device (ms)")
    ax.set_ylabel("predicted p95 (ms)")
    ax.set_title(f"perfmodel: MAPE {data['mape']:.2f} (goal <= 0.10)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

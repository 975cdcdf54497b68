"""``edgefleet bench perfmodel``: the performance model's predicted p95 against real agents.

One real agent process on this machine (``LocalFleet``), real zoo models, several co-location mixes at
two loads. A load is the share of the two cores the model expects the mix to keep busy — the models'
service times, the agent's request path and the CPU the co-located load generator and broker spend per
request — split equally between the tenants, so every run is one the model calls stable (a placement
would never put a device past its headroom). For each (mix, load) every tenant receives Poisson
arrivals through the SDK; its measured p95 is taken at the device — queueing plus service, from each
answer's ``queue_ms`` and ``service_ms`` — which is what the model predicts (the broker's round trip
is not part of it).

The prediction is the coordinator's own: ``coordinator.perf.learner.Learner`` starts from the
calibrated book for ``x86-cpu`` and learns from the agent's telemetry windows (subscribed like the
coordinator does) as the runs go on — service curves and spreads, and each tenant's arrival
burstiness as the learning placement keeps it from its last window. For each run, the first ``WARMUP`` share of it is learnt before
the prediction is made, and only the requests after that are measured, so every prediction is made
before the requests it is scored on. Tenants run with ``max_batch`` 1, the regime the model describes.
``mape`` = mean over tenants and runs of |predicted - measured| / measured (goal <= 0.10);
``mape_book_only`` scores the calibrated book without learning on the same runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import finish, machine, pyplot
from coordinator.perf import Learner, PerfBook
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.mqtt import Inbound, MqttLink
from edgefleet.wire import Telemetry, TenantSpec, WireError, decode

MIXES = (
    ("ocr-cls",),
    ("hand-landmark", "ocr-cls"),
    ("pose-landmark", "vad", "ocr-cls"),
    ("ocr-rec", "hand-landmark"),
)
LOADS = (0.2, 0.4)  # predicted busy share of the device's two cores
KIND = "x86-cpu"
WARMUP = 1.0 / 3.0  # share of each run learnt before its prediction is made, and not measured
# CPU per request that the load generator (Python SDK) and Mosquitto spend on this machine, where they
# share the device's cores (on a real fleet they do not): measured here with one zoo model at a time
# at 10-100 req/s (client + broker: 1.3 ms for VAD's 3 kB requests to 5.3 ms for selfie-seg's 786 kB;
# least-squares line about 1.3 ms + 4.0 ms per MB).
COLOCATED_MS, COLOCATED_MS_PER_MB = 1.3, 4.0


def deployed_book() -> PerfBook:
    """The calibrated book with ``x86-cpu`` as deployed here: this device's worker count and the
    co-located processes' CPU per request."""
    from coordinator.perf.book import KindSpec
    from coordinator.perf.calibration import build_book

    book = build_book()
    spec = book.kinds[KIND]
    workers = min(4, os.cpu_count() or 1)  # what the agent runs with workers = 0
    procs = {
        name: dataclasses.replace(p, servers=workers, background_ms=COLOCATED_MS,
                                  background_ms_per_mb=COLOCATED_MS_PER_MB) if p.kind == "cpu" else p
        for name, p in spec.processors.items()
    }
    return PerfBook({**book.kinds, KIND: KindSpec(KIND, procs, spec.runtimes)}, book.profiles)


def _predict(book: PerfBook, mix: tuple[str, ...], rates: dict[str, float],
             bursts: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """(p95, mean time in service) per tenant ``t{i}-{model}`` of ``mix`` at ``rates`` on ``KIND``, with
    the tenants' arrival burstiness (squared CV of the gaps; Poisson when not given)."""
    from coordinator.perf.sharing import Load, predict

    per: dict[str, list[Load]] = {}
    for i, model in enumerate(mix):
        name = f"t{i}-{model}"
        got = book.load(tenant=name, model=model, variant="fp32", kind=KIND, rate_rps=rates[model],
                        arrival_scv=(bursts or {}).get(name, 1.0))
        if isinstance(got, str):
            raise RuntimeError(got)
        per.setdefault(got[0], []).append(got[1])
    out: dict[str, tuple[float, float]] = {}
    for name, loads in per.items():
        outlook = predict(book.kinds[KIND].processors[name], loads)
        for ld, p95, service in zip(loads, outlook.p95_ms, outlook.service_ms, strict=True):
            out[ld.name] = (p95, service)
    return out


def rates_for(book: PerfBook, mix: tuple[str, ...], load: float) -> dict[str, float]:
    """Per model, the rate at which each tenant keeps ``load`` / len(mix) of the cores busy by the
    book's count: its service time alone, the agent's request path and the co-located processes."""
    proc = book.kinds[KIND].processors["cpu"]
    out = {}
    for m in mix:
        got = book.load(tenant=m, model=m, variant="fp32", kind=KIND, rate_rps=1.0)
        assert not isinstance(got, str), got
        ld = got[1]
        cost_ms = ld.service_ms + proc.path_of(ld) + proc.background_of(ld)
        out[m] = load * proc.servers / len(mix) / (cost_ms / 1e3)
    return out


class Windows:
    """The agent's telemetry windows as the coordinator receives them, kept in arrival order."""

    def __init__(self, fleet: LocalFleet, device: str) -> None:
        self._lock = threading.Lock()
        self._items: list[Telemetry] = []
        self.link = MqttLink(fleet.settings, f"pm-telemetry-{os.getpid()}")
        self.link.subscribe(fleet.topics.telemetry(device), self._on)
        self.link.start()
        self.link.wait_connected(10)

    def _on(self, msg: Inbound) -> None:
        try:
            t: Telemetry = decode(msg.payload, Telemetry)
        except WireError:
            return
        with self._lock:
            self._items.append(t)

    def take(self) -> list[Telemetry]:
        with self._lock:
            out, self._items = self._items, []
        return out

    def close(self) -> None:
        self.link.stop()


def _bursts(windows: list[Telemetry]) -> dict[str, float]:
    """Per tenant, the arrival burstiness the coordinator would use: that of its last window with
    arrivals (``coordinator.perf.learner.arrival_scv``, as the learning placement keeps it)."""
    from coordinator.perf.learner import arrival_scv

    out: dict[str, float] = {}
    for t in windows:
        for w in t.tenants:
            if w.arrivals > 0:
                out[w.tenant] = arrival_scv(w)
    return out


def _parts(qs: np.ndarray) -> dict[str, float]:
    """Where the time went, and how far the measurement itself moves: the p95 of the run's first half
    of answers against its second half's, relative to the whole run's (``split_half_ape``)."""
    if not len(qs):
        return {}
    q, s = qs[:, 0], qs[:, 1]
    d = q + s
    half = len(d) // 2
    p95 = float(np.percentile(d, 95))
    split = (abs(float(np.percentile(d[:half], 95)) - float(np.percentile(d[half:], 95))) / p95
             if half >= 20 and p95 > 0 else float("nan"))
    return {"queue_p50_ms": float(np.median(q)), "queue_p95_ms": float(np.percentile(q, 95)),
            "service_mean_ms": float(s.mean()), "service_p95_ms": float(np.percentile(s, 95)),
            "split_half_ape": split}


def _ape(pred: float, meas: float) -> float | None:
    """|pred - meas| / meas; a prediction of "unstable" (inf) against a finite measurement counts 1."""
    if not (meas > 0 and np.isfinite(meas)):
        return None
    return 1.0 if not np.isfinite(pred) else float(abs(pred - meas) / meas)


async def _drive(fleet: LocalFleet, tenant: str, model: str, rate: float, seconds: float, seed: int,
                 skip_s: float) -> list[tuple[float, float]]:
    from edgefleet.sdk import AsyncInferenceClient, InferenceError
    from edgefleet.zoo import sample_inputs

    feeds = dict(sample_inputs(model))
    device_ms: list[tuple[float, float]] = []  # (queue, service) ms of each measured answer
    rng = random.Random(seed)
    async with AsyncInferenceClient(fleet.settings, prefix=fleet.prefix) as client:

        async def one(measured: bool) -> None:
            try:
                r = await client.infer_with_meta(tenant, feeds, timeout_s=5.0)
            except InferenceError:
                return
            if measured:
                device_ms.append((float(r.meta.get("queue_ms", 0.0)), float(r.meta.get("service_ms", 0.0))))

        tasks = []
        start = time.monotonic()
        at = start
        while at < start + seconds:
            at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(one(at - start >= skip_s)))
        await asyncio.gather(*tasks)
    return device_ms


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    seconds = 9.0 if quick else 30.0
    book = deployed_book()
    learner = Learner(book)
    runs: list[dict[str, Any]] = []
    with LocalFleet(agents=[AgentPlan("pm-a", budget_mb=256)], prefix=f"pm{time.monotonic_ns() % 10**8}") as fleet:
        windows = Windows(fleet, "pm-a")
        try:
            for mix in MIXES:
                for load in LOADS:
                    rates = rates_for(book, mix, load)
                    names = {m: f"t{i}-{m}" for i, m in enumerate(mix)}
                    fleet.wait_online(["pm-a"], 60)
                    for m in mix:
                        fleet.deploy(TenantSpec(name=names[m], model=m, slo_ms=10_000.0, max_batch=1))
                    windows.take()  # windows of earlier runs are learnt already

                    async def all_tenants(mix: tuple[str, ...] = mix, rates: dict[str, float] = rates,
                                          names: dict[str, str] = names) -> list[list[tuple[float, float]]]:
                        return await asyncio.gather(*(_drive(fleet, names[m], m, rates[m], seconds, i,
                                                             seconds * WARMUP) for i, m in enumerate(mix)))

                    box: dict[str, Any] = {}
                    driver = threading.Thread(target=lambda box=box, go=all_tenants: box.update(r=asyncio.run(go())))
                    driver.start()
                    time.sleep(seconds * WARMUP)
                    warm = windows.take()
                    for t in warm:  # learn the warm-up, then predict what comes after it
                        learner = learner.observe(KIND, t)
                    bursts = _bursts(warm)
                    predicted = _predict(learner.book, mix, rates, bursts)
                    driver.join()
                    measured: list[list[tuple[float, float]]] = box["r"]
                    book_only = _predict(book, mix, rates)
                    for m, samples in zip(mix, measured, strict=True):
                        qs = np.asarray(samples, dtype=float).reshape(-1, 2)
                        meas = float(np.percentile(qs.sum(axis=1), 95)) if len(qs) else float("nan")
                        (pred, in_service), (plain, _) = predicted[names[m]], book_only[names[m]]
                        runs.append({"mix": "+".join(mix), "load": load, "tenant": names[m], "model": m,
                                     "rate_rps": rates[m], "requests": len(qs), "measured_p95_ms": meas,
                                     "predicted_p95_ms": pred, "ape": _ape(pred, meas),
                                     "predicted_p95_ms_book_only": plain, "ape_book_only": _ape(plain, meas),
                                     # where the time went: measured queue (receipt to start) and service,
                                     # against the model's mean time in service
                                     **_parts(qs), "predicted_service_mean_ms": in_service,
                                     "arrival_scv": bursts.get(names[m], 1.0)})
                    for m in mix:
                        fleet.undeploy(names[m])
                    for t in windows.take():
                        learner = learner.observe(KIND, t)
        finally:
            windows.close()
    apes = [r["ape"] for r in runs if r["ape"] is not None]
    raw = [r["ape_book_only"] for r in runs if r["ape_book_only"] is not None]
    proc = book.kinds[KIND].processors["cpu"]
    data: dict[str, Any] = {
        "benchmark": "perfmodel",
        "quick": quick,
        "seconds_per_run": seconds,
        "warmup_share": WARMUP,
        "kind": KIND,
        "mape": float(np.mean(apes)) if apes else None,
        "median_ape": float(np.median(apes)) if apes else None,
        "mape_book_only": float(np.mean(raw)) if raw else None,
        "mape_by_load": {str(ld): float(np.mean([r["ape"] for r in runs if r["load"] == ld and r["ape"] is not None]))
                         for ld in LOADS},
        # the measurement's own noise: mean over runs of |p95(first half) - p95(second half)| / p95
        "split_half_ape": float(np.nanmean([r.get("split_half_ape", np.nan) for r in runs])) if runs else None,
        "unstable_predictions": sum(1 for r in runs if not np.isfinite(r["predicted_p95_ms"])),
        "optimistic_share": (sum(1 for r in runs if r["ape"] is not None and r["predicted_p95_ms"]
                                 < r["measured_p95_ms"]) / len(runs)) if runs else None,
        "processor_as_deployed": dataclasses.asdict(proc),
        "learnt_windows": {"/".join(k): e.windows for k, e in learner.estimators.items()},
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

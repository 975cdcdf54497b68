"""``edgefleet bench gpu-sharing``: the GPU sharing model's shared latencies against a real NVIDIA GPU.

Where CUDA and PyTorch are present (the GPU machines at hand have PyTorch but no onnxruntime-gpu, so
the networks run in PyTorch, not through an agent): three image networks of different sizes from
torchvision, random weights (timing only), each in its own process as tenants of a device are:

1. **Solo**: each network alone, back to back (the next batch when the last one is done). Its mean
   time and spread are the model's only inputs.
2. **Shared, closed**: the three at once, back to back, in three processes. Predicted by the sharing
   model of a GPU (``edgefleet.coordinator.perf``: processor sharing among at most w requests in service, w = 3
   here, one per process) through mean value analysis: solo latencies in, shared latencies out.
3. **Shared, open**: the three at once, each with Poisson arrivals served in order by its process,
   at several utilisations (the sum of λ·s over the three, from the solo times). Predicted by the open
   GPU model with the same inputs.

Metrics, defined before the run: ``mape_shared_closed_latency`` = mean over the three networks of
|predicted − measured| / measured of the shared back-to-back mean latency (goal <= 0.05; Ibis reports
about 2 % on a Jetson Nano); ``mape_open_mean`` and ``mape_open_p95`` the same over networks and
utilisations of the open runs' mean and p95 latency. Where there is no CUDA the benchmark says so
and writes nothing. The whole run is sized to finish within about 8 minutes.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.harness import finish, machine, pyplot

NETWORKS = ("mobilenet_v3_large", "resnet50", "vit_b_16")  # small, medium, large
BATCH = 8  # images per request: large enough that the GPU, not the launch overhead, is the bottleneck
UTILISATIONS = (0.3, 0.5, 0.7)
SLOTS = len(NETWORKS)  # requests in service at once: one per process


def cuda_missing() -> str:
    """Why the benchmark cannot run here ('' when it can)."""
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        return f"PyTorch with torchvision is not installed ({exc.name})"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return ""


def _worker(net: str, mode: str, rate_rps: float, start_at: float, seconds: float, seed: int, out: Any) -> None:
    """One tenant process: ``mode`` 'closed' runs back to back, 'open' serves Poisson arrivals at
    ``rate_rps`` in order; sends back the latencies (ms) of the requests of the measured part."""
    import torch
    import torchvision

    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, net)(weights=None).eval().cuda()
    x = torch.randn(BATCH, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        for _ in range(15):  # warm-up: kernels chosen, memory allocated
            model(x)
        torch.cuda.synchronize()
        lat: list[float] = []
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        end = t0 + seconds
        if mode == "closed":
            while time.perf_counter() < end:
                a = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
                lat.append((time.perf_counter() - a) * 1e3)
        else:
            rng = random.Random(seed)
            arrival = t0
            while True:
                arrival += rng.expovariate(rate_rps)
                if arrival >= end:
                    break
                now = time.perf_counter()
                if arrival > now:
                    time.sleep(arrival - now)
                model(x)
                torch.cuda.synchronize()
                lat.append((time.perf_counter() - arrival) * 1e3)
    out.send(lat)
    out.close()


def _together(jobs: list[tuple[str, str, float]], seconds: float) -> list[list[float]]:
    """Run ``jobs`` (network, mode, rate) at once, one process each; their latencies (ms)."""
    ctx = mp.get_context("spawn")
    start_at = time.time() + 25.0  # torch imports, model builds and warm-ups first
    procs = []
    for i, (net, mode, rate) in enumerate(jobs):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(net, mode, rate, start_at, seconds, i, there), daemon=True)
        p.start()
        procs.append((p, here))
    out = []
    for p, here in procs:
        out.append(here.recv() if here.poll(seconds + 120.0) else [])
        p.join(10.0)
    return out


def _stats(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat[1:] if len(lat) > 1 else lat, dtype=float)  # the first may carry a late start
    if not len(a):
        return {"mean_ms": float("nan"), "p95_ms": float("nan"), "scv": 0.0, "requests": 0}
    return {"mean_ms": float(a.mean()), "p95_ms": float(np.percentile(a, 95)),
            "scv": float(a.var() / a.mean() ** 2), "requests": len(a)}


def _ape(pred: float, meas: float) -> float | None:
    if not (meas > 0 and np.isfinite(meas)):
        return None
    return 1.0 if not np.isfinite(pred) else float(abs(pred - meas) / meas)


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    why = cuda_missing()
    if why:
        return {"benchmark": "gpu-sharing", "skipped": f"gpu-sharing needs CUDA and PyTorch: {why}; nothing run"}
    from edgefleet.coordinator.perf.sharing import Load, Processor, predict

    solo_s, shared_s, open_s = (8.0, 10.0, 10.0) if quick else (15.0, 30.0, 25.0)
    solo = {net: _stats(_together([(net, "closed", 0.0)], solo_s)[0]) for net in NETWORKS}
    gpu = Processor("gpu", SLOTS)

    def load(net: str, **kw: Any) -> Load:
        return Load(net, kw.pop("rate_rps", 1.0), solo[net]["mean_ms"], scv=solo[net]["scv"], **kw)

    measured_closed = [_stats(lat) for lat in _together([(n, "closed", 0.0) for n in NETWORKS], shared_s)]
    pred_closed = predict(gpu, [load(n, in_flight=1) for n in NETWORKS])
    closed: list[dict[str, Any]] = [{"network": n, "solo_mean_ms": solo[n]["mean_ms"], "measured_mean_ms": m["mean_ms"],
               "measured_p95_ms": m["p95_ms"], "measured_rps": 1e3 / m["mean_ms"] if m["mean_ms"] else 0.0,
               "predicted_mean_ms": pred_closed.mean_ms[i], "predicted_p95_ms": pred_closed.p95_ms[i],
               "predicted_rps": pred_closed.throughput_rps[i],
               "ape_mean": _ape(pred_closed.mean_ms[i], m["mean_ms"])}
              for i, (n, m) in enumerate(zip(NETWORKS, measured_closed, strict=True))]
    opened: list[dict[str, Any]] = []
    for u in UTILISATIONS[:2] if quick else UTILISATIONS:
        rates = {n: u / len(NETWORKS) / (solo[n]["mean_ms"] / 1e3) for n in NETWORKS}
        meas = [_stats(lat) for lat in _together([(n, "open", rates[n]) for n in NETWORKS], open_s)]
        pred = predict(gpu, [load(n, rate_rps=rates[n]) for n in NETWORKS])
        for i, (n, m) in enumerate(zip(NETWORKS, meas, strict=True)):
            opened.append({"utilisation": u, "network": n, "rate_rps": rates[n], "measured_mean_ms": m["mean_ms"],
                           "measured_p95_ms": m["p95_ms"], "predicted_mean_ms": pred.mean_ms[i],
                           "predicted_p95_ms": pred.p95_ms[i], "ape_mean": _ape(pred.mean_ms[i], m["mean_ms"]),
                           "ape_p95": _ape(pred.p95_ms[i], m["p95_ms"])})

    def mean(xs: list[float | None]) -> float | None:
        got = [x for x in xs if x is not None]
        return float(np.mean(got)) if got else None

    import torch

    data: dict[str, Any] = {
        "benchmark": "gpu-sharing",
        "quick": quick,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "networks": list(NETWORKS),
        "batch": BATCH,
        "slots": SLOTS,
        "mape_shared_closed_latency": mean([c["ape_mean"] for c in closed]),
        "mape_open_mean": mean([o["ape_mean"] for o in opened]),
        "mape_open_p95": mean([o["ape_p95"] for o in opened]),
        "goal": {"mape_shared_closed_latency": 0.05},
        "solo": solo,
        "closed": closed,
        "runs": opened,
        "machine": machine(),
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    for c in data["closed"]:
        ax.scatter(c["measured_mean_ms"], c["predicted_mean_ms"], color="C0")
        ax.annotate(f"{c['network']} shared", (c["measured_mean_ms"], c["predicted_mean_ms"]), fontsize=6)
    for o in data["runs"]:
        ax.scatter(o["measured_mean_ms"], o["predicted_mean_ms"], color="C1", marker="x")
    vals = [v for r in [*data["closed"], *data["runs"]] for v in (r["measured_mean_ms"], r["predicted_mean_ms"])
            if np.isfinite(v)]
    top = max([*vals, 1.0]) * 1.1
    ax.plot([0, top], [0, top], "--", color="grey")
    ax.set_xlabel("measured mean latency (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.set_title(f"gpu-sharing on {data['device']}: back-to-back MAPE {data['mape_shared_closed_latency']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

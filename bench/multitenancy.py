"""``edgefleet bench multitenancy``: tenants served concurrently on one device vs one after another.

Two and four tenants with real zoo models share one agent serving core (bench.inproc: real host,
scheduler, runtimes; 2 workers, 1 intra-op thread per session). Each tenant is offered more than it
can take (open loop, long deadlines), first alone ("solo", one after another), then all at once.
``normalized_throughput_gain`` = sum over tenants of concurrent rate / solo rate, for two tenants
(1.0 = co-location only splits the device; 2.0 = each runs as fast as alone). The raw runtime reaches
1.69 on this class of machine with two threads.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bench.harness import finish, machine, pyplot
from bench.inproc import Sample, build_core, poisson_load
from edgefleet.wire import TenantSpec

MIXES = {
    "2": ["pose-landmark", "hand-landmark"],
    "4": ["pose-landmark", "hand-landmark", "ocr-rec", "selfie-seg"],
}
OFFERED_RPS = {"pose-landmark": 150.0, "hand-landmark": 250.0, "ocr-rec": 100.0, "selfie-seg": 500.0}


def _rate(samples: list[Sample]) -> float:
    done = [s.done for s in samples if s.ok]
    if len(done) < 2:
        return 0.0
    return len(done) / (max(done) - min(s.sent for s in samples))


def _serve(models: list[str], duration_s: float) -> dict[str, float]:
    from edgefleet.zoo import sample_inputs

    specs = [TenantSpec(name=f"t{i}-{m}", model=m, slo_ms=60_000, max_batch=1) for i, m in enumerate(models)]
    core = build_core(specs, policy="adaptive", workers=2, threads=1)
    results: dict[str, list[Sample]] = {}
    try:

        def drive(spec: TenantSpec, seed: int) -> None:
            results[spec.name] = poisson_load(
                core,
                spec.name,
                dict(sample_inputs(spec.model)),
                rate_rps=OFFERED_RPS[spec.model],
                duration_s=duration_s,
                timeout_ms=60_000,
                seed=seed,
            )

        threads = [threading.Thread(target=drive, args=(s, i)) for i, s in enumerate(specs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        core.stop()
    return {s.model: _rate(results[s.name]) for s in specs}


def raw_gain(models: list[str], duration_s: float) -> float:
    """The same measure for the runtime alone: each model's session looping in its own thread, solo
    and together (no serving core, no request handling) — the ceiling the agent is held against."""
    import time

    from edgefleet.runtime import SessionOptions, get_runtime
    from edgefleet.zoo import load_catalog, model_path, sample_inputs

    cat = load_catalog()
    sessions = {
        m: get_runtime(cat.get(m).runtime).open(model_path(m), SessionOptions(threads=1)) for m in models
    }
    feeds = {m: dict(sample_inputs(m)) for m in models}

    def loop(m: str, out: dict[str, float]) -> None:
        n, end = 0, time.perf_counter() + duration_s
        while time.perf_counter() < end:
            sessions[m].run(feeds[m])
            n += 1
        out[m] = n / duration_s

    solo: dict[str, float] = {}
    for m in models:
        loop(m, solo)
    together: dict[str, float] = {}
    ts = [threading.Thread(target=loop, args=(m, together)) for m in models]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for sess in sessions.values():
        sess.close()
    return sum(together[m] / solo[m] for m in models)


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    duration = 3.0 if quick else 8.0
    solo = {m: _serve([m], duration)[m] for m in sorted({m for mix in MIXES.values() for m in mix})}
    mixes: dict[str, Any] = {}
    for key, models in MIXES.items():
        conc = _serve(models, duration)
        mixes[key] = {
            "models": models,
            "solo_rps": {m: solo[m] for m in models},
            "concurrent_rps": conc,
            "serial_rps_total": len(models) / sum(1.0 / solo[m] for m in models),
            "concurrent_rps_total": sum(conc.values()),
            "normalized_throughput_gain": sum(conc[m] / solo[m] for m in models if solo[m]),
            "raw_runtime_gain": raw_gain(models, duration / 2),
        }
    data = {
        "benchmark": "multitenancy",
        "quick": quick,
        "machine": machine(),
        "workers": 2,
        "duration_s": duration,
        "mixes": mixes,
        "normalized_throughput_gain": mixes["2"]["normalized_throughput_gain"],
        "normalized_throughput_gain_4": mixes["4"]["normalized_throughput_gain"],
        "goal": {"normalized_throughput_gain": 1.6, "raw_runtime_reference": 1.69},
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], png: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(data["mixes"]), figsize=(11, 4))
    for ax, (key, mix) in zip(axes, data["mixes"].items(), strict=True):
        models = mix["models"]
        ratios = [mix["concurrent_rps"][m] / mix["solo_rps"][m] for m in models]
        ax.bar(models, ratios)
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_title(f"{key} tenants: gain {mix['normalized_throughput_gain']:.2f}")
        ax.set_ylabel("concurrent rate / solo rate")
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

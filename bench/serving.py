"""``edgefleet bench serving``: the agent over MQTT vs calling the runtime directly.

For the benchmark MLP (784-512-512-10, built here) and one zoo model, at concurrency 1 and 32:
``direct_rps`` / ``direct_p50_ms`` — threads calling the ONNX Runtime session in-process, batch 1;
``agent_rps`` / ``agent_p50_ms`` / ``agent_p99_ms`` — an app (the asyncio SDK client, closed loop) calling
the tenant through a private Mosquitto and an agent process; ``batch_mean`` — the mean batch the agent
formed; ``efficiency`` = agent_rps / direct_rps, measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import (
    CommandClient,
    CpuMeter,
    PrivateBroker,
    closed_loop,
    finish,
    machine,
    percentiles,
    pyplot,
    spawn_agent,
    temp_workdir,
)
from bench.mlp import build_mlp
from edgefleet.mqtt import MqttSettings
from edgefleet.runtime import SessionOptions, get_runtime
from edgefleet.wire import TenantSpec, Topics

CONCURRENCY = (1, 32)


def direct(
    path: Path, feeds: dict[str, np.ndarray], *, concurrency: int, duration_s: float, threads: int
) -> dict[str, float]:
    session = get_runtime("onnxruntime").open(path, SessionOptions(threads=threads))
    for _ in range(20):
        session.run(feeds)
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    stop = time.perf_counter() + duration_s

    def loop(i: int) -> None:
        out = lat[i]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            session.run(feeds)
            out.append(time.perf_counter() - t0)

    start = time.perf_counter()
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - start
    all_lat = [x for xs in lat for x in xs]
    session.close()
    return {"direct_rps": len(all_lat) / elapsed, "direct_p50_ms": percentiles(all_lat)["p50_ms"]}


def run(
    json_path: Path, *, quick: bool = False, zoo_model: str = "ocr-cls", plot: bool = True
) -> dict[str, Any]:
    from edgefleet.sdk import AsyncInferenceClient
    from edgefleet.zoo import model_path, sample_inputs

    duration = 3.0 if quick else 10.0
    work = temp_workdir("edgefleet-bench-serving-")
    mlp_path = build_mlp(work / "mlp.onnx")
    rng = np.random.default_rng(0)
    models: dict[str, tuple[Path, dict[str, np.ndarray], float]] = {
        "mlp": (mlp_path, {"x": rng.random((1, 784), dtype=np.float32)}, 50.0),
        zoo_model: (model_path(zoo_model), dict(sample_inputs(zoo_model)), 100.0),
    }
    results: dict[str, Any] = {}
    prefix = f"bench{int(time.time())}"
    topics = Topics(prefix)
    with PrivateBroker() as broker:
        settings = MqttSettings(port=broker.port, keepalive_s=10)
        agent = spawn_agent(
            "bench-agent", broker.port, work, prefix=prefix, models={"mlp": mlp_path}, period_s=1.0
        )
        ctl = CommandClient(settings, topics)
        try:
            ctl.wait_online("bench-agent")
            for name, (path, feeds, slo_ms) in models.items():
                tenant = f"bench-{name}"
                ctl.deploy("bench-agent", TenantSpec(name=tenant, model=name, slo_ms=slo_ms, max_batch=32))
                per_c: dict[str, Any] = {}
                for c in CONCURRENCY:
                    d = direct(path, feeds, concurrency=c, duration_s=duration / 2, threads=1)

                    async def drive(
                        c: int = c, feeds: dict[str, np.ndarray] = feeds, tenant: str = tenant
                    ) -> Any:
                        async with AsyncInferenceClient(settings, prefix=prefix) as client:

                            async def one() -> Any:
                                res = await client.infer_with_meta(tenant, feeds, timeout_s=5.0)
                                return res.meta

                            return await closed_loop(one, concurrency=c, duration_s=duration)

                    cpu = CpuMeter({"agent": agent.proc.pid if agent.proc else None, "client": os.getpid(), "broker": broker.pid})
                    load = asyncio.run(drive())
                    cpu_percent = cpu.percent()
                    p = percentiles(load.latencies_s)
                    per_c[str(c)] = {
                        **d,
                        "agent_rps": load.rps,
                        "agent_p50_ms": p["p50_ms"],
                        "agent_p99_ms": p["p99_ms"],
                        "batch_mean": float(np.mean(load.batch_sizes)) if load.batch_sizes else 0.0,
                        "errors": load.errors,
                        "efficiency": load.rps / d["direct_rps"] if d["direct_rps"] else 0.0,
                        # CPU of each process over the agent run (100 = one core): where the time goes
                        "cpu_percent": cpu_percent,
                        "cpu_ms_per_request": {k: v * 10 / load.rps if load.rps else 0.0
                                               for k, v in cpu_percent.items()},
                    }
                results[name] = per_c
        finally:
            ctl.close()
            agent.stop()
    data = {
        "benchmark": "serving",
        "quick": quick,
        "duration_s": duration,
        "machine": machine(),
        "reference": {
            "triton_2_51_rps_c1": 799,
            "triton_2_51_p50_ms_c1": 1.10,
            "triton_2_51_rps_c32": 2058,
            "note": "Triton figures from the design brief, measured on the same class of machine",
        },
        "models": results,
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], png: Path) -> None:
    plt = pyplot()

    models = list(data["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, c in zip(axes, CONCURRENCY, strict=True):
        x = np.arange(len(models))
        direct_v = [data["models"][m][str(c)]["direct_rps"] for m in models]
        agent_v = [data["models"][m][str(c)]["agent_rps"] for m in models]
        ax.bar(x - 0.2, direct_v, 0.4, label="runtime called directly")
        ax.bar(x + 0.2, agent_v, 0.4, label="edgefleet agent over MQTT")
        ax.set_xticks(x, models)
        ax.set_title(f"concurrency {c}")
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=8)
    fig.suptitle("edgefleet bench serving")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

"""``edgefleet bench serving``: the agent over MQTT against its peers, all measured in the same run.

Peers, on the same box and broker, at concurrency 1 and 32 (closed loops, batch-1 requests):

- ``direct``: threads calling the ONNX Runtime session in-process (the runtime's own ceiling);
- ``floor``: the transport floor, a minimal echo responder (``edgefleet.bench.echo``) on the same broker with the
  same client library as the agent's data path (``lean``: the mqtt5 codec), called by the same SDK
  client; ``floor_paho`` is the same responder on paho-mqtt, for the choice of the data path's client;
- ``agent``: an agent process (its data link as configured by default) called through the asyncio SDK
  client, for the benchmark MLP (784-512-512-10) and one zoo model; ``agent_paho``: the same agent on a
  paho data link, MLP only;
- ``triton`` (``--peer triton``): NVIDIA Triton 2.51 (pytriton 0.7.0's tritonserver, Python backend
  running the same ONNX file with ONNX Runtime on one intra-op thread, one instance per core, dynamic
  batching with no queue delay) driven by tritonclient's asyncio HTTP client (``edgefleet.bench.triton_peer``).

Every process's CPU time is read around each run: ``cpu_ms_per_request`` per process.

Large payloads: a real 640x480 RGB frame (the face photograph letterboxed into a camera-sized frame),
preprocessed by the app as selfie segmentation's pipeline does (256x256x3 float32, 786 KB), sent to a
selfie-seg tenant at concurrency 1 (``large_payload``); and the same frame as a JPEG (quality 90) that
the device decodes, letterboxes and scales as the catalog declares (``large_payload_jpeg``): bytes on
the wire and end-to-end latency of both forms.

Metrics (defined before the run; never redefined after it):

- ``vs_triton_c32`` = agent req/s / Triton req/s, MLP, concurrency 32 (null without the peer);
- ``p50_vs_triton_c1`` = agent p50 / Triton p50, MLP, concurrency 1 (null without the peer);
- ``agent_cpu_vs_floor_c32`` = the agent's CPU ms per request / the floor responder's, MLP, c=32;
- ``path_ms_per_mb``: the agent's CPU per request beyond the model's own service time ("path ms") grows
  with the bytes a request and its reply carry; ``path_ms_per_mb`` = (path ms of the selfie-seg frame -
  path ms of the MLP request, both at c=1) / (their difference in request + reply megabytes, 10^6
  bytes). The model's service time per request is the agent's own ``service_ms / batch`` from the
  replies' meta.
- ``floor_path_ms_per_mb``: the same per-MB difference for the echo responder (its CPU per request answering
  the camera frame with a mask of selfie-seg's size, less answering the MLP request, at c=1; ``floor_large``):
  what the transport itself costs per MB on this box; ``path_ms_per_mb_beyond_floor`` = ``path_ms_per_mb`` -
  ``floor_path_ms_per_mb``, the agent's own cost per MB. (Both added after the run of 2026-12-04 22:27 UTC,
  before any run that reports them.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.harness import (
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
from edgefleet.bench.mlp import build_mlp
from edgefleet.mqtt import MqttSettings, lean_available
from edgefleet.runtime import SessionOptions, get_runtime
from edgefleet.wire import TenantSpec, Topics, encode_request

CONCURRENCY = (1, 32)
LARGE_MODEL = "selfie-seg"
LARGE_REPLY_SHAPE = (1, 256, 256, 1)  # selfie-seg's mask (float32): the large floor's reply
GOALS = {"vs_triton_c32": {"at_least": 1.5}, "p50_vs_triton_c1": {"at_most": 1.0},
         "agent_cpu_vs_floor_c32": {"at_most": 2.0}, "path_ms_per_mb": {"at_most": 0.3}}


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


def _drive(settings: MqttSettings, prefix: str, tenant: str, feeds: dict[str, np.ndarray] | bytes, c: int,
           duration: float, pids: dict[str, int | None]) -> dict[str, Any]:
    """A closed loop of ``c`` SDK callers on ``tenant``; latency, batch, service and CPU per process."""
    from edgefleet.sdk import AsyncInferenceClient
    from edgefleet.wire.tensors import encode_result

    services: list[float] = []
    queued: list[float] = []
    reply_bytes: list[int] = []

    async def drive() -> Any:
        async with AsyncInferenceClient(settings, prefix=prefix) as client:

            async def one() -> Any:
                res = await client.infer_with_meta(tenant, feeds, timeout_s=5.0)
                service, batch = res.meta.get("service_ms"), res.meta.get("batch") or 1
                if isinstance(service, (int, float)):
                    services.append(float(service) / batch)
                if isinstance(res.meta.get("queue_ms"), (int, float)):
                    queued.append(float(res.meta["queue_ms"]))
                if not reply_bytes:  # what the reply carried: its outputs and the device's meta
                    reply_bytes.append(len(encode_result(res.outputs, {k: v for k, v in res.meta.items()
                                                                      if k != "latency_ms"})))
                return res.meta

            return await closed_loop(one, concurrency=c, duration_s=duration)

    cpu = CpuMeter({**pids, "client": os.getpid()})
    load = asyncio.run(drive())
    cpu_percent = cpu.percent()
    p = percentiles(load.latencies_s)
    return {
        "rps": load.rps,
        "p50_ms": p["p50_ms"],
        "p99_ms": p["p99_ms"],
        "batch_mean": float(np.mean(load.batch_sizes)) if load.batch_sizes else 0.0,
        "service_ms_per_request": float(np.mean(services)) if services else None,
        "reply_bytes": reply_bytes[0] if reply_bytes else None,
        "queue_ms_p50": float(np.median(queued)) if queued else None,  # receipt to start of service
        "errors": load.errors,
        "cpu_percent": cpu_percent,  # 100 = one core, over the run
        "cpu_ms_per_request": {k: v * 10 / load.rps if load.rps else None for k, v in cpu_percent.items()},
    }


def _echo(port: int, prefix: str, tenant: str, link: str, reply_shape: tuple[int, ...] = (1, 10)) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.bench.echo", "--port", str(port), "--prefix", prefix,
                             "--tenant", tenant, "--link", link, "--reply-shape", ",".join(map(str, reply_shape))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the {link} echo responder did not start")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _jpeg(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _frame_bytes(feeds: dict[str, np.ndarray]) -> int:
    return len(encode_request(feeds, timeout_ms=5000.0))


def run(
    json_path: Path, *, quick: bool = False, zoo_model: str = "ocr-cls", plot: bool = True,
    peer: str | None = None,
) -> dict[str, Any]:
    from edgefleet.zoo import model_path, sample_inputs
    from edgefleet.zoo.inputs import camera_frame, image_feeds

    duration = 3.0 if quick else 10.0
    work = temp_workdir("edgefleet-bench-serving-")
    mlp_path = build_mlp(work / "mlp.onnx")
    rng = np.random.default_rng(0)
    mlp_feeds = {"x": rng.random((1, 784), dtype=np.float32)}
    models: dict[str, tuple[Path, dict[str, np.ndarray], float]] = {
        "mlp": (mlp_path, mlp_feeds, 50.0),
        zoo_model: (model_path(zoo_model), dict(sample_inputs(zoo_model)), 100.0),
    }
    frame = camera_frame(640, 480)
    large_feeds = image_feeds(LARGE_MODEL, frame)
    link = "lean" if lean_available() else "paho"
    results: dict[str, Any] = {}
    floors: dict[str, Any] = {}
    agent_paho: dict[str, Any] = {}
    large: dict[str, Any] = {}
    large_jpeg: dict[str, Any] = {}
    prefix = f"bench{int(time.time())}"
    topics = Topics(prefix)
    with PrivateBroker() as broker:
        settings = MqttSettings(port=broker.port, keepalive_s=10)
        # the transport floor first, with the agent not yet started
        for echo_link in ("lean", "paho") if lean_available() else ("paho",):
            proc = _echo(broker.port, prefix, f"echo-{echo_link}", echo_link)
            try:
                floors[echo_link] = {
                    str(c): _drive(settings, prefix, f"echo-{echo_link}", mlp_feeds, c, duration,
                                   {"responder": proc.pid, "broker": broker.pid})
                    for c in CONCURRENCY
                }
            finally:
                _stop(proc)
        # the floor of a camera frame: the same echo answering the frame with a mask the size of the agent's
        proc = _echo(broker.port, prefix, f"echo-{link}-large", link, LARGE_REPLY_SHAPE)
        try:
            floor_large = {"model": LARGE_MODEL, "request_bytes": _frame_bytes(large_feeds),
                           **_drive(settings, prefix, f"echo-{link}-large", large_feeds, 1, duration,
                                    {"responder": proc.pid, "broker": broker.pid})}
        finally:
            _stop(proc)
        for data_link in (link, "paho") if link != "paho" else ("paho",):
            agent = spawn_agent(f"bench-agent-{data_link}", broker.port, work, prefix=prefix,
                                models={"mlp": mlp_path}, period_s=1.0,
                                extra_config={"agent": {"data_link": data_link}})
            ctl = CommandClient(settings, topics)
            pids = {"agent": agent.proc.pid if agent.proc else None, "broker": broker.pid}
            try:
                ctl.wait_online(f"bench-agent-{data_link}")
                for name, (path, feeds, slo_ms) in models.items():
                    if data_link != link and name != "mlp":
                        continue
                    tenant = f"bench-{data_link}-{name}"
                    ctl.deploy(f"bench-agent-{data_link}",
                               TenantSpec(name=tenant, model=name, slo_ms=slo_ms, max_batch=32))
                    per_c: dict[str, Any] = {}
                    for c in CONCURRENCY:
                        d = direct(path, feeds, concurrency=c, duration_s=duration / 2, threads=1) \
                            if data_link == link else {}
                        got = _drive(settings, prefix, tenant, feeds, c, duration, pids)
                        per_c[str(c)] = {
                            **d,
                            "agent_rps": got["rps"],
                            "agent_p50_ms": got["p50_ms"],
                            "agent_p99_ms": got["p99_ms"],
                            **{k: got[k] for k in ("batch_mean", "service_ms_per_request", "errors",
                                                   "cpu_percent", "cpu_ms_per_request", "reply_bytes",
                                                   "queue_ms_p50")},
                            "efficiency": got["rps"] / d["direct_rps"] if d.get("direct_rps") else None,
                            "request_bytes": _frame_bytes(feeds),
                        }
                    (results if data_link == link else agent_paho)[name] = per_c
                if data_link == link:
                    tenant = f"bench-{LARGE_MODEL}"
                    ctl.deploy(f"bench-agent-{data_link}",
                               TenantSpec(name=tenant, model=LARGE_MODEL, slo_ms=200.0, max_batch=1))
                    got = _drive(settings, prefix, tenant, large_feeds, 1, duration, pids)
                    large = {"model": LARGE_MODEL, "frame": [480, 640, 3],
                             "request_bytes": _frame_bytes(large_feeds), **got}
                    # the same frame as a JPEG the device decodes (the app sends bytes, not tensors)
                    jpeg = _jpeg(frame)
                    got = _drive(settings, prefix, tenant, jpeg, 1, duration, pids)
                    large_jpeg = {"model": LARGE_MODEL, "frame": [480, 640, 3], "format": "JPEG quality 90",
                                  "request_bytes": len(jpeg), **got}
            finally:
                ctl.close()
                agent.stop()
        hold = _hold_ms(settings, prefix)
    triton: dict[str, Any] | None = None
    triton_error = None
    if peer == "triton":
        from edgefleet.bench.triton_peer import Triton, TritonUnavailable

        try:
            with Triton(mlp_path, work / "triton") as server:
                triton = {str(c): server.drive(c, duration) for c in CONCURRENCY}
        except TritonUnavailable as exc:
            triton_error = str(exc)
    data: dict[str, Any] = {
        "benchmark": "serving",
        "quick": quick,
        "duration_s": duration,
        "machine": machine(),
        "data_link": link,
        **_headlines(results, floors.get(link, {}), triton, large, floor_large),
        "goal": GOALS,
        "models": results,
        "floor": floors,
        "floor_large": floor_large,
        "agent_paho": agent_paho,
        "triton": triton,
        "triton_error": triton_error,
        "large_payload": large,
        "large_payload_jpeg": large_jpeg,
        # the performance model's request-path parameters, as measured in this run (see _calibration)
        "request_path": _calibration(results, large, hold),
    }
    return finish(json_path, data, _plot if plot else None)


def _hold_ms(settings: MqttSettings, prefix: str, n: int = 2000) -> dict[str, float]:
    """Worker time after the runtime returns, per request, measured on the agent's own code: encode the
    reply of a batch of one (MLP output, the agent's meta) and publish it on a data link of the kind
    the agent uses, to this broker; the median over ``n`` (MLP) and over ``n / 20`` selfie-seg masks."""
    from edgefleet.mqtt import Outgoing, data_link, publish_many
    from edgefleet.wire.tensors import CONTENT_TYPE, encode_result

    link = data_link(settings, f"bench-hold-{os.getpid()}")
    link.start()
    out: dict[str, float] = {}
    try:
        if not link.wait_connected(10):
            return out
        meta = {"device": "bench-agent", "tenant": "t", "variant": "fp32", "queue_ms": 0.1, "service_ms": 0.1,
                "batch": 1}
        for name, outputs, count in (("mlp", {"y": np.zeros((1, 10), np.float32)}, n),
                                     (LARGE_MODEL, {"output": np.zeros((1, 256, 256, 1), np.float32)}, n // 20)):
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                reply = Outgoing(f"{prefix}/clients/hold/replies", encode_result(outputs, meta), 1,
                                 i.to_bytes(16, "little"), CONTENT_TYPE, [("ef-status", "ok")])
                publish_many(link, [reply])
                times.append(time.perf_counter() - t0)
            out[name] = 1e3 * float(np.median(times))
    finally:
        link.stop()
    return out


def _calibration(results: dict[str, Any], large: dict[str, Any], hold: dict[str, float]) -> dict[str, Any]:
    """``coordinator/perf/calibration.json``'s ``cpu_request_path`` from this run: ``ms`` the MLP's path
    ms at c=1 (agent CPU per request less the model's service), ``ms_per_mb`` the large frame's extra
    path per MB, ``dispatch_ms`` the median receipt-to-service at c=1 (MLP), ``hold_ms`` the reply's
    worker time (MLP) from ``_hold_ms``."""
    heads = _headlines(results, {}, None, large)
    mlp = results.get("mlp", {}).get("1", {})
    return {"ms": heads["path_ms_small"], "ms_per_mb": heads["path_ms_per_mb"],
            "dispatch_ms": mlp.get("queue_ms_p50"), "hold_ms": hold.get("mlp"), "hold_ms_by_model": hold}


def _headlines(results: dict[str, Any], floor: dict[str, Any], triton: dict[str, Any] | None,
               large: dict[str, Any], floor_large: dict[str, Any] | None = None) -> dict[str, Any]:
    mlp = results.get("mlp", {})
    out: dict[str, Any] = {"vs_triton_c32": None, "p50_vs_triton_c1": None}
    if triton and mlp:
        out["vs_triton_c32"] = mlp["32"]["agent_rps"] / triton["32"]["rps"] if triton["32"]["rps"] else None
        out["p50_vs_triton_c1"] = mlp["1"]["agent_p50_ms"] / triton["1"]["p50_ms"] if triton["1"]["p50_ms"] else None
    agent_cpu = mlp.get("32", {}).get("cpu_ms_per_request", {}).get("agent")
    floor_cpu = floor.get("32", {}).get("cpu_ms_per_request", {}).get("responder")
    out["agent_cpu_vs_floor_c32"] = agent_cpu / floor_cpu if agent_cpu and floor_cpu else None

    def path_ms(run: dict[str, Any]) -> float | None:
        cpu_ms = run.get("cpu_ms_per_request", {}).get("agent")
        service = run.get("service_ms_per_request")
        return cpu_ms - service if cpu_ms is not None and service is not None else None

    def megabytes(run: dict[str, Any]) -> float:
        return (run.get("request_bytes") or 0) / 1e6 + (run.get("reply_bytes") or 0) / 1e6

    small = mlp.get("1", {})
    small_path, large_path = path_ms(small), path_ms(large)
    small_mb, large_mb = megabytes(small), megabytes(large)
    out["path_ms_per_mb"] = (
        (large_path - small_path) / (large_mb - small_mb)
        if small_path is not None and large_path is not None and large_mb > small_mb else None
    )
    out["path_ms_small"] = small_path
    out["path_ms_large"] = large_path
    # the transport's own cost per MB: the echo responder's CPU per request, camera frame less MLP request
    floor_small_run = floor.get("1", {})
    floor_small_cpu = floor_small_run.get("cpu_ms_per_request", {}).get("responder")
    floor_large_cpu = (floor_large or {}).get("cpu_ms_per_request", {}).get("responder")
    floor_small_mb = (_frame_bytes_of(small) + (floor_small_run.get("reply_bytes") or 0)) / 1e6
    floor_large_mb = megabytes(floor_large or {})
    out["floor_path_ms_per_mb"] = (
        (floor_large_cpu - floor_small_cpu) / (floor_large_mb - floor_small_mb)
        if floor_small_cpu is not None and floor_large_cpu is not None and floor_large_mb > floor_small_mb else None
    )
    out["path_ms_per_mb_beyond_floor"] = (
        out["path_ms_per_mb"] - out["floor_path_ms_per_mb"]
        if out["path_ms_per_mb"] is not None and out["floor_path_ms_per_mb"] is not None else None
    )
    out["request_reply_mb"] = {"mlp": small_mb, LARGE_MODEL: large_mb}
    return out


def _frame_bytes_of(run: dict[str, Any]) -> int:
    return int(run.get("request_bytes") or 0)


def _plot(data: dict[str, Any], png: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(CONCURRENCY), figsize=(11, 4), squeeze=False)
    axes = axes[0]
    for ax, c in zip(axes, CONCURRENCY, strict=True):
        labels, values = [], []
        mlp = data["models"].get("mlp", {}).get(str(c), {})
        for label, value in (
            ("ONNX Runtime\ndirect", mlp.get("direct_rps")),
            (f"floor\n({data['data_link']} echo)", data["floor"].get(data["data_link"], {}).get(str(c), {}).get("rps")),
            ("floor\n(paho echo)", data["floor"].get("paho", {}).get(str(c), {}).get("rps")),
            (f"agent\n({data['data_link']})", mlp.get("agent_rps")),
            ("agent\n(paho)", data["agent_paho"].get("mlp", {}).get(str(c), {}).get("agent_rps")),
            ("Triton", (data["triton"] or {}).get(str(c), {}).get("rps")),
        ):
            if value is not None:
                labels.append(label)
                values.append(value)
        ax.bar(range(len(values)), values)
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set_title(f"MLP, concurrency {c}")
        ax.set_ylabel("requests/s")
    fig.suptitle("edgefleet bench serving (same box, same run)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)

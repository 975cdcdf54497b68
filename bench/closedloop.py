"""``edgefleet bench closedloop``: closed loops and periodic streams, the model's prediction against a real agent.

One real agent process on this machine (``LocalFleet``), real zoo models (ONNX Runtime and LiteRT), each
tenant driven by its own app process through the broker, as apps on a fleet are:

1. **Solo**: each model alone, back to back (one request in flight, the next sent when the reply
   arrives). These runs are the prediction's only inputs: per model its mean time in service and its
   spread (from the answers' ``service_ms``), its time outside the device per cycle, Z = 1/X − R
   (the round trip through the broker and the app: throughput X and mean time at the device R), and the
   CPU the app and the broker spend per request on these cores (``background_ms``: the benchmark's
   process tree's CPU per request, less the service and the agent's request path as the book counts it).
2. **Closed mixes**: 2, 3 and 4 tenants back to back at once, and single models with two in flight.
   Predicted by mean value analysis (``edgefleet.coordinator.perf.mva``) over the CPU sharing law of the book's
   ``x86-cpu`` processor as deployed here (``edgefleet.bench.perfmodel.deployed_book``: this box's workers, the
   agent's request path, the CPU the co-located apps and broker spend per request) with the solo inputs
   — never the mix's own measurements.
3. **Periodic streams**: one tenant sending on a strict clock at several frame rates beside a Poisson
   tenant, at loads chosen from the solo runs (a share of a core by the book's count of each request's
   CPU). Predicted by the open model with the stream's declared gap spread (``periodic_scv``, 0 for a
   strict clock) and Poisson's 1, from the same solo inputs.

This box is shared (other work runs on its two cores while the benchmark does), so each run measures
the other work's demand on the cores — the CPU the rest of the box consumed in 3 s just before and 3 s
just after it, while the benchmark's tenants were idle (``BoxWatch``; during the run, on full cores,
it would be what the other work got, not what it wanted: recorded as ``external_cores_during``) — and
the model takes it as cores kept busy (``Processor.external_cores``): the solo inputs are taken back to
a quiet box by the model's own slowdown at their run's figure, and each case is predicted at its own. That is the environment, not
the tenants' outcome; ``*_ignoring_external`` reports the same prediction without it (raw solo
figures, a quiet box assumed).

A tenant's latency is taken at the device — queueing plus service, from each answer's ``queue_ms`` and
``service_ms`` — which is what the model predicts; its throughput is the answers per second its app
received during the measured part of the run (after a warm-up). Metrics, defined before the run:
``mape_closed_latency`` and ``mape_closed_throughput`` = mean over the closed tenants of the mixes (and
the two-in-flight runs) of |predicted − measured| / measured of the mean latency and of the throughput
(goal <= 0.05 each); ``mape_periodic_p95`` = the same over the periodic tenants of their p95 (goal <=
0.10). ``mape_closed_p95`` and ``mape_poisson_p95`` (the Poisson tenants beside the streams) are
reported beside them. Failed requests are counted per case. A decomposition is reported beside them too,
``*_given_service``: the same laws fed each tenant's service time as measured in its own case (so every
slowdown is in it), with nothing on top — what remains is the queueing and mean value laws' error, and
what it removes is the service-time (sharing) law's share.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.harness import finish, machine, pyplot
from edgefleet.bench.perfmodel import KIND, deployed_book
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.wire import Closed, DemandSpec, Periodic, Poisson, TenantSpec

RUNTIME = {"ocr-rec": "onnxruntime", "ocr-det": "onnxruntime", "hand-landmark": "litert",
           "pose-landmark": "litert", "selfie-seg": "litert"}
MODELS = tuple(RUNTIME)
WARMUP_S = 2.0
IDLE_S = 3.0  # the box's other work is measured this long before and after each case, the tenants idle
TREE_MARGIN_S = 0.25  # the CPU watch during a case stops this long before the apps' measured part ends


@dataclass(frozen=True)
class Tenant:
    model: str
    demand: DemandSpec

    @property
    def name(self) -> str:
        return f"cl-{self.model}"


def closed_cases() -> list[tuple[str, list[Tenant]]]:
    one = Closed(in_flight=1)
    return [
        ("ocr-rec x2 in flight", [Tenant("ocr-rec", Closed(in_flight=2))]),
        ("hand-landmark x2 in flight", [Tenant("hand-landmark", Closed(in_flight=2))]),
        ("mix2 onnx+litert", [Tenant("ocr-rec", one), Tenant("hand-landmark", one)]),
        ("mix2 litert", [Tenant("pose-landmark", one), Tenant("selfie-seg", one)]),
        ("mix3", [Tenant("ocr-rec", one), Tenant("pose-landmark", one), Tenant("hand-landmark", one)]),
        ("mix4", [Tenant("ocr-rec", one), Tenant("ocr-det", one), Tenant("hand-landmark", one),
                  Tenant("pose-landmark", one)]),
        ("mix4 litert-heavy", [Tenant("ocr-det", one), Tenant("selfie-seg", one), Tenant("hand-landmark", one),
                               Tenant("pose-landmark", one)]),
    ]


# (periodic model, its share of one core, Poisson model, its share of one core): loads chosen by the solo
# measurements — share x 1000 / (solo service ms + the agent's request path + the apps' and broker's CPU
# per request, as the book counts them) — so the streams run at frame rates the box can serve
PERIODIC = (
    ("pose-landmark", 0.15, "ocr-rec", 0.2),
    ("pose-landmark", 0.3, "ocr-rec", 0.2),
    ("pose-landmark", 0.45, "ocr-rec", 0.2),
    ("hand-landmark", 0.3, "ocr-det", 0.2),
    ("selfie-seg", 0.3, "hand-landmark", 0.2),
)


def _cost_ms(solo: dict[str, dict[str, Any]], model: str) -> float:
    from edgefleet.coordinator.perf.sharing import Load

    proc = _processor(0.0)
    prof = deployed_book().profile(model, "fp32", KIND)
    assert prof is not None, model
    ld = Load(model, 1.0, 1.0, request_mb=prof.request_mb)
    return float(solo[model]["service_mean_ms"] + proc.path_of(ld) + proc.background_of(ld))


def periodic_cases(solo: dict[str, dict[str, Any]]) -> list[tuple[str, list[Tenant]]]:
    out = []
    for stream, u_stream, other, u_other in PERIODIC:
        fps = round(u_stream * 1000.0 / _cost_ms(solo, stream), 1)
        rate = round(u_other * 1000.0 / _cost_ms(solo, other), 1)
        out.append((f"{stream} {fps:g} fps + {other} Poisson {rate:g}/s",
                    [Tenant(stream, Periodic(fps=fps)), Tenant(other, Poisson(rate_rps=rate))]))
    return out


# -- the apps (one process per tenant) -------------------------------------------------------------------
def _app(settings: Any, prefix: str, tenant: str, model: str, demand: DemandSpec, start_at: float,
         warmup_s: float, seconds: float, seed: int, out: Any) -> None:
    """One app: drives ``tenant`` by its demand from wall-clock ``start_at``; sends back (sent, done,
    queue_ms, service_ms) per answer (times relative to the measured part's start) and the failures."""
    got = asyncio.run(_drive(settings, prefix, tenant, model, demand, start_at, warmup_s, seconds, seed))
    out.send(got)
    out.close()


async def _drive(settings: Any, prefix: str, tenant: str, model: str, demand: DemandSpec, start_at: float,
                 warmup_s: float, seconds: float, seed: int) -> tuple[list[tuple[float, float, float, float]], int]:
    from edgefleet.sdk import AsyncInferenceClient, InferenceError
    from edgefleet.zoo import sample_inputs

    feeds = dict(sample_inputs(model))
    rows: list[tuple[float, float, float, float]] = []
    failed = 0
    rng = random.Random(seed)
    async with AsyncInferenceClient(settings, prefix=prefix) as client:
        await client.infer_with_meta(tenant, feeds, timeout_s=10.0)  # connected and warm before the clock
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter() + warmup_s  # the measured part starts here
        end = t0 + seconds

        async def one() -> bool:
            nonlocal failed
            sent = time.perf_counter()
            try:
                r = await client.infer_with_meta(tenant, feeds, timeout_s=10.0)
            except InferenceError:
                failed += 1 if sent >= t0 else 0
                return False
            rows.append((sent - t0, time.perf_counter() - t0, float(r.meta.get("queue_ms", 0.0)),
                         float(r.meta.get("service_ms", 0.0))))
            return True

        if isinstance(demand, Closed):
            async def loop() -> None:
                while time.perf_counter() < end:
                    await one()
                    if demand.think_ms:
                        await asyncio.sleep(demand.think_ms / 1000.0)

            await asyncio.gather(*(loop() for _ in range(int(demand.in_flight))))
        else:
            tasks = []
            at = time.perf_counter()
            k = 0
            while at < end:
                if isinstance(demand, Periodic):
                    k += 1
                    at = t0 - warmup_s + k / demand.fps + (rng.gauss(0.0, demand.jitter_ms / 1000.0)
                                                            if demand.jitter_ms else 0.0)
                else:
                    at += rng.expovariate(demand.rate_rps)
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
    return rows, failed


class BoxWatch:
    """The other work on this box over a window: the CPU it consumed (the whole box's CPU time less this
    process tree's: the fleet, its broker, the apps). Taken while the tenants idle it is the other work's
    demand (the model's ``Processor.external_cores``); taken while they run on full cores it is what the
    other work got, not what it wanted. Its runnable threads are sampled too every ~``PERIOD_S``
    (``procs_running`` of /proc/stat less this tree's threads in state R), for the record: a sampler
    wakes with the other timers, so that count is biased up (this kernel keeps no per-task run-queue
    times to do better)."""

    PERIOD_S = 0.1

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.me = psutil.Process()
        self._stop = threading.Event()
        self._samples: list[float] = []
        self._thread: threading.Thread | None = None
        self._cpu0: tuple[float, float, float] | None = None
        self.ours_cores = 0.0  # after ``stop``: the cores this process tree (fleet, broker, apps) consumed

    def _tree(self) -> list[Any]:
        return [self.me, *self.me.children(recursive=True)]

    def _cpu(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
        ours = 0.0
        for proc in self._tree():
            try:
                c = proc.cpu_times()
            except self._psutil.Error:
                continue
            ours += c.user + c.system
        return time.monotonic(), busy, ours

    @staticmethod
    def _running_box() -> int:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                return int(line.split()[1])
        return 0

    @staticmethod
    def _running_in(pids: list[int]) -> int:
        n = 0
        for pid in pids:
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    stat = (task / "stat").read_text()
                    if stat[stat.rindex(")") + 2] == "R":
                        n += 1
            except (OSError, ValueError):
                continue
        return n

    def _run(self) -> None:
        pids = [p.pid for p in self._tree()]
        rng = random.Random(0)
        while not self._stop.wait(self.PERIOD_S * rng.uniform(0.5, 1.5)):  # jittered: no aliasing with timers
            box = self._running_box()
            ours = self._running_in(pids)
            self._samples.append(max(0.0, box - ours))

    def start(self) -> None:
        self._cpu0 = self._cpu()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """(mean runnable threads of other work, cores of CPU other work consumed) since ``start``."""
        self._stop.set()
        assert self._thread is not None and self._cpu0 is not None
        self._thread.join()
        a, b = self._cpu0, self._cpu()
        wall = b[0] - a[0]
        consumed = max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall) if wall > 0 else 0.0
        self.ours_cores = max(0.0, (b[2] - a[2]) / wall) if wall > 0 else 0.0
        runnable = float(np.mean(self._samples)) if self._samples else 0.0
        return runnable, consumed


def _run_case(fleet: LocalFleet, tenants: list[Tenant], seconds: float) -> tuple[list[dict[str, Any]], float]:
    """Drive ``tenants`` at once, each from its own process; per tenant its measured figures, and the
    other work's demand on the cores: the CPU the rest of the box consumed in ``IDLE_S`` just before and
    just after the case, while the benchmark's tenants were idle (see ``BoxWatch``)."""
    ctx = mp.get_context("spawn")
    before = BoxWatch()
    before.start()
    time.sleep(IDLE_S)
    _, external_before = before.stop()
    idle_ours = before.ours_cores  # the fleet's own CPU with the tenants idle (telemetry, keepalives)
    watch = BoxWatch()
    start_at = time.time() + 4.0  # the apps' imports and connections first
    procs = []
    for i, t in enumerate(tenants):
        here, there = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_app, args=(fleet.settings, fleet.prefix, t.name, t.model, t.demand, start_at,
                                           WARMUP_S, seconds, i, there), daemon=True)
        p.start()
        procs.append((p, here))
    time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
    watch.start()
    # stopped a little before the apps' clocks end, so that none has exited (its CPU would leave the tree)
    time.sleep(max(0.0, start_at + WARMUP_S + seconds - TREE_MARGIN_S - time.time()))
    runnable, during = watch.stop()
    out = []
    for (p, here), t in zip(procs, tenants, strict=True):
        rows, failed = here.recv() if here.poll(seconds + 60.0) else ([], -1)
        p.join(10.0)
        a = np.asarray(rows, dtype=float).reshape(-1, 4)
        sent_in = a[(a[:, 0] >= 0.0) & (a[:, 0] < seconds)]  # latency: requests sent in the measured part
        done_in = a[(a[:, 1] >= 0.0) & (a[:, 1] < seconds)]  # throughput: answers received in it
        lat = sent_in[:, 2] + sent_in[:, 3]
        out.append({
            "tenant": t.name, "model": t.model, "runtime": RUNTIME[t.model], "demand": _describe(t.demand),
            "requests": len(sent_in), "failed": int(failed),
            "measured_mean_ms": float(lat.mean()) if len(lat) else float("nan"),
            "measured_p95_ms": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
            "measured_rps": float(len(done_in) / seconds),
            "service_mean_ms": float(sent_in[:, 3].mean()) if len(sent_in) else float("nan"),
            "service_scv": float(sent_in[:, 3].var() / sent_in[:, 3].mean() ** 2) if len(sent_in) > 1 else 0.0,
            "queue_mean_ms": float(sent_in[:, 2].mean()) if len(sent_in) else float("nan"),
            "external_cores_during": during,  # the CPU other work consumed during the measured part
            "external_runnable": runnable,  # other work's runnable threads, sampled (timer-aligned: biased up)
            # the CPU the benchmark's own processes (agent, broker, apps) consumed during the measured part,
            # less what they consume with the tenants idle: in a solo run, the box's CPU per request
            "tree_cores_during": max(0.0, watch.ours_cores - idle_ours),
        })
    after = BoxWatch()
    after.start()
    time.sleep(IDLE_S)
    _, external_after = after.stop()
    external = (external_before + external_after) / 2.0
    for fig in out:
        fig.update({"external_cores": external, "external_cores_before": external_before,
                    "external_cores_after": external_after})
    return out, external


def _describe(d: DemandSpec) -> dict[str, Any]:
    if isinstance(d, Closed):
        return {"kind": "closed", "in_flight": int(d.in_flight), "think_ms": d.think_ms}
    if isinstance(d, Periodic):
        return {"kind": "periodic", "fps": d.fps, "jitter_ms": d.jitter_ms}
    return {"kind": "poisson", "rate_rps": d.rate_rps}


# -- the prediction ------------------------------------------------------------------------------------
def _processor(external: float) -> Any:
    import dataclasses

    return dataclasses.replace(deployed_book().kinds[KIND].processors["cpu"], external_cores=external)


def background_ms(fig: dict[str, Any], model: str) -> float:
    """The CPU a request of a solo run costs the box's other processes on these cores (the app, the
    broker): the benchmark's process tree's CPU per request, less the model's own service and the agent's
    request path as the book counts it (``Processor.path_of``)."""
    from edgefleet.coordinator.perf.sharing import Load

    prof = deployed_book().profile(model, "fp32", KIND)
    assert prof is not None, model
    per_request = fig["tree_cores_during"] * 1000.0 / fig["measured_rps"] if fig["measured_rps"] else 0.0
    path = _processor(0.0).path_of(Load(model, 1.0, 1.0, request_mb=prof.request_mb))
    return max(0.0, float(per_request - fig["service_mean_ms"] - path))


def alone(fig: dict[str, Any], model: str, external: float) -> tuple[float, float]:
    """(service ms, ms outside the device per cycle) of a solo run with the other work on the box taken
    out: the model's own slowdown of a request alone beside ``external`` busy cores, and the stretch of
    the cycle's CPU outside the device (``edgefleet.coordinator.perf.mva``), divided and subtracted."""
    from edgefleet.coordinator.perf.sharing import Load, _slowdown

    proc = _processor(external)
    prof = deployed_book().profile(model, "fp32", KIND)
    assert prof is not None, model
    ld = Load(model, 1.0, 1.0, request_mb=prof.request_mb, background_ms=fig.get("background_ms"))
    slow, _ = _slowdown(proc.servers, proc.contention, 0.0, external)
    outside_cpu = max(0.0, proc.path_of(ld) - proc.dispatch_ms) + proc.background_of(ld)
    stretch = max(1.0, (external + 1.0) / proc.servers) - 1.0
    return fig["service_mean_ms"] / slow, max(0.0, fig["outside_ms"] - outside_cpu * stretch)


def predict_case(solo: dict[str, dict[str, Any]], tenants: list[Tenant], external: float,
                 *, quiet: bool = False) -> list[tuple[float, float, float]]:
    """(mean ms, p95 ms, req/s) per tenant of a case, from the solo figures and the book's processor with
    the case's ``external`` busy cores; ``quiet``: as if the box had no other work (raw solo figures)."""
    from edgefleet.coordinator.perf.demand import periodic_scv
    from edgefleet.coordinator.perf.sharing import Load, predict

    book = deployed_book()
    proc = _processor(0.0 if quiet else external)
    loads = []
    for t in tenants:
        s = solo[t.model]
        service, outside = (s["service_mean_ms"], s["outside_ms"]) if quiet else (s["alone_service_ms"],
                                                                                  s["alone_outside_ms"])
        prof = book.profile(t.model, "fp32", KIND)
        assert prof is not None, t.model
        conc = 1 if RUNTIME[t.model] == "litert" else proc.servers
        base = dict(service_ms=service, scv=s["service_scv"], concurrency=conc, request_mb=prof.request_mb,
                    background_ms=s.get("background_ms"))
        d = t.demand
        if isinstance(d, Closed):
            loads.append(Load(t.name, 1.0, in_flight=int(d.in_flight), think_ms=d.think_ms + outside,
                              **base))  # type: ignore[arg-type]
        elif isinstance(d, Periodic):
            loads.append(Load(t.name, d.fps, arrival_scv=periodic_scv(d.fps, d.jitter_ms), **base))  # type: ignore[arg-type]
        else:
            loads.append(Load(t.name, d.rate_rps, **base))  # type: ignore[arg-type]
    out = predict(proc, loads)
    return list(zip(out.mean_ms, out.p95_ms, out.throughput_rps, strict=True))


def predict_given_service(solo: dict[str, dict[str, Any]], tenants: list[Tenant],
                          measured: list[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """A decomposition, not a prediction: (mean ms, p95 ms, req/s) per tenant of a case with each
    tenant's service time and spread as measured in the case itself (so every slowdown is in them), on
    the book's processor without contention, background CPU or other work on top, and the solo run's
    time outside the device. What is left between these and the measurements is the queueing and mean
    value laws' error; what they remove from the prediction's error is the service-time law's."""
    import dataclasses

    from edgefleet.coordinator.perf.demand import periodic_scv
    from edgefleet.coordinator.perf.sharing import Load, predict

    book = deployed_book()
    proc = dataclasses.replace(_processor(0.0), contention=0.0, background_ms=0.0, background_ms_per_mb=0.0)
    loads = []
    for t, fig in zip(tenants, measured, strict=True):
        prof = book.profile(t.model, "fp32", KIND)
        assert prof is not None, t.model
        conc = 1 if RUNTIME[t.model] == "litert" else proc.servers
        base = dict(service_ms=fig["service_mean_ms"], scv=fig["service_scv"], concurrency=conc,
                    request_mb=prof.request_mb)
        d = t.demand
        if isinstance(d, Closed):
            loads.append(Load(t.name, 1.0, in_flight=int(d.in_flight), think_ms=d.think_ms + solo[t.model]["outside_ms"],
                              **base))  # type: ignore[arg-type]
        elif isinstance(d, Periodic):
            loads.append(Load(t.name, d.fps, arrival_scv=periodic_scv(d.fps, d.jitter_ms), **base))  # type: ignore[arg-type]
        else:
            loads.append(Load(t.name, d.rate_rps, **base))  # type: ignore[arg-type]
    out = predict(proc, loads)
    return list(zip(out.mean_ms, out.p95_ms, out.throughput_rps, strict=True))


def _ape(pred: float, meas: float) -> float | None:
    if not (meas > 0 and np.isfinite(meas)):
        return None
    return 1.0 if not np.isfinite(pred) else float(abs(pred - meas) / meas)


def _mape(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    solo_s, case_s = (4.0, 6.0) if quick else (8.0, 15.0)
    closed = closed_cases()[2:5] if quick else closed_cases()
    cases: list[dict[str, Any]] = []
    solo: dict[str, dict[str, Any]] = {}
    with LocalFleet(agents=[AgentPlan("cl-a", budget_mib=512)], prefix=f"cl{time.monotonic_ns() % 10**8}") as fleet:
        fleet.wait_online(["cl-a"], 60)
        for m in MODELS:
            fleet.deploy(TenantSpec(name=f"cl-{m}", model=m, slo_ms=10_000.0, max_batch=1))
        for m in MODELS:  # 1. the inputs: each alone, back to back
            (fig,), external = _run_case(fleet, [Tenant(m, Closed(in_flight=1))], solo_s)
            fig["outside_ms"] = 1000.0 / fig["measured_rps"] - fig["measured_mean_ms"] if fig["measured_rps"] else 0.0
            fig["background_ms"] = background_ms(fig, m)
            fig["alone_service_ms"], fig["alone_outside_ms"] = alone(fig, m, external)
            solo[m] = fig
        periodic = periodic_cases(solo)[1:3] if quick else periodic_cases(solo)
        for kind, group in (("closed", closed), ("periodic", periodic)):
            for label, tenants in group:
                measured, external = _run_case(fleet, tenants, case_s)
                predicted = predict_case(solo, tenants, external)
                quiet = predict_case(solo, tenants, external, quiet=True)
                given = predict_given_service(solo, tenants, measured)
                for fig, (mean, p95, rps), (q_mean, q_p95, q_rps), (g_mean, g_p95, g_rps) in zip(
                        measured, predicted, quiet, given, strict=True):
                    fig.update({"given_service_predicted_mean_ms": g_mean, "given_service_predicted_p95_ms": g_p95,
                                "given_service_predicted_rps": g_rps,
                                "given_service_ape_mean": _ape(g_mean, fig["measured_mean_ms"]),
                                "given_service_ape_p95": _ape(g_p95, fig["measured_p95_ms"]),
                                "given_service_ape_rps": _ape(g_rps, fig["measured_rps"])})
                    fig.update({"case": label, "case_kind": kind, "predicted_mean_ms": mean, "predicted_p95_ms": p95,
                                "predicted_rps": rps, "ape_mean": _ape(mean, fig["measured_mean_ms"]),
                                "ape_p95": _ape(p95, fig["measured_p95_ms"]), "ape_rps": _ape(rps, fig["measured_rps"]),
                                "quiet_predicted_mean_ms": q_mean, "quiet_predicted_p95_ms": q_p95,
                                "quiet_predicted_rps": q_rps, "quiet_ape_mean": _ape(q_mean, fig["measured_mean_ms"]),
                                "quiet_ape_p95": _ape(q_p95, fig["measured_p95_ms"]),
                                "quiet_ape_rps": _ape(q_rps, fig["measured_rps"])})
                    cases.append(fig)
    closed_t = [c for c in cases if c["demand"]["kind"] == "closed"]
    periodic_t = [c for c in cases if c["demand"]["kind"] == "periodic"]
    poisson_t = [c for c in cases if c["demand"]["kind"] == "poisson"]
    data: dict[str, Any] = {
        "benchmark": "closedloop",
        "quick": quick,
        "kind": KIND,
        "seconds_solo": solo_s,
        "seconds_per_case": case_s,
        "warmup_s": WARMUP_S,
        "mape_closed_latency": _mape([c["ape_mean"] for c in closed_t]),
        "mape_closed_throughput": _mape([c["ape_rps"] for c in closed_t]),
        "mape_periodic_p95": _mape([c["ape_p95"] for c in periodic_t]),
        "mape_closed_p95": _mape([c["ape_p95"] for c in closed_t]),
        "mape_poisson_p95": _mape([c["ape_p95"] for c in poisson_t]),
        # the same prediction ignoring the other work measured on the box (raw solo figures, no external cores)
        "mape_closed_latency_ignoring_external": _mape([c["quiet_ape_mean"] for c in closed_t]),
        "mape_closed_throughput_ignoring_external": _mape([c["quiet_ape_rps"] for c in closed_t]),
        "mape_periodic_p95_ignoring_external": _mape([c["quiet_ape_p95"] for c in periodic_t]),
        # a decomposition (``predict_given_service``): the laws fed each tenant's service time as measured in
        # its case; the gap to the scores above is the service-time law's share of the error
        "mape_closed_latency_given_service": _mape([c["given_service_ape_mean"] for c in closed_t]),
        "mape_closed_throughput_given_service": _mape([c["given_service_ape_rps"] for c in closed_t]),
        "mape_periodic_p95_given_service": _mape([c["given_service_ape_p95"] for c in periodic_t]),
        "external_cores_mean": float(np.mean([c["external_cores"] for c in cases])) if cases else None,
        "failed_requests": sum(max(c["failed"], 0) for c in cases) + sum(max(s["failed"], 0) for s in solo.values()),
        "goal": {"mape_closed_latency": 0.05, "mape_closed_throughput": 0.05, "mape_periodic_p95": 0.10},
        # where every input of the prediction comes from: never the scored cases themselves
        "calibration": {
            "service_ms, service_scv, outside_ms": "the solo runs (each model alone, one in flight)",
            "background_ms": "the solo runs: the benchmark's process tree's CPU per request, less the service and "
                             "the agent's request path (the scored mixes only report theirs, tree_cores_during)",
            "contention": "coordinator/perf/calibration.json cpu_contention (two threads on two cores, DESIGN §4)",
            "path_ms, dispatch_ms, hold_ms": "coordinator/perf/calibration.json cpu_request_path (bench serving)",
            "external_cores": "the box's other work, measured with the tenants idle before and after each case",
        },
        "solo": solo,
        "runs": cases,
        "machine": machine(),
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    panels = (
        ("closed: mean latency at the device (ms)", "measured_mean_ms", "predicted_mean_ms", "closed",
         data["mape_closed_latency"]),
        ("closed: throughput (req/s)", "measured_rps", "predicted_rps", "closed", data["mape_closed_throughput"]),
        ("periodic (o) and Poisson (x): p95 at the device (ms)", "measured_p95_ms", "predicted_p95_ms", "open",
         data["mape_periodic_p95"]),
    )
    for ax, (title, mx, py, which, mape) in zip(axes, panels, strict=True):
        runs = [r for r in data["runs"] if (r["demand"]["kind"] == "closed") == (which == "closed")]
        for r in runs:
            marker = "x" if r["demand"]["kind"] == "poisson" else "o"
            ax.scatter(r[mx], r[py], marker=marker, color="C0" if marker == "o" else "C1")
            ax.annotate(r["model"], (r[mx], r[py]), fontsize=6)
        vals = [v for r in runs for v in (r[mx], r[py]) if np.isfinite(v)]
        top = max([*vals, 1.0]) * 1.1
        if which == "open":  # the p95s span overloaded runs: a log scale; "unstable" predictions on top
            for r in runs:
                if not np.isfinite(r[py]) and np.isfinite(r[mx]):
                    ax.scatter(r[mx], top, marker="^", color="C3")
                    ax.annotate("unstable", (r[mx], top), fontsize=6)
            low = min([*vals, top]) / 1.5
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.plot([low, top * 1.1], [low, top * 1.1], "--", color="grey")
        else:
            ax.plot([0, top], [0, top], "--", color="grey")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(f"{title}\nMAPE {mape if mape is None else round(mape, 3)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The live confirmation of ``edgefleet bench placement``: the same admission score, measured on real
agent processes serving real zoo models instead of judged in a simulated world.

Two agents, each pinned to one core of this box with ``taskset`` (one worker each), are the fleet; to
the policies they are two x86 devices with one core and a declared model memory of ``BUDGET_MIB`` (the
memory-only policies' budget binds: a tenant takes the resident memory measured for its model). A
stream of tenants (edgefleet.bench.planning's menu of rates and SLOs) arrives one at a time; for each policy
(model-driven, and the memory-only policy that scored best in the simulated judge) a fresh broker and
pair of agents is started, every accepted tenant is deployed and its app starts calling it at its
rate (open loop, Poisson, one MQTT client per app) and keeps calling until the end. After each
arrival the fleet is measured for ``WINDOW_S`` seconds: each tenant's p95 at the app, end to end, with
every failed or unanswered request counted as beyond its SLO. A rejected arrival changes nothing and
keeps the last verdict. The score is edgefleet.bench.metrics.admission_score; a policy's stream ends after
``STOP_AFTER`` arrivals in a row with a violation (the machine's time is scarce). ``SEEDS`` streams of
``ARRIVALS`` tenants each (about 5 minutes on this box): each policy's score is the median over them,
with min and max beside it.

The load generator and the broker share the same two cores with the agents: the measurement includes
them, as the model's calibration does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgefleet import localfleet
from edgefleet.bench import judge
from edgefleet.bench.harness import CommandClient, PrivateBroker, agent_toml, temp_workdir
from edgefleet.bench.metrics import admission_score, p95_counting_failures, ratio, spread
from edgefleet.bench.placement import MIB, Tenant, knapsack, tenant_stream
from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot
from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import build_book, read
from edgefleet.coordinator.placement import Demand, Placed, PredictedLatency
from edgefleet.mqtt import MqttSettings
from edgefleet.wire import TenantSpec, Topics

BUDGET_MIB = 160
WINDOW_S = 5.0
TIMEOUT_S = 1.0
STOP_AFTER = 3
ARRIVALS = 12
SEEDS = (11, 12, 13)
DEVICES = (("live-0", 0), ("live-1", 1))  # device id, core it is pinned to


def live_book() -> PerfBook:
    """The shipped calibration with the operator's configuration: these x86 devices have one worker."""
    data = read()
    data["kinds"]["x86-cpu"]["processors"]["cpu"]["servers"] = 1
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    return build_book(Path(f.name))


def live_snapshot() -> FleetSnapshot:
    return FleetSnapshot(tuple(
        DeviceSnapshot(did, True, "x86-cpu", frozenset({"onnxruntime", "litert"}), BUDGET_MIB * MIB)
        for did, _ in DEVICES
    ))


class LiveApps:
    """Open-loop apps on one asyncio loop in a thread: ``add`` starts one; ``window`` reads p95s."""

    def __init__(self, settings: MqttSettings, prefix: str) -> None:
        self.settings, self.prefix = settings, prefix
        self.records: dict[str, list[tuple[float, float]]] = {}  # tenant -> (sent monotonic, latency ms|inf)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-apps", daemon=True)
        self.thread.start()
        self.tasks: list[Any] = []

    def add(self, tenant: str, model: str, rate_rps: float, seed: int) -> None:
        self.records[tenant] = []
        self.tasks.append(asyncio.run_coroutine_threadsafe(self._app(tenant, model, rate_rps, seed), self.loop))

    async def _app(self, tenant: str, model: str, rate_rps: float, seed: int) -> None:
        from edgefleet.demo.load import open_loop
        from edgefleet.sdk import AsyncInferenceClient
        from edgefleet.zoo import sample_inputs

        feeds = dict(sample_inputs(model))
        out = self.records[tenant]
        async with AsyncInferenceClient(self.settings, prefix=self.prefix, connect_timeout_s=30) as client:

            async def call() -> None:
                sent = time.monotonic()
                try:
                    await client.infer_with_meta(tenant, feeds, timeout_s=TIMEOUT_S)
                    out.append((sent, (time.monotonic() - sent) * 1e3))
                except Exception:  # every failure is a request beyond the SLO
                    out.append((sent, math.inf))

            await open_loop(rate_rps, call, self.stop, rng=random.Random(seed),
                            backlog=lambda: out.append((time.monotonic(), math.inf)))

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """p95 (ms, failures as inf) of each tenant's requests sent in [t0, t1)."""
        out = {}
        for tenant, recs in self.records.items():
            lat = [ms for sent, ms in list(recs) if t0 <= sent < t1]
            finite = [x for x in lat if math.isfinite(x)]
            out[tenant] = p95_counting_failures(finite, len(lat) - len(finite)) if lat else math.inf
        return out

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        for t in self.tasks:
            with contextlib.suppress(Exception):  # an app that failed has already recorded its failures
                t.result(timeout=TIMEOUT_S + 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _spawn(device_id: str, core: int, port: int, work: Path, prefix: str) -> localfleet.Child:
    state = work / device_id
    state.mkdir(parents=True, exist_ok=True)
    cfg = work / f"{device_id}.toml"
    # the agent's own budget is generous: the binding budget is the one the policies are given
    cfg.write_text(agent_toml(device_id, port, state, prefix=prefix, budget_mib=1024, workers=1, period_s=1.0))
    argv = ["taskset", "-c", str(core), sys.executable, "-m", "edgefleet.agent.main", "--config", str(cfg),
            "--log-level", "WARNING"]
    child = localfleet.Child(device_id, argv, work / f"{device_id}.log")
    child.start(dict(os.environ))
    return child


def run_policy(assign: Sequence[str | None], tenants: Sequence[Tenant], *, seed: int, window_s: float,
               progress: Callable[[str], None]) -> dict[str, Any]:
    prefix = f"live{int(time.time() * 1000) % 10**8}"
    work = temp_workdir("ef-live-")
    history: list[tuple[int, int]] = []
    measured: list[dict[str, float | None]] = []
    accepted = bad = run_bad = 0
    with PrivateBroker() as broker:
        settings = MqttSettings(port=broker.port, keepalive_s=10)
        agents = [_spawn(did, core, broker.port, work, prefix) for did, core in DEVICES]
        ctl = CommandClient(settings, Topics(prefix))
        apps = LiveApps(settings, prefix)
        on: dict[str, str] = {}  # tenant -> device
        try:
            for device, _ in DEVICES:
                ctl.wait_online(device, 60)
            for i, did in enumerate(assign):
                if did is not None:
                    spec, _, rate = tenants[i]
                    ctl.deploy(did, TenantSpec(name=spec.name, model=spec.model, slo_ms=spec.slo_ms, max_batch=1))
                    apps.add(spec.name, spec.model, rate, seed * 1000 + i)
                    on[spec.name] = did
                    accepted += 1
                    time.sleep(1.0)  # the new app connects and the model warms up before the window
                    t0 = time.monotonic()
                    time.sleep(window_s)
                    t1 = time.monotonic()
                    time.sleep(TIMEOUT_S + 0.2)  # the window's last requests answer or time out
                    p95 = apps.window(t0, t1)
                    slo = {s.name: s.slo_ms for s, _, _ in tenants}
                    bad = sum(1 for t, v in p95.items() if not v <= slo[t])
                    measured.append({t: round(v, 2) if math.isfinite(v) else None for t, v in p95.items()})
                history.append((accepted, bad))
                run_bad = run_bad + 1 if bad else 0
                progress(f"  arrival {i}: {'-> ' + did if did else 'rejected'}; accepted {accepted}, violating {bad}")
                if run_bad >= STOP_AFTER:
                    break
        finally:
            apps.close()
            ctl.close()
            for a in agents:
                a.stop()
    return {"score": admission_score(history), "history": history, "accepted_at_end": accepted,
            "arrivals_judged": len(history), "p95_ms_after_each_acceptance": measured, "placement": on}


def run_stream(best_knapsack: str, *, quick: bool, seed: int,
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    """One stream of tenants (``seed``) through both policies, each on a fresh broker and pair of agents."""
    arrivals = 6 if quick else ARRIVALS
    window_s = 3.0 if quick else WINDOW_S
    tenants = tenant_stream(arrivals, seed)
    est = [max(judge.telemetry_rate(r, seed=seed, idx=i, window_s=10.0), 0.1) for i, (_, _, r) in enumerate(tenants)]
    snap = live_snapshot()
    book = live_book()
    demand = {s.name: Demand(r, s.slo_ms) for (s, _, _), r in zip(tenants, est, strict=True)}
    planner = PredictedLatency(book, demand=demand).planner(snap)
    model_assign = [d.device_id if isinstance(d, Placed) else None for d in (planner.place(s, f) for s, f, _ in tenants)]
    knap_assign = knapsack(best_knapsack, tenants, snap, book if best_knapsack.endswith("+alone") else None)
    out: dict[str, Any] = {"seed": seed, "arrivals": arrivals, "window_s": window_s,
                           "stream": [{"model": s.model, "rate_rps": r, "slo_ms": s.slo_ms} for s, _, r in tenants],
                           "policies": {}}
    for name, assign in (("predicted-latency", model_assign), (best_knapsack, knap_assign)):
        progress(f"live seed {seed}: {name}")
        out["policies"][name] = run_policy(assign, tenants, seed=seed, window_s=window_s, progress=progress)
    model = out["policies"]["predicted-latency"]["score"]
    knap = out["policies"][best_knapsack]["score"]
    out["live_gain_vs_best_knapsack"] = ratio(model, knap)
    return out


def run_live(best_knapsack: str, *, quick: bool, seeds: Sequence[int] | None = None,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every seed's stream; each policy's live score is the median over seeds (spread beside it), and
    ``live_gain_vs_best_knapsack`` the model-driven median over the best knapsack's median (a ratio of
    medians: a seed where the knapsack scores 0 has no ratio of its own)."""
    chosen = tuple(seeds) if seeds is not None else ((11,) if quick else SEEDS)
    streams = [run_stream(best_knapsack, quick=quick, seed=s, progress=progress) for s in chosen]
    names = ("predicted-latency", best_knapsack)
    scores = {n: [float(st["policies"][n]["score"]) for st in streams] for n in names}
    medians = {n: float(statistics.median(v)) for n, v in scores.items()}
    per_seed = [st["live_gain_vs_best_knapsack"] for st in streams]
    return {
        "seeds": list(chosen),
        "arrivals": streams[0]["arrivals"],
        "window_s": streams[0]["window_s"],
        "budget_mib": BUDGET_MIB,
        "devices": [{"device": d, "core": c} for d, c in DEVICES],
        "policies": {n: {"score": medians[n], "per_seed": scores[n], **spread(scores[n])} for n in names},
        "best_knapsack": best_knapsack,
        "live_gain_vs_best_knapsack": ratio(medians["predicted-latency"], medians[best_knapsack]),
        "live_gain_per_seed": per_seed,
        "live_gain_per_seed_spread": spread([g for g in per_seed if g is not None]),
        "streams": streams,
    }

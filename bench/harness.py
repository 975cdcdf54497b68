"""Shared pieces of the benchmarks: a private fleet in child processes, load loops, JSON and plots.

Agents under test run as separate processes (as in production), so the load generator's Python does not
share a GIL with the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet import localfleet
from edgefleet.broker import PrivateBroker
from edgefleet.localfleet import AgentPlan
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import Ack, Deploy, TenantSpec, Topics, decode, encode


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def percentiles(samples_s: list[float]) -> dict[str, float]:
    if not samples_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    a = np.asarray(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def agent_toml(
    device_id: str,
    port: int,
    state_dir: Path,
    *,
    prefix: str,
    budget_mib: int = 1024,
    workers: int = 0,
    period_s: float = 1.0,
    data_dir: str | None = None,
    extra_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    plan = AgentPlan(device_id, budget_mib=budget_mib, telemetry_period_s=period_s, workers=workers,
                     extra_config=extra_config or {})
    return localfleet.agent_toml(plan, port, state_dir, prefix=prefix, data_dir=data_dir)


def spawn_agent(
    device_id: str,
    port: int,
    workdir: Path,
    *,
    prefix: str,
    models: Mapping[str, Path] | None = None,
    **toml_kw: Any,
) -> localfleet.Child:
    """One agent process outside a LocalFleet (benchmarks that need no coordinator), with extra local
    models (``--model name=path``); ``stop()`` ends it."""
    state = workdir / device_id
    state.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"{device_id}.toml"
    cfg.write_text(agent_toml(device_id, port, state, prefix=prefix, **toml_kw))
    cmd = [sys.executable, "-m", "edgefleet.agent.main", "--config", str(cfg), "--log-level", "INFO"]
    for name, path in (models or {}).items():
        cmd += ["--model", f"{name}={path}"]
    child = localfleet.Child(device_id, cmd, workdir / f"{device_id}.log")
    child.start(dict(os.environ))
    return child


class CpuMeter:
    """CPU time (user + system) of named processes from construction to ``percent()`` (100 = one core)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.start = {name: self._cpu(p) for name, p in self.procs.items()}
        self.t0 = time.perf_counter()

    @staticmethod
    def _cpu(p: Any) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def percent(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {name: 100.0 * (self._cpu(p) - self.start[name]) / wall for name, p in self.procs.items()}


class Apps:
    """Closed-loop apps calling tenants through the SDK until the ``with`` block ends, one thread per
    caller (``callers`` per tenant): every call's end time (monotonic), outcome and answering device (or
    error code). Failures are expected (faults, outages) and recorded; after one a caller pauses
    ``pause_after_failure_s`` before its next call."""

    def __init__(self, settings: MqttSettings, prefix: str, tenants: Mapping[str, str], *, callers: int = 1,
                 timeout_s: float = 0.5, pause_after_failure_s: float = 0.0) -> None:
        self.settings, self.prefix, self.tenants = settings, prefix, dict(tenants)  # tenant -> zoo model
        self.timeout_s, self.pause_s = timeout_s, pause_after_failure_s
        self.records: list[tuple[float, bool, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._app, args=(t, m), name=f"app-{t}-{i}")
                         for t, m in self.tenants.items() for i in range(callers)]

    def _app(self, tenant: str, model: str) -> None:
        from edgefleet.sdk import InferenceClient, InferenceError
        from edgefleet.zoo import sample_inputs

        feeds = dict(sample_inputs(model))
        with InferenceClient(self.settings, prefix=self.prefix, connect_timeout_s=30) as client:
            while not self._stop.is_set():
                try:
                    result = client.infer_with_meta(tenant, feeds, timeout_s=self.timeout_s)
                    record = (time.monotonic(), True, result.device or "?")
                except (InferenceError, ConnectionError) as exc:
                    code = exc.code.value if isinstance(exc, InferenceError) else type(exc).__name__
                    record = (time.monotonic(), False, code)
                with self._lock:
                    self.records.append(record)
                if not record[1] and self.pause_s > 0:
                    time.sleep(self.pause_s)

    def snapshot(self) -> list[tuple[float, bool, str]]:
        with self._lock:
            return list(self.records)

    @property
    def ok(self) -> int:
        return sum(1 for _, ok, _ in self.snapshot() if ok)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.snapshot() if not ok)

    def __enter__(self) -> Apps:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 10)


def finish(json_path: Path, data: dict[str, Any], draw: Callable[[dict[str, Any], Path], None] | None) -> dict[str, Any]:
    """Write the benchmark's JSON, stamped with its provenance (commit, machine, date, load; see
    edgefleet.bench.results), and, unless ``draw`` is None, its plot beside it (same name, .png)."""
    from edgefleet.bench.results import provenance

    data["provenance"] = provenance()
    write_json(json_path, data)
    if draw is not None:
        draw(data, json_path.with_suffix(".png"))
    return data


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class CommandClient:
    """Sends deploy commands straight to an agent and waits for the ack (benchmarks need no coordinator)."""

    def __init__(self, settings: MqttSettings, topics: Topics) -> None:
        self.topics = topics
        self.acks: dict[str, Ack] = {}
        self.births: set[str] = set()
        self.link = MqttLink(settings, client_id=f"ef-bench-{os.getpid()}-{time.monotonic_ns() % 10**6}")
        self.link.subscribe(topics.all_acks, self._on_ack, qos=1)
        self.link.subscribe(topics.all_status, self._on_status, qos=1)
        self.link.start()
        if not self.link.wait_connected(10):
            raise RuntimeError("benchmark client could not connect to the broker")

    def _on_ack(self, msg: Inbound) -> None:
        ack: Ack = decode(msg.payload, Ack)
        self.acks[ack.command_id] = ack

    def _on_status(self, msg: Inbound) -> None:
        if b'"birth"' in msg.payload:
            self.births.add(self.topics.parse(msg.topic).name)

    def wait_online(self, device_id: str, timeout: float = 30.0) -> None:
        _wait(lambda: device_id in self.births, timeout, f"agent {device_id} did not come online")

    def deploy(self, device_id: str, spec: TenantSpec, timeout: float = 60.0) -> Ack:
        cid = f"bench-{spec.name}-{time.monotonic_ns()}"
        self.link.publish(
            self.topics.commands(device_id),
            encode(Deploy(command_id=cid, device_id=device_id, tenant=spec, issued_at=time.time())),
            qos=1,
        )
        _wait(lambda: cid in self.acks, timeout, f"no ack for deploy of {spec.name} on {device_id}")
        ack = self.acks[cid]
        if not ack.ok:
            raise RuntimeError(f"deploy of {spec.name} failed: {ack.code}: {ack.message}")
        return ack

    def close(self) -> None:
        self.link.stop()


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


@dataclass
class LoadResult:
    completed: int
    errors: dict[str, int]
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


async def closed_loop(
    call: Callable[[], Any], *, concurrency: int, duration_s: float, warmup_s: float = 0.5
) -> LoadResult:
    """``concurrency`` callers each issuing the next request when the last one returns."""
    errors: dict[str, int] = {}
    lat: list[float] = []
    batches: list[int] = []
    measuring = False
    stop_at = 0.0

    async def caller() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at and measuring:
                return
            try:
                meta = await call()
                if measuring:
                    lat.append(time.perf_counter() - t0)
                    if isinstance(meta, dict) and "batch" in meta:
                        batches.append(int(meta["batch"]))
            except Exception as exc:
                key = getattr(getattr(exc, "code", None), "value", type(exc).__name__)
                errors[str(key)] = errors.get(str(key), 0) + 1

    # warm-up phase
    stop_at = time.perf_counter() + warmup_s
    measuring = True
    lat.clear()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    lat.clear()
    batches.clear()
    errors.clear()
    t_start = time.perf_counter()
    stop_at = t_start + duration_s
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    return LoadResult(len(lat), errors, elapsed, lat, batches)


def temp_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


__all__ = [
    "Apps",
    "CommandClient",
    "CpuMeter",
    "LoadResult",
    "PrivateBroker",
    "closed_loop",
    "finish",
    "machine",
    "percentiles",
    "pyplot",
    "spawn_agent",
    "temp_workdir",
    "write_json",
]

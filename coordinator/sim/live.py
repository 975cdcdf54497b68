"""The live fleet simulation: real agent processes playing device kinds, over a real broker.

Where the discrete-event mode replaces the agents and the network with events, this mode replaces
only the hardware. A private Mosquitto, the coordinator process (``placement = "predicted-latency"``)
and one ``edgefleet-agent`` process per simulated device run as in production (``LocalFleet``); each
agent reports its kind and budget and serves the zoo models through fakes that sleep the calibrated
book's service times (``edgefleet.coordinator.sim.devices``), so its scheduler, batching, memory manager,
telemetry and MQTT paths are the real ones. Tenants are deployed through the operator API, apps send
Poisson arrivals through the asyncio SDK, an agent can be SIGKILLed half-way, and the report says where
each tenant ran, what its apps measured against its SLO and the book, and how long failover took.
Sized for a small machine: sleeping fakes cost no CPU, so the load is the agents' own request path.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import VARIANT, build_book
from edgefleet.coordinator.sim.devices import (
    LiveDevice,
    ModelShape,
    agent_plan,
    fake_models,
    fake_path,
    live_devices,
)
from edgefleet.coordinator.sim.livereport import Call, served_again, summarise
from edgefleet.coordinator.sim.scenario import SLO_MS
from edgefleet.demo.load import open_loop
from edgefleet.localfleet import LocalFleet
from edgefleet.sdk import AsyncInferenceClient, BrokerUnavailable, ClientClosed, InferenceError
from edgefleet.wire import TenantSpec


@dataclass(frozen=True)
class LiveScenario:
    devices: int | None = None  # devices taking the kinds in turn; None: ``per_kind`` of every kind
    per_kind: int = 1
    tenants: int = 8  # models taken in a seeded order, each model once before any twice
    seconds: float = 30.0  # of load, after the fleet is up and the tenants are deployed
    rate_rps: tuple[float, float] = (1.0, 4.0)  # uniform range of each tenant's Poisson rate
    kill: int = 1  # agents SIGKILLed (those hosting the most tenants) at ``kill_at``
    kill_at: float | None = None  # seconds into the load; default: a third of the way
    timeout_s: float = 2.0  # an app call unanswered this long fails (no_reply)
    telemetry_period_s: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        live_devices(count=self.devices, per_kind=self.per_kind)  # raises on a bad count
        n = self.devices if self.devices is not None else 4 * self.per_kind
        if self.tenants < 1 or self.seconds <= 0 or self.timeout_s <= 0:
            raise ValueError("a live simulation needs tenants >= 1, seconds > 0 and timeout_s > 0")
        if not 0 < self.rate_rps[0] <= self.rate_rps[1]:
            raise ValueError(f"rate range must be 0 < low <= high, got {self.rate_rps}")
        if not 0 <= self.kill < n:
            raise ValueError(f"can kill 0 to {n - 1} of {n} devices, not {self.kill}")
        if self.kill_at is not None and not 0 < self.kill_at < self.seconds:
            raise ValueError(f"kill_at must be inside the {self.seconds:g} s of load")

    @property
    def kill_at_s(self) -> float:
        return self.kill_at if self.kill_at is not None else self.seconds / 3


def tenant_plan(sc: LiveScenario) -> list[tuple[TenantSpec, float]]:
    """(spec, offered rps) of every tenant: models in a seeded order, SLOs of the scenario table."""
    rng = random.Random(sc.seed)
    models = sorted(SLO_MS)
    rng.shuffle(models)
    out = []
    for j in range(sc.tenants):
        model = models[j % len(models)]
        spec = TenantSpec(name=f"t{j:02d}-{model}", model=model, slo_ms=SLO_MS[model], variant=VARIANT)
        out.append((spec, round(rng.uniform(*sc.rate_rps), 2)))
    return out


def zoo_shapes() -> tuple[ModelShape, ...]:
    """Every zoo model's runtime, tensors and fp32 size, from the catalog (this machine's if fetched)."""
    from edgefleet.zoo import load_catalog

    shapes = []
    for m in load_catalog().models:
        rec = m.variant(VARIANT)
        size = rec.size_bytes if rec.size_bytes is not None else m.source.size_bytes
        shapes.append(ModelShape(m.name, m.runtime, tuple((t.name, t.dtype, t.shape) for t in m.inputs),
                                 tuple((t.name, t.dtype, t.shape) for t in m.outputs), int(size)))
    return tuple(shapes)


def write_fakes(root: Path, devices: tuple[LiveDevice, ...], book: PerfBook) -> dict[str, Path]:
    """One folder of fake models per simulated kind; returns kind -> folder."""
    shapes = zoo_shapes()
    folders: dict[str, Path] = {}
    for d in devices:
        if d.kind.reported in folders:
            continue
        folder = (root / d.kind.reported).resolve()
        for model, desc in fake_models(shapes, book, d.kind).items():
            path = fake_path(folder, model)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(desc, indent=1))
        folders[d.kind.reported] = folder
    return folders


Say = Callable[[str], None]


def run_live(sc: LiveScenario, *, workdir: Path | None = None, say: Say = lambda _: None) -> dict[str, Any]:
    """Run ``sc`` and return the report (JSON-able). ``workdir`` keeps every config, log and database."""
    wall0 = time.perf_counter()
    book = build_book()
    folder = workdir or Path(tempfile.mkdtemp(prefix="edgefleet-simlive-"))
    devices = live_devices(count=sc.devices, per_kind=sc.per_kind)
    fakes = write_fakes(folder / "fakes", devices, book)
    plans = [agent_plan(d, fakes[d.kind.reported], telemetry_period_s=sc.telemetry_period_s) for d in devices]
    tenants = tenant_plan(sc)
    runtimes = {s.name: s.runtime for s in zoo_shapes()}
    fleet = LocalFleet(agents=plans, prefix="sim", workdir=folder, placement="predicted-latency",
                       device_timeout_s=15.0, keep_workdir=True)
    try:
        fleet.start()
        say(f"fleet up: {', '.join(f'{d.device_id}' for d in devices)}")
        deployed: dict[str, str | None] = {}
        for spec, rate in tenants:
            reply = fleet.deploy(spec)
            deployed[spec.name] = reply.device_id
            say(f"deployed {spec.name} ({rate:g} req/s, SLO {spec.slo_ms:g} ms) on {reply.device_id}")
        calls, failover = asyncio.run(_load(fleet, sc, tenants, say))
        status = fleet.status()
    finally:
        fleet.stop()
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    if failover.get("killed"):
        victims = failover["tenants"]
        failover["served_again_s"] = served_again(calls, victims, failover["killed"], failover["at_s"])
    report: dict[str, Any] = {"scenario": asdict(sc), "mode": "live", "placement": "predicted-latency",
                              "devices": {d.device_id: d.kind.reported for d in devices}}
    report.update(summarise(tenants=tenants, runtimes=runtimes, deployed=deployed, calls=calls, status=status, book=book,
                            seconds=sc.seconds, failover=failover))
    report["wall_s"] = round(time.perf_counter() - wall0, 2)
    return report


async def _load(fleet: LocalFleet, sc: LiveScenario, tenants: list[tuple[TenantSpec, float]],
                say: Say) -> tuple[list[Call], dict[str, Any]]:
    from edgefleet.zoo import sample_inputs

    calls: list[Call] = []
    stop = asyncio.Event()
    async with AsyncInferenceClient(fleet.settings, prefix=fleet.prefix, connect_timeout_s=30) as client:
        t0 = time.monotonic()
        apps = [asyncio.create_task(_app(client, spec, rate, dict(sample_inputs(spec.model)), sc, seed, t0,
                                         calls, stop)) for seed, (spec, rate) in enumerate(tenants)]
        killer = asyncio.create_task(_kill(fleet, sc, t0, stop, say)) if sc.kill else None
        await asyncio.sleep(sc.seconds)
        stop.set()
        await asyncio.gather(*apps)
        failover = await killer if killer is not None else {"killed": [], "tenants": []}
    return calls, failover


async def _app(client: AsyncInferenceClient, spec: TenantSpec, rate: float, feeds: dict[str, Any],
               sc: LiveScenario, seed: int, t0: float, calls: list[Call], stop: asyncio.Event) -> None:
    """Poisson arrivals at ``rate`` until ``stop`` (open loop), then wait for the calls in flight."""
    rng = random.Random(sc.seed * 1000 + seed)

    async def one() -> None:
        try:
            r = await client.infer_with_meta(spec.name, feeds, timeout_s=sc.timeout_s)
        except InferenceError as exc:
            calls.append(Call(spec.name, time.monotonic() - t0, False, exc.code.value))
        except (BrokerUnavailable, ClientClosed) as exc:
            calls.append(Call(spec.name, time.monotonic() - t0, False, type(exc).__name__))
        else:
            calls.append(Call(spec.name, time.monotonic() - t0, True, r.device or "?", r.latency_ms,
                              float(r.meta.get("service_ms", 0.0)), r.batch or 1))

    await open_loop(rate, one, stop, rng=rng,
                    backlog=lambda: calls.append(Call(spec.name, time.monotonic() - t0, False, "client_backlog")))


async def _kill(fleet: LocalFleet, sc: LiveScenario, t0: float, stop: asyncio.Event, say: Say) -> dict[str, Any]:
    """At ``kill_at`` SIGKILL the agents hosting the most tenants; time until the coordinator runs each
    of their tenants on a live device again."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t0 + sc.kill_at_s - time.monotonic()))
    status = await loop.run_in_executor(None, fleet.status)
    ranked = sorted((d for d in status.devices if d.online), key=lambda d: (-len(d.tenants), d.device_id))
    killed = [d.device_id for d in ranked[:sc.kill]]
    victims = sorted(t.name for t in status.tenants if t.device_id in killed)
    for device_id in killed:
        await loop.run_in_executor(None, fleet.kill_agent, device_id)
    at = time.monotonic() - t0
    say(f"killed {', '.join(killed)} at {at:.1f} s (SIGKILL), hosting {', '.join(victims) or 'nothing'}")
    replaced: dict[str, float] = {}
    while len(replaced) < len(victims) and not stop.is_set():
        status = await loop.run_in_executor(None, fleet.status)
        now = time.monotonic() - t0
        for t in status.tenants:
            if t.name in victims and t.name not in replaced and t.state == "running" \
                    and t.device_id is not None and t.device_id not in killed:
                replaced[t.name] = round(now - at, 3)
                say(f"{t.name} running again on {t.device_id}, {now - at:.1f} s after the kill")
        await asyncio.sleep(0.5)
    return {"killed": killed, "at_s": round(at, 3), "tenants": victims, "replaced_s": replaced,
            "unrecovered": sorted(set(victims) - replaced.keys()),
            "max_replaced_s": max(replaced.values()) if replaced else None}

"""A fleet scenario: mixed devices boot, tenants are deployed over time, devices die, and what the
coordinator made of it is measured (placement, failover time, SLO misses, command traffic).

The models and their sizes and runtimes come from the calibration table, so the simulation needs
neither the zoo catalog nor any model file; tenants' rates and SLOs are drawn from a seeded generator.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgefleet.coordinator.fleet import ModelFacts
from edgefleet.coordinator.models import StaticModels
from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import VARIANT, build_book, read
from edgefleet.coordinator.placement import MostFreeMemory, Placement
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement, NullModel, PerfModel
from edgefleet.coordinator.sim.agents import KINDS, SimAgent
from edgefleet.coordinator.sim.world import World, WorldConfig
from edgefleet.wire import Telemetry, TenantSpec

PLACEMENTS = ("most-free-memory", "predicted-latency")
SLO_MS = {  # p95 objectives a tenant of each model asks for
    "ocr-det": 250.0, "ocr-rec": 250.0, "ocr-cls": 60.0, "vad": 30.0,
    "face-detect": 60.0, "selfie-seg": 100.0, "hand-landmark": 120.0, "pose-landmark": 200.0,
}
RATE_RPS = (0.5, 8.0)  # uniform range of a tenant's offered rate


@dataclass(frozen=True)
class Scenario:
    devices: int = 50
    tenants: int = 200
    seconds: float = 120.0
    placement: str = "most-free-memory"
    kill: int = 1  # devices killed (those hosting the most tenants) at ``kill_at``
    kill_at: float | None = None  # seconds from the start; default: half-way
    deploy_over: float | None = None  # tenants are deployed evenly over this span; default: a quarter
    seed: int = 1
    telemetry_period_s: float = 10.0
    device_timeout_s: float = 60.0
    will_delay_s: float = 15.0

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}")
        if self.devices < 1 or self.tenants < 0 or self.seconds <= 0 or not 0 <= self.kill <= self.devices:
            raise ValueError("need devices >= 1, tenants >= 0, seconds > 0 and 0 <= kill <= devices")


def calibrated_models() -> StaticModels:
    """Every model of the calibration table, with its runtime and size, as the coordinator's lookup."""
    models = {m: v for m, v in read()["models"].items() if not m.startswith("_")}
    return StaticModels({(m, VARIANT): ModelFacts(m, VARIANT, v["runtime"], int(v["size_bytes"]))
                         for m, v in models.items()})


def _placement(name: str, book: PerfBook) -> tuple[Placement, PerfModel]:
    if name == "predicted-latency":
        return ModelPlacement(), LearnedModel(book)
    return MostFreeMemory(), NullModel()


class _Recorder:
    """Per telemetry window: how many tenant windows were over their SLO (p95 > slo_ms)."""

    def __init__(self, start: float, period: float) -> None:
        self.start, self.period = start, period
        self.windows: dict[int, list[int]] = {}  # window index -> [tenant windows, over SLO]

    def __call__(self, t: Telemetry) -> None:
        slot = self.windows.setdefault(int((t.window_end - self.start) // self.period), [0, 0])
        for w in t.tenants:
            if w.completions or w.shed:
                slot[0] += 1
                slot[1] += w.latency_p95_ms > w.slo_ms


def run_scenario(sc: Scenario) -> dict[str, Any]:
    """Run ``sc`` and return its report (JSON-ready)."""
    wall0 = time.perf_counter()
    rng = random.Random(sc.seed)
    book = build_book()
    models = calibrated_models()
    placement, perf = _placement(sc.placement, book)
    config = WorldConfig(telemetry_period_s=sc.telemetry_period_s, device_timeout_s=sc.device_timeout_s,
                         will_delay_s=sc.will_delay_s)
    world = World(models=models, placement=placement, model=perf, config=config, seed=sc.seed)
    t0 = world.start
    rates: dict[str, float] = {}
    for i in range(sc.devices):
        kind = KINDS[i % len(KINDS)]
        agent = SimAgent(f"dev{i:05d}", kind, runtimes=("onnxruntime", "litert"), models=models, book=book,
                         rates=rates, rng=random.Random(rng.random()))
        world.add(agent, t0 + rng.uniform(0.0, 2.0))
    names = sorted(SLO_MS)
    deploy_over = sc.deploy_over if sc.deploy_over is not None else sc.seconds / 4
    specs: list[TenantSpec] = []
    for j in range(sc.tenants):
        model = rng.choice(names)
        spec = TenantSpec(name=f"t{j:05d}-{model}", model=model, slo_ms=SLO_MS[model], variant=VARIANT)
        rates[spec.name] = round(rng.uniform(*RATE_RPS), 2)
        specs.append(spec)
        at = t0 + 3.0 + deploy_over * j / max(sc.tenants, 1)
        world.queue.at(at, functools.partial(_deploy, world, spec))
    recorder = _Recorder(t0, sc.telemetry_period_s)
    world.window_hooks.append(recorder)

    kill_at = t0 + (sc.kill_at if sc.kill_at is not None else sc.seconds / 2)
    failover: dict[str, Any] = {"killed": [], "tenants": 0}
    if sc.kill:
        world.run_until(kill_at - 1e-6)
        failover = _kill(world, sc.kill, kill_at)
    world.run_until(t0 + sc.seconds)
    return _report(sc, world, recorder, failover, time.perf_counter() - wall0)


def _deploy(world: World, spec: TenantSpec) -> None:
    with world.store.atomic():
        world.engine.tenants.deploy(spec)


def _kill(world: World, count: int, at: float) -> dict[str, Any]:
    """Kill the ``count`` live devices hosting the most tenants, and time how long until each of their
    tenants runs again on a live device."""
    load = sorted(((len(world.store.tenants_on(d)), d) for d in world.online()), key=lambda x: (-x[0], x[1]))
    killed = [d for _, d in load[:count]]
    victims = {t.name for d in killed for t in world.store.tenants_on(d)}
    for d in killed:
        world.kill(d, at)
    back: dict[str, float] = {}

    def check() -> None:
        for name in sorted(victims - back.keys()):
            row = world.store.tenant(name)
            if row is None or (row.state == "running" and row.device_id is not None
                               and row.device_id not in killed and world.agents[row.device_id].alive):
                back[name] = world.now - at

    world.queue.every(0.5, check, first=at, until=lambda: len(back) == len(victims))
    return {"killed": killed, "at_s": at - world.start, "tenants": len(victims), "_back": back}


def _report(sc: Scenario, world: World, rec: _Recorder, failover: dict[str, Any], wall_s: float) -> dict[str, Any]:
    rows = world.store.tenants()
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    live = {d for d, a in world.agents.items() if a.alive}
    running_live = sum(1 for r in rows if r.state == "running" and r.device_id in live)
    back: dict[str, float] = failover.pop("_back", {})
    times = sorted(back.values())
    if failover.get("tenants"):
        failover.update(replaced=len(back), unrecovered=failover["tenants"] - len(back),
                        time_to_replace_s={"max": max(times) if times else None,
                                           "median": statistics.median(times) if times else None})
    per_window = [{"t_s": (i + 1) * sc.telemetry_period_s, "tenant_windows": n, "over_slo": bad}
                  for i, (n, bad) in sorted(rec.windows.items())]
    deploys = [s for s in world.settled if s[2] == "deploy"]
    return {
        "scenario": asdict(sc),
        "simulated_s": world.now - world.start,
        "wall_s": round(wall_s, 3),
        "events": world.queue.processed,
        "devices": {"total": len(world.agents), "alive": len(live), "online_at_coordinator": len(world.online())},
        "tenants": {
            "total": len(rows),
            "placed": sum(1 for r in rows if r.device_id is not None and r.state != "unplaced"),
            "unplaced": states.get("unplaced", 0),
            "running": states.get("running", 0),
            "running_on_live_devices": running_live,
            "states": states,
            "deploys_settled_ok": sum(1 for s in deploys if s[3].ok),
            "deploys_settled_failed": sum(1 for s in deploys if not s[3].ok),
        },
        "failover": failover,
        "slo": {
            "tenant_windows": sum(w["tenant_windows"] for w in per_window),
            "over_slo": sum(w["over_slo"] for w in per_window),
            "per_window": per_window,
        },
        "commands": {"sends": world.outbox.sends, "resends": world.outbox.resends,
                     "stray_acks": world.engine.stray_acks, **asdict(world.traffic)},
        "rebalance_moves": len(world.engine.rebalance_moves),
    }

"""``edgefleet bench grants``: what dynamic security costs a deploy and a migration, and what the
broker's enforcement of a grant costs the other tenants of the device it is made on.

Two secured fleets run side by side on this machine (``LocalFleet``: private Mosquitto, coordinator,
two agent processes each), with the same credentials layout and the same models: ``static`` (password
file and static ACL: nothing changes at run time; the baseline) and ``dynamic`` (Mosquitto's dynamic
security plugin: the coordinator grants a tenant's role to a device before its Deploy and revokes it
after the Undeploy). Operations alternate between the two fleets, so both see the same machine load.

Metrics, defined before the run:

- ``deploy_ms``: operator call ``deploy`` to its final answer (the tenant serves), per fleet;
  ``grant_added_deploy_ms`` = median(dynamic) - median(static).
- ``migrate_ms``: operator call ``migrate`` to its final answer (the target serves; the source's
  Undeploy and revoke follow), per fleet; ``grant_added_migrate_ms`` likewise.
- ``control_round_trip_ms``: one ``$CONTROL/dynamic-security/v1`` request to its answer (a listRoles),
  the broker's share of a grant.
- ``lost_requests_planned_migration``: failed calls of the moving tenant, 4 closed-loop callers,
  while it is moved back and forth (goal 0).
- ``bystander_failed_calls``: failed calls (1 s patience) of a tenant already on the device a grant is
  made on, one caller in a closed loop, per grant (Mosquitto 2.0 disconnects a client to apply a change
  of its roles); ``bystander_max_gap_ms``: the longest time without an answer around those grants.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edgefleet.bench.harness import finish, machine, pyplot
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.sdk import InferenceClient, InferenceError
from edgefleet.wire import TenantSpec
from edgefleet.zoo import sample_inputs

MODEL = "vad"  # the fastest zoo model to load: the grant is a larger share of what is measured
MODES = ("static", "dynamic")
MOVERS = [f"mover-{i}" for i in range(4)]
APPS = {**{m: ["moving"] for m in MOVERS}, "watcher": ["bystander"]}


class Caller:
    """Closed-loop calls of one tenant as one app; records (time, ok) per call."""

    def __init__(self, fleet: LocalFleet, app: str, tenant: str, timeout_s: float) -> None:
        self.records: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fleet, app, tenant, timeout_s), daemon=True)
        self._thread.start()

    def _run(self, fleet: LocalFleet, app: str, tenant: str, timeout_s: float) -> None:
        feeds = dict(sample_inputs(MODEL))
        with InferenceClient(fleet.client_settings(app), prefix=fleet.prefix, client_id=app) as client:
            while not self._stop.is_set():
                try:
                    client.infer(tenant, feeds, timeout_s=timeout_s)
                    self.records.append((time.monotonic(), True))
                except InferenceError:
                    self.records.append((time.monotonic(), False))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def ok(self) -> int:
        return sum(1 for _, ok in self.records if ok)

    def failed_between(self, t0: float, t1: float) -> int:
        return sum(1 for t, ok in self.records if t0 <= t <= t1 and not ok)

    def max_gap_ms(self, t0: float, t1: float) -> float:
        times = [t0] + [t for t, ok in self.records if ok and t0 <= t <= t1] + [t1]
        return max(b - a for a, b in itertools.pairwise(times)) * 1e3


def _wait(cond: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    reply = fn()
    assert reply.ok, reply
    return (time.perf_counter() - t0) * 1e3


def _summary(ms: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ms), "mean": statistics.fmean(ms), "min": min(ms), "max": max(ms),
            "n": len(ms)}


def _control_round_trips(fleet: LocalFleet, n: int) -> list[float]:
    from edgefleet.coordinator.grants.mosquitto import MosquittoGrants

    g = MosquittoGrants(fleet.client_settings("coordinator"), fleet.prefix, f"bench-{uuid.uuid4().hex[:6]}")
    g.start()
    try:
        assert g.link.wait_connected(10)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            answer = g._request([("listRoles", {"verbose": False, "count": -1, "offset": 0})])
            out.append((time.perf_counter() - t0) * 1e3)
            assert not isinstance(answer, str), answer
        return out
    finally:
        g.stop()


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    trials = 3 if quick else 10
    plans = [AgentPlan("g-a", budget_mib=64, telemetry_period_s=1.0, workers=1),
             AgentPlan("g-b", budget_mib=64, telemetry_period_s=1.0, workers=1)]
    fleets = {mode: LocalFleet(agents=plans, prefix=f"gr{mode[0]}{uuid.uuid4().hex[:5]}", secure=True,
                               security_mode=mode, apps=APPS) for mode in MODES}
    deploy_ms: dict[str, list[float]] = {m: [] for m in MODES}
    migrate_ms: dict[str, list[float]] = {m: [] for m in MODES}
    lost: dict[str, int] = {}
    bystander: dict[str, dict[str, Any]] = {}
    try:
        for f in fleets.values():
            f.start()
        # deploys of a fresh tenant, alternating between the fleets
        for i in range(trials):
            for mode, f in fleets.items():
                name = f"fresh-{i}"
                deploy_ms[mode].append(_timed(lambda f=f, name=name: f.deploy(TenantSpec(name=name, model=MODEL,
                                                                                         slo_ms=200))))
                assert f.undeploy(name).ok
        # migrations under load, alternating; the moving tenant's callers count what is lost
        callers: dict[str, list[Caller]] = {}
        for mode, f in fleets.items():
            f.deploy(TenantSpec(name="moving", model=MODEL, slo_ms=200))
            callers[mode] = [Caller(f, app, "moving", 5.0) for app in MOVERS]
            _wait(lambda c=callers[mode]: sum(x.ok for x in c) > 20, 30)
        for _ in range(trials):
            for mode, f in fleets.items():
                here = next(t.device_id for t in f.status().tenants if t.name == "moving")
                there = "g-b" if here == "g-a" else "g-a"
                migrate_ms[mode].append(_timed(lambda f=f, there=there: f.migrate("moving", there)))
                time.sleep(0.5)  # the source's Undeploy (and revoke) completes
        for mode, f in fleets.items():
            for c in callers[mode]:
                c.stop()
            lost[mode] = sum(1 for c in callers[mode] for _, ok in c.records if not ok)
            assert f.undeploy("moving").ok
        # grants made on a device that already serves another tenant
        for mode, f in fleets.items():
            device = f.deploy(TenantSpec(name="bystander", model=MODEL, slo_ms=200), device_id="g-a").device_id
            watcher = Caller(f, "watcher", "bystander", 1.0)
            _wait(lambda w=watcher: w.ok > 20, 30)
            t0 = time.monotonic()
            for i in range(trials):
                f.deploy(TenantSpec(name=f"newcomer-{i}", model=MODEL, slo_ms=200), device_id=device)
                assert f.undeploy(f"newcomer-{i}").ok
                time.sleep(0.3)
            t1 = time.monotonic()
            time.sleep(1.0)
            watcher.stop()
            bystander[mode] = {"grants": 2 * trials, "failed_calls": watcher.failed_between(t0, t1 + 1.0),
                               "ok_calls": watcher.ok, "max_gap_ms": watcher.max_gap_ms(t0, t1)}
        round_trips = _control_round_trips(fleets["dynamic"], 50 if quick else 200)
    finally:
        for f in fleets.values():
            f.stop()
    dep = {m: _summary(v) for m, v in deploy_ms.items()}
    mig = {m: _summary(v) for m, v in migrate_ms.items()}
    data = {
        "benchmark": "grants",
        "model": MODEL,
        "trials": trials,
        "goal": {"lost_requests_planned_migration": 0},
        "grant_added_deploy_ms": dep["dynamic"]["median"] - dep["static"]["median"],
        "grant_added_migrate_ms": mig["dynamic"]["median"] - mig["static"]["median"],
        "control_round_trip_ms": statistics.median(round_trips),
        "lost_requests_planned_migration": lost["dynamic"],
        "lost_requests_planned_migration_static": lost["static"],
        "bystander_failed_calls": bystander["dynamic"]["failed_calls"],
        "bystander_failed_calls_static": bystander["static"]["failed_calls"],
        "bystander_max_gap_ms": bystander["dynamic"]["max_gap_ms"],
        "bystander_max_gap_ms_static": bystander["static"]["max_gap_ms"],
        "deploy_ms": dep,
        "migrate_ms": mig,
        "bystander": bystander,
        "runs": {"deploy_ms": deploy_ms, "migrate_ms": migrate_ms, "control_round_trip_ms": round_trips},
        "machine": machine(),
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("deploy_ms", "migrate_ms"), ("deploy", "migration"), strict=True):
        runs = data["runs"][key]
        ax.boxplot([runs[m] for m in MODES])
        ax.set_xticks([1, 2], list(MODES))
        ax.set_ylabel("ms, operator call to final answer")
        ax.set_title(f"{title}: +{data['grant_added_' + key.split('_')[0] + '_ms']:.0f} ms with dynamic security")
    fig.suptitle(f"grants: control round trip {data['control_round_trip_ms']:.2f} ms; bystander failed calls "
                 f"{data['bystander_failed_calls']} (static {data['bystander_failed_calls_static']}) over "
                 f"{data['bystander']['dynamic']['grants']} grant changes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""``edgefleet bench failover``: how long a tenant is unreachable when its device fails, and what a
planned migration loses.

A real fleet on this machine (``LocalFleet``: private Mosquitto, coordinator, two agent processes),
one tenant on a real zoo model, and apps calling it in closed loops through the SDK. Faults:

- ``crash``: SIGKILL of the agent process. The kernel closes its socket, so the broker publishes the
  agent's last will at once.
- ``hang``: SIGSTOP of the agent process (a hung box or a cut cable): the socket stays open and the
  broker only notices when 1.5 keepalive periods pass without a packet.

``recovery_seconds`` runs from the fault to the first answer from the other device; the goal is at most
2 x keepalive + 1 s. ``lost_requests_planned_migration`` counts failed calls while the tenant is moved
back and forth, make-before-break, under the same load (goal 0).

There are ``TRIALS`` trials, each a fresh fleet with every setting at its default (telemetry each second,
unconfirmed windows resent after 15 s, the coordinator's device timeout) running the three in turn.
After them, once every window is stored or ``SETTLE_S`` has passed, each agent's own ledger of the
telemetry windows it produced (every boot, a killed one included) is compared with what the
coordinator stored (edgefleet.bench.metrics.ledger_diff, as in ``bench chaos``): ``telemetry_lost`` and
``telemetry_duplicated``. Headlines: recovery times are the worst trial's (a trial that never recovered
is ``inf``), counts are totals over trials; ``per_trial`` gives min / median / max of every figure.
"""

from __future__ import annotations

import math
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from edgefleet.bench.chaos import SETTLE_S, _compare
from edgefleet.bench.harness import Apps, finish, machine, pyplot
from edgefleet.bench.metrics import spread
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.wire import TenantSpec

KEEPALIVE_S = 5.0  # what LocalFleet gives its agents ([mqtt] keepalive_s)
MODEL = "ocr-cls"
CALLERS = 4
TIMEOUT_S = 0.5  # the apps' patience per call (also the resolution of recovery_seconds)
TRIALS = 5


def _wait(cond: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _fault(fleet: LocalFleet, kind: str, settle_s: float) -> dict[str, Any]:
    name = f"fo-{kind}"
    source = fleet.deploy(TenantSpec(name=name, model=MODEL, slo_ms=200.0)).device_id
    assert source is not None
    survivor = next(p.device_id for p in fleet.agents if p.device_id != source)
    child = fleet.children[source]
    assert child.proc is not None
    with Apps(fleet.settings, fleet.prefix, {name: MODEL}, callers=CALLERS, timeout_s=TIMEOUT_S) as load:
        _wait(lambda: load.ok > 50, 30)
        t_fault = time.monotonic()
        child.proc.send_signal(signal.SIGKILL if kind == "crash" else signal.SIGSTOP)
        recovered = _wait(lambda: any(at > t_fault and ok and dev == survivor
                                      for at, ok, dev in load.snapshot()), 60)
        time.sleep(settle_s)
    records = load.snapshot()
    first = min((at for at, ok, dev in records if at > t_fault and ok and dev == survivor), default=None)
    failed_after = [at for at, ok, _ in records if at > t_fault and not ok]
    # bring the failed device back and clear the stage for the next trial
    if kind == "hang":
        child.proc.send_signal(signal.SIGCONT)
    else:
        fleet.start_agent(next(p for p in fleet.agents if p.device_id == source))
    fleet.wait_online([source], 60)
    fleet.undeploy(name)
    return {
        "fault": kind,
        "source": source,
        "survivor": survivor,
        "recovered": recovered,
        "recovery_seconds": (first - t_fault) if first is not None else None,
        "failed_requests": len(failed_after),
        "ok_requests": sum(1 for _, ok, _ in records if ok),
        "timeline": [(round(at - t_fault, 4), ok, dev) for at, ok, dev in records],
    }


def _planned(fleet: LocalFleet, moves: int) -> dict[str, Any]:
    name = "fo-planned"
    first = fleet.deploy(TenantSpec(name=name, model=MODEL, slo_ms=200.0)).device_id
    devices = [p.device_id for p in fleet.agents]
    t0 = time.monotonic()
    move_times: list[float] = []
    move_seconds: list[float] = []
    with Apps(fleet.settings, fleet.prefix, {name: MODEL}, callers=CALLERS, timeout_s=TIMEOUT_S) as load:
        _wait(lambda: len(load.snapshot()) > 50, 30)
        here = first
        for _ in range(moves):
            target = next(d for d in devices if d != here)
            started = time.monotonic()
            reply = fleet.migrate(name, target)
            move_seconds.append(time.monotonic() - started)
            move_times.append(started - t0)
            if reply.ok:
                here = target
            time.sleep(1.0)
    records = load.snapshot()
    fleet.undeploy(name)
    return {
        "moves": moves,
        "move_seconds": move_seconds,
        "lost_requests": sum(1 for _, ok, _ in records if not ok),
        "ok_requests": sum(1 for _, ok, _ in records if ok),
        "move_times": move_times,
        "timeline": [(round(at - t0, 4), ok, dev) for at, ok, dev in records],
    }


def _trial(trial: int, quick: bool) -> dict[str, Any]:
    plans = [AgentPlan("fo-a", budget_mib=128), AgentPlan("fo-b", budget_mib=128)]  # defaults otherwise
    with LocalFleet(agents=plans, prefix=f"fo{trial}x{time.monotonic_ns() % 10**8}") as fleet:
        crash = _fault(fleet, "crash", settle_s=1.0)
        hang = _fault(fleet, "hang", settle_s=1.0)
        planned = _planned(fleet, moves=2 if quick else 6)
        # resends come at the default interval while windows keep being produced: the verdict is the
        # first comparison with nothing lost, or the last one when SETTLE_S runs out
        settle_start = time.monotonic()
        ledger = _compare(fleet)
        while ledger["lost"] and time.monotonic() - settle_start < SETTLE_S:
            time.sleep(0.5)
            ledger = _compare(fleet)
        settle_s = time.monotonic() - settle_start
    return {
        "trial": trial,
        "recovery_seconds_crash": crash["recovery_seconds"],
        "recovery_seconds_hang": hang["recovery_seconds"],
        "failed_requests_crash": crash["failed_requests"],
        "failed_requests_hang": hang["failed_requests"],
        "lost_requests_planned_migration": planned["lost_requests"],
        "planned_move_seconds_median": statistics.median(planned["move_seconds"]),
        "telemetry_lost": ledger["lost"],
        "telemetry_duplicated": ledger["duplicated"],
        "telemetry_unknown": ledger["unknown"],
        "settle_s": round(settle_s, 2),
        "ledger": ledger,
        "faults": {"crash": crash, "hang": hang, "planned": planned},
    }


FIGURES = ("recovery_seconds_crash", "recovery_seconds_hang", "failed_requests_crash", "failed_requests_hang",
           "lost_requests_planned_migration", "planned_move_seconds_median", "telemetry_lost",
           "telemetry_duplicated", "telemetry_unknown", "settle_s")


def _worst(values: list[float | None]) -> float:
    """The slowest recovery; a trial that never recovered is inf."""
    return max(math.inf if v is None else v for v in values)


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    trials = [_trial(i, quick) for i in range(1 if quick else TRIALS)]
    goal = 2 * KEEPALIVE_S + 1.0
    first = trials[0]["faults"]
    data: dict[str, Any] = {
        "benchmark": "failover",
        "quick": quick,
        "trials": len(trials),
        "model": MODEL,
        "callers": CALLERS,
        "call_timeout_s": TIMEOUT_S,
        "keepalive_seconds": KEEPALIVE_S,
        "configuration": "defaults (telemetry_period_s 1, telemetry_resend_s 15, device_timeout_s 15)",
        "recovery_goal_seconds": goal,
        "recovery_seconds": _worst([t["recovery_seconds_hang"] for t in trials]),  # the keepalive-bound case
        "recovery_seconds_crash": _worst([t["recovery_seconds_crash"] for t in trials]),
        "recovered_trials": sum(1 for t in trials if t["recovery_seconds_hang"] is not None
                                and t["recovery_seconds_crash"] is not None),
        "lost_requests_planned_migration": sum(t["lost_requests_planned_migration"] for t in trials),
        "planned_migration_requests_ok": sum(t["faults"]["planned"]["ok_requests"] for t in trials),
        "failed_requests_crash": sum(t["failed_requests_crash"] for t in trials),
        "failed_requests_hang": sum(t["failed_requests_hang"] for t in trials),
        "telemetry_lost": sum(t["telemetry_lost"] for t in trials),
        "telemetry_duplicated": sum(t["telemetry_duplicated"] for t in trials),
        "telemetry_unknown": sum(t["telemetry_unknown"] for t in trials),
        "telemetry_windows_produced": sum(t["ledger"]["produced"] for t in trials),
        "telemetry_windows_stored": sum(t["ledger"]["stored"] for t in trials),
        "per_trial": {f: spread([float(t[f]) for t in trials if t[f] is not None]) for f in FIGURES},
        "definitions": {
            "recovery_seconds": "fault to the first answer from the other device, worst trial (hang: SIGSTOP)",
            "telemetry_lost": "windows in the agents' own ledgers never stored by the coordinator, summed over "
                              "trials (a lost tail of a killed boot counts)",
        },
        "timelines_first_trial": first,
        "trials_detail": [{k: v for k, v in t.items() if k != "faults"} for t in trials],
        "machine": machine(),
        "goal": {"recovery_seconds": goal, "recovery_seconds_crash": goal, "lost_requests_planned_migration": 0,
                 "telemetry_lost": 0, "telemetry_duplicated": 0},
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=False)
    for ax, key, title in zip(axes, ("crash", "hang", "planned"),
                              ("agent SIGKILLed at t=0", "agent SIGSTOPped at t=0 (hang)",
                               "planned migrations (dashed: move started)"), strict=True):
        trial = data["timelines_first_trial"][key]
        devices = sorted({dev for _, ok, dev in trial["timeline"] if ok})
        for i, dev in enumerate(devices):
            xs = [t for t, ok, d in trial["timeline"] if ok and d == dev]
            ax.plot(xs, [i] * len(xs), "|", markersize=12, label=f"answered by {dev}")
        fails = [t for t, ok, _ in trial["timeline"] if not ok]
        ax.plot(fails, [-1] * len(fails), "rx", label="failed call")
        if key == "planned":
            for t in trial["move_times"]:
                ax.axvline(t, linestyle="--", color="grey")
        else:
            ax.axvline(0, color="red")
        ax.set_yticks([])
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"failover, first of {data['trials']} trials; worst recovery {data['recovery_seconds_crash']:.2f} s "
                 f"(crash), {data['recovery_seconds']:.2f} s (hang), goal <= {data['recovery_goal_seconds']:g} s; "
                 f"planned moves lost {data['lost_requests_planned_migration']}, telemetry lost "
                 f"{data['telemetry_lost']} of {data['telemetry_windows_produced']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

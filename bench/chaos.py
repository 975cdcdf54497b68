"""``edgefleet bench chaos``: faults under load on a real fleet, and one device at 5x its capacity.

A ``LocalFleet`` (private Mosquitto, coordinator, two agent processes, telemetry every 0.2 s) serves two
tenants to apps calling them in closed loops while, one after another:

1. the broker is SIGKILLed and restarted 2 s later (what it held in memory is gone);
2. a deploy is sent to an agent that is SIGKILLed 0.1 s later and restarted 1 s after that;
3. a make-before-break migration is started and the coordinator is SIGKILLed 0.1 s later, then restarted.

Then the ledger is read from the coordinator's SQLite file and the agents' acks:
``telemetry_lost`` — windows missing below the highest stored seq of every (device, boot);
``telemetry_duplicated`` — windows stored more than once; ``commands_duplicated`` — command ids applied
more than once plus tenants left running on two devices; ``crashes`` — fleet processes that died
without being killed by the benchmark. Goal: all 0.

Overload: one tenant on one device; its capacity is measured in a closed loop, then Poisson arrivals
at 5x that rate with a 1 s deadline. ``overload_goodput_ratio`` = answers within the deadline per second
/ capacity (goal >= 0.9); ``overload_unanswered`` counts requests that got neither a result nor an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Apps, CpuMeter, finish, machine, pyplot
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.mqtt import Inbound, MqttLink
from edgefleet.wire import Ack, Birth, OpDeploy, OpMigrate, TenantSpec, decode, decode_status

RESEND_S = 1.0


class Watch:
    """Every Ack and the latest birth of each device, as the agents published them."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.applied: dict[str, int] = {}
        self.births: dict[str, Birth] = {}
        self.lock = threading.Lock()
        self.link = MqttLink(fleet.settings, client_id=f"chaos-watch-{time.monotonic_ns() % 10**6}")
        self.link.subscribe(fleet.topics.all_acks, self._ack, qos=1)
        self.link.subscribe(fleet.topics.all_status, self._status, qos=1)
        self.link.start()
        self.link.wait_connected(10)

    def _ack(self, msg: Inbound) -> None:
        ack: Ack = decode(msg.payload, Ack)
        if ack.result == "applied":
            with self.lock:
                self.applied[ack.command_id] = self.applied.get(ack.command_id, 0) + 1

    def _status(self, msg: Inbound) -> None:
        if msg.payload:
            status = decode_status(msg.payload)
            if isinstance(status, Birth):
                with self.lock:
                    self.births[status.device_id] = status


def _wait(cond: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            if cond():
                return True
        time.sleep(0.1)
    return False


def _send_op(fleet: LocalFleet, op: OpDeploy | OpMigrate) -> threading.Thread:
    """Fire an operator call without waiting for its answer (it may never come: we kill things)."""
    def call() -> None:
        with contextlib.suppress(Exception):
            fleet.call(op, timeout_s=5.0)

    t = threading.Thread(target=call)
    t.start()
    return t


def _ledger(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT device_id, boot_id, COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM telemetry "
            "GROUP BY device_id, boot_id").fetchall()
    finally:
        conn.close()
    boots = [{"device": d, "boot": b, "rows": n, "distinct": k, "max_seq": m} for d, b, n, k, m in rows]
    return {
        "boots": boots,
        "windows_stored": sum(b["distinct"] for b in boots),
        "lost": sum(b["max_seq"] + 1 - b["distinct"] for b in boots),
        "duplicated": sum(b["rows"] - b["distinct"] for b in boots),
    }


def _faults(quick: bool) -> dict[str, Any]:
    extra = f"telemetry_resend_s = {RESEND_S}"
    plans = [AgentPlan("cx-a", budget_mb=128, telemetry_period_s=0.2, extra_toml=extra),
             AgentPlan("cx-b", budget_mb=128, telemetry_period_s=0.2, extra_toml=extra)]
    events: list[dict[str, Any]] = []
    with LocalFleet(agents=plans, prefix=f"cx{time.monotonic_ns() % 10**8}", device_timeout_s=30.0) as fleet:
        watch = Watch(fleet)
        fleet.deploy(TenantSpec(name="cx-cls", model="ocr-cls", slo_ms=500.0))
        fleet.deploy(TenantSpec(name="cx-vad", model="vad", slo_ms=500.0))
        killed: set[str] = set()
        with Apps(fleet.settings, fleet.prefix, {"cx-cls": "ocr-cls", "cx-vad": "vad"},
                  pause_after_failure_s=0.05) as apps:
            time.sleep(2.0)
            t0 = time.monotonic()
            fleet.restart_broker(kill=True, down_s=2.0)
            events.append({"fault": "broker SIGKILL, 2 s down", "at": t0})
            _wait(lambda: apps.ok > 0 and fleet.status() is not None, 30)
            time.sleep(2.0)

            pending = _send_op(fleet, OpDeploy(tenant=TenantSpec(name="cx-late", model="ocr-rec", slo_ms=500.0),
                                               device_id="cx-b"))
            time.sleep(0.1)
            fleet.kill_agent("cx-b")
            killed.add("cx-b")
            events.append({"fault": "agent SIGKILL 0.1 s after a deploy to it", "at": time.monotonic()})
            time.sleep(1.0)
            fleet.start_agent(plans[1])
            pending.join(10)
            _wait(lambda: {t.name: t.state for t in fleet.status().tenants}.get("cx-late") == "running", 60)

            source = next(t.device_id for t in fleet.status().tenants if t.name == "cx-cls")
            pending = _send_op(fleet, OpMigrate(tenant="cx-cls"))
            time.sleep(0.1)
            fleet.restart_coordinator(kill=True)
            events.append({"fault": f"coordinator SIGKILL 0.1 s into moving cx-cls off {source}",
                           "at": time.monotonic()})
            pending.join(10)
            time.sleep(3.0 if quick else 6.0)
        converged = _wait(lambda: all(t.state == "running" for t in fleet.status().tenants)
                          and _hosted_once(watch), 60)
        time.sleep(2 * RESEND_S + 1.0)  # let the last windows be confirmed or resent
        ledger = _ledger(fleet.workdir / "coordinator" / "coordinator.db")  # type: ignore[operator]
        crashes = [c.name for c in [*fleet.children.values(), fleet.coordinator] if c is not None and not c.alive]
        placement = {t.name: (t.device_id, t.state) for t in fleet.status().tenants}
        with watch.lock:
            applied_twice = sum(1 for n in watch.applied.values() if n > 1)
            hosts = {d: sorted(b.tenants) for d, b in watch.births.items()}
        watch.link.stop()
        return {
            "events": [{**e, "at": round(e["at"] - t0, 3)} for e in events],
            "converged": converged,
            "placement": placement,
            "hosted_by_device": hosts,
            "apps_ok": apps.ok,
            "apps_failed_during_faults": apps.failed,
            "ledger": ledger,
            "commands_applied_twice": applied_twice,
            "tenants_on_two_devices": _twice(hosts),
            "crashes": crashes,
            "killed_on_purpose": sorted(killed | {"coordinator", "broker"}),
        }


def _twice(hosts: dict[str, list[str]]) -> int:
    seen: dict[str, int] = {}
    for tenants in hosts.values():
        for t in tenants:
            seen[t] = seen.get(t, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def _hosted_once(watch: Watch) -> bool:
    with watch.lock:
        hosts = {d: list(b.tenants) for d, b in watch.births.items()}
    return _twice(hosts) == 0


async def _closed(settings: Any, prefix: str, tenant: str, feeds: Any, concurrency: int, seconds: float) -> float:
    from edgefleet.sdk import AsyncInferenceClient

    done = 0
    async with AsyncInferenceClient(settings, prefix=prefix) as client:
        stop = time.monotonic() + seconds

        async def one() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await client.infer(tenant, feeds, timeout_s=5.0)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return done / (time.monotonic() - start)


async def _open(settings: Any, prefix: str, tenant: str, feeds: Any, rate: float, seconds: float,
                deadline_s: float) -> dict[str, Any]:
    from edgefleet.sdk import AsyncInferenceClient, InferenceError, NoReply

    outcomes: dict[str, int] = {}
    ok_in_time = 0
    async with AsyncInferenceClient(settings, prefix=prefix) as client:
        rng = random.Random(7)
        tasks: list[asyncio.Task[None]] = []

        async def one() -> None:
            nonlocal ok_in_time
            t = time.monotonic()
            try:
                await client.infer(tenant, feeds, timeout_s=deadline_s)
                key = "ok"
                if time.monotonic() - t <= deadline_s:
                    ok_in_time += 1
            except NoReply:
                key = "unanswered"
            except InferenceError as exc:
                key = exc.code.value
            outcomes[key] = outcomes.get(key, 0) + 1

        start = time.monotonic()
        next_at = start
        while next_at < start + seconds:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return {"offered": len(tasks), "seconds": seconds, "outcomes": outcomes, "ok_within_deadline": ok_in_time}


def _overload(quick: bool) -> dict[str, Any]:
    import psutil

    from edgefleet.zoo import sample_inputs

    model = "ocr-rec"
    seconds = 5.0 if quick else 12.0
    with LocalFleet(agents=[AgentPlan("ov-a", budget_mb=128)], prefix=f"ov{time.monotonic_ns() % 10**8}") as fleet:
        fleet.deploy(TenantSpec(name="ov", model=model, slo_ms=1000.0))
        feeds = dict(sample_inputs(model))
        agent = psutil.Process(fleet.children["ov-a"].proc.pid)  # type: ignore[union-attr]
        capacity = asyncio.run(_closed(fleet.settings, fleet.prefix, "ov", feeds, 8, seconds / 2))
        rss_before = agent.memory_info().rss
        cpu = CpuMeter({"agent": agent.pid, "client": os.getpid(),
                        "broker": fleet.broker.pid if fleet.broker is not None else None})
        res = asyncio.run(_open(fleet.settings, fleet.prefix, "ov", feeds, 5 * capacity, seconds, 1.0))
        cpu_percent = cpu.percent()  # where the two cores went while offered 5x
        rss_after = agent.memory_info().rss
    goodput = res["ok_within_deadline"] / seconds
    return {
        "model": model,
        "capacity_rps": capacity,
        "offered_rps": res["offered"] / seconds,
        "goodput_rps": goodput,
        "goodput_ratio": goodput / capacity if capacity else 0.0,
        "outcomes": res["outcomes"],
        "cpu_percent_during_overload": cpu_percent,
        "agent_rss_mb_before": rss_before / 2**20,
        "agent_rss_mb_after": rss_after / 2**20,
    }


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    faults = _faults(quick)
    overload = _overload(quick)
    ledger = faults["ledger"]
    data: dict[str, Any] = {
        "benchmark": "chaos",
        "quick": quick,
        "telemetry_lost": ledger["lost"],
        "telemetry_duplicated": ledger["duplicated"],
        "telemetry_windows_stored": ledger["windows_stored"],
        "commands_duplicated": faults["commands_applied_twice"] + faults["tenants_on_two_devices"],
        "crashes": len(faults["crashes"]),
        "converged": faults["converged"],
        "overload_goodput_ratio": overload["goodput_ratio"],
        "overload_unanswered": overload["outcomes"].get("unanswered", 0),
        "faults": faults,
        "overload": overload,
        "machine": machine(),
    }
    return finish(json_path, data, _plot if plot else None)


def _plot(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["telemetry_lost", "telemetry_duplicated", "commands_duplicated", "crashes"]
    left.bar(names, [data[n] for n in names], color="tab:red")
    left.set_title(f"faults: {data['telemetry_windows_stored']} windows stored (goal: all bars 0)")
    left.tick_params(axis="x", rotation=20)
    ov = data["overload"]
    right.bar(["capacity", "offered", "goodput"], [ov["capacity_rps"], ov["offered_rps"], ov["goodput_rps"]])
    right.set_ylabel("requests/s")
    right.set_title(f"overload at 5x: goodput ratio {ov['goodput_ratio']:.2f} (goal >= 0.9)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

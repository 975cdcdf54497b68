"""``edgefleet bench ingest``: how many devices one coordinator keeps up with, at one telemetry window
per device every 5 s, and what a window costs it.

The judge is the real coordinator process (``python -m edgefleet.coordinator.main``) on a private Mosquitto,
fed by simulated devices: valid Births and Telemetry windows (2-4 tenants each, zoo models the
performance model knows) published QoS 1 on each device's own topics, exactly as agents do, with the
agents' resend rule (a window not confirmed ``RESEND_S`` after it was sent goes again). A window counts
as acknowledged when its ``TelemetryAck`` (sent by the coordinator after its database commit) reaches
the simulator. The simulator is cheap on purpose: a few processes, each with a few MQTT connections
that carry many devices' topics, payloads encoded once per device and patched per window.

The coordinator starts from a database that already assigns every simulated tenant to its device (a
coordinator restarted under a running fleet), so births settle without deploys and windows go through
the whole path: storage, the learning performance model (``placement = "predicted-latency"``), the
per-tenant records and the rebalancer's checks.

Phases, with metrics defined before the run:

- ``ceiling``: the same simulator against a null coordinator (the coordinator's own ingest client, the
  lean one where mqtt5 installs, answering every window with its TelemetryAck at once, no database),
  the offered rate raised step by step: the highest acknowledged rate that still kept up is what the
  simulator, the broker and the coordinator's MQTT client reach together. A coordinator figure near it
  is limited by the harness and the MQTT client, not by the coordinator's own work.
- ``steps``: the fleet grows through ``SIZES``; at each size, after a warm-up, over ``MEASURE_S``:
  offered and acknowledged windows/s, ack latency p50/p99 (first send to ack), the coordinator's CPU
  (percent of one core) and RSS, and ``ms_per_window`` = coordinator CPU ms per acknowledged window. A
  step *keeps up* when acknowledged >= 97% of offered and ack p99 < 1 s; the steps stop after the
  first that does not. ``max_devices_at_5s`` is the largest size that kept up.
- ``capacity_probes``: only when every step kept up, the last fleet's period is divided by 1.6 at a
  time until the acknowledgements no longer keep up. ``capacity_wps`` is the highest acknowledged rate
  of any step or probe.
- ``saturation``: offered twice the capacity, by shortening the windows' period on the last step's
  fleet, measured after more than one resend period so resends are part of the load. ``saturated_ack_ratio`` = acknowledged / capacity
  (goal >= 0.95: the rate levels off instead of collapsing).
- ``drain``: new windows stop, resends continue; ``lost`` = windows never acknowledged (goal 0).
- ``cold_start``: a fresh coordinator and database and ``cold_devices`` devices whose births all go out
  at once, then windows every 5 s: ``settle_s`` until the coordinator has logged every device online,
  and ``false_deaths`` = devices it declared offline (goal 0) over ``COLD_WATCH_S``.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.harness import finish, machine, pyplot
from edgefleet.broker import BrokerLimits, PrivateBroker
from edgefleet.tomlio import dump_toml
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    DeviceWindow,
    Telemetry,
    TelemetryAck,
    TenantSpec,
    TenantWindow,
    Topics,
    encode,
)
from edgefleet.wire.codec import decode_to_device

PERIOD_S = 5.0  # one window per device every 5 s
RESEND_S = 15.0  # the agents' default telemetry_resend_s
SIZES = (250, 1000, 2500, 5000, 10_000, 25_000)
QUICK_SIZES = (250, 1000)
KEEP_UP_ACK_RATIO = 0.97
KEEP_UP_P99_S = 1.0
PROCS = 2  # simulator processes
CONNS_PER_PROC = 2  # MQTT connections per simulator process
DEVICE_TIMEOUT_S = 30.0
COLD_WATCH_S = 45.0
PREFIX = "ingest"
KIND = "x86_64-cpu"
MODELS = ("ocr-cls", "vad", "face-detect", "hand-landmark", "selfie-seg", "pose-landmark")
SEQ_MARK = b"987654321987"
START_MARK = b"1234567.125"
END_MARK = b"1234572.125"


def tenants_of(index: int) -> list[tuple[str, str]]:
    """Device ``index``'s tenants, 2-4 of them: (name, model)."""
    return [(f"d{index}-t{j}", MODELS[(index + j) % len(MODELS)]) for j in range(2 + index % 3)]


def device_id(index: int) -> str:
    return f"d{index}"


# -- the simulator (child processes) ----------------------------------------------------------------
class _Device:
    __slots__ = ("boot", "conn", "index", "name", "parts", "seq", "unacked")

    def __init__(self, index: int, conn: int, boot: str) -> None:
        self.index, self.conn, self.boot, self.name = index, conn, boot, device_id(index)
        self.seq = 0
        self.unacked: dict[int, list[float]] = {}  # seq -> [first sent (monotonic), last sent, window start]
        windows = [TenantWindow(tenant=t, model=m, variant="fp32", slo_ms=200.0, arrivals=10, completions=10,
                                batches=10, batch_size_mean=1.0, service_ms_mean=4.0, queue_ms_mean=1.0,
                                latency_p50_ms=5.0, latency_p95_ms=9.0, latency_p99_ms=12.0, arrival_rps=2.0,
                                arrival_scv=1.0, service_ms_by_batch={1: 4.0}, batches_by_size={1: 10})
                   for t, m in tenants_of(index)]
        template = encode(Telemetry(
            device_id=self.name, boot_id=boot, seq=int(SEQ_MARK), window_start=float(START_MARK),
            window_end=float(END_MARK), tenants=windows,
            device=DeviceWindow(cpu_percent=20.0, memory_used_bytes=200 << 20, memory_budget_bytes=1 << 30,
                                model_memory_bytes=64 << 20)))
        assert template.count(SEQ_MARK) == 1 and template.count(START_MARK) == 1 and template.count(END_MARK) == 1
        a, rest = template.split(SEQ_MARK)
        b, rest = rest.split(START_MARK)
        c, d = rest.split(END_MARK)
        self.parts = (a, b, c, d)

    def payload(self, seq: int, start: float) -> bytes:
        a, b, c, d = self.parts
        return b"".join((a, str(seq).encode(), b, repr(start).encode(), c, repr(start + PERIOD_S).encode(), d))

    def birth(self) -> bytes:
        caps = Capabilities(device_kind=KIND, runtimes=["onnxruntime", "litert"], accelerators=["cpu"], cpu_count=4,
                            memory_total_bytes=8 << 30, memory_budget_bytes=1 << 30, max_payload_bytes=1 << 20,
                            cached_models=[])
        return encode(Birth(device_id=self.name, boot_id=self.boot, capabilities=caps,
                            tenants=[t for t, _ in tenants_of(self.index)], agent_version="bench", ts=time.time()))


class _Sim:
    """One simulator process: devices spread over a few MQTT connections, driven by the parent."""

    def __init__(self, port: int, proc: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = Topics(PREFIX)
        self.devices: dict[str, _Device] = {}
        self.lock = threading.Lock()
        self.due: collections.deque[tuple[float, _Device]] = collections.deque()
        self.period_s = PERIOD_S
        self.sending = False
        self.offered = self.resent = self.acked = self.dup_acks = self.commands = self.publish_errors = 0
        self.latencies: list[float] = []
        self.clients = []
        for i in range(CONNS_PER_PROC):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ingest-sim-{os.getpid()}-{proc}-{i}",
                            protocol=paho.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.on_message = self._on_message
            c.connect("127.0.0.1", port, keepalive=60)
            c.loop_start()
            self.clients.append(c)
        self.boot = f"b{os.getpid()}-{time.time_ns() % 10**9}"

    def add(self, indices: list[int], birth: bool) -> None:
        now = time.monotonic()
        fresh = []
        for index in indices:
            d = _Device(index, len(self.devices) % len(self.clients), self.boot)
            self.devices[d.name] = d
            fresh.append(d)
        by_conn: dict[int, list[tuple[str, int]]] = {}
        for d in fresh:
            by_conn.setdefault(d.conn, []).append((self.topics.commands(d.name), 1))
        for conn, subs in by_conn.items():
            for i in range(0, len(subs), 500):
                self.clients[conn].subscribe(subs[i:i + 500])
        time.sleep(0.5 + len(fresh) / 20_000)  # the broker acknowledges the subscriptions
        if birth:
            for d in fresh:
                self.clients[d.conn].publish(self.topics.status(d.name), d.birth(), qos=1, retain=True)
        # the new devices' first windows spread over one period, behind those already due
        phase = [(now + self.period_s * (k + 0.5) / len(fresh), d) for k, d in enumerate(fresh)]
        merged = sorted(list(self.due) + phase, key=lambda x: x[0])
        self.due = collections.deque(merged)

    def set_period(self, period_s: float) -> None:
        now = time.monotonic()
        ds = [d for _, d in self.due]
        self.period_s = period_s
        self.due = collections.deque((now + period_s * (k + 0.5) / max(1, len(ds)), d) for k, d in enumerate(ds))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            m = decode_to_device(msg.payload)
        except Exception:
            return
        now = time.monotonic()
        if isinstance(m, TelemetryAck):
            d = self.devices.get(m.device_id)
            if d is None:
                return
            with self.lock:
                for s in m.seqs:
                    sent = d.unacked.pop(s, None)
                    if sent is None:
                        self.dup_acks += 1
                        continue
                    self.acked += 1
                    self.latencies.append(now - sent[0])
            return
        self.commands += 1  # a Deploy, Undeploy or Configure: applied at once
        ack = Ack(command_id=m.command_id, device_id=m.device_id, ok=True, result="applied", message="bench")
        client.publish(self.topics.acks(m.device_id), encode(ack), qos=1)

    def pump(self) -> float:
        """Publish every window that is due and every resend; seconds until the next is due."""
        now = time.monotonic()
        wall = time.time()
        while self.sending and self.due and self.due[0][0] <= now:
            _, d = self.due.popleft()
            seq = d.seq
            d.seq += 1
            with self.lock:
                d.unacked[seq] = [now, now, wall]
            info = self.clients[d.conn].publish(self.topics.telemetry(d.name), d.payload(seq, wall), qos=1)
            if info.rc != 0:
                self.publish_errors += 1
            self.offered += 1
            self.due.append((now + self.period_s, d))
        return (self.due[0][0] - now) if (self.sending and self.due) else 0.05

    def resend(self) -> None:
        now = time.monotonic()
        for d in self.devices.values():
            with self.lock:
                late = [(s, v) for s, v in d.unacked.items() if now - v[1] >= RESEND_S]
            for s, v in late:
                v[1] = now
                self.clients[d.conn].publish(self.topics.telemetry(d.name), d.payload(s, v[2]), qos=1)
                self.resent += 1

    def stats(self, reset_latencies: bool) -> dict[str, Any]:
        with self.lock:
            lat = self.latencies
            if reset_latencies:
                self.latencies = []
            unacked = sum(len(d.unacked) for d in self.devices.values())
        return {"offered": self.offered, "resent": self.resent, "acked": self.acked, "dup_acks": self.dup_acks,
                "commands": self.commands, "publish_errors": self.publish_errors, "unacked": unacked,
                "latencies": lat, "devices": len(self.devices)}

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def _sim_main(conn: Connection, port: int, proc: int) -> None:
    sim = _Sim(port, proc)
    last_resend = time.monotonic()
    conn.send("ready")
    while True:
        wait = sim.pump()
        if time.monotonic() - last_resend >= 1.0:
            sim.resend()
            last_resend = time.monotonic()
        if conn.poll(max(0.0, min(wait, 0.05))):
            cmd, arg = conn.recv()
            if cmd == "add":
                sim.add(arg[0], arg[1])
                conn.send("ok")
            elif cmd == "send":
                sim.sending = bool(arg)
                conn.send("ok")
            elif cmd == "period":
                sim.set_period(arg)
                conn.send("ok")
            elif cmd == "stats":
                conn.send(sim.stats(bool(arg)))
            elif cmd == "stop":
                sim.close()
                conn.send("ok")
                return


class Simulator:
    """The parent's handle on the simulator processes."""

    def __init__(self, port: int, procs: int = PROCS) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_sim_main, args=(child, port, i), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            if not c.poll(60):
                raise RuntimeError("simulator process did not start")
            c.recv()
        self.size = 0

    def _all(self, cmd: str, arg: Any = None) -> list[Any]:
        for c in self.conns:
            c.send((cmd, arg))
        return [c.recv() for c in self.conns]

    def grow(self, to: int, *, birth: bool = True) -> None:
        new = list(range(self.size, to))
        for i, c in enumerate(self.conns):
            c.send(("add", (new[i::len(self.conns)], birth)))
        for c in self.conns:
            c.recv()
        self.size = to

    def send(self, on: bool) -> None:
        self._all("send", on)

    def period(self, period_s: float) -> None:
        self._all("period", period_s)

    def stats(self, reset_latencies: bool = True) -> dict[str, Any]:
        parts = self._all("stats", reset_latencies)
        out: dict[str, Any] = {k: sum(p[k] for p in parts) for k in parts[0] if k != "latencies"}
        out["latencies"] = [x for p in parts for x in p["latencies"]]
        return out

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._all("stop")
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


# -- the coordinators under test ---------------------------------------------------------------------
def seed_database(db: Path, devices: int) -> None:
    """A database that assigns each device's tenants to it, running (a coordinator restarted under a
    running fleet)."""
    from edgefleet.coordinator.models import ZooModels
    from edgefleet.coordinator.store import Store, TenantRow, TenantState

    models = ZooModels()
    facts = {m: models.facts(m, "fp32") for m in MODELS}
    store = Store(db)
    with store.atomic():
        for i in range(devices):
            for name, model in tenants_of(i):
                f = facts[model]
                store.put_tenant(TenantRow.of(spec=TenantSpec(name=name, model=model, slo_ms=200.0), runtime=f.runtime,
                                           size_bytes=f.size_bytes, device_id=device_id(i), state=TenantState.RUNNING,
                                           detail="", tried=()), 0.0)
    store.close()


def coordinator_toml(port: int, db: Path) -> str:
    return dump_toml({
        "prefix": PREFIX,
        "coordinator": {"id": "coordinator", "db": str(db), "device_timeout_s": DEVICE_TIMEOUT_S, "op_timeout_s": 8.0,
                        "placement": "predicted-latency", "telemetry_retention_s": 60.0},
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 30},
    })


class CoordinatorProcess:
    def __init__(self, workdir: Path, port: int, seed_devices: int) -> None:
        self.db = workdir / "coordinator.sqlite"
        seed_database(self.db, seed_devices)
        cfg = workdir / "coordinator.toml"
        cfg.write_text(coordinator_toml(port, self.db))
        self.log_path = workdir / "coordinator.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "edgefleet.coordinator.main", "--config", str(cfg)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        import psutil

        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 60
        while "serving prefix" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coordinator did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mib(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_path.read_text(errors="replace")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _null_coordinator(port: int, stop: Any, counter: Any) -> None:
    """The coordinator's ingest connection with nothing behind it: the same client (``data_link`` of the
    coordinator's default ``ingest_link``, the lean one where mqtt5 installs), every window decoded and
    answered at once with its TelemetryAck at QoS 0, as the coordinator sends them; no database, no model."""
    from edgefleet.mqtt import Inbound, MqttSettings, data_link
    from edgefleet.wire.codec import decode_telemetry

    topics = Topics(PREFIX)
    link = data_link(MqttSettings(host="127.0.0.1", port=port, keepalive_s=60), "ingest-null", "auto")

    def on_message(msg: Inbound) -> None:
        t = decode_telemetry(msg.payload)
        link.publish(topics.commands(t.device_id), encode(TelemetryAck(device_id=t.device_id, boot_id=t.boot_id,
                                                                        seqs=[t.seq])), qos=0)
        counter.value += 1

    link.subscribe(topics.all_telemetry, on_message, qos=1)
    link.start()
    stop.wait()
    link.stop()


# -- phases ------------------------------------------------------------------------------------------
def _cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def _measure(sim: Simulator, coord: CoordinatorProcess | None, seconds: float,
             broker: PrivateBroker | None = None) -> dict[str, Any]:
    s0 = sim.stats(reset_latencies=True)
    cpu0 = coord.cpu_s() if coord is not None else 0.0
    others = {"simulator": sim.pids, "broker": [broker.pid] if broker is not None and broker.pid else []}
    others0 = {k: _cpu_s(v) for k, v in others.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    s1 = sim.stats(reset_latencies=True)
    wall = time.monotonic() - t0
    others1 = {k: _cpu_s(v) for k, v in others.items()}
    cpu = (coord.cpu_s() - cpu0) if coord is not None else 0.0
    offered = (s1["offered"] - s0["offered"]) / wall
    acked = (s1["acked"] - s0["acked"]) / wall
    lat = np.asarray(s1["latencies"]) if s1["latencies"] else np.asarray([np.nan])
    out = {
        "devices": s1["devices"], "seconds": round(wall, 2),
        "offered_wps": round(offered, 1), "acked_wps": round(acked, 1),
        "resent_wps": round((s1["resent"] - s0["resent"]) / wall, 1),
        "ack_p50_ms": round(float(np.nanpercentile(lat, 50)) * 1e3, 1),
        "ack_p99_ms": round(float(np.nanpercentile(lat, 99)) * 1e3, 1),
        "unacked": s1["unacked"], "publish_errors": s1["publish_errors"],
        "simulator_cpu_percent": round(100.0 * (others1["simulator"] - others0["simulator"]) / wall, 1),
        "broker_cpu_percent": round(100.0 * (others1["broker"] - others0["broker"]) / wall, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if coord is not None:
        out["coordinator_cpu_percent"] = round(100.0 * cpu / wall, 1)
        out["ms_per_window"] = round(1e3 * cpu / max(1.0, acked * wall), 3)
        out["coordinator_rss_mib"] = round(coord.rss_mib(), 1)
    return out


def _keeps_up(step: dict[str, Any]) -> bool:
    return bool(step["acked_wps"] >= KEEP_UP_ACK_RATIO * step["offered_wps"]
                and step["ack_p99_ms"] < KEEP_UP_P99_S * 1e3)


def _ceiling(quick: bool) -> dict[str, Any]:
    """The simulator, broker and one Python MQTT client together, against a null coordinator: the offered
    rate rises step by step; the ceiling is the highest acknowledged rate of a step that kept up."""
    ctx = mp.get_context("spawn")
    devices = 2000 if quick else 5000
    rates = (1000, 2000, 3000) if quick else (1000, 2000, 3000, 4000, 5000, 6500)
    ramp: list[dict[str, Any]] = []
    with PrivateBroker(limits=BrokerLimits(max_inflight_messages=1000)) as broker:
        stop, counter = ctx.Event(), ctx.Value("l", 0, lock=False)
        null = ctx.Process(target=_null_coordinator, args=(broker.port, stop, counter), daemon=True)
        null.start()
        time.sleep(1.0)
        sim = Simulator(broker.port)
        try:
            sim.grow(devices, birth=False)
            sim.send(True)
            for rate in rates:
                sim.period(devices / rate)
                time.sleep(4.0)
                m = _measure(sim, None, 6 if quick else 10, broker)
                m["keeps_up"] = _keeps_up(m)
                ramp.append({k: m[k] for k in ("offered_wps", "acked_wps", "ack_p50_ms", "ack_p99_ms",
                                                "simulator_cpu_percent", "broker_cpu_percent", "keeps_up")})
                print(f"ingest ceiling step: {ramp[-1]}", flush=True)
                if not m["keeps_up"]:
                    break
            sim.send(False)
        finally:
            sim.stop()
            stop.set()
            null.join(10)
    kept = [r["acked_wps"] for r in ramp if r["keeps_up"]]
    return {"devices": devices, "acked_wps": max(kept) if kept else 0.0, "ramp": ramp}


def _steps(workdir: Path, quick: bool) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else SIZES
    warm_s, measure_s = (8.0, 10.0) if quick else (15.0, 30.0)
    with PrivateBroker(limits=BrokerLimits(max_inflight_messages=1000)) as broker:
        coord = CoordinatorProcess(workdir / "steps", broker.port, max(sizes))
        sim = Simulator(broker.port)
        steps: list[dict[str, Any]] = []
        try:
            sim.send(True)
            for size in sizes:
                sim.grow(size)
                time.sleep(warm_s)
                step = _measure(sim, coord, measure_s, broker)
                step["keeps_up"] = _keeps_up(step)
                steps.append(step)
                print(f"ingest: {step}", flush=True)
                if not step["keeps_up"]:
                    break
            # capacity: when every step kept up, the last fleet's windows come faster (period / 1.6 at a
            # time) until the acknowledgements no longer keep up; the highest acknowledged rate seen
            probes: list[dict[str, Any]] = []
            period = PERIOD_S
            while steps[-1]["keeps_up"] and (not probes or probes[-1]["keeps_up"]) and len(probes) < 6:
                period /= 1.6
                sim.period(period)
                time.sleep(warm_s)
                probe = _measure(sim, coord, measure_s, broker)
                probe["period_s"] = round(period, 3)
                probe["keeps_up"] = _keeps_up(probe)
                probes.append(probe)
                print(f"ingest capacity probe: {probe}", flush=True)
            capacity = max(s["acked_wps"] for s in steps + probes)
            # saturation: twice the capacity on the last step's fleet, with resends in the steady state
            offered_now = steps[-1]["offered_wps"] or 1.0
            sim.period(PERIOD_S * offered_now / (2.0 * capacity))  # the last step's fleet, 2 x capacity
            time.sleep(8.0 if quick else RESEND_S + 10.0)
            sat = _measure(sim, coord, measure_s, broker)
            sat["capacity_wps"] = capacity
            print(f"ingest saturation: {sat}", flush=True)
            # drain: no new windows; resends continue until every window is acknowledged
            sim.send(False)
            drain_end = time.monotonic() + (60.0 if quick else 150.0)
            while time.monotonic() < drain_end and sim.stats(reset_latencies=True)["unacked"] > 0:
                time.sleep(1.0)
            final = sim.stats(reset_latencies=True)
            deaths = coord.log_count(r"device \S+ offline")
            rss_end = coord.rss_mib()
        finally:
            sim.stop()
            coord.stop()
    return {"steps": steps, "capacity_probes": probes, "saturation": sat, "capacity_wps": capacity,
            "lost": final["unacked"],
            "dup_acks": final["dup_acks"], "commands_to_devices": final["commands"],
            "false_deaths_during_steps": deaths, "coordinator_rss_mib_end": round(rss_end, 1)}


def _cold_start(workdir: Path, devices: int) -> dict[str, Any]:
    with PrivateBroker(limits=BrokerLimits(max_inflight_messages=1000)) as broker:
        coord = CoordinatorProcess(workdir / "cold", broker.port, devices)
        sim = Simulator(broker.port)
        try:
            sim.send(True)
            t0 = time.monotonic()
            sim.grow(devices)  # every birth at once, then windows every 5 s
            settle = None
            end = t0 + COLD_WATCH_S + 120.0
            while time.monotonic() < end:
                if settle is None and coord.log_count(r"device \S+ online") >= devices:
                    settle = time.monotonic() - t0
                if settle is not None and time.monotonic() - t0 >= max(COLD_WATCH_S, settle + 10):
                    break
                time.sleep(1.0)
            st = sim.stats(reset_latencies=True)
            lat = np.asarray(st["latencies"]) if st["latencies"] else np.asarray([np.nan])
            out = {"devices": devices, "settle_s": None if settle is None else round(settle, 1),
                   "watched_s": round(time.monotonic() - t0, 1),
                   "false_deaths": coord.log_count(r"device \S+ offline"),
                   "births_logged": coord.log_count(r"device \S+ online"),
                   "acked": st["acked"], "unacked_at_end": st["unacked"],
                   "ack_p99_ms": round(float(np.nanpercentile(lat, 99)) * 1e3, 1),
                   "coordinator_rss_mib": round(coord.rss_mib(), 1)}
        finally:
            sim.stop()
            coord.stop()
    return out


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-ingest-"))
    (workdir / "steps").mkdir()
    (workdir / "cold").mkdir()
    load_before = os.getloadavg()
    ceiling = _ceiling(quick)
    print(f"ingest ceiling: {ceiling}", flush=True)
    stepped = _steps(workdir, quick)
    steps = stepped["steps"]
    kept = [s["devices"] for s in steps if s["keeps_up"]]
    cold_devices = max(kept) if kept else steps[0]["devices"]
    cold = _cold_start(workdir, cold_devices)
    print(f"ingest cold start: {cold}", flush=True)
    data: dict[str, Any] = {
        "benchmark": "ingest",
        "quick": quick,
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "period_s": PERIOD_S,
        "placement": "predicted-latency",
        "simulator": {"processes": PROCS, "connections_per_process": CONNS_PER_PROC, "resend_s": RESEND_S},
        "max_devices_at_5s": max(kept) if kept else 0,
        "ms_per_window": {str(s["devices"]): s["ms_per_window"] for s in steps},
        "saturated_ack_ratio": round(stepped["saturation"]["acked_wps"] / max(1e-9, stepped["capacity_wps"]), 3),
        "capacity_wps": stepped["capacity_wps"],
        "lost": stepped["lost"],
        "ceiling": ceiling,
        "steps": steps,
        "capacity_probes": stepped["capacity_probes"],
        "saturation": stepped["saturation"],
        "cold_start": cold,
        "false_deaths_during_steps": stepped["false_deaths_during_steps"],
        "dup_acks": stepped["dup_acks"],
        "commands_to_devices": stepped["commands_to_devices"],
        "coordinator_rss_mib_end": stepped["coordinator_rss_mib_end"],
        "cold_start_false_deaths": cold["false_deaths"],
        # 25000 devices at one window / 5 s (5000 windows/s) with flat ms_per_window; graceful saturation
        "goal": {"max_devices_at_5s": {"at_least": 25_000}, "saturated_ack_ratio": {"at_least": 0.95},
                 "lost": {"at_most": 0}, "cold_start_false_deaths": {"at_most": 0}},
    }
    return finish(json_path, data, _draw if plot else None)


def _draw(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    steps = data["steps"]
    n = [s["devices"] for s in steps]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(n, [s["offered_wps"] for s in steps], "o--", label="offered")
    a1.plot(n, [s["acked_wps"] for s in steps], "o-", label="acknowledged")
    a1.axhline(data["ceiling"]["acked_wps"], color="grey", ls=":", label="null coordinator (harness ceiling)")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(n, [str(x) for x in n])
    a1.set_xlabel("devices (one window / 5 s)")
    a1.set_ylabel("windows / s")
    a1.legend()
    a1.set_title(f"max devices at 5 s: {data['max_devices_at_5s']}")
    a2.plot(n, [s["ms_per_window"] for s in steps], "o-")
    a2.set_xlabel("devices")
    a2.set_ylabel("coordinator CPU ms / window")
    a2.set_ylim(bottom=0)
    a2.set_title(f"saturated ack ratio {data['saturated_ack_ratio']}, lost {data['lost']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

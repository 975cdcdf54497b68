"""``edgefleet bench stream``: a stream tenant fed by a camera at 0.5x, 1x and 2x the model's measured
capacity (frame age p50/p95 at the subscriber, skipped share), and its results fanned out to 1, 10 and 100
subscribers (the device's CPU per result).

Setup: a private Mosquitto, one agent process, a camera thread publishing real JPEG frames (the zoo's
portrait) at a fixed rate with ``seq`` and ``ts`` user properties, subscribers in this process.

Load sweep (pose-landmark, ~20 ms a frame: a camera at twice its capacity is a modest publisher). The
capacity is measured first, not assumed: the camera publishes far faster than any device could answer for
a few seconds and the results per second that come back are the capacity (newest frame wins, so the
device runs flat out). Then each load runs for the same time. Per load: frames in (published), results
out, frames skipped (the device's count, carried by each result), frames lost (neither answered nor
counted: should be 0), and the frame age at the subscriber (``ts`` to the result's arrival, one clock):
p50 and p95. Defined before the run: ``frame_age_p95_ms_at_2x`` must stay within the SLO (newest frame
wins: the age is bounded by about two service times, whatever the overload) and ``skipped_share_at_0_5x``
must be 0 (a device with spare capacity skips nothing).

Fan-out (face-detect, ~2 ms a frame, so that anything the device did per subscriber would show): the
camera at a fixed rate, 1, 10 and 100 subscribers (``mosquitto_sub`` processes) each on its own
connection, each count run twice in the order 1, 10, 100, 100, 10, 1 (the shared box's drift cancels),
the agent process's CPU time (user + system) over a count's runs divided by the results it published. The broker fans out, so the
device's CPU per result must not grow: ``device_cpu_per_result_ratio_100_vs_1`` <= 1.1. Every subscriber's
delivered share is reported beside it (what fan-out costs the broker is not the device's).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bench.harness import CommandClient, CpuMeter, finish, machine, pyplot, spawn_agent
from edgefleet.broker import PrivateBroker
from edgefleet.mqtt import Inbound, MqttSettings, data_link
from edgefleet.wire import Periodic, StreamSpec, TenantSpec, Topics
from edgefleet.zoo.paths import SAMPLES_DIR

SWEEP_MODEL = "pose-landmark"
FAN_MODEL = "face-detect"
SLO_MS = 100.0
FACTORS = (0.5, 1.0, 2.0)
SUBSCRIBERS = (1, 10, 100)
FAN_ORDER = (1, 10, 100, 100, 10, 1)  # each count twice, in both orders: drift of the shared box cancels
FAN_FPS = 30.0
DEVICE = "stream-dev"


class Camera:
    """Publishes one JPEG frame every 1/fps seconds on a fixed schedule (a late frame does not push the
    next ones back), each with ``seq`` and ``ts``; counts what it published."""

    def __init__(self, settings: MqttSettings, topic: str, fps: float, image: bytes) -> None:
        self.topic, self.fps, self.image = topic, fps, image
        self.link = data_link(settings, f"bench-cam-{os.getpid()}-{time.monotonic_ns() % 10**6}")
        self.link.start()
        if not self.link.wait_connected(10):
            raise RuntimeError("the camera could not connect")
        self.sent = 0
        self.first_seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, first_seq: int) -> None:
        self.first_seq = self.seq = first_seq
        self.sent = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            self.link.publish(self.topic, self.image, qos=0,
                              user_properties=[("seq", str(self.seq)), ("ts", repr(time.time()))])
            self.seq += 1
            self.sent += 1
            next_at += 1.0 / self.fps
            delay = next_at - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.link.stop()


class Results:
    """One subscriber of a stream tenant's results: (seq, age at arrival ms, skipped, device) per result."""

    def __init__(self, settings: MqttSettings, topic: str, name: str) -> None:
        self.rows: list[tuple[int, float, int]] = []
        self._lock = threading.Lock()
        self.link = data_link(settings, name)
        self.link.subscribe(topic, self._on, qos=0)
        self.link.start()
        if not self.link.wait_connected(30):
            raise RuntimeError(f"subscriber {name} could not connect")

    def _on(self, msg: Inbound) -> None:
        if msg.retain:
            return  # the retained result of an earlier load
        now = time.time()
        r = json.loads(msg.payload)
        frame = r["frame"]
        with self._lock:
            self.rows.append((int(frame["seq"]), 1e3 * (now - float(frame["ts"])), int(r.get("skipped", 0))))

    def take(self, first_seq: int) -> list[tuple[int, float, int]]:
        with self._lock:
            return [row for row in self.rows if row[0] >= first_seq]

    def close(self) -> None:
        self.link.stop()


def _run_load(camera: Camera, results: Results, fps: float, duration_s: float, first_seq: int) -> dict[str, Any]:
    camera.fps = fps
    camera.start(first_seq)
    time.sleep(duration_s)
    camera.stop()
    sent = camera.sent
    time.sleep(1.0)  # the last frames' results
    rows = results.take(first_seq)
    seqs = [s for s, _, _ in rows]
    ages = np.asarray([a for _, a, _ in rows], dtype=np.float64)
    skipped = sum(k for _, _, k in rows)
    answered = len(set(seqs))
    return {
        "fps": round(fps, 2),
        "seconds": duration_s,
        "frames_in": sent,
        "results_out": len(rows),
        "duplicates": len(rows) - answered,
        "frames_skipped": skipped,
        "frames_lost": max(0, sent - answered - skipped),
        "skipped_share": skipped / sent if sent else float("nan"),
        "results_per_s": len(rows) / duration_s,
        "frame_age_p50_ms": float(np.percentile(ages, 50)) if ages.size else float("nan"),
        "frame_age_p95_ms": float(np.percentile(ages, 95)) if ages.size else float("nan"),
        "frame_age_max_ms": float(ages.max()) if ages.size else float("nan"),
    }


def run(json_path: Path, *, quick: bool = False, plot: bool = True) -> dict[str, Any]:
    image = (Path(SAMPLES_DIR) / "grace_hopper_256.jpg").read_bytes()
    load_s = 3.0 if quick else 10.0
    fan_s = 3.0 if quick else 10.0
    with PrivateBroker() as broker, tempfile.TemporaryDirectory(prefix="ef-bench-stream-") as tmp:
        settings = MqttSettings(host="127.0.0.1", port=broker.port)
        prefix = f"bs{os.getpid()}"
        topics = Topics(prefix)
        agent = spawn_agent(DEVICE, broker.port, Path(tmp), prefix=prefix, workers=2, period_s=1.0)
        cmd = CommandClient(settings, topics)
        cameras: list[Camera] = []
        subs: list[Results] = []
        try:
            cmd.wait_online(DEVICE, 60)
            # -- load sweep ---------------------------------------------------------------------------
            source = f"{prefix}-cams/sweep/frames"
            cmd.deploy(DEVICE, TenantSpec(name="cam-sweep", model=SWEEP_MODEL, slo_ms=SLO_MS,
                                          stream=StreamSpec(sources=[source], results="json")))
            sweep_sub = Results(settings, topics.results("cam-sweep"), f"bench-sub-sweep-{os.getpid()}")
            subs.append(sweep_sub)
            camera = Camera(settings, source, 1.0, image)
            cameras.append(camera)
            seq = 0
            flood = _run_load(camera, sweep_sub, 400.0, 2.0 if quick else 4.0, seq)
            seq += camera.sent + 1
            capacity = flood["results_per_s"]
            loads = []
            for factor in FACTORS:
                one = _run_load(camera, sweep_sub, factor * capacity, load_s, seq)
                one["factor"] = factor
                loads.append(one)
                seq += camera.sent + 1
            # -- fan-out ------------------------------------------------------------------------------
            fan_source = f"{prefix}-cams/fan/frames"
            cmd.deploy(DEVICE, TenantSpec(name="cam-fan", model=FAN_MODEL, slo_ms=SLO_MS,
                                          demand=Periodic(fps=FAN_FPS), stream=StreamSpec(sources=[fan_source])))
            fan_camera = Camera(settings, fan_source, FAN_FPS, image)
            cameras.append(fan_camera)
            time.sleep(0.5)
            fan: list[dict[str, Any]] = []
            pid = agent.proc.pid if agent.proc is not None else None
            fseq = 0
            warm = _FanSubs(broker.port, topics, 1, Path(tmp) / "warm")
            try:
                fan_camera.start(fseq)  # warm-up: the model, the JPEG decoder, the broker's routes
                time.sleep(1.5)
                fan_camera.stop()
                fseq += fan_camera.sent + 1
            finally:
                warm.close()
            for count in FAN_ORDER:
                group = _FanSubs(broker.port, topics, count, Path(tmp) / f"run{len(fan)}-n{count}")
                try:
                    meter = CpuMeter({"agent": pid})
                    t0 = time.perf_counter()
                    fan_camera.fps = FAN_FPS
                    fan_camera.start(fseq)
                    time.sleep(fan_s)
                    fan_camera.stop()
                    time.sleep(0.5)
                    cpu_s = meter.percent()["agent"] / 100.0 * (time.perf_counter() - t0)
                finally:
                    received = group.close()
                published = max(received) if received else 0
                fan.append({
                    "subscribers": count,
                    "frames_in": fan_camera.sent,
                    "results": published,
                    "device_cpu_s": round(cpu_s, 4),
                    "device_cpu_per_result_ms": 1e3 * cpu_s / published if published else float("nan"),
                    "delivered_share_min": min(received) / published if published else float("nan"),
                })
                fseq += fan_camera.sent + 1
        finally:
            for c in cameras:
                c.stop()
                c.close()
            for s in subs:
                s.close()
            cmd.close()
            agent.stop()

    by_factor = {one["factor"]: one for one in loads}
    by_subs = {}
    for count in SUBSCRIBERS:  # both runs of a count: CPU seconds over results
        runs = [one for one in fan if one["subscribers"] == count]
        results = sum(one["results"] for one in runs)
        by_subs[count] = {
            "device_cpu_per_result_ms": 1e3 * sum(one["device_cpu_s"] for one in runs) / results
            if results else float("nan"),
            "delivered_share_min": min(one["delivered_share_min"] for one in runs),
        }
    cpu1 = by_subs[1]["device_cpu_per_result_ms"]
    cpu100 = by_subs[100]["device_cpu_per_result_ms"]
    data: dict[str, Any] = {
        "benchmark": "stream",
        "quick": quick,
        "machine": machine(),
        "slo_ms": SLO_MS,
        "sweep_model": SWEEP_MODEL,
        "fan_model": FAN_MODEL,
        "capacity_fps": round(capacity, 2),
        "capacity_run": flood,
        "frame_age_p50_ms_at_0_5x": by_factor[0.5]["frame_age_p50_ms"],
        "frame_age_p95_ms_at_0_5x": by_factor[0.5]["frame_age_p95_ms"],
        "frame_age_p50_ms_at_1x": by_factor[1.0]["frame_age_p50_ms"],
        "frame_age_p95_ms_at_1x": by_factor[1.0]["frame_age_p95_ms"],
        "frame_age_p50_ms_at_2x": by_factor[2.0]["frame_age_p50_ms"],
        "frame_age_p95_ms_at_2x": by_factor[2.0]["frame_age_p95_ms"],
        "skipped_share_at_0_5x": by_factor[0.5]["skipped_share"],
        "skipped_share_at_1x": by_factor[1.0]["skipped_share"],
        "skipped_share_at_2x": by_factor[2.0]["skipped_share"],
        "frames_lost": sum(one["frames_lost"] for one in loads),
        "duplicates": sum(one["duplicates"] for one in loads),
        "device_cpu_per_result_ms_1": cpu1,
        "device_cpu_per_result_ms_10": by_subs[10]["device_cpu_per_result_ms"],
        "device_cpu_per_result_ms_100": cpu100,
        "device_cpu_per_result_ratio_100_vs_1": cpu100 / cpu1 if cpu1 else float("nan"),
        "delivered_share_min_at_100": by_subs[100]["delivered_share_min"],
        "goal": {
            "frame_age_p95_ms_at_2x": {"at_most": SLO_MS},
            "skipped_share_at_0_5x": {"at_most": 0.0},
            "device_cpu_per_result_ratio_100_vs_1": {"at_most": 1.1},
        },
        "loads": loads,
        "fanout": fan,
    }
    return finish(json_path, data, _draw if plot else None)


class _FanSubs:
    """``count`` subscribers of the fan-out tenant's results: ``mosquitto_sub`` processes (C clients, as the
    plain apps of the protocol's example; they cost the shared cores far less than Python subscribers
    would), each on its own connection, each writing one line per live result (``-R``: not the retained)."""

    def __init__(self, port: int, topics: Topics, count: int, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = [folder / f"sub-{i}.txt" for i in range(count)]
        self.procs = [
            subprocess.Popen(["mosquitto_sub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", str(port), "-R",
                              "-t", topics.results("cam-fan"), "-F", "%l"],
                             stdout=f.open("w"), stderr=subprocess.DEVNULL)
            for f in self.files
        ]
        time.sleep(1.0 + count / 50)  # connected and subscribed before the camera starts

    def close(self) -> list[int]:
        """Stop the subscribers; how many results each received."""
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return [len(f.read_text().splitlines()) for f in self.files]


def _draw(data: dict[str, Any], png: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    loads = data["loads"]
    x = [one["factor"] for one in loads]
    ax1.plot(x, [one["frame_age_p50_ms"] for one in loads], "o-", label="frame age p50")
    ax1.plot(x, [one["frame_age_p95_ms"] for one in loads], "s-", label="frame age p95")
    ax1.axhline(data["slo_ms"], color="red", linestyle="--", label=f"SLO {data['slo_ms']:.0f} ms")
    for one in loads:
        ax1.annotate(f"skipped {one['skipped_share']:.0%}", (one["factor"], one["frame_age_p95_ms"]),
                     textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    ax1.set_xlabel(f"camera rate / measured capacity ({data['capacity_fps']:.0f} fps, {data['sweep_model']})")
    ax1.set_ylabel("ms (capture to result at the subscriber)")
    ax1.set_title("newest frame wins")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    fan = data["fanout"]
    ax2.bar([f"{one['subscribers']} (run {i + 1})" for i, one in enumerate(fan)],
            [one["device_cpu_per_result_ms"] for one in fan])
    ax2.tick_params(axis="x", labelsize=7)
    ax2.set_xlabel(f"subscribers ({data['fan_model']}, {FAN_FPS:.0f} fps)")
    ax2.set_ylabel("agent CPU ms per result")
    ax2.set_title(f"fan-out: ratio 100 vs 1 = {data['device_cpu_per_result_ratio_100_vs_1']:.2f}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)

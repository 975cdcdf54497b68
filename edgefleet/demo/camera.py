"""The demo's stream tenant: a simulated camera publishing real image frames at a fixed rate to its own
topic, and an app subscribed to the tenant's results (``AsyncInferenceClient.subscribe``).

The camera alternates a portrait (a face) and an empty scene every few seconds, as JPEG files, each
frame with its sequence number and capture time as MQTT 5 user properties, so the "someone" event fires
and clears. ``StreamStats`` counts frames in (published), results out and frames skipped (the device's
count, carried by each result) and the frame age at the app (capture to result received), whose p95 the
table compares with the tenant's SLO.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefleet.mqtt import MqttSettings, data_link
from edgefleet.sdk import AsyncSubscription
from edgefleet.wire import Above, Periodic, StreamSpec, TenantSpec
from edgefleet.zoo.paths import SAMPLES_DIR

SCENE_S = 4.0  # the camera switches between a face and an empty scene this often
WINDOW_S = 10.0


def stream_tenant(prefix: str, fps: float = 10.0) -> tuple[TenantSpec, str]:
    """The demo's stream tenant (face detection on a doorbell camera) and its camera's topic."""
    source = f"{prefix}-cams/door/frames"
    spec = TenantSpec(name="cam-doorbell", model="face-detect", slo_ms=100.0, demand=Periodic(fps=fps),
                      stream=StreamSpec(sources=[source],
                                        events=[Above(name="someone", value="face_score_max", on=0.7, off=0.5)]))
    return spec, source


def frames() -> tuple[bytes, bytes]:
    """Two real JPEG frames: the zoo's portrait sample, and an empty (dark) scene of the same size."""
    from PIL import Image

    face = (Path(SAMPLES_DIR) / "grace_hopper_256.jpg").read_bytes()
    with Image.open(io.BytesIO(face)) as img:
        size = img.size
    out = io.BytesIO()
    Image.new("RGB", size, (30, 30, 36)).save(out, format="JPEG", quality=90)
    return face, out.getvalue()


@dataclass
class StreamStats:
    name: str
    model: str
    slo_ms: float
    fps: float
    frames_in: int = 0
    frames_lost: int = 0  # the camera could not publish (broker away)
    results_out: int = 0
    skipped: int = 0
    events: int = 0
    device: str = ""
    ages_ms: list[float] = field(default_factory=list)
    window: list[tuple[float, float]] = field(default_factory=list)  # (received at, age ms)

    def record_result(self, now: float, age_ms: float, skipped: int, device: str) -> None:
        self.results_out += 1
        self.skipped += skipped
        self.device = device or self.device
        self.ages_ms.append(age_ms)
        self.window.append((now, age_ms))
        while self.window and self.window[0][0] < now - WINDOW_S:
            self.window.pop(0)

    def age_p95(self, recent: bool = True) -> float:
        ages = [a for _, a in self.window] if recent else self.ages_ms
        return float(np.percentile(ages, 95)) if ages else float("nan")


async def run_camera(settings: MqttSettings, client_id: str, topic: str, fps: float, stats: StreamStats,
                     stop: asyncio.Event, clock: Callable[[], float] = time.monotonic) -> None:
    """Publish a frame every 1/fps seconds (on a fixed schedule, not after each other) until ``stop``."""
    face, empty = frames()
    link = data_link(settings, client_id)
    link.start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, link.wait_connected, 10.0)
        start = next_at = clock()
        seq = 0
        while not stop.is_set():
            image = face if int((clock() - start) / SCENE_S) % 2 == 0 else empty
            try:
                link.publish(topic, image, qos=0, user_properties=[("seq", str(seq)), ("ts", repr(time.time()))])
                stats.frames_in += 1
            except Exception:  # the broker is away: the frame is lost, as a camera's would be
                stats.frames_lost += 1
            seq += 1
            next_at += 1.0 / fps
            delay = next_at - clock()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    finally:
        await loop.run_in_executor(None, link.stop)


async def watch_results(sub: AsyncSubscription, stats: StreamStats, stop: asyncio.Event,
                        clock: Callable[[], float] = time.monotonic) -> None:
    """Read the tenant's results and events until ``stop`` (the retained result of an earlier run is not
    counted)."""
    while not stop.is_set():
        update = await sub.get(0.5)
        if update is None or update.retained:
            continue
        if update.kind == "event":
            stats.events += 1
            continue
        result = update.result
        if result is None:
            continue
        ts = update.frame.ts
        age_ms = 1e3 * (time.time() - ts) if ts is not None else result.age_ms
        stats.record_result(clock(), age_ms, result.skipped, result.device)

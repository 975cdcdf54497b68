"""Jetson telemetry from jetson-stats (``from jtop import jtop``): GPU load, shared memory, board power
and temperatures that neither psutil nor NVML sees on a Tegra SoC.

The jtop client talks to ``jtop.service`` over ``/run/jtop.sock`` and blocks between updates, so it lives
in its own thread (``ef-jtop``) and the telemetry thread only reads the latest values. When the service is
missing, entering the jtop context raises ``JtopException``: :meth:`JtopCollector.start` then returns
False and the agent falls back to another collector. If the service goes away later, the thread keeps
retrying and samples carry only the psutil figures meanwhile; it never takes the agent down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from edgefleet.agent.collectors.base import DeviceSample
from edgefleet.agent.collectors.psutil_collector import PsutilCollector

log = logging.getLogger(__name__)

RETRY_S = 10.0  # wait between reconnections after the service went away
_OFFLINE_C = -40.0  # jtop reports offline thermal zones as -256


@dataclass(frozen=True)
class JetsonReading:
    gpu_percent: float | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_stats(stats: Mapping[str, Any], memory: Mapping[str, Any] | None = None) -> JetsonReading:
    """Read jtop's ``stats`` dict ("GPU" in percent, "Temp <zone>" in °C, "Power TOT" in mW) and its
    ``memory`` dict ("RAM": tot/used/shared in KB; "shared" is what the GPU holds)."""
    temps = [
        t
        for key, value in stats.items()
        if key.startswith("Temp ") and (t := _number(value)) is not None and t > _OFFLINE_C
    ]
    milliwatts = _number(stats.get("Power TOT"))
    used = total = None
    ram = (memory or {}).get("RAM")
    if isinstance(ram, Mapping):
        shared, tot = _number(ram.get("shared")), _number(ram.get("tot"))
        used = int(shared * 1024) if shared is not None else None
        total = int(tot * 1024) if tot is not None else None
    return JetsonReading(
        gpu_percent=_number(stats.get("GPU")),
        gpu_memory_used_bytes=used,
        gpu_memory_total_bytes=total,
        temperature_c=max(temps) if temps else None,
        power_w=milliwatts / 1000.0 if milliwatts is not None else None,
    )


class JtopCollector:
    name = "jtop"

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        host: PsutilCollector | None = None,
        stale_s: float | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self._interval_s = interval_s
        self._stale_s = stale_s if stale_s is not None else max(3 * interval_s, 5.0)
        self._retry_s = retry_s
        self._host = host or PsutilCollector()
        self._latest: JetsonReading | None = None
        self._latest_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._answered = threading.Event()  # the first stats arrived
        self._failed = threading.Event()  # the first connection failed
        self.error = ""
        self._thread = threading.Thread(target=self._run, name="ef-jtop", daemon=True)

    def start(self, timeout_s: float = 5.0) -> bool:
        """Connect to jtop.service; True once the first stats arrive, False if it is missing or silent."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._answered.wait(0.05):
                return True
            if self._failed.is_set():
                break
        if not self._answered.is_set():
            self.error = self.error or f"no stats from jtop.service within {timeout_s:.0f} s"
            self.close()
            return False
        return True

    def _run(self) -> None:
        try:
            from jtop import JtopException, jtop
        except ImportError as exc:
            self.error = f"jetson-stats is not installed: {exc}"
            self._failed.set()
            return
        while not self._stop.is_set():
            try:
                with jtop(interval=self._interval_s) as jetson:
                    while not self._stop.is_set() and jetson.ok():
                        reading = parse_stats(jetson.stats, getattr(jetson, "memory", None))
                        with self._lock:
                            self._latest, self._latest_at = reading, time.monotonic()
                        self._answered.set()
            except JtopException as exc:
                self.error = f"jtop.service did not answer: {exc}"
            except Exception as exc:  # a jtop bug must not take the agent down
                self.error = f"jtop failed: {type(exc).__name__}: {exc}"
            if not self._answered.is_set():
                self._failed.set()
                return
            if not self._stop.is_set():
                log.warning("%s; retrying in %.0f s", self.error or "jtop stopped", self._retry_s)
                self._stop.wait(self._retry_s)

    def sample(self) -> DeviceSample:
        base = self._host.sample()
        with self._lock:
            reading, at = self._latest, self._latest_at
        if reading is None or time.monotonic() - at > self._stale_s:
            return base  # stale: report only what psutil measured
        hottest = [t for t in (base.temperature_c, reading.temperature_c) if t is not None]
        return replace(
            base,
            gpu_percent=reading.gpu_percent,
            gpu_memory_used_bytes=reading.gpu_memory_used_bytes,
            gpu_memory_total_bytes=reading.gpu_memory_total_bytes,
            temperature_c=max(hottest) if hottest else None,
            power_w=reading.power_w,
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(2 * self._interval_s, 1.0))

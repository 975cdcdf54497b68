"""The collector that works everywhere: the agent process's CPU and memory, and the hottest sensor, from
psutil. The other collectors take their CPU and memory figures from here too, so that every kind of box
reports them the same way.
"""

from __future__ import annotations

import psutil

from edgefleet.agent.collectors.base import DeviceSample


def hottest_sensor_c() -> float | None:
    """The highest temperature any thermal sensor reports, or None where psutil sees none."""
    try:
        temps = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    values = [t.current for entries in temps.values() for t in entries if t.current]
    return float(max(values)) if values else None


class PsutilCollector:
    name = "psutil"

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first call only starts the measurement

    def sample(self) -> DeviceSample:
        return DeviceSample(
            cpu_percent=float(self._proc.cpu_percent(None)),
            memory_used_bytes=int(self._proc.memory_info().rss),
            temperature_c=hottest_sensor_c(),
        )

    def close(self) -> None:
        pass

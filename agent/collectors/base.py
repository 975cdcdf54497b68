"""What a device telemetry collector returns, and the protocol every collector implements.

Only the CPU figure is required: a box without a GPU, a power sensor or a thermal zone still reports, and
the missing readings stay ``None`` on the wire rather than a misleading zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DeviceSample:
    """One reading of the box. CPU and memory figures are the agent process's own (psutil semantics: 100
    is one core busy); GPU, temperature and power are the whole device's."""

    cpu_percent: float
    memory_used_bytes: int | None = None  # the agent process's resident memory
    gpu_percent: float | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None  # on a Jetson: the RAM shared by CPU and GPU
    temperature_c: float | None = None  # the hottest sensor
    power_w: float | None = None  # the whole board (Jetson) or the GPUs (NVML)


class CollectorUnavailable(Exception):
    """A collector cannot run on this machine (package missing, service down, driver absent)."""


class Collector(Protocol):
    """Something the telemetry thread asks for one :class:`DeviceSample` per window."""

    name: str

    def sample(self) -> DeviceSample: ...

    def close(self) -> None: ...

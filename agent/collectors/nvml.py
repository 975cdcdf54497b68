"""GPU telemetry from NVML (nvidia-ml-py, ``import pynvml``) beside a discrete NVIDIA GPU.

NVML is initialised once when the collector is made; a machine without the driver fails there
(``NVMLError``) and the agent falls back to psutil. A reading the GPU does not support (power on some
boards) stays ``None`` instead of failing the whole sample.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from edgefleet.agent.collectors.base import CollectorUnavailable, DeviceSample
from edgefleet.agent.collectors.psutil_collector import PsutilCollector

log = logging.getLogger(__name__)
T = TypeVar("T")


class NvmlCollector:
    name = "nvml"

    def __init__(self, *, host: PsutilCollector | None = None) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise CollectorUnavailable("nvidia-ml-py is not installed: pip install 'edgefleet[gpu]'") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise CollectorUnavailable(f"NVML did not initialise: {exc}") from exc
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise CollectorUnavailable(f"NVML lists no GPU: {exc}") from exc
        if not self._handles:
            pynvml.nvmlShutdown()
            raise CollectorUnavailable("NVML initialised but lists no GPU")
        self._host = host or PsutilCollector()
        self._closed = False

    def _read(self, call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except self._nvml.NVMLError as exc:
            log.debug("NVML reading failed: %s", exc)
            return None

    def sample(self) -> DeviceSample:
        base = self._host.sample()
        if self._closed:
            return base
        nv = self._nvml
        utils: list[float] = []
        used: list[int] = []
        total: list[int] = []
        temps: list[float] = []
        watts: list[float] = []
        for h in self._handles:
            rates = self._read(nv.nvmlDeviceGetUtilizationRates, h)
            if rates is not None:
                utils.append(float(rates.gpu))
            mem = self._read(nv.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                used.append(int(mem.used))
                total.append(int(mem.total))
            temp = self._read(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            if temp is not None:
                temps.append(float(temp))
            milliwatts = self._read(nv.nvmlDeviceGetPowerUsage, h)
            if milliwatts is not None:
                watts.append(float(milliwatts) / 1000.0)
        hottest = [t for t in (base.temperature_c, *temps) if t is not None]
        return DeviceSample(
            cpu_percent=base.cpu_percent,
            memory_used_bytes=base.memory_used_bytes,
            gpu_percent=sum(utils) / len(utils) if utils else None,
            gpu_memory_used_bytes=sum(used) if used else None,
            gpu_memory_total_bytes=sum(total) if total else None,
            temperature_c=max(hottest) if hottest else None,
            power_w=sum(watts) if watts else None,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()

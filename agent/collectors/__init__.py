"""Device telemetry for the agent: one collector per kind of box, chosen once at start-up.

``select_collector`` picks jtop on a Jetson, NVML beside a discrete NVIDIA GPU, and psutil everywhere
else; each returns a :class:`DeviceSample` that the agent turns into its telemetry window.
"""

from edgefleet.agent.collectors.base import Collector, CollectorUnavailable, DeviceSample
from edgefleet.agent.collectors.select import select_collector

__all__ = ["Collector", "CollectorUnavailable", "DeviceSample", "select_collector"]

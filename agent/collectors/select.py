"""Choosing the agent's telemetry collector once, at start-up: jtop where jetson-stats imports and
jtop.service answers, else NVML where it initialises, else psutil. The choice is logged, so an operator
can see why a Jetson reports no GPU load (usually: jtop.service not running, or the agent not in the
``jtop`` group).
"""

from __future__ import annotations

import logging

from edgefleet.agent.collectors.base import Collector, CollectorUnavailable
from edgefleet.agent.collectors.jtop import JtopCollector
from edgefleet.agent.collectors.nvml import NvmlCollector
from edgefleet.agent.collectors.psutil_collector import PsutilCollector

log = logging.getLogger(__name__)


def select_collector(*, jtop_timeout_s: float = 5.0) -> Collector:
    """The best collector this machine supports; never raises."""
    host = PsutilCollector()
    reasons = []
    jetson = JtopCollector(host=host)
    if jetson.start(jtop_timeout_s):
        log.info("device telemetry: jtop (jetson-stats)")
        return jetson
    reasons.append(f"jtop: {jetson.error}")
    try:
        nvml = NvmlCollector(host=host)
    except CollectorUnavailable as exc:
        reasons.append(f"nvml: {exc}")
    else:
        log.info("device telemetry: NVML (%s)", "; ".join(reasons))
        return nvml
    log.info("device telemetry: psutil (%s)", "; ".join(reasons))
    return host

"""The performance model: service-time curves learnt online, hardware sharing and queueing on top.

Placement asks it one question — given these tenants with these arrival rates on this device, what are
their mean and p95 latencies? — and the coordinator feeds it telemetry and records how wrong it was.
"""

from edgefleet.coordinator.perf.accuracy import ErrorBook, ErrorStat, Scored
from edgefleet.coordinator.perf.book import KindSpec, PerfBook, Profile, ProfileKey
from edgefleet.coordinator.perf.curve import RlsEstimator, ServiceCurve, fit_profile
from edgefleet.coordinator.perf.learner import Learner
from edgefleet.coordinator.perf.sharing import Load, Outlook, Processor, predict

__all__ = [
    "ErrorBook",
    "ErrorStat",
    "KindSpec",
    "Learner",
    "Load",
    "Outlook",
    "PerfBook",
    "Processor",
    "Profile",
    "ProfileKey",
    "RlsEstimator",
    "Scored",
    "ServiceCurve",
    "fit_profile",
    "predict",
]

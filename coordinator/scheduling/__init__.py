"""The scheduling framework: one cycle (``schedule``) of filter and score plugins over the fleet snapshot,
and today's placement policies as profiles of those plugins."""

from edgefleet.coordinator.scheduling.framework import (
    CycleState,
    Decision,
    Filter,
    NoFit,
    NotExcluded,
    Pinned,
    Placed,
    Profile,
    Request,
    Score,
    schedule,
)
from edgefleet.coordinator.scheduling.profiles import (
    BEST_FIT,
    FIRST_FIT,
    MOST_FREE_MEMORY,
    PREDICTED_LATENCY,
    PROFILES,
    SPREAD_FIT,
    WORST_FIT,
    predicted_latency,
)

__all__ = ["BEST_FIT", "FIRST_FIT", "MOST_FREE_MEMORY", "PREDICTED_LATENCY", "PROFILES", "SPREAD_FIT", "WORST_FIT",
           "CycleState", "Decision", "Filter", "NoFit", "NotExcluded", "Pinned", "Placed", "Profile", "Request",
           "Score", "predicted_latency", "schedule"]

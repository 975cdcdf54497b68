"""Where tenants run: the ``Placement`` seam and the policies behind it."""

from edgefleet.coordinator.placement.knapsack import BestFit, FirstFit, SpreadFit, WorstFit
from edgefleet.coordinator.placement.memory import MostFreeMemory, rejection
from edgefleet.coordinator.placement.model import Demand, PredictedLatency
from edgefleet.coordinator.placement.seam import Decision, NoFit, Placed, Placement

__all__ = [
    "BestFit",
    "Decision",
    "Demand",
    "FirstFit",
    "MostFreeMemory",
    "NoFit",
    "Placed",
    "Placement",
    "PredictedLatency",
    "SpreadFit",
    "WorstFit",
    "rejection",
]

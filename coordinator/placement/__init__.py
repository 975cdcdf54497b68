"""Where tenants run: the ``Placement`` seam and the policies behind it."""

from coordinator.placement.memory import MostFreeMemory, rejection
from coordinator.placement.seam import Decision, NoFit, Placed, Placement

__all__ = ["Decision", "MostFreeMemory", "NoFit", "Placed", "Placement", "rejection"]

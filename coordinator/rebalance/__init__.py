"""The rebalancer: when a tenant's SLO is at risk (``streaks``), which commands fix it (``planner``),
judged by the performance model with batching (``outlook``)."""

from edgefleet.coordinator.rebalance.outlook import Host, Resident, Verdict, assess, expected_batch
from edgefleet.coordinator.rebalance.planner import (
    Action,
    DevicePlan,
    Migrate,
    Plan,
    Reconfigure,
    Situation,
    plan,
)
from edgefleet.coordinator.rebalance.streaks import (
    RebalancePolicy,
    Streak,
    at_risk,
    due,
    forget,
    moved,
    observe,
    observe_predicted,
    observed,
    predicted_observed,
)
from edgefleet.coordinator.scheduling.framework import Model

__all__ = [
    "Action",
    "DevicePlan",
    "Host",
    "Migrate",
    "Model",
    "Plan",
    "RebalancePolicy",
    "Reconfigure",
    "Resident",
    "Situation",
    "Streak",
    "Verdict",
    "assess",
    "at_risk",
    "due",
    "expected_batch",
    "forget",
    "moved",
    "observe",
    "observe_predicted",
    "observed",
    "plan",
    "predicted_observed",
]

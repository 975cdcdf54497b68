"""Which model variants are resident on the device, inside a byte budget.

``predictor`` forecasts each tenant's next requests from its arrival history (Bayesian, Gamma-Poisson
with forgetting); ``planner`` chooses the resident set — a multiple-choice knapsack over each tenant's
variants, which downgrades a tenant to a smaller variant before it evicts anyone; ``lru`` is the
baseline users know (load the preferred variant on demand, evict the least recently used).
All three are pure: plain frozen data in, a plan out, an injected clock.
"""

from edgefleet.agent.memory.lru import lru_admit
from edgefleet.agent.memory.planner import Candidate, Plan, VariantOption, plan_residency
from edgefleet.agent.memory.predictor import ArrivalPredictor

__all__ = ["ArrivalPredictor", "Candidate", "Plan", "VariantOption", "lru_admit", "plan_residency"]

"""A discrete-event fleet simulator that drives the production coordinator against simulated agents.

The coordinator's ``Engine`` is written against an injected clock and a publish callback, so it can be
run unchanged on a virtual clock: births, acks, telemetry and deaths from simulated agents become
events on one heap, and the commands the engine publishes are decoded and delivered back to the agents
as events. Simulated seconds cost nothing, so placement, failover and rebalancing can be exercised on
thousands of devices in seconds of wall time.
"""

from edgefleet.coordinator.sim.clock import EventQueue
from edgefleet.coordinator.sim.scenario import Scenario, run_scenario
from edgefleet.coordinator.sim.world import World

__all__ = ["EventQueue", "Scenario", "World", "run_scenario"]

"""The simulated world: the production ``Engine`` on a virtual clock, wired to simulated agents.

What the service does with MQTT is done here with events: a status, telemetry or ack message from an
agent reaches the engine after a network delay, inside one store transaction as in the service's
worker; the engine's publish callback decodes each command and delivers it to the addressed agent after
the same delay; a timer runs ``check_liveness`` and ``send_due`` as the service's tick does. A killed
agent goes silent and, after the broker's keep-alive grace, its last will (a Death "lost") arrives.
Nothing of the coordinator is replaced: placement, retries, failover and rebalancing are its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from edgefleet.coordinator.commands import Outbox
from edgefleet.coordinator.config import CommandPolicy
from edgefleet.coordinator.engine import Engine
from edgefleet.coordinator.models import ModelLookup
from edgefleet.coordinator.placement import Placement
from edgefleet.coordinator.placement.live import PerfModel
from edgefleet.coordinator.rebalance import RebalancePolicy
from edgefleet.coordinator.sim.agents import SimAgent
from edgefleet.coordinator.sim.clock import EventQueue
from edgefleet.coordinator.store import Store
from edgefleet.wire import (
    Configure,
    Death,
    Deploy,
    OpReply,
    Telemetry,
    TelemetryAck,
    Topics,
    Undeploy,
    decode_to_device,
)


@dataclass(frozen=True)
class WorldConfig:
    net_delay_s: float = 0.02  # one way, agent <-> broker <-> coordinator
    tick_s: float = 0.5  # the coordinator's timer duties (its worker wakes at least once a second)
    telemetry_period_s: float = 10.0
    device_timeout_s: float = 60.0  # silence after which the coordinator declares a device dead
    will_delay_s: float = 15.0  # keep-alive grace before the broker publishes a lost device's will
    commands: CommandPolicy = field(default_factory=CommandPolicy)
    rebalance: RebalancePolicy = field(default_factory=RebalancePolicy)


@dataclass
class Traffic:
    """Messages each way, for the report."""

    births: int = 0
    deaths: int = 0
    telemetry: int = 0
    acks: int = 0
    commands_delivered: int = 0
    commands_dropped: int = 0  # addressed to a dead agent
    telemetry_acks: int = 0


WindowHook = Callable[[Telemetry], None]


class World:
    def __init__(self, *, models: ModelLookup, placement: Placement, config: WorldConfig | None = None,
                 seed: int = 0, start: float = 1_000_000.0, model: PerfModel | None = None) -> None:
        self.config = config or WorldConfig()
        self.queue = EventQueue(start)
        self.start = start
        self.rng = random.Random(seed)
        self.placement = placement
        self.store = Store(":memory:")
        self.outbox = Outbox(self.store, Topics("ef"), self.config.commands, self._publish)
        self.settled: list[tuple[float, str, str, OpReply]] = []
        self.engine = Engine(store=self.store, outbox=self.outbox, models=models, placement=placement, model=model,
                             clock=self.queue.clock, device_timeout_s=self.config.device_timeout_s,
                             rebalance=self.config.rebalance)
        self.agents: dict[str, SimAgent] = {}
        self.traffic = Traffic()
        self.window_hooks: list[WindowHook] = []
        self.queue.every(self.config.tick_s, self._tick)

    @property
    def now(self) -> float:
        return self.queue.now

    def _take_answers(self) -> None:
        """The operator calls the coordinator settled, stamped now (as its desk would answer them)."""
        self.settled.extend((self.queue.now, *a) for a in self.engine.tenants.take_answers())

    # -- agent -> coordinator -----------------------------------------------------------------------
    def _inbound(self, fn: Callable[[], None]) -> None:
        """Deliver one message to the coordinator after the network delay, in one transaction."""

        def deliver() -> None:
            with self.store.atomic():
                fn()
            self._take_answers()

        self.queue.after(self.config.net_delay_s, deliver)

    def add(self, agent: SimAgent, at: float) -> None:
        """Start ``agent`` at ``at``: Birth, then a telemetry window every period while it lives."""
        self.agents[agent.device_id] = agent
        self.queue.at(at, lambda: self._boot(agent))

    def _boot(self, agent: SimAgent) -> None:
        birth = agent.start(self.now)
        self.traffic.births += 1
        self._inbound(lambda: self.engine.birth(birth))
        boot = agent.boot_id
        period = self.config.telemetry_period_s
        phase = self.rng.uniform(0.0, period)
        last = [self.now]

        def publish() -> None:
            if not agent.alive or agent.boot_id != boot:
                return
            window = agent.window(last[0], self.now)
            last[0] = self.now
            self.traffic.telemetry += 1
            self._inbound(lambda: self._telemetry(window))
            self.queue.after(period, publish)

        self.queue.after(phase, publish)

    def _telemetry(self, window: Telemetry) -> None:
        self.engine.telemetry(window)  # which also feeds a learning placement, as in the service
        for hook in self.window_hooks:
            hook(window)

    def kill(self, device_id: str, at: float) -> None:
        """At ``at`` the device stops answering; its will (Death "lost") arrives after the grace."""

        def die() -> None:
            agent = self.agents[device_id]
            if not agent.alive:
                return
            agent.kill()
            death = Death(device_id=device_id, reason="lost", boot_id=agent.boot_id, ts=self.now)

            def will() -> None:
                self.traffic.deaths += 1
                self._inbound(lambda: self.engine.death(death))

            self.queue.after(self.config.will_delay_s, will)

        self.queue.at(at, die)

    def restart(self, device_id: str, at: float) -> None:
        """At ``at`` the device boots again, empty, with a new boot id."""
        self.queue.at(at, lambda: self._boot(self.agents[device_id]))

    # -- coordinator -> agent -----------------------------------------------------------------------
    def _publish(self, topic: str, payload: bytes) -> None:
        msg = decode_to_device(payload)
        if isinstance(msg, TelemetryAck):
            self.traffic.telemetry_acks += 1
            return
        self.queue.after(self.config.net_delay_s, lambda: self._command(msg))

    def _command(self, cmd: Deploy | Undeploy | Configure) -> None:
        agent = self.agents.get(cmd.device_id)
        if agent is None or not agent.alive:
            self.traffic.commands_dropped += 1
            return
        self.traffic.commands_delivered += 1
        boot = agent.boot_id

        def done() -> None:
            if not agent.alive or agent.boot_id != boot:
                return  # died while loading: no ack; the coordinator retries or fails over
            ack = agent.apply(cmd, self.now)
            self.traffic.acks += 1
            self._inbound(lambda: self.engine.ack(ack, agent.device_id))

        self.queue.after(agent.load_delay_s(cmd), done)

    # -- the coordinator's timer ------------------------------------------------------------------
    def online(self) -> set[str]:
        return set(self.store.online_ids())

    def _tick(self) -> None:
        with self.store.atomic():
            self.engine.tick()
        self._take_answers()

    def run_until(self, t: float) -> None:
        self.queue.run_until(t)

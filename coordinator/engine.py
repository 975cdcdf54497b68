"""The fleet's state machine: applies what devices say (births, deaths, silence, telemetry, acks) to the plan.

Everything here runs on the service's worker thread, against the store, with an injected clock; it
never touches MQTT except through the outbox's publish function, so it can be driven directly in
tests. The database holds the desired state (which tenant should run where, see ``tenants``); each
device's birth says what actually runs, and ``Tenants.reconcile`` closes the gap with Deploy and Undeploy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from edgefleet.coordinator.commands import Outbox
from edgefleet.coordinator.models import ModelLookup, UnknownModel
from edgefleet.coordinator.placement import Placement
from edgefleet.coordinator.placement.live import NullModel, PerfModel
from edgefleet.coordinator.rebalance import RebalancePolicy, Streak
from edgefleet.coordinator.rebalance.controller import Move, Rebalancer
from edgefleet.coordinator.store import Store
from edgefleet.coordinator.tenants import Tenants
from edgefleet.wire import Ack, Birth, Death, ServiceProfile, Telemetry

log = logging.getLogger(__name__)

SILENT = "silent for"  # prefix of the offline detail of a device declared dead by the liveness timer


class Engine:
    def __init__(self, *, store: Store, outbox: Outbox, models: ModelLookup, placement: Placement,
                 clock: Callable[[], float], device_timeout_s: float,
                 rebalance: RebalancePolicy | None = None, model: PerfModel | None = None) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.device_timeout_s = device_timeout_s
        self.models = models
        # the tenants' lifecycle: what operators and the rebalancer ask goes there directly (``tenants.deploy``,
        # ``undeploy``, ``migrate``, ``plan``, ``snapshot``); its settled calls wait in ``tenants.answers``.
        # It holds the performance model (see ``model``).
        self.tenants = Tenants(store=store, outbox=outbox, models=models, placement=placement, clock=clock,
                               model=model if model is not None else NullModel())
        self.stray_acks = 0  # Acks of no known command for the device that sent them
        self._started_at = clock()  # liveness counts from here: devices get a chance to re-announce
        self.duplicate_windows = 0
        self.rebalance = rebalance or RebalancePolicy()
        self.rebalancer = Rebalancer(store=store, tenants=self.tenants, policy=self.rebalance, clock=clock)

    @property
    def model(self) -> PerfModel:
        """The performance model: learns from every stored window and every Ack's profile; placement and
        the rebalancer are handed its predictor (a memory-only coordinator's learns and predicts nothing)."""
        return self.tenants.model

    @property
    def streaks(self) -> dict[str, Streak]:
        return self.rebalancer.streaks

    @property
    def rebalance_moves(self) -> list[Move]:
        """The rebalancer's last decisions, each with its reason (see edgefleet.coordinator.rebalance.controller)."""
        return self.rebalancer.moves

    # -- acknowledgements ----------------------------------------------------------------------------
    def ack(self, a: Ack, topic_device: str) -> None:
        """A device answered a command: it is alive, its profile (if any) teaches the performance model,
        and the command's tenant moves along (``Tenants.acked``)."""
        cmd = self.store.command(a.command_id)
        if cmd is None or cmd.device_id != a.device_id or a.device_id != topic_device:
            self.stray_acks += 1
            log.info("ignoring ack %s from %s: no such command for this device", a.command_id, topic_device)
            return
        self.store.touch(topic_device, self.clock())
        if a.ok and a.profile is not None:
            self._profiled(a.profile, topic_device)
        self.tenants.acked(cmd, a)

    def _profiled(self, profile: ServiceProfile, device_id: str) -> None:
        """A device timed a variant as it loaded it: the performance model's book learns it."""
        device = self.store.device(device_id)
        if device is None:
            return
        try:
            runtime = self.models.facts(profile.model, profile.variant).runtime
        except UnknownModel:
            return
        self.model.profiled(device.kind, profile, runtime)

    # -- membership -------------------------------------------------------------------------------
    def birth(self, b: Birth) -> None:
        now = self.clock()
        before = self.store.device(b.device_id)
        self.store.record_birth(b, now)
        fresh = before is None or not before.online or before.boot_id != b.boot_id
        self.tenants.reconcile(b.device_id, set(b.tenants))
        if fresh:
            log.info("device %s online (boot %s, %s)", b.device_id, b.boot_id, ", ".join(b.capabilities.runtimes))
            self.store.expedite(b.device_id, now)
            self.tenants.place_unplaced()
            self.rebalancer.run(now, joined=True)  # violations that found no device may offload to it

    def death(self, d: Death) -> None:
        device = self.store.device(d.device_id)
        if device is None or not device.online:
            return  # a retained death we already know, or of a device never seen
        if d.boot_id and device.boot_id and d.boot_id != device.boot_id:
            log.info("ignoring death of %s boot %s (current boot %s)", d.device_id, d.boot_id, device.boot_id)
            return
        self.lost(d.device_id, "shut down" if d.reason == "shutdown" else "connection lost")

    def lost(self, device_id: str, why: str) -> None:
        """``device_id`` is gone: every tenant there is moved (Undeploys to it wait until it is back)."""
        log.warning("device %s offline: %s", device_id, why)
        self.store.set_offline(device_id, why)
        self.tenants.lost(device_id, why)

    def tick(self, heard: Mapping[str, float] | None = None, *, liveness: bool = True, sending: bool = True) -> None:
        """The one periodic cycle (the service's timer, the simulator's and the tests' rig): declare silent
        devices dead (``liveness``; ``heard``: arrival stamps, see ``check_liveness``), then send the
        commands that are due to online devices (``sending``: False while the broker is unreachable)."""
        if liveness:
            self.check_liveness(heard)
        if sending:
            self.tenants.send_due(self.store.online_ids())

    def check_liveness(self, heard: Mapping[str, float] | None = None) -> None:
        """Declare dead every online device silent longer than ``device_timeout_s``. ``heard``: when each
        device's latest message *arrived* (stamped on receipt, before it waited in the coordinator's own
        queue), so a device whose messages wait behind a backlog is never taken for silent."""
        now = self.clock()
        for device_id in sorted(self.store.online_ids()):
            d = self.store.device(device_id)
            if d is None:
                continue
            seen = max(d.last_seen, self._started_at, heard.get(device_id, 0.0) if heard is not None else 0.0)
            silent = now - seen
            if silent > self.device_timeout_s:
                self.lost(d.device_id, f"{SILENT} {silent:.0f} s")

    # -- telemetry --------------------------------------------------------------------------------
    def telemetry(self, t: Telemetry, payload: bytes | None = None) -> None:
        """One window (``payload``: as it arrived, stored as is; else ``t`` is encoded to store it)."""
        now = self.clock()
        if not self.store.add_telemetry(t, now, payload):
            self.duplicate_windows += 1
            return
        device = self.store.device(t.device_id)
        self.model.observe(device.kind if device is not None else "", t)  # each window once, duplicates not
        if device is None or device.boot_id != t.boot_id:
            return  # stored, but from a boot whose birth we have not seen (or an old one)
        self.store.record_window(t, now)
        if not device.online and device.detail.startswith(SILENT):
            log.info("device %s is alive again", t.device_id)
            listed = [w.tenant for w in t.tenants if w.resident or w.arrivals]
            self.store.set_online(t.device_id, listed, now)
            self.tenants.reconcile(t.device_id, set(listed))
            self.store.expedite(t.device_id, now)
            self.tenants.place_unplaced()
        rows = self.store.tenants_on(t.device_id)
        hosted = {r.name for r in rows}
        for w in t.tenants:
            if w.tenant in hosted:
                self.store.record_tenant_window(w.tenant, w, now)
        self.rebalancer.window(t)

"""The engine's rebalancer: the planner's plain inputs (the fleet snapshot), its plan carried out, each
decision recorded.

Runs on the coordinator's worker thread like the engine. Per telemetry window of a device it updates
the streaks (measured p95 over SLO; with a performance model also the model's verdict on
that device at the demand just reported) and then asks ``rebalance.planner.plan`` what to do for the
tenants that are due. Reconfigurations go out as Configure commands (``Tenants.reconfigure``: the row
takes the new spec at the Ack), migrations as make-before-break moves (``Tenants.migrate``, which asks
the placement again for the chosen target). Every decision — an action and its outcome, or why nothing
was done — is kept in ``moves`` (the last ``MOVES_KEPT``) with its reason. A device joining re-plans at
once for the tenants whose last attempt found nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.coordinator import rebalance
from edgefleet.coordinator.fleet import DeviceSnapshot
from edgefleet.coordinator.models import UnknownModel
from edgefleet.coordinator.rebalance import Migrate, RebalancePolicy, Situation, Streak
from edgefleet.coordinator.store import Store, TenantState
from edgefleet.coordinator.tenants import Tenants
from edgefleet.wire import Telemetry
from edgefleet.wire.messages import VARIANTS

log = logging.getLogger(__name__)

MOVES_KEPT = 100  # rebalancer decisions remembered for inspection


@dataclass(frozen=True)
class Move:
    """One rebalancer decision: ``action`` is "migrate", "configure" or "none"; ``outcome`` "moving",
    "configuring", or why it was not done."""

    at: float
    tenant: str
    action: str
    outcome: str
    reason: str


def situation_key(move: Move) -> tuple[str, str]:
    """What a repeated decision must differ in to be logged again: its action and the outcome's code
    ("no_fit", "stays", "moving", ...) without the figures that change every window."""
    return move.action, move.outcome.split(":", 1)[0].strip()


def worth_logging(last: tuple[str, str] | None, move: Move) -> bool:
    """Log a decision the first time, whenever it changes, and every action that was carried out; a
    tenant that keeps finding nothing to do (a one-agent fleet after a burst: ``migrate ... no_fit``)
    is logged once until its situation changes."""
    key = situation_key(move)
    return last != key or key[1] in ("moving", "configuring")


def _recovered(s: Streak) -> bool:
    return s.over == 0 and s.predicted == 0


class Rebalancer:
    def __init__(self, *, store: Store, tenants: Tenants, policy: RebalancePolicy,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.tenants = tenants
        self.policy = policy
        self.clock = clock
        self.streaks: dict[str, Streak] = {}  # in memory: a restarted coordinator starts afresh
        self._at_risk: set[str] = set()  # the tenants whose streak is long enough for ``due`` to consider
        self.moves: list[Move] = []
        self._logged: dict[str, tuple[str, str]] = {}  # tenant -> situation_key of its last logged decision

    # -- inputs ---------------------------------------------------------------------------------------
    def hosts(self) -> tuple[DeviceSnapshot, ...]:
        """The fleet as the planner sees it: the one snapshot placement reads (each tenant says whether it
        may be changed or moved)."""
        return self.tenants.snapshot().devices

    def host(self, device_id: str) -> DeviceSnapshot | None:
        return self.tenants.snapshots.device(device_id)

    def situation(self) -> Situation:
        hosts = self.hosts()
        model = self.tenants.model.predictor(frozen=True)
        variants = {}
        for m in sorted({r.spec.model for h in hosts for r in h.residents}):
            for v in VARIANTS:
                try:
                    variants[(m, v)] = self.tenants.models.facts(m, v)
                except UnknownModel:
                    continue
        observed = {t.name: t.latency_p95_ms for t in self.store.tenants() if t.latency_p95_ms > 0}
        return Situation(hosts, model, variants, observed)

    # -- per window --------------------------------------------------------------------------------
    def window(self, t: Telemetry) -> None:
        """Streaks after one stored window of ``t.device_id``, then the plan for what is due. Touches
        only that device's tenants: the cost of a window does not grow with the fleet."""
        rows = self.store.tenants_on(t.device_id)
        running = [r.name for r in rows if r.state == TenantState.RUNNING and r.pinned is None]
        self._merge(rebalance.observed(self.streaks, t.tenants, self.policy, running))
        model = self.tenants.model.predictor() if self.policy.predict and self.policy.enabled else None
        if model is not None:
            host = self.host(t.device_id)
            if host is not None:
                verdict = rebalance.assess(host, model)
                bad = () if verdict.unmodelled else verdict.violating(self.policy.ratio)
                self._merge(rebalance.predicted_observed(self.streaks, bad, running))
        for name in running:  # back within its SLO: its next decision is news again
            if name in self._logged and (name not in self.streaks or _recovered(self.streaks[name])):
                del self._logged[name]
        self.run(self.clock())

    def _merge(self, changed: dict[str, Streak]) -> None:
        self.streaks.update(changed)
        for name, s in changed.items():
            if rebalance.at_risk(s, self.policy):
                self._at_risk.add(name)
            else:
                self._at_risk.discard(name)

    def _reindex(self) -> None:
        self._at_risk = {n for n, s in self.streaks.items() if rebalance.at_risk(s, self.policy)}

    def run(self, now: float, *, joined: bool = False) -> None:
        candidates = {n: self.streaks[n] for n in self._at_risk if n in self.streaks}
        if not rebalance.due(candidates, self.policy, now, joined=joined):
            return
        try:
            self._run(now, joined)
        finally:
            self._reindex()

    def _run(self, now: float, joined: bool) -> None:
        self.streaks = rebalance.forget(self.streaks, (r.name for r in self.store.tenants()))
        result = rebalance.plan(self.situation(), self.streaks, self.policy, now, joined=joined)
        for dp in result.devices:
            acted: set[str] = set()
            if dp.feasible:
                for action in dp.actions:
                    self._carry_out(now, action, dp.reason)
                    acted.add(action.tenant)
            else:
                for name in dp.tenants:
                    self._record(Move(now, name, "none", "stays", dp.reason))
            for name in dp.tenants:
                self.streaks = rebalance.moved(self.streaks, name, now, stuck=not dp.feasible)
            for name in acted - set(dp.tenants):
                self.streaks = rebalance.moved(self.streaks, name, now)

    def _carry_out(self, now: float, action: rebalance.Action, why: str) -> None:
        reason = f"{why}; {action.reason}"
        if isinstance(action, Migrate):
            reply = self.tenants.migrate(action.tenant, action.target)
            outcome = "moving" if reply is None else f"{reply.code or 'stays'}: {reply.message}"
            self._record(Move(now, action.tenant, "migrate", outcome, reason))
        else:
            reply = self.tenants.reconfigure(action.tenant, action.spec, reason)
            outcome = "configuring" if reply is None else f"{reply.code or 'stays'}: {reply.message}"
            self._record(Move(now, action.tenant, "configure", outcome, reason))

    def _record(self, move: Move) -> None:
        if worth_logging(self._logged.get(move.tenant), move):
            level = logging.WARNING if move.action != "none" else logging.INFO
            log.log(level, "rebalance %s %s: %s (%s)", move.action, move.tenant, move.outcome, move.reason)
            self._logged[move.tenant] = situation_key(move)
        else:
            log.debug("rebalance %s %s: %s (%s)", move.action, move.tenant, move.outcome, move.reason)
        self.moves.append(move)
        del self.moves[:-MOVES_KEPT]


__all__ = ["MOVES_KEPT", "Move", "Rebalancer", "situation_key", "worth_logging"]

"""The scheduling cycle: filter the devices that cannot take a tenant, score the rest, take the best.

The shape of the Kubernetes scheduler's framework, on the coordinator's one fleet view
(``edgefleet.coordinator.fleet.FleetSnapshot``). A ``Filter`` says why one device cannot take the tenant (or None);
a ``Score`` rates a device that passed every filter (higher is better); a ``Profile`` is an ordered list
of filters, weighted scores, a tie-break and how a choice is described to operators. ``schedule`` runs
one cycle: every device in id order goes through the filters, the first that rejects it gives its reason,
and the feasible device with the highest weighted score wins (ties: fewer tenants then the smaller id, or
the smaller id alone). Plugins share what they computed for a device within one cycle through
``CycleState`` (the predicted outlook a filter computed is what a score reads). ``Model`` is the
performance model's predictor for one decision (``PerfModel.predictor``: the learnt book, each tenant's
expected ``Demand``, the headroom), immutable for the cycle; memory-only profiles ignore it.

``exclude`` (devices already tried, or a move's source) and ``pinned`` (the operator's device) are the
caller's own constraints: filters like the others, but the devices they remove are not listed in a
``NoFit``'s reason, which says per device why each of the remaining ones does not fit.

Pure: no I/O, no clock; the fleet, the tenant and the performance model's predictor are handed in, and
expected negatives are values (``NoFit``) with a reason. Every path that places a tenant calls
``schedule``: deploy, a retry after a failed deploy, a re-placement after a death, the unplaced tenants'
new round, the rebalancer's migrations and ``edgefleet plan --add``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from edgefleet.coordinator.fleet import DeviceSnapshot, FleetSnapshot, ModelFacts
from edgefleet.coordinator.perf import PerfBook
from edgefleet.wire import TenantSpec


@dataclass(frozen=True, slots=True)
class Demand:
    """What placement expects of a tenant: its request rate (or, for a closed loop, its requests in
    flight and time outside the device per cycle) and its p95 objective."""

    rate_rps: float
    slo_ms: float = math.inf
    arrival_scv: float = 1.0  # how bursty its arrivals are (squared CV of the gaps; 1: Poisson)
    in_flight: int = 0  # closed loop: requests outstanding at all times (0: open, at rate_rps)
    think_ms: float = 0.0  # closed loop: time outside the device per cycle


@dataclass(frozen=True)
class Model:
    """The learnt book, the demand per tenant (rate; its SLO is the spec's) and placement's headroom."""

    book: PerfBook
    demand: Mapping[str, Demand] = field(default_factory=lambda: MappingProxyType({}))
    headroom: float = 0.8
    default_rps: float = 1.0

    def rate(self, tenant: str) -> float:
        d = self.demand.get(tenant)
        return d.rate_rps if d is not None else self.default_rps

    def burstiness(self, tenant: str) -> float:
        """The squared CV of the tenant's inter-arrival times (1, Poisson, when unknown)."""
        d = self.demand.get(tenant)
        return d.arrival_scv if d is not None else 1.0

    def loop(self, tenant: str) -> tuple[int, float]:
        """(requests in flight, ms outside the device per cycle) of a closed loop; (0, 0) when open."""
        d = self.demand.get(tenant)
        return (d.in_flight, d.think_ms) if d is not None else (0, 0.0)


@dataclass(frozen=True)
class Placed:
    device_id: str
    score: float  # higher is better; the profile says what it measures
    reason: str  # one line for operators, e.g. "most free memory: 40.0 MiB free, needs 10.9 MiB"


@dataclass(frozen=True)
class NoFit:
    reason: str  # why no device fits, per device: "d1: no runtime litert; d2: needs 10.9 MiB, 3.1 MiB free"


Decision = Placed | NoFit


@dataclass(frozen=True)
class Request:
    """What one cycle places: the tenant's spec, the facts of its model variant, and the performance
    model's predictor (None: memory-only, no predictions)."""

    spec: TenantSpec
    facts: ModelFacts
    model: Model | None = None


@dataclass
class CycleState:
    """What plugins computed for a device in this cycle, by (plugin key, device id)."""

    data: dict[tuple[str, str], Any] = field(default_factory=dict)

    def write(self, key: str, device_id: str, value: Any) -> None:
        self.data[(key, device_id)] = value

    def read(self, key: str, device_id: str) -> Any:
        return self.data[(key, device_id)]


class Filter(Protocol):
    """Why ``device`` cannot take the request's tenant, or None when it can."""

    @property
    def name(self) -> str: ...

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None: ...


class Score(Protocol):
    """How good ``device`` is for the request's tenant (higher is better); only called on feasible ones."""

    @property
    def name(self) -> str: ...

    def score(self, req: Request, device: DeviceSnapshot, state: CycleState) -> float: ...


Describe = Callable[[Request, DeviceSnapshot, CycleState], Placed]
# a whole policy written as one function (spec, facts, candidate fleet, predictor) -> Decision
Delegate = Callable[[TenantSpec, ModelFacts, FleetSnapshot, "Model | None"], "Placed | NoFit"]


@dataclass(frozen=True)
class Profile:
    """Filters in order, scores with their weights, the tie-break among equal totals (``"tenants"``: fewer
    tenants, then the smaller id; ``"id"``: the smaller id) and the ``Placed`` a choice becomes."""

    name: str
    filters: tuple[Filter, ...]
    scores: tuple[tuple[Score, float], ...]
    describe: Describe
    tiebreak: Literal["tenants", "id"] = "tenants"
    needs_model: bool = False  # without a predictor the profile cannot decide (NoFit, with why)
    # a placement written as one ``place`` function: it gets the devices the caller's own filters leave
    delegate: Delegate | None = None

    @staticmethod
    def delegating(name: str, place: Delegate) -> Profile:
        """The profile of a placement that only has a ``place`` function (no plugins of its own)."""
        return Profile(name, (), (), _undescribed, delegate=place)


def profile_of(placement: object) -> Profile:
    """The scheduling profile a placement is (its ``profile``); a placement written as a ``place`` function
    alone runs as a profile that hands it the devices the caller's exclusions and pin leave."""
    got = getattr(placement, "profile", None)
    if isinstance(got, Profile):
        return got
    return Profile.delegating(str(getattr(placement, "name", type(placement).__name__)),
                              placement.place)  # type: ignore[attr-defined]


def _undescribed(req: Request, device: DeviceSnapshot, state: CycleState) -> Placed:
    raise AssertionError("a delegating profile describes its own choices")


@dataclass(frozen=True)
class NotExcluded:
    """The caller's exclusions (devices tried in this round, a move's source)."""

    excluded: frozenset[str]
    name: str = "not-excluded"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        return "excluded" if device.device_id in self.excluded else None


@dataclass(frozen=True)
class Pinned:
    """Only the operator's device (None: any)."""

    device_id: str | None
    name: str = "pinned"

    def filter(self, req: Request, device: DeviceSnapshot, state: CycleState) -> str | None:
        if self.device_id is None or device.device_id == self.device_id:
            return None
        return f"not {self.device_id}, the pinned device"


NO_MODEL = "the predicted-latency placement needs the performance model, which this coordinator has not"


def schedule(spec: TenantSpec, facts: ModelFacts, fleet: FleetSnapshot, *, profile: Profile,
             exclude: Collection[str] = (), pinned: str | None = None, model: Model | None = None) -> Decision:
    """One scheduling cycle for ``spec`` (variant ``facts``) on ``fleet`` (see the module docstring)."""
    if pinned is not None and fleet.get(pinned) is None:
        return NoFit(f"{pinned}: unknown device")
    if profile.needs_model and model is None:
        return NoFit(NO_MODEL)
    req = Request(spec, facts, model)
    state = CycleState()
    own: tuple[Filter, ...] = ((Pinned(pinned),) if pinned is not None else ()) + (
        (NotExcluded(frozenset(exclude)),) if exclude else ())
    if profile.delegate is not None:
        left = tuple(d for d in fleet.devices if all(f.filter(req, d, state) is None for f in own))
        if exclude and not left:
            return NoFit(f"no device left to try after {', '.join(exclude)}")
        return profile.delegate(spec, facts, FleetSnapshot.presorted(left, {d.device_id: d for d in left}, fleet.ts),
                                model)
    feasible: list[DeviceSnapshot] = []
    reasons: list[str] = []
    candidates = 0
    filters = profile.filters
    for device in fleet.devices:
        if own and any(f.filter(req, device, state) is not None for f in own):
            continue
        candidates += 1
        for f in filters:
            why = f.filter(req, device, state)
            if why is not None:
                reasons.append(f"{device.device_id}: {why}")
                break
        else:
            feasible.append(device)
    if not feasible:
        if candidates == 0:
            if exclude:
                return NoFit(f"no device left to try after {', '.join(exclude)}")
            return NoFit("no devices known")
        return NoFit("; ".join(reasons))
    best = min(feasible, key=lambda d: _key(profile, req, d, state))
    return profile.describe(req, best, state)


def _first_rejection(filters: Sequence[Filter], req: Request, device: DeviceSnapshot,
                     state: CycleState) -> str | None:
    for f in filters:
        why = f.filter(req, device, state)
        if why is not None:
            return why
    return None


def _key(profile: Profile, req: Request, device: DeviceSnapshot, state: CycleState) -> tuple[Any, ...]:
    if len(profile.scores) == 1:
        plugin, weight = profile.scores[0]
        total = weight * plugin.score(req, device, state)
    else:
        total = sum(weight * s.score(req, device, state) for s, weight in profile.scores)
    if profile.tiebreak == "tenants":
        return (-total, len(device.tenants), device.device_id)
    return (-total, device.device_id)


def rejections(profile: Profile, req: Request, fleet: FleetSnapshot) -> dict[str, str | None]:
    """Per device, why ``profile``'s filters reject it (None: feasible); for tests and explanations."""
    state = CycleState()
    return {d.device_id: _first_rejection(profile.filters, req, d, state) for d in fleet.devices}


__all__ = [
    "NO_MODEL",
    "CycleState",
    "Decision",
    "Delegate",
    "Demand",
    "Describe",
    "Filter",
    "Model",
    "NoFit",
    "NotExcluded",
    "Pinned",
    "Placed",
    "Profile",
    "Request",
    "Score",
    "rejections",
    "schedule",
]

"""The performance book: what placement knows about each device kind and each (model, variant, kind).

A device kind says which processors it has (``cpu``, ``gpu``, ``tpu``, each with its sharing model)
and which processor each runtime runs on — a Jetson runs ONNX Runtime on its GPU and LiteRT on its
cores, a Coral box runs LiteRT on the Edge TPU and ONNX Runtime on its host cores. A profile is the
service-time curve of one model variant on one kind, with its variability and, on a TPU, the cost of
reloading its parameters. ``load`` turns a tenant (rate, SLO) into the ``Load`` the sharing model
takes. The book is immutable; online learning produces a new book with ``with_curve``, and a variant
profiled at deploy one with ``with_profile``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from edgefleet.coordinator.perf.curve import ServiceCurve
from edgefleet.coordinator.perf.sharing import Load, Processor

SINGLE_FLIGHT_RUNTIMES = frozenset({"litert"})  # the agent runs these one request at a time per tenant

ProfileKey = tuple[str, str, str]  # (model, variant, device kind)


@dataclass(frozen=True)
class KindSpec:
    name: str
    processors: Mapping[str, Processor]  # processor name -> sharing model
    runtimes: Mapping[str, str]  # runtime -> processor name

    def processor_of(self, runtime: str) -> tuple[str, Processor] | None:
        name = self.runtimes.get(runtime)
        return None if name is None else (name, self.processors[name])


@dataclass(frozen=True, slots=True)
class Profile:
    curve: ServiceCurve
    runtime: str  # the runtime that serves this variant on this kind (so: which processor)
    scv: float = 0.04  # squared coefficient of variation of the service time
    switch_ms: float = 0.0  # tpu: parameter reload when the previous request was another model
    request_mb: float = 0.0  # one request's payload, MB (the agent's request path grows with it)


def _frozen(m: Mapping[ProfileKey, Profile]) -> Mapping[ProfileKey, Profile]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class PerfBook:
    kinds: Mapping[str, KindSpec] = field(default_factory=dict)
    profiles: Mapping[ProfileKey, Profile] = field(default_factory=dict)

    def profile(self, model: str, variant: str, kind: str) -> Profile | None:
        return self.profiles.get((model, variant, kind))

    def with_curve(self, key: ProfileKey, curve: ServiceCurve, scv: float | None = None) -> PerfBook:
        """The book with one profile's curve (and, when given, its service spread) replaced, e.g. by
        an online estimate."""
        old = self.profiles.get(key)
        if old is None:
            raise KeyError(f"no profile {key} to update")
        new = replace(old, curve=curve, scv=old.scv if scv is None else scv)
        return PerfBook(self.kinds, _frozen({**self.profiles, key: new}))

    def with_profile(self, key: ProfileKey, profile: Profile) -> PerfBook:
        """The book with ``profile`` for ``key`` (added, or replacing the one it had)."""
        return PerfBook(self.kinds, _frozen({**self.profiles, key: profile}))

    def load(
        self, *, tenant: str, model: str, variant: str, kind: str, rate_rps: float, slo_ms: float = math.inf,
        arrival_scv: float = 1.0, in_flight: int = 0, think_ms: float = 0.0,
    ) -> tuple[str, Load] | str:
        """(processor name, Load) for a tenant on a device of ``kind``, or why it cannot run there; a closed
        loop when ``in_flight`` > 0 (``think_ms`` outside the device per cycle), else open at ``rate_rps``."""
        spec = self.kinds.get(kind)
        if spec is None:
            return f"unknown device kind {kind or '(none)'}"
        prof = self.profile(model, variant, kind)
        if prof is None:
            return f"no profile for {model}:{variant} on {kind}"
        where = spec.processor_of(prof.runtime)
        if where is None:
            return f"{kind} runs no {prof.runtime}"
        name, proc = where
        conc = 1 if prof.runtime in SINGLE_FLIGHT_RUNTIMES else proc.servers
        return name, Load(
            tenant, rate_rps, prof.curve.at(1), slo_ms, prof.scv, conc, prof.switch_ms, f"{model}:{variant}",
            prof.request_mb, arrival_scv, in_flight, think_ms,
        )

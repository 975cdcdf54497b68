"""Simulated agents: what a device says on the wire, without loading or running any model.

An agent announces itself with a Birth, applies Deploy, Undeploy and Configure commands (at most once
per command id, as the real agent does) and answers each with an Ack after a load delay that grows with the
model's size, and publishes a Telemetry window every period. The latencies in a window come from the
coordinator's own performance model (``PerfBook.load`` and ``sharing.predict``) for the tenants that are
resident together on the device, so the placement policies are judged by the same queueing physics
they plan with, and the arrivals are Poisson draws around each tenant's rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.coordinator.models import ModelLookup
from edgefleet.coordinator.perf import Load, PerfBook, predict
from edgefleet.coordinator.perf.calibration import VARIANT
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    Configure,
    Deploy,
    DeviceWindow,
    Telemetry,
    TenantSpec,
    TenantWindow,
    Undeploy,
)

MIB = 1 << 20
LOAD_BASE_S = 0.3  # session creation and warm-up of a model, whatever its size
LOAD_S_PER_MIB = 0.05  # reading and initialising parameters
UNSTABLE_P95_FACTOR = 10.0  # reported p95 of an overloaded tenant, in multiples of its SLO


@dataclass(frozen=True)
class DeviceKind:
    """What a simulated device reports (``reported``) and which calibrated kind models it (``book``)."""

    reported: str
    book: str
    budget_bytes: int
    cpu_count: int = 4
    accelerator: str = "cpu"


KINDS: tuple[DeviceKind, ...] = (
    DeviceKind("x86_64-cpu", "x86-cpu", 512 * MIB),
    DeviceKind("aarch64-cpu", "arm-cpu", 128 * MIB),
    DeviceKind("jetson-orin-nano", "jetson-gpu", 256 * MIB, accelerator="cuda:0"),
    DeviceKind("coral-usb", "coral-tpu", 128 * MIB, accelerator="edgetpu:usb:0"),
)


def _tail_share(p95_ms: float, slo_ms: float) -> float:
    """Share of requests slower than the SLO, assuming an exponential-like tail through the p95."""
    if p95_ms <= 0.0:
        return 0.0
    share: float = 0.05 ** (slo_ms / p95_ms)
    return min(1.0, share)


class SimAgent:
    """One device. ``alive`` is False once it was killed: it then hears and says nothing."""

    def __init__(self, device_id: str, kind: DeviceKind, *, runtimes: tuple[str, ...], models: ModelLookup,
                 book: PerfBook, rates: Mapping[str, float], rng: random.Random) -> None:
        self.device_id = device_id
        self.kind = kind
        self.runtimes = runtimes
        self.models = models
        self.book = book
        self.rates = rates  # tenant -> requests per second offered to it (the scenario's demand)
        self.rng = rng
        self.boots = 0
        self.alive = False
        self.hosted: dict[str, TenantSpec] = {}
        self.applied: set[str] = set()  # command ids, applied at most once per boot
        self.seq = 0

    @property
    def boot_id(self) -> str:
        return f"{self.device_id}-boot{self.boots}"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, now: float) -> Birth:
        """Boot (an empty device: models do not survive a restart) and say so."""
        self.boots += 1
        self.alive = True
        self.hosted.clear()
        self.applied.clear()
        self.seq = 0
        caps = Capabilities(device_kind=self.kind.reported, runtimes=list(self.runtimes),
                            accelerators=[self.kind.accelerator], cpu_count=self.kind.cpu_count,
                            memory_total_bytes=4 * self.kind.budget_bytes,
                            memory_budget_bytes=self.kind.budget_bytes, max_payload_bytes=1 << 20,
                            cached_models=[])
        return Birth(device_id=self.device_id, boot_id=self.boot_id, capabilities=caps, tenants=[],
                     agent_version="sim", ts=now)

    def kill(self) -> None:
        self.alive = False

    # -- commands ---------------------------------------------------------------------------------
    def _size(self, spec: TenantSpec) -> int:
        return self.models.facts(spec.model, spec.variant).size_bytes

    def load_delay_s(self, cmd: Deploy | Undeploy | Configure) -> float:
        """How long applying ``cmd`` takes before its Ack goes out."""
        if isinstance(cmd, Undeploy) or cmd.command_id in self.applied:
            return 0.01
        return LOAD_BASE_S + LOAD_S_PER_MIB * self._size(cmd.tenant) / MIB

    def apply(self, cmd: Deploy | Undeploy | Configure, now: float) -> Ack:
        """Apply ``cmd`` (once per command id) and return the Ack to publish."""
        def ack(ok: bool, result: str, code: str = "", message: str = "") -> Ack:
            return Ack(command_id=cmd.command_id, device_id=self.device_id, ok=ok,
                       result=result,  # type: ignore[arg-type]
                       code=code, message=message, ts=now)

        if cmd.command_id in self.applied:
            return ack(True, "duplicate")
        self.applied.add(cmd.command_id)
        if isinstance(cmd, Undeploy):
            self.hosted.pop(cmd.tenant, None)
            return ack(True, "applied", message=f"{cmd.tenant} removed")
        spec = cmd.tenant
        if isinstance(cmd, Configure) and spec.name not in self.hosted:
            return ack(False, "failed", "unknown_tenant", f"{spec.name} is not hosted here")
        facts = self.models.facts(spec.model, spec.variant)
        if facts.runtime not in self.runtimes:
            return ack(False, "rejected", "unsupported_runtime", f"no {facts.runtime} here")
        used = sum(self._size(s) for n, s in self.hosted.items() if n != spec.name)
        if used + facts.size_bytes > self.kind.budget_bytes:
            return ack(False, "failed", "out_of_memory", f"{spec.name} does not fit in the memory budget")
        self.hosted[spec.name] = spec
        return ack(True, "applied", message=f"{spec.name} loaded")

    # -- telemetry --------------------------------------------------------------------------------
    def window(self, start: float, end: float) -> Telemetry:
        """The telemetry of the tenants resident during [start, end), from the performance model."""
        period = max(end - start, 1e-9)
        by_proc: dict[str, list[tuple[str, Load]]] = {}
        unmodelled: list[str] = []
        for name, spec in sorted(self.hosted.items()):
            variant = spec.variant if self.book.profile(spec.model, spec.variant, self.kind.book) else VARIANT
            got = self.book.load(tenant=name, model=spec.model, variant=variant, kind=self.kind.book,
                                 rate_rps=max(self.rates.get(name, 0.0), 1e-6), slo_ms=spec.slo_ms)
            if isinstance(got, str):
                unmodelled.append(name)
            else:
                by_proc.setdefault(got[0], []).append((name, got[1]))
        windows: list[TenantWindow] = []
        names = sorted(self.hosted)
        cpu_util = 0.0
        processors = self.book.kinds[self.kind.book].processors
        for proc_name, loads in sorted(by_proc.items()):
            outlook = predict(processors[proc_name], [ld for _, ld in loads])
            if processors[proc_name].kind == "cpu":
                cpu_util = outlook.utilisation
            for i, (name, ld) in enumerate(loads):
                windows.append(self._tenant_window(name, ld, outlook.utilisation, outlook.mean_ms[i],
                                                   outlook.p95_ms[i], period, names))
        for name in unmodelled:
            spec = self.hosted[name]
            arrivals = self._arrivals(name, period)
            windows.append(TenantWindow(tenant=name, model=spec.model, variant=spec.variant, slo_ms=spec.slo_ms,
                                        arrivals=arrivals, errors=arrivals, arrival_rps=arrivals / period,
                                        colocated=[n for n in names if n != name]))
        used = sum(self._size(s) for s in self.hosted.values())
        self.seq += 1
        device = DeviceWindow(cpu_percent=min(100.0, 100.0 * cpu_util), memory_used_bytes=used + 64 * MIB,
                              memory_budget_bytes=self.kind.budget_bytes, model_memory_bytes=used)
        return Telemetry(device_id=self.device_id, boot_id=self.boot_id, seq=self.seq, window_start=start,
                         window_end=end, device=device, tenants=sorted(windows, key=lambda w: w.tenant))

    def _arrivals(self, name: str, period: float) -> int:
        lam = self.rates.get(name, 0.0) * period
        if lam <= 0.0:
            return 0
        if lam > 50.0:  # normal approximation of the Poisson count
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        k, p, limit = 0, 1.0, math.exp(-lam)
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _tenant_window(self, name: str, ld: Load, util: float, mean_ms: float, p95_ms: float, period: float,
                       names: list[str]) -> TenantWindow:
        spec = self.hosted[name]
        arrivals = self._arrivals(name, period)
        shed = 0
        if not math.isfinite(p95_ms):  # overloaded: the agent sheds what it cannot serve
            served = arrivals / max(util, 1.0)
            shed = arrivals - int(served)
            mean_ms, p95_ms = spec.slo_ms * UNSTABLE_P95_FACTOR / 2, spec.slo_ms * UNSTABLE_P95_FACTOR
        completions = arrivals - shed
        misses = round(completions * _tail_share(p95_ms, spec.slo_ms))
        return TenantWindow(
            tenant=name, model=spec.model, variant=spec.variant, slo_ms=spec.slo_ms, arrivals=arrivals,
            completions=completions, shed=shed, slo_misses=misses, batches=completions,
            batch_size_mean=1.0 if completions else 0.0, service_ms_mean=ld.service_ms,
            queue_ms_mean=max(0.0, mean_ms - ld.service_ms), latency_p50_ms=max(ld.service_ms, mean_ms * math.log(2.0)),
            latency_p95_ms=p95_ms, latency_p99_ms=p95_ms * 1.5, arrival_rps=arrivals / period,
            service_ms_by_batch={1: ld.service_ms} if completions else {},
            batches_by_size={1: completions} if completions else {},
            colocated=[n for n in names if n != name],
        )

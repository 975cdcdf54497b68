"""What the demo runs: three devices with different memory budgets and six tenants on six real models.

Rates and SLOs are sized for a 2-core machine that also runs the broker, the coordinator, three agents
and the load generator: about a third of a core of model compute in all (service times measured on
such a machine: VAD 0.2 ms, OCR angle classifier 1.2 ms, face detection 1.3 ms, hand landmarks 9 ms,
pose landmarks 17 ms, OCR recognition 24 ms per request at batch 1). The SLO is each tenant's p95
objective at the device; the app waits up to ``timeout_s`` for an answer before counting a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.localfleet import AgentPlan
from edgefleet.wire import TenantSpec


@dataclass(frozen=True)
class TenantLoad:
    """A tenant and the app that calls it: Poisson arrivals at ``rate_rps`` requests per second."""

    spec: TenantSpec
    runtime: str  # as recorded in the zoo catalog; shown in the table
    rate_rps: float
    timeout_s: float = 3.0

    def scaled(self, factor: float) -> TenantLoad:
        return TenantLoad(self.spec, self.runtime, self.rate_rps * factor, self.timeout_s)


DEVICES: tuple[AgentPlan, ...] = (
    AgentPlan("edge-small", budget_mib=24),
    AgentPlan("edge-medium", budget_mib=28),
    AgentPlan("edge-large", budget_mib=32),
)

TENANTS: tuple[TenantLoad, ...] = (
    TenantLoad(TenantSpec(name="doc-reader", model="ocr-rec", slo_ms=200.0), "onnxruntime", 4.0),
    TenantLoad(TenantSpec(name="pose-coach", model="pose-landmark", slo_ms=150.0), "litert", 5.0),
    TenantLoad(TenantSpec(name="hand-tracker", model="hand-landmark", slo_ms=120.0), "litert", 6.0),
    TenantLoad(TenantSpec(name="voice-gate", model="vad", slo_ms=50.0), "onnxruntime", 40.0),
    TenantLoad(TenantSpec(name="doc-angle", model="ocr-cls", slo_ms=60.0), "onnxruntime", 15.0),
    TenantLoad(TenantSpec(name="face-finder", model="face-detect", slo_ms=60.0), "litert", 12.0),
)


def tenants(load_scale: float = 1.0) -> tuple[TenantLoad, ...]:
    """The demo's tenants with every rate multiplied by ``load_scale`` (> 0)."""
    if not load_scale > 0:
        raise ValueError(f"load scale must be > 0, got {load_scale}")
    return tuple(t.scaled(load_scale) for t in TENANTS)

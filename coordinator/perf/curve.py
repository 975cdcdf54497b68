"""Service time of one (model variant, device kind) as a function of batch size, learnt online.

A batch of b rows takes s(b) = a + c·b ms: ``a`` is the per-invocation cost (dispatch, copies, fixed
layers), ``c`` the per-row cost; batching pays when a is large against c. The curve starts from a
profile (batch -> ms, measured at deploy or taken from a calibration table) and then follows what
the agents measure: every telemetry window carries, per tenant, the mean service time per batch size
and how many batches of each size ran.

Estimator: recursive least squares with exponential forgetting (Ljung & Söderström, Theory and
Practice of Recursive Identification, 1983, ch. 2; Haykin, Adaptive Filter Theory, ch. 10). The state
is θ = (a, c) and a covariance P. Per window, P ← P/λ (forget: a window's weight decays by λ per later
window); then each batch size b seen n times with mean y ms is one weighted observation, x = (1, b):
k = P·x / (1/n + xᵀ·P·x), θ ← θ + k·(y - xᵀθ), P ← P - k·xᵀ·P. This minimises Σ λ^age · n · (y - xᵀθ)²,
exactly the weighted least-squares fit of the recent windows. The prior (the profile) is worth
``confidence`` observations. P is kept at or below the prior's trace so a direction no window
excites (only batch 1 seen, say) does not wind up. Measurements taken under co-location are divided
by the slowdown the sharing model predicts for that window before they are fed in, so the curve
stays the tenant's time alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from edgefleet.wire import TenantWindow

MIN_MS = 1e-3


@dataclass(frozen=True, slots=True)
class ServiceCurve:
    fixed_ms: float  # a
    per_row_ms: float  # c

    def at(self, batch: int = 1) -> float:
        """s(b) in ms, never below ``MIN_MS``."""
        return max(MIN_MS, self.fixed_ms + self.per_row_ms * batch)

    def scaled(self, factor: float) -> ServiceCurve:
        return ServiceCurve(self.fixed_ms * factor, self.per_row_ms * factor)


def fit_profile(profile: Mapping[int, float]) -> ServiceCurve:
    """Least-squares line through ``{batch: ms}``; one point gives a line through the origin
    (no batching gain assumed, the safe side)."""
    if not profile:
        raise ValueError("empty profile")
    if len(profile) == 1:
        ((b, ms),) = profile.items()
        return ServiceCurve(0.0, ms / b)
    n = len(profile)
    mb = sum(profile) / n
    my = sum(profile.values()) / n
    sxx = sum((b - mb) ** 2 for b in profile)
    sxy = sum((b - mb) * (y - my) for b, y in profile.items())
    c = sxy / sxx
    return ServiceCurve(my - c * mb, c)


@dataclass(frozen=True, slots=True)
class RlsEstimator:
    fixed_ms: float
    per_row_ms: float
    p11: float  # covariance of (a, c), symmetric
    p12: float
    p22: float
    trace_cap: float
    forgetting: float = 0.9
    windows: int = 0

    @classmethod
    def from_profile(
        cls, profile: Mapping[int, float], *, confidence: float = 20.0, forgetting: float = 0.9
    ) -> RlsEstimator:
        curve = fit_profile(profile)
        n = len(profile)
        # P0 = (confidence · mean of x·xᵀ over the profile's batch sizes + ridge)^-1, x = (1, b)
        m11 = confidence + 1e-3
        m12 = confidence * sum(profile) / n
        m22 = confidence * sum(b * b for b in profile) / n + 1e-3
        det = m11 * m22 - m12 * m12
        p11, p12, p22 = m22 / det, -m12 / det, m11 / det
        return cls(curve.fixed_ms, curve.per_row_ms, p11, p12, p22, p11 + p22, forgetting)

    @property
    def curve(self) -> ServiceCurve:
        return ServiceCurve(self.fixed_ms, self.per_row_ms)

    def update(
        self, batch_ms: Mapping[int, float], batches: Mapping[int, int], slowdown: float = 1.0
    ) -> RlsEstimator:
        """Fold in one window: mean ms per batch size and the number of batches of each size."""
        seen = [(b, y, batches.get(b, 0)) for b, y in sorted(batch_ms.items()) if batches.get(b, 0) > 0]
        if not seen:
            return self
        a, c = self.fixed_ms, self.per_row_ms
        lam = self.forgetting
        p11, p12, p22 = self.p11 / lam, self.p12 / lam, self.p22 / lam
        for b, y, n in seen:
            px0, px1 = p11 + p12 * b, p12 + p22 * b  # P·x
            denom = 1.0 / n + px0 + b * px1
            k0, k1 = px0 / denom, px1 / denom
            err = y / slowdown - (a + c * b)
            a, c = a + k0 * err, c + k1 * err
            p11, p12, p22 = p11 - k0 * px0, p12 - k0 * px1, p22 - k1 * px1
        trace = p11 + p22
        if trace > self.trace_cap:
            s = self.trace_cap / trace
            p11, p12, p22 = p11 * s, p12 * s, p22 * s
        return replace(self, fixed_ms=a, per_row_ms=c, p11=p11, p12=p12, p22=p22, windows=self.windows + 1)

    def observe(self, window: TenantWindow, slowdown: float = 1.0) -> RlsEstimator:
        """Fold in a tenant's telemetry window (its per-batch-size service means and counts)."""
        return self.update(window.service_ms_by_batch, window.batches_by_size, slowdown)

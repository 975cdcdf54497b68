"""How a tenant's requests arrive, as the performance model takes it: a declared kind, then measurements.

An operator may declare a tenant's demand (``edgefleet.wire.DemandSpec``): Poisson at a rate, a
periodic stream at a frame rate with some jitter, or a closed loop of N requests in flight with a think
time between a reply and the next request. The model needs, per tenant, either an open stream (a rate
and the squared coefficient of variation of its gaps, which the G/G approximations take) or a closed
population (N and the time a request spends outside the device, which mean value analysis takes):
``Expected``.

- Poisson: gaps exponential, squared CV 1.
- Periodic at ``fps`` with each frame sent ``e_k`` from its slot (e_k independent, sd σ = jitter): a gap
  is T + e_{k+1} - e_k, of mean T = 1/fps and variance 2σ², so its squared CV is 2σ²/T² (0 for a
  strict clock). Beyond 1 the offsets reorder frames and the stream is no longer periodic: capped at 1.
- Closed: N in flight and ``think_ms``; its rate is an outcome (the model's predicted throughput).

The declared kind is the prior. What the agents measure takes over window by window (``observed``):
an open tenant's rate and gap spread are the window's (Poisson or periodic alike: a camera that drops
frames is what it is); a closed tenant keeps its N, and its time outside the device is learnt from
the window as N / throughput - mean time at the device (queue + service), since the round trip through
the broker and the app is part of every cycle; the model takes it, or the declared think time when
that is longer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgefleet.wire import Closed, DemandSpec, Periodic, Poisson, TenantWindow

PERIODIC_SCV_CAP = 1.0
MEASURED_SCV_CAP = 10.0  # beyond this a window's burstiness says more about a stall than about the load


@dataclass(frozen=True, slots=True)
class Expected:
    """One tenant's demand for the model: an open stream (``in_flight`` 0) or a closed loop."""

    rate_rps: float  # open: arrivals per second; closed: the last throughput seen (an outcome, not an input)
    arrival_scv: float = 1.0  # open: squared CV of the gaps (1: Poisson, 0: a strict clock)
    in_flight: int = 0  # closed: requests outstanding at all times (0: open)
    think_ms: float = 0.0  # closed: declared think time between a reply and the next request
    outside_ms: float = 0.0  # closed: time outside the device per cycle, as last measured (0: not yet)

    @property
    def closed(self) -> bool:
        return self.in_flight > 0

    @property
    def cycle_outside_ms(self) -> float:
        """Closed: the time a request's cycle spends outside the device, for the model: the measured
        one when there is one (it holds the think time and the round trip), else the declared think."""
        return max(self.think_ms, self.outside_ms)


def periodic_scv(fps: float, jitter_ms: float) -> float:
    """Squared CV of the gaps of a stream at ``fps`` whose frames are sent ``jitter_ms`` (sd) from their
    slots: 2σ²/T² with T = 1000/fps ms, capped at 1. E.g. 30 fps (T = 33.3 ms), σ = 5 ms: 50/1111 = 0.045."""
    period_ms = 1000.0 / fps
    return min(PERIODIC_SCV_CAP, 2.0 * jitter_ms * jitter_ms / (period_ms * period_ms))


def declared(spec: DemandSpec | None, default_rps: float) -> Expected:
    """The prior a declared demand gives (Poisson at ``default_rps`` when nothing is declared)."""
    if isinstance(spec, Poisson):
        return Expected(spec.rate_rps)
    if isinstance(spec, Periodic):
        return Expected(spec.fps, periodic_scv(spec.fps, spec.jitter_ms))
    if isinstance(spec, Closed):
        return Expected(default_rps, 1.0, int(spec.in_flight), spec.think_ms)
    return Expected(default_rps)


def observed(prior: Expected, w: TenantWindow) -> Expected:
    """The demand after a telemetry window of the tenant (see the module docstring); a window without
    arrivals leaves it as it was."""
    if w.arrivals <= 0 or w.arrival_rps <= 0.0:
        return prior
    scv = min(w.arrival_scv, MEASURED_SCV_CAP) if w.arrival_scv > 0.0 and w.arrivals >= 3 else prior.arrival_scv
    if not prior.closed:
        return replace(prior, rate_rps=w.arrival_rps, arrival_scv=scv)
    at_device_ms = w.queue_ms_mean + w.service_ms_mean  # mean time at the device (dispatch included in queue)
    cycle_ms = prior.in_flight * 1000.0 / w.arrival_rps
    outside = cycle_ms - at_device_ms
    return replace(prior, rate_rps=w.arrival_rps, arrival_scv=scv, outside_ms=max(0.0, outside))

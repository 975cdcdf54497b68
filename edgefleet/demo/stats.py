"""Per-tenant counts and latencies as the app sees them, and the table and summary drawn from them.

Everything here is pure: times come in as arguments (seconds on one monotonic clock), so the window
arithmetic and the rendering are tested without a fleet. Latency is measured at the app, from publishing
the request to the reply's arrival, so it includes the broker's two hops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgefleet.cli.table import format_table

if TYPE_CHECKING:
    from edgefleet.demo.camera import StreamStats

WINDOW_S = 10.0  # the live table's rates and percentiles cover this many recent seconds
MAX_SAMPLES = 500_000  # the summary keeps at most this many latencies per tenant (bounded memory)


@dataclass
class TenantStats:
    name: str
    model: str
    runtime: str
    slo_ms: float
    offered_rps: float
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    device: str = ""  # the device that answered last
    latencies_ms: list[float] = field(default_factory=list)
    window: deque[tuple[float, float]] = field(default_factory=deque)  # (done at, latency ms)
    window_errors: deque[float] = field(default_factory=deque)

    def record_ok(self, now: float, latency_ms: float, device: str | None) -> None:
        self.ok += 1
        if device:
            self.device = device
        if len(self.latencies_ms) < MAX_SAMPLES:
            self.latencies_ms.append(latency_ms)
        self.window.append((now, latency_ms))
        self._trim(now)

    def record_error(self, now: float, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.window_errors.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.window and self.window[0][0] < now - WINDOW_S:
            self.window.popleft()
        while self.window_errors and self.window_errors[0] < now - WINDOW_S:
            self.window_errors.popleft()

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def live(self, now: float, elapsed_s: float) -> LiveRow:
        self._trim(now)
        span = min(WINDOW_S, max(elapsed_s, 1e-9))
        lat = [lat for _, lat in self.window]
        p50, p95 = _pcts(lat)
        return LiveRow(self.name, self.model, self.runtime, self.device, len(lat) / span, p50, p95,
                       self.slo_ms, self.ok, self.failed, len(self.window_errors))


@dataclass(frozen=True)
class LiveRow:
    tenant: str
    model: str
    runtime: str
    device: str
    rps: float
    p50_ms: float
    p95_ms: float
    slo_ms: float
    ok: int
    failed: int
    failed_recent: int

    @property
    def within_slo(self) -> bool:
        return self.p95_ms != self.p95_ms or self.p95_ms <= self.slo_ms  # NaN (no data yet) is not a miss


def _pcts(samples: Sequence[float]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    a = np.asarray(samples)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def _ms(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"


def render_table(rows: Sequence[LiveRow], *, elapsed_s: float, duration_s: float,
                 placement: Mapping[str, str] | None = None) -> str:
    """The live table: one line per tenant; ``placement`` (tenant -> device) is the coordinator's view."""
    head = ("TENANT", "MODEL", "RUNTIME", "DEVICE", "REQ/S", "P50 MS", "P95 MS", "SLO MS", "OK", "FAILED", "")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        device = (placement or {}).get(r.tenant) or r.device or "-"
        flag = "" if r.within_slo else "over SLO"
        lines.append((r.tenant, r.model, r.runtime, device, f"{r.rps:.1f}", _ms(r.p50_ms), _ms(r.p95_ms),
                      f"{r.slo_ms:.0f}", str(r.ok), str(r.failed), flag))
    body = format_table(lines)
    title = (f"edgefleet demo — {elapsed_s:5.1f} s of {duration_s:g} s; rates and percentiles over the last "
             f"{WINDOW_S:g} s, measured by the apps (Ctrl-C ends early)")
    return f"{title}\n{body}"


@dataclass(frozen=True)
class Summary:
    text: str
    requests: int
    failed: int
    tenants_within_slo: int
    tenants: int


def summarise(stats: Sequence[TenantStats], *, elapsed_s: float, devices: Mapping[str, list[str]]) -> Summary:
    """The end-of-run report: per tenant totals, whole-run p50/p95 against the SLO, SLO attainment."""
    head = ("TENANT", "MODEL", "DEVICE", "REQUESTS", "FAILED", "REQ/S", "P50 MS", "P95 MS", "SLO MS",
            "WITHIN SLO")
    lines: list[tuple[str, ...]] = [head]
    total = failed = within = 0
    for s in stats:
        p50, p95 = _pcts(s.latencies_ms)
        n = s.ok + s.failed
        total += n
        failed += s.failed
        met = sum(1 for x in s.latencies_ms if x <= s.slo_ms)
        share = met / n if n else float("nan")
        if p95 == p95 and p95 <= s.slo_ms:
            within += 1
        lines.append((s.name, s.model, s.device or "-", str(n), str(s.failed), f"{n / max(elapsed_s, 1e-9):.1f}",
                      _ms(p50), _ms(p95), f"{s.slo_ms:.0f}", "-" if share != share else f"{share:.1%}"))
    table = format_table(lines)
    errs: dict[str, int] = {}
    for s in stats:
        for code, count in s.errors.items():
            errs[code] = errs.get(code, 0) + count
    dev_lines = [f"  {d}: {', '.join(sorted(t)) or '(no tenants)'}" for d, t in sorted(devices.items())]
    parts = [
        f"edgefleet demo summary: {total} requests in {elapsed_s:.1f} s, {failed} failed"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(errs.items()))})" if errs else "")
        + f"; {within} of {len(stats)} tenants kept p95 within their SLO",
        table,
        "placement (coordinator):",
        *dev_lines,
    ]
    return Summary("\n".join(parts), total, failed, within, len(stats))


def render_streams(rows: Sequence[StreamStats], placement: Mapping[str, str] | None = None, *, recent: bool = True) -> str:
    """The stream tenants' rows (``edgefleet.demo.camera.StreamStats``): frames in, results out, frames
    skipped (newest frame wins) and frame age p95 at the app against the SLO."""
    head = ("STREAM", "MODEL", "DEVICE", "FPS", "FRAMES IN", "RESULTS OUT", "SKIPPED", "EVENTS", "AGE P95 MS",
            "SLO MS", "")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        p95 = r.age_p95(recent)
        device = (placement or {}).get(r.name) or r.device or "-"
        flag = "" if p95 != p95 or p95 <= r.slo_ms else "over SLO"
        lines.append((r.name, r.model, device, f"{r.fps:g}", str(r.frames_in), str(r.results_out),
                      str(r.skipped), str(r.events), _ms(p95), f"{r.slo_ms:.0f}", flag))
    return format_table(lines)


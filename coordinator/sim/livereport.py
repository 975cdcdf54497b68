"""What a live simulation measured, summed up: per tenant, per device kind, the failover, the book check.

Pure: the apps' calls, the plan and the coordinator's final status come in as values. The service-time
check compares what each answer says the device spent on it (``service_ms`` in the result meta, the
agent's own measurement around the session) with what the calibrated book gives for that model on the
answering device's kind at that batch size, s(b) = a + c·b — the time the fake was told to sleep — so a
device playing the wrong kind, a unit slip or a lost per-row term shows up as a ratio far from 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from edgefleet.coordinator.perf import PerfBook
from edgefleet.coordinator.perf.calibration import VARIANT
from edgefleet.coordinator.placement.live import book_kind
from edgefleet.wire import FleetStatus, TenantSpec


@dataclass(frozen=True)
class Call:
    """One app call: when it ended (s from the start of the load), and what came back."""

    tenant: str
    done_s: float
    ok: bool
    device: str  # the answering device, or the error code when not ok
    latency_ms: float = 0.0  # publish to reply, measured at the app
    service_ms: float = 0.0  # what the device spent in the runtime for the batch this call was in
    batch: int = 1  # rows in that batch


def book_ms(book: PerfBook, model: str, device_kind: str, batch: int) -> tuple[float, float] | None:
    """(s(batch), switch) in ms from the book for ``model`` on a device reporting ``device_kind``."""
    profile = book.profile(model, VARIANT, book_kind(device_kind))
    return None if profile is None else (profile.curve.at(batch), profile.switch_ms)


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)), 3) if values else None


def _service(calls: Sequence[Call], model: str, kinds: Mapping[str, str], book: PerfBook) -> dict[str, object]:
    """Per kind of answering device: the measured service time against the book's, medians."""
    by_kind: dict[str, list[tuple[float, float, float]]] = {}
    for c in calls:
        kind = kinds.get(c.device, "")
        got = book_ms(book, model, kind, c.batch)
        if got is not None:
            by_kind.setdefault(kind, []).append((c.service_ms, got[0], got[1]))
    return {
        kind: {"calls": len(rows), "measured_median_ms": round(statistics.median(r[0] for r in rows), 3),
               "book_median_ms": round(statistics.median(r[1] for r in rows), 3),
               "book_switch_ms": round(rows[0][2], 3),
               "ratio_median": round(statistics.median(r[0] / r[1] for r in rows), 3)}
        for kind, rows in sorted(by_kind.items())
    }


def summarise(*, tenants: Sequence[tuple[TenantSpec, float]], runtimes: Mapping[str, str],
              deployed: Mapping[str, str | None], calls: Sequence[Call], status: FleetStatus, book: PerfBook,
              seconds: float, failover: Mapping[str, object]) -> dict[str, object]:
    """The report's body: ``tenants`` are (spec, offered rps); ``runtimes`` model -> catalog runtime;
    ``deployed`` tenant -> the device the coordinator first placed it on."""
    kinds = {d.device_id: d.device_kind for d in status.devices}
    views = {t.name: t for t in status.tenants}
    per_tenant: dict[str, object] = {}
    for spec, rate in tenants:
        mine = [c for c in calls if c.tenant == spec.name]
        ok = [c for c in mine if c.ok]
        errors: dict[str, int] = {}
        answered: dict[str, int] = {}
        for c in mine:
            bucket = answered if c.ok else errors
            bucket[c.device] = bucket.get(c.device, 0) + 1
        view = views.get(spec.name)
        device = view.device_id if view is not None else None
        p95 = _pct([c.latency_ms for c in ok], 95)
        per_tenant[spec.name] = {
            "model": spec.model, "runtime": runtimes.get(spec.model, "?"), "slo_ms": spec.slo_ms,
            "offered_rps": rate, "state": view.state if view is not None else "gone",
            "deployed_on": deployed.get(spec.name), "deployed_kind": kinds.get(deployed.get(spec.name) or ""),
            "device": device, "kind": kinds.get(device or ""),
            "requests": len(mine), "ok": len(ok), "failed": len(mine) - len(ok), "errors": errors,
            "answered_by": answered, "p50_ms": _pct([c.latency_ms for c in ok], 50), "p95_ms": p95,
            "within_slo": p95 is not None and p95 <= spec.slo_ms,
            "device_p95_ms": round(view.latency_p95_ms, 3) if view is not None else None,
            "service": _service(ok, spec.model, kinds, book),
        }
    per_kind: dict[str, dict[str, list[str]]] = {}
    for d in status.devices:
        entry = per_kind.setdefault(d.device_kind, {"devices": [], "online": [], "tenants": []})
        entry["devices"].append(d.device_id)
        if d.online:
            entry["online"].append(d.device_id)
            entry["tenants"].extend(sorted(t.name for t in status.tenants if t.device_id == d.device_id))
    total = len(calls)
    failed = sum(1 for c in calls if not c.ok)
    return {
        "requests": {"total": total, "failed": failed, "rps": round(total / max(seconds, 1e-9), 2)},
        "tenants": per_tenant,
        "kinds": per_kind,
        "failover": dict(failover),
        "coordinator": msgspec.to_builtins(status),
    }


def served_again(calls: Sequence[Call], victims: Sequence[str], killed: Sequence[str], at_s: float) -> dict[str, float]:
    """Per victim tenant, seconds from the kill to its first answer from a device that was not killed."""
    out: dict[str, float] = {}
    for c in sorted(calls, key=lambda c: c.done_s):
        if c.ok and c.tenant in victims and c.tenant not in out and c.done_s >= at_s and c.device not in killed:
            out[c.tenant] = round(c.done_s - at_s, 3)
    return out

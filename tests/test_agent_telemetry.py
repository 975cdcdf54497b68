"""Telemetry windows: the spread of arrivals and of service times that the performance model learns."""

from __future__ import annotations

import pytest

from edgefleet.agent.telemetry import WindowStats
from edgefleet.wire import TenantSpec

SPEC = {"a": TenantSpec(name="a", model="ocr-cls", slo_ms=50.0)}

ARRIVALS = [
    # evenly spaced: gaps 1, 1, 1 -> no spread
    ("even", [0.0, 1.0, 2.0, 3.0], 0.0),
    # gaps 1 and 2: Σx²·n/(Σx)² - 1 = 5·2/9 - 1 = 0.1111 (var 0.25 / mean² 2.25)
    ("uneven", [0.0, 1.0, 3.0], 1.0 / 9.0),
    # a burst of three then a pause: gaps 0, 0, 3 -> 9·3/9 - 1 = 2
    ("burst", [0.0, 0.0, 0.0, 3.0], 2.0),
    # one gap is not a spread
    ("one gap", [0.0, 1.0], 0.0),
]


@pytest.mark.parametrize(("case", "times", "scv"), ARRIVALS, ids=[a[0] for a in ARRIVALS])
def test_arrival_spread(case: str, times: list[float], scv: float) -> None:
    stats = WindowStats()
    for t in times:
        stats.arrival("a", t)
    [w] = stats.roll(SPEC, {"a": "fp32"}, 5.0)
    assert w.arrivals == len(times)
    assert w.arrival_scv == pytest.approx(scv)


def test_the_gap_across_windows_counts_in_the_next_and_removed_tenants_are_forgotten() -> None:
    stats = WindowStats()
    stats.arrival("a", 0.0)
    stats.roll(SPEC, {"a": "fp32"}, 5.0)
    for t in (1.0, 3.0):  # gaps 1 (from the last window's arrival) and 2 -> 0.1111
        stats.arrival("a", t)
    [w] = stats.roll(SPEC, {"a": "fp32"}, 5.0)
    assert w.arrival_scv == pytest.approx(1.0 / 9.0)
    stats.roll({}, {}, 5.0)  # "a" left the device
    stats.arrival("a", 10.0)
    stats.arrival("a", 11.0)  # one gap only: its first arrival starts afresh
    [w] = stats.roll(SPEC, {"a": "fp32"}, 5.0)
    assert w.arrival_scv == 0.0 and w.arrivals == 2


def test_service_spread_of_one_row_batches() -> None:
    stats = WindowStats()
    # one-row batches of 1 ms and 3 ms: (1 + 9)·2/16 - 1 = 0.25; the 4-row batch is left out
    for rows, s in ((1, 0.001), (1, 0.003), (4, 0.010)):
        stats.batch("a", rows=rows, service_s=s)
    [w] = stats.roll(SPEC, {"a": "fp32"}, 5.0)
    assert w.service_scv == pytest.approx(0.25)
    assert w.batches_by_size == {1: 2, 4: 1}

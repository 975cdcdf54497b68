"""The fleet simulator: the production coordinator on a virtual clock against simulated agents."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgefleet.cli.main import main
from edgefleet.coordinator.sim import EventQueue, Scenario, run_scenario


def test_event_queue_orders_by_time_then_scheduling() -> None:
    q = EventQueue(10.0)
    seen: list[tuple[float, str]] = []
    q.at(12.0, lambda: seen.append((q.now, "b")))
    q.at(11.0, lambda: seen.append((q.now, "a")))
    q.at(12.0, lambda: seen.append((q.now, "c")))
    q.every(5.0, lambda: seen.append((q.now, "tick")), until=lambda: q.now > 21.0)
    q.run_until(30.0)
    assert seen == [(11.0, "a"), (12.0, "b"), (12.0, "c"), (15.0, "tick"), (20.0, "tick")]
    assert q.now == 30.0


def _summary(report: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in report.items() if k not in ("wall_s",)}


def test_deterministic_with_a_seed() -> None:
    sc = Scenario(devices=8, tenants=30, seconds=120.0, seed=7)
    a, b = run_scenario(sc), run_scenario(sc)
    assert _summary(a) == _summary(b)
    assert _summary(run_scenario(Scenario(devices=8, tenants=30, seconds=120.0, seed=8))) != _summary(a)


@pytest.mark.parametrize("placement", ["most-free-memory", "predicted-latency"])
def test_killed_devices_tenants_are_replaced_by_the_coordinator(placement: str) -> None:
    start = time.perf_counter()
    report = run_scenario(Scenario(devices=20, tenants=80, seconds=300.0, placement=placement, kill=2))
    wall = time.perf_counter() - start
    assert report["simulated_s"] == 300.0
    assert wall < 5.0  # the clock is virtual
    tenants, failover = report["tenants"], report["failover"]
    assert tenants["total"] == 80
    assert tenants["running_on_live_devices"] == 80  # every tenant runs, none on a dead device
    assert failover["tenants"] > 0 and failover["replaced"] == failover["tenants"]
    assert len(failover["killed"]) == 2
    # the will arrives after the 15 s keep-alive grace; the coordinator redeploys at once
    assert 15.0 <= failover["time_to_replace_s"]["max"] < 30.0
    assert report["devices"] == {"total": 20, "alive": 18, "online_at_coordinator": 18}
    assert report["commands"]["sends"] >= 80 + failover["tenants"]


def test_slo_windows_are_counted_per_window() -> None:
    report = run_scenario(Scenario(devices=10, tenants=40, seconds=60.0, kill=0))
    per = report["slo"]["per_window"]
    assert per and all(w["tenant_windows"] >= w["over_slo"] >= 0 for w in per)
    assert report["slo"]["tenant_windows"] == sum(w["tenant_windows"] for w in per)
    assert report["failover"] == {"killed": [], "tenants": 0}


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    assert main(["sim", "--devices", "6", "--tenants", "20", "--seconds", "90", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tenants"]["total"] == 20
    assert "tenants re-placed" in capsys.readouterr().out


def test_cli_rejects_bad_scenarios() -> None:
    assert main(["sim", "--devices", "2", "--kill", "3"]) == 2


@pytest.mark.slow
def test_scale_500_devices_2000_tenants() -> None:
    report = run_scenario(Scenario(devices=500, tenants=2000, seconds=300.0))
    assert report["tenants"]["running_on_live_devices"] == 2000
    assert report["failover"]["replaced"] == report["failover"]["tenants"]

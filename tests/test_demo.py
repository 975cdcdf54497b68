"""``edgefleet demo``: the pure table/summary arithmetic, and the command itself end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefleet.demo.plan import DEVICES, TENANTS, tenants
from edgefleet.demo.stats import WINDOW_S, TenantStats, render_table, summarise


def _stats(slo_ms: float = 50.0) -> TenantStats:
    return TenantStats("voice", "vad", "onnxruntime", slo_ms, offered_rps=10.0)


def test_live_row_counts_only_the_last_window() -> None:
    s = _stats()
    # t=0..4: five answers of 10 ms; t=20..21: two answers of 30 and 70 ms; one error at t=21.
    for t in range(5):
        s.record_ok(float(t), 10.0, "edge-a")
    s.record_ok(20.0, 30.0, "edge-b")
    s.record_ok(21.0, 70.0, "edge-b")
    s.record_error(21.0, "overloaded")
    row = s.live(now=21.0, elapsed_s=21.0)
    # Window is [11, 21]: two answers over 10 s -> 0.2 req/s; p50 of (30, 70) = 50; p95 = 30 + 0.95*40 = 68.
    assert row.rps == pytest.approx(2 / WINDOW_S)
    assert (row.p50_ms, row.p95_ms) == (pytest.approx(50.0), pytest.approx(68.0))
    assert (row.ok, row.failed, row.failed_recent, row.device) == (7, 1, 1, "edge-b")
    assert not row.within_slo  # 68 ms > 50 ms


def test_early_rows_divide_by_elapsed_time_and_empty_windows_are_not_misses() -> None:
    s = _stats()
    s.record_ok(1.0, 5.0, "edge-a")
    s.record_ok(1.5, 5.0, "edge-a")
    assert s.live(now=2.0, elapsed_s=2.0).rps == pytest.approx(1.0)  # 2 answers in 2 s, not in 10 s
    quiet = _stats().live(now=5.0, elapsed_s=5.0)
    assert quiet.within_slo and quiet.rps == 0.0
    assert "-" in render_table([quiet], elapsed_s=5.0, duration_s=60.0)


def test_summary_counts_failures_and_slo_attainment() -> None:
    a, b = _stats(50.0), TenantStats("pose", "pose-landmark", "litert", 20.0, 5.0)
    for i in range(10):
        a.record_ok(float(i), 10.0, "edge-a")  # all within 50 ms
        b.record_ok(float(i), 15.0 if i < 8 else 40.0, "edge-b")  # 8 of 10 within 20 ms
    b.record_error(3.0, "deadline_exceeded")
    summary = summarise([a, b], elapsed_s=10.0, devices={"edge-a": ["voice"], "edge-b": ["pose"]})
    assert (summary.requests, summary.failed, summary.tenants_within_slo) == (21, 1, 1)
    assert "72.7%" in summary.text  # pose: 8 answers within SLO out of 11 requests
    assert "deadline_exceeded 1" in summary.text


def test_stream_rows_show_frames_results_skips_and_age() -> None:
    from edgefleet.demo.camera import StreamStats, stream_tenant
    from edgefleet.demo.stats import render_streams

    spec, source = stream_tenant("demo1", fps=10.0)
    assert spec.stream is not None and spec.stream.sources == [source] and spec.demand is not None
    s = StreamStats("cam-doorbell", "face-detect", 100.0, 10.0, frames_in=12)
    # ten results with ages 10..100 ms (p95 at rank 0.95 * 9 = 8.55: 90 + 0.55 * 10 = 95.5), two skipped
    for i in range(10):
        s.record_result(float(i), 10.0 * (i + 1), 1 if i in (3, 7) else 0, "edge-a")
    assert s.age_p95() == pytest.approx(95.5)
    row = render_streams([s]).splitlines()[1].split()
    assert row == ["cam-doorbell", "face-detect", "edge-a", "10", "12", "10", "2", "0", "95.5", "100"]
    s.record_result(10.0, 500.0, 0, "edge-a")
    assert render_streams([s]).splitlines()[1].endswith("over SLO")


def test_the_plan_meets_the_brief() -> None:
    # Three devices with different budgets; >= 5 tenants on >= 4 models from both runtimes.
    assert len(DEVICES) == 3 and len({d.budget_mib for d in DEVICES}) == 3
    assert len(TENANTS) >= 5 and len({t.spec.model for t in TENANTS}) >= 4
    assert {t.runtime for t in TENANTS} == {"onnxruntime", "litert"}
    assert tenants(2.0)[0].rate_rps == 2 * TENANTS[0].rate_rps
    with pytest.raises(ValueError, match="load scale"):
        tenants(0.0)


def _demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edgefleet.cli.main", "demo", "--plain", "--workdir",
                             str(workdir), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _leftovers(workdir: Path) -> list[str]:
    """Processes whose command line names the demo's work folder (its broker, coordinator, agents)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(workdir) in line and " demo " not in line]


@pytest.mark.broker
@pytest.mark.parametrize("secure", [[], ["--secure"]], ids=["open", "dynamic-security"])
def test_demo_runs_to_its_summary_without_failed_requests(tmp_path: Path, secure: list[str]) -> None:
    proc = _demo(tmp_path / "run", "--duration", "4", *secure)
    out, _ = proc.communicate(timeout=110)
    assert proc.returncode == 0, out
    assert " 0 failed" in out and "edgefleet demo summary" in out, out
    for t in TENANTS:
        assert t.spec.name in out
    if not secure:  # (--secure runs no stream tenant: its camera has no account)
        # the stream tenant's row: frames in, results out, skipped, events, frame age p95
        assert "stream tenants" in out and "cam-doorbell" in out, out
        row = [line.split() for line in out.splitlines() if line.startswith("cam-doorbell")][-1]
        frames_in, results_out, skipped = int(row[4]), int(row[5]), int(row[6])
        assert frames_in >= 20 and results_out + skipped <= frames_in and results_out >= frames_in - 3, row
    assert _leftovers(tmp_path / "run") == []
    assert (tmp_path / "run" / "coordinator" / "coordinator.log").exists()  # --workdir keeps the logs
    if secure:  # every device got its tenants' grants from the coordinator, none up front
        assert "granted" in (tmp_path / "run" / "coordinator" / "coordinator.log").read_text()
        assert (tmp_path / "run" / "security" / "dynamic-security.json").exists()


@pytest.mark.broker
def test_ctrl_c_ends_the_demo_cleanly_with_a_summary(tmp_path: Path) -> None:
    proc = _demo(tmp_path / "run", "--duration", "100")
    assert proc.stdout is not None
    lines: list[str] = []
    end = time.monotonic() + 90
    while time.monotonic() < end:  # wait for the first live table: load is running
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("edgefleet demo —") or not line:
            break
    assert any(line.startswith("edgefleet demo —") for line in lines), "".join(lines)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "edgefleet demo summary" in out
    assert _leftovers(tmp_path / "run") == []


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(400)
def test_soak_the_default_demo_at_twice_its_load(tmp_path: Path) -> None:
    """Outside make test: the full-length demo at double rate still fails no request."""
    proc = _demo(tmp_path / "run", "--load-scale", "2")
    out, _ = proc.communicate(timeout=380)
    assert proc.returncode == 0 and " 0 failed" in out, out
    assert _leftovers(tmp_path / "run") == []

"""A stream tenant through the whole fleet: `edgefleet deploy --source --fps` to the coordinator, which
places it with its periodic demand; `edgefleet migrate` under a live camera leaves no frame answered twice
and none left out at the subscriber (frames skipped by newest-frame-wins are counted by the device)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.mqtt import MqttSettings
from tests.fleetkit import wait_for
from tests.test_stream_broker import Camera, Subscriber


def _cli(fleet: LocalFleet, *args: str) -> str:
    assert fleet.broker is not None
    out = subprocess.run([sys.executable, "-m", "edgefleet.cli.main", *args, "--host", "127.0.0.1",
                          "--port", str(fleet.broker.port), "--prefix", fleet.prefix],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.broker
def test_deploy_and_migrate_a_stream_tenant_through_the_coordinator(tmp_path: Path) -> None:
    plans = [AgentPlan("edge-a", budget_mib=64, telemetry_period_s=0.5),
             AgentPlan("edge-b", budget_mib=64, telemetry_period_s=0.5)]
    with LocalFleet(agents=plans, prefix=f"sf{uuid.uuid4().hex[:8]}", device_timeout_s=10.0) as fleet:
        assert fleet.broker is not None
        settings = MqttSettings(host="127.0.0.1", port=fleet.broker.port)
        source = f"{fleet.prefix}-cams/door/frames"
        _cli(fleet, "deploy", "cam-door", "--model", "face-detect", "--source", source, "--fps", "20",
             "--slo-ms", "100", "--event", "someone:face_score_max>=0.7/0.5")
        tenant = next(t for t in fleet.status().tenants if t.name == "cam-door")
        first = tenant.device_id
        assert tenant.state == "running" and first in ("edge-a", "edge-b")
        cam = Camera(settings, source)
        app = Subscriber(settings, fleet.topics, "cam-door")
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                cam.send()
                time.sleep(1 / 20)

        feeder = threading.Thread(target=stream, daemon=True)
        try:
            feeder.start()
            wait_for(lambda: len(app.seqs()) >= 10, 15, "results")
            assert app.events and app.events[0].state == "on"

            def measured_fps() -> float:
                return next(t.arrival_rps for t in fleet.status().tenants if t.name == "cam-door")

            # the coordinator sees the frames arrive (telemetry): what placement uses after the rate hint
            wait_for(lambda: 10.0 < measured_fps() < 30.0, 15, "the measured frame rate at the coordinator")
            other = "edge-b" if first == "edge-a" else "edge-a"
            _cli(fleet, "migrate", "cam-door", "--to", other)
            wait_for(lambda: any(r.device == other for r in app.results), 15, f"results from {other}")
            time.sleep(0.5)
            stop.set()
            feeder.join(5)
            last = cam.seq - 1
            wait_for(lambda: last in app.seqs(), 10, "the last frame's result")
            seqs = app.seqs()
            assert len(seqs) == len(set(seqs)), "a frame answered twice"
            missing = set(range(min(seqs), last + 1)) - set(seqs)
            assert len(missing) == sum(r.skipped for r in app.results if r.frame.seq != min(seqs)), "a gap"
            assert {r.device for r in app.results} == {first, other}
            spec = next(t for t in fleet.status().tenants if t.name == "cam-door")
            assert spec.device_id == other and spec.state == "running"
        finally:
            stop.set()
            app.close()
            cam.close()
        assert "cam-door" in _cli(fleet, "status", "--json")

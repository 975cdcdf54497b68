"""Demand kinds end to end: ``edgefleet deploy --closed`` through a real Mosquitto, a real agent serving a
real zoo model back to back, its telemetry learnt by the coordinator's performance model with the
declared closed loop as the prior, and ``edgefleet plan --add`` answered by mean value analysis.

The coordinator runs in-process with the learning placement over the calibrated book (so the test can
read what it learnt); the agent in-process with the zoo.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.service import Agent
from edgefleet.cli.main import main as cli_main
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.coordinator.perf.calibration import build_book
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement
from edgefleet.mqtt import MqttSettings
from edgefleet.sdk import InferenceClient
from edgefleet.wire import Topics
from edgefleet.zoo import sample_inputs
from tests.fleetkit import wait_for

pytestmark = pytest.mark.broker


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


@pytest.fixture()
def fleet(tmp_path: Path, mqtt_settings: MqttSettings, prefix: str) -> Iterator[tuple[Coordinator, LearnedModel]]:
    config = CoordinatorConfig(
        db_path=tmp_path / "c.db", mqtt=mqtt_settings, prefix=prefix, coordinator_id=f"co-{uuid.uuid4().hex[:8]}",
        op_timeout_s=30.0, placement="predicted-latency",
        commands=CommandPolicy(ack_timeout_s=20.0, max_attempts=3, backoff_s=0.5, backoff_max_s=2.0))
    live = LearnedModel(build_book())
    coordinator = Coordinator(config, placement=ModelPlacement(), model=live)
    coordinator.start()
    agent = Agent(AgentConfig(device_id="dev-a", device_kind="x86_64-cpu", state_dir=tmp_path / "agent",
                              mqtt=mqtt_settings, prefix=prefix, telemetry_period_s=1.0, workers=2,
                              memory_policy="static"))
    agent.start()
    try:
        assert agent.wait_connected(10)
        wait_for(lambda: any(d.online for d in coordinator.status().devices), 10, "dev-a online")
        yield coordinator, live
    finally:
        agent.stop()
        coordinator.stop()


def test_a_closed_loop_goes_from_deploy_to_plan(
    fleet: tuple[Coordinator, LearnedModel], mqtt_settings: MqttSettings, topics: Topics, prefix: str,
) -> None:
    coordinator, live = fleet
    from edgefleet.zoo.paths import data_dir, local_catalog_path

    if not local_catalog_path(data_dir()).is_file():
        pytest.skip("the model zoo is not fetched (make zoo): the loop runs ocr-cls")
    broker = ["--port", str(mqtt_settings.port), "--prefix", prefix, "--timeout", "30"]
    rc, out = cli("deploy", "cam", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "1", *broker)
    assert rc == 0 and "dev-a" in out, out
    # the operator's declaration reached the coordinator: the learner's prior is a closed loop of one
    assert coordinator.call(lambda e: live.demand["cam"].in_flight) == 1

    # an app runs it back to back (one in flight, the next when the reply comes) for a few windows
    stop = threading.Event()
    answered = [0]

    def app() -> None:
        feeds = dict(sample_inputs("ocr-cls"))
        with InferenceClient(mqtt_settings, prefix=prefix) as client:
            while not stop.is_set():
                client.infer("cam", feeds, timeout_s=10.0)
                answered[0] += 1

    runner = threading.Thread(target=app, daemon=True)
    runner.start()
    try:
        # telemetry -> learning: the measured throughput and the time each cycle spends outside the
        # device (the round trip through the broker and the app) replace the prior's defaults
        wait_for(lambda: coordinator.call(lambda e: live.expected["cam"].outside_ms) > 0.0, 20,
                 "a window of the loop learnt")
    finally:
        stop.set()
        runner.join(15)
    learnt = coordinator.call(lambda e: live.expected["cam"])
    assert learnt.in_flight == 1 and learnt.rate_rps > 1.0 and answered[0] > 10
    assert learnt.rate_rps <= 1000.0 / learnt.outside_ms  # the cycle is at least its time outside

    # placement answers by mean value analysis beside the resident loop: one more back-to-back loop
    # keeps a 200 ms p95, a loop of 400 in flight cannot (each waits behind the other 399)
    rc, out = cli("plan", "--add", "cam2", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "1", *broker)
    assert rc == 0 and "cam2 would run on dev-a" in out and "at 1 in flight (" in out, out  # its throughput
    rc, out = cli("plan", "--add", "cam3", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "400", *broker)
    assert rc == 1 and "no_fit" in out and "p95" in out, out
    # a periodic stream and a think time pass through too
    rc, out = cli("plan", "--add", "cam4", "--model", "ocr-cls", "--slo-ms", "200", "--fps", "30",
                  "--jitter-ms", "2", *broker)
    assert rc == 0, out
    rc, out = cli("plan", "--add", "cam5", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "2",
                  "--think-ms", "50", *broker)
    assert rc == 0, out
    # the flags refuse what does not make sense, before anything is sent
    rc, out = cli("plan", "--add", "cam6", "--model", "ocr-cls", "--slo-ms", "200", "--think-ms", "5", *broker)
    assert rc == 2 and "--think-ms needs --closed" in out
    rc, out = cli("deploy", "cam7", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "0", *broker)
    assert rc == 2 and "in_flight must be in" in out
    assert [(t.name, t.state) for t in coordinator.status().tenants] == [("cam", "running")]
    # a redeploy of the same declaration is idempotent; the learnt loop stays
    rc, out = cli("deploy", "cam", "--model", "ocr-cls", "--slo-ms", "200", "--closed", "1", *broker)
    assert rc == 0, out
    assert coordinator.call(lambda e: live.expected["cam"]) == learnt

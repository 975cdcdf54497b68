"""The whole path through real processes: private Mosquitto, coordinator and agents, SDK, real models.

One fleet per module (starting it costs seconds: every agent imports both runtimes). Each test uses
its own tenant names, so they do not see each other's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.runtime import SessionOptions, get_runtime
from edgefleet.sdk import InferenceClient, InferenceError, NoReply, UnknownTenant
from edgefleet.wire import FleetStatus, TenantSpec, TenantView
from edgefleet.zoo import model_path, sample_inputs
from tests import fleetkit

pytestmark = pytest.mark.broker



def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    fleetkit.wait_for(cond, timeout, what, interval=0.2)  # each poll may be an operator call


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalFleet]:
    plans = [AgentPlan("dev-a", budget_mib=64, telemetry_period_s=0.5),
             AgentPlan("dev-b", budget_mib=48, telemetry_period_s=0.5)]
    with LocalFleet(agents=plans, prefix=f"e2e{time.monotonic_ns() % 10**8}", device_timeout_s=10.0) as f:
        yield f


def _tenant(status: FleetStatus, name: str) -> TenantView | None:
    return next((t for t in status.tenants if t.name == name), None)


@pytest.mark.parametrize(("model", "runtime"), [("ocr-cls", "onnxruntime"), ("face-detect", "litert")])
def test_deploy_infer_telemetry_undeploy(fleet: LocalFleet, model: str, runtime: str) -> None:
    name = f"app-{model}"
    reply = fleet.deploy(TenantSpec(name=name, model=model, slo_ms=500))
    assert reply.device_id in {"dev-a", "dev-b"}
    feeds = dict(sample_inputs(model))
    direct = get_runtime(runtime).open(model_path(model), SessionOptions()).run(feeds)
    with InferenceClient(fleet.settings, prefix=fleet.prefix) as app:
        for _ in range(20):
            result = app.infer_with_meta(name, feeds, timeout_s=5.0)
        assert result.device == reply.device_id
        assert result.outputs.keys() == direct.keys()
        for k in direct:
            np.testing.assert_allclose(result.outputs[k], direct[k], rtol=1e-4, atol=1e-5)

        # The agent's telemetry reaches the coordinator: it now knows the tenant's rate and latency.
        def measured() -> bool:
            view = _tenant(fleet.status(), name)
            return view is not None and view.arrival_rps > 0 and view.latency_p50_ms > 0

        wait_for(measured, 15, f"telemetry of {name} at the coordinator")

        assert fleet.undeploy(name).ok
        assert _tenant(fleet.status(), name) is None
        with pytest.raises((UnknownTenant, NoReply)):
            app.infer(name, feeds, timeout_s=2.0)


def test_planned_migration_under_load_loses_no_request(fleet: LocalFleet) -> None:
    import threading

    name = "app-moved"
    source = fleet.deploy(TenantSpec(name=name, model="ocr-cls", slo_ms=500)).device_id
    target = ({"dev-a", "dev-b"} - {source}).pop()
    feeds = dict(sample_inputs("ocr-cls"))
    answered: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def app() -> None:  # a closed-loop caller that never pauses while the tenant moves
        with InferenceClient(fleet.settings, prefix=fleet.prefix) as client:
            while not stop.is_set():
                try:
                    answered.append(client.infer_with_meta(name, feeds, timeout_s=5.0).device or "?")
                except InferenceError as exc:
                    failed.append(exc.code.value)

    callers = [threading.Thread(target=app) for _ in range(4)]  # four requests in flight at any time
    for caller in callers:
        caller.start()
    try:
        wait_for(lambda: len(answered) > 20, 20, "calls before the move")
        reply = fleet.migrate(name, target)
        assert reply.ok and reply.device_id == target, reply
        n = len(answered)
        wait_for(lambda: len(answered) > n + 50, 20, "calls after the move")
    finally:
        stop.set()
        for caller in callers:
            caller.join(15)
    assert failed == []
    assert answered[0] == source and answered[-1] == target
    # once the target answered, the old replica may still finish what it had; it takes no new work
    assert set(answered[answered.index(target):][-40:]) == {target}
    assert fleet.undeploy(name).ok


def test_killed_agent_tenants_are_replaced_and_calls_succeed(fleet: LocalFleet) -> None:
    name = "app-rescued"
    reply = fleet.deploy(TenantSpec(name=name, model="vad", slo_ms=200))
    victim = reply.device_id
    assert victim is not None
    survivor = ({"dev-a", "dev-b"} - {victim}).pop()
    feeds = dict(sample_inputs("vad"))
    with InferenceClient(fleet.settings, prefix=fleet.prefix) as app:
        assert app.infer_with_meta(name, feeds, timeout_s=5.0).device == victim
        fleet.kill_agent(victim)  # SIGKILL: the broker publishes the agent's last will

        def moved() -> bool:
            view = _tenant(fleet.status(), name)
            return view is not None and view.state == "running" and view.device_id == survivor

        wait_for(moved, 40, f"{name} re-placed on {survivor}")
        status = fleet.status()
        assert not next(d for d in status.devices if d.device_id == victim).online
        # The app does not know which box answers: its next calls simply succeed on the survivor.
        answers = []
        for _ in range(5):
            try:
                answers.append(app.infer_with_meta(name, feeds, timeout_s=5.0).device)
            except InferenceError as exc:  # pragma: no cover - a failure here fails the test below
                answers.append(f"error {exc.code.value}")
        assert answers == [survivor] * 5
    # The killed agent comes back with its SQLite state, still listing the tenant; the coordinator,
    # which moved it, has the stale copy removed so that only the survivor answers.
    fleet.start_agent(next(p for p in fleet.agents if p.device_id == victim))
    fleet.wait_online([victim], 60)

    # Both would take turns on the shared subscription if the stale copy stayed, so a run of answers
    # that all come from the survivor shows it is gone.
    with InferenceClient(fleet.settings, prefix=fleet.prefix) as app:
        def only_survivor() -> bool:
            return {app.infer_with_meta(name, feeds, timeout_s=5.0).device for _ in range(12)} == {survivor}

        wait_for(only_survivor, 30, f"stale {name} removed from the restarted {victim}")
    view = _tenant(fleet.status(), name)
    assert view is not None and view.device_id == survivor


def test_a_secured_fleet_serves_granted_apps_and_refuses_the_others(tmp_path: Path) -> None:
    """Every process with its own account under the generated ACL: the real agent and coordinator work,
    an app reaches its own tenant, and a call to a tenant it was not granted never reaches a device."""
    with LocalFleet(agents=[AgentPlan("sec-a", budget_mib=64, telemetry_period_s=0.5)], prefix="sec",
                    secure=True, apps={"app-one": ["one"], "app-two": ["two"]}, workdir=tmp_path) as fleet:
        assert oct((tmp_path / "sec-a" / "agent.toml").stat().st_mode & 0o777) == "0o600"
        fleet.deploy(TenantSpec(name="one", model="ocr-cls", slo_ms=500))
        fleet.deploy(TenantSpec(name="two", model="ocr-cls", slo_ms=500))
        feeds = dict(sample_inputs("ocr-cls"))
        with InferenceClient(fleet.client_settings("app-one"), prefix="sec", client_id="app-one") as one:
            assert one.infer_with_meta("one", feeds, timeout_s=5.0).device == "sec-a"
            with pytest.raises(NoReply):  # the broker drops the publish: not granted
                one.infer("two", feeds, timeout_s=1.0)

            def telemetry_flows() -> bool:  # the agent's telemetry reaches the coordinator under the ACL
                for _ in range(10):
                    one.infer("one", feeds, timeout_s=5.0)
                view = _tenant(fleet.status(), "one")
                return view is not None and view.arrival_rps > 0

            wait_for(telemetry_flows, 15, "telemetry under the ACL")
        with InferenceClient(fleet.client_settings("app-two"), prefix="sec", client_id="app-two") as two:
            assert two.infer_with_meta("two", feeds, timeout_s=5.0).device == "sec-a"
        # the coordinator's telemetry confirmations reach the agent too: its outbox holds only the newest
        import sqlite3

        with sqlite3.connect(tmp_path / "sec-a" / "agent.db") as db:
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] < 10

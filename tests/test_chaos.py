"""Faults against a real broker: nothing the agent measured is lost, nothing is stored twice, and
commands in flight complete.

Each test runs its own Mosquitto (it gets killed), an in-process coordinator and agent serving a real
zoo model, and an app calling it throughout. The telemetry ledger is exact: the agent numbers its
windows 0..n-1 per boot, and the coordinator's database must hold each of them once.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.service import Agent
from edgefleet.bench.harness import Apps
from edgefleet.broker import PrivateBroker
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.mqtt import MqttLink, MqttSettings
from edgefleet.wire import OpDeploy, TenantSpec, Topics, encode
from tests import fleetkit

pytestmark = pytest.mark.broker



def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    fleetkit.wait_for(cond, timeout, what, interval=0.05)  # each poll may be an operator call


@dataclass
class Stage:
    broker: PrivateBroker
    settings: MqttSettings
    topics: Topics
    coordinator: Coordinator
    agent: Agent
    tmp: Path

    def coordinator_config(self) -> CoordinatorConfig:
        return CoordinatorConfig(
            db_path=self.tmp / "coordinator.db", mqtt=self.settings, prefix=self.topics.prefix,
            coordinator_id="coord", device_timeout_s=60.0, op_timeout_s=5.0,
            commands=CommandPolicy(ack_timeout_s=1.0, max_attempts=30, backoff_s=0.2, backoff_max_s=1.0),
        )

    def stored_seqs(self) -> list[int]:
        boot = self.agent.boot_id
        rows = self.coordinator.call(lambda e: e.store.db.execute(
            "SELECT seq FROM telemetry WHERE device_id = ? AND boot_id = ? ORDER BY seq", ("dev", boot)
        ).fetchall())
        return [int(r[0]) for r in rows]


@pytest.fixture()
def stage(tmp_path: Path) -> Iterator[Stage]:
    broker = PrivateBroker(workdir=tmp_path / "broker")
    broker.start()
    settings = MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=5, reconnect_min_s=0.2,
                            reconnect_max_s=0.5)
    topics = Topics("chaos" + uuid.uuid4().hex[:8])
    agent = Agent(AgentConfig(device_id="dev", state_dir=tmp_path / "agent", mqtt=settings, prefix=topics.prefix,
                              telemetry_period_s=0.1, telemetry_resend_s=1.0, workers=1))
    s = Stage(broker, settings, topics, None, agent, tmp_path)  # type: ignore[arg-type]
    s.coordinator = Coordinator(s.coordinator_config())
    s.coordinator.start()
    agent.start()
    wait_for(lambda: any(d.device_id == "dev" and d.online for d in s.coordinator.status().devices), 20,
             "the agent online at the coordinator")
    yield s
    agent.stop()
    s.coordinator.stop()
    broker.stop()


def _deploy_without_waiting(s: Stage, spec: TenantSpec) -> None:
    link = MqttLink(s.settings, client_id=f"op-{uuid.uuid4().hex[:6]}")
    link.start()
    assert link.wait_connected(10)
    link.publish(s.topics.ops(), encode(OpDeploy(tenant=spec)), qos=1).wait_for_publish(5)
    link.stop()


def _tenant_state(s: Stage, name: str) -> str | None:
    return next((t.state for t in s.coordinator.status().tenants if t.name == name), None)


def test_broker_killed_mid_load_loses_no_telemetry_and_completes_the_command_in_flight(stage: Stage) -> None:
    s = stage
    assert s.coordinator.call(lambda e: e.tenants.deploy(TenantSpec(name="steady", model="ocr-cls", slo_ms=500))) is None
    wait_for(lambda: _tenant_state(s, "steady") == "running", 30, "first tenant running")
    with Apps(s.settings, s.topics.prefix, {"steady": "ocr-cls"}, pause_after_failure_s=0.05) as app:
        wait_for(lambda: app.ok > 20, 20, "calls before the fault")
        _deploy_without_waiting(s, TenantSpec(name="in-flight", model="vad", slo_ms=500))
        wait_for(lambda: _tenant_state(s, "in-flight") is not None, 10, "the deploy accepted")
        s.broker.stop(kill=True)  # SIGKILL: whatever it held in memory is gone
        time.sleep(1.5)  # the agent keeps serving nothing new, but keeps measuring into its outbox
        s.broker.start()
        wait_for(lambda: _tenant_state(s, "in-flight") == "running", 30, "the in-flight deploy completed")
        ok_before = app.ok
        wait_for(lambda: app.ok > ok_before + 20, 30, "calls after the broker came back")
    produced = s.agent.windows_produced
    wait_for(lambda: s.stored_seqs()[:produced] == list(range(produced)), 30,
             f"all {produced} windows stored")
    seqs = s.stored_seqs()
    assert len(seqs) == len(set(seqs))  # stored once each
    assert "in-flight" in s.agent.memory.assigned  # applied once, on the device
    deploys = s.coordinator.call(lambda e: e.store.db.execute(
        "SELECT COUNT(*) FROM commands WHERE tenant = 'in-flight' AND kind = 'deploy'").fetchone()[0])
    assert deploys == 1  # one command id, resent as needed, never a second command


def test_coordinator_away_loses_no_telemetry(stage: Stage) -> None:
    """The broker acknowledges windows nobody receives while the coordinator is down (its session is not
    kept): only the end-to-end confirmation brings them to the database."""
    s = stage
    wait_for(lambda: len(s.stored_seqs()) > 5, 20, "windows stored")
    s.coordinator.stop()
    time.sleep(1.5)  # ~15 windows published and PUBACKed, delivered to no one
    s.coordinator = Coordinator(s.coordinator_config())  # same database: a restart
    s.coordinator.start()
    time.sleep(0.5)
    produced = s.agent.windows_produced
    wait_for(lambda: s.stored_seqs()[:produced] == list(range(produced)), 30, f"all {produced} windows stored")
    assert s.agent.outbox.confirmed >= produced - 1
    # confirmed windows leave the outbox: only the newest few, not yet confirmed, remain
    assert s.agent.state.outbox_rows() < 10


def _hosts(fleet: object) -> dict[str, list[str]]:
    """Which tenants each agent process says it hosts (its latest retained birth)."""
    import msgspec

    from edgefleet.localfleet import LocalFleet
    from edgefleet.wire import Birth, decode_status

    assert isinstance(fleet, LocalFleet)
    births: dict[str, list[str]] = {}
    done = threading.Event()
    # device status is the coordinator's to read (operators may not, under security)
    settings = fleet.client_settings("coordinator") if fleet.secure else fleet.settings
    link = MqttLink(settings, client_id=f"hosts-{uuid.uuid4().hex[:6]}")

    def on_status(msg: object) -> None:
        from edgefleet.mqtt import Inbound

        assert isinstance(msg, Inbound)
        try:
            status = decode_status(msg.payload)
        except (msgspec.DecodeError, ValueError):
            return
        if isinstance(status, Birth):
            births[status.device_id] = sorted(status.tenants)
        if len(births) == len(fleet.agents):
            done.set()

    link.subscribe(fleet.topics.all_status, on_status, qos=1)
    link.start()
    done.wait(5)
    link.stop()
    return births


@pytest.mark.parametrize("secure", [False, True], ids=["open", "dynamic-security"])
def test_agent_and_coordinator_killed_mid_command_converge_with_no_tenant_twice(tmp_path: Path, secure: bool) -> None:
    """SIGKILL an agent 0.1 s after a deploy was sent to it, and the coordinator 0.1 s into a migration:
    after restarts the fleet runs every tenant exactly once, where the coordinator's database says. With
    dynamic security the broker's grants end equal to that placement too."""
    from edgefleet.localfleet import AgentPlan, LocalFleet
    from edgefleet.wire import OpMigrate

    plans = [AgentPlan("k-a", budget_mib=64, telemetry_period_s=0.5), AgentPlan("k-b", budget_mib=64,
                                                                               telemetry_period_s=0.5)]
    with LocalFleet(agents=plans, prefix="kill" + uuid.uuid4().hex[:6], workdir=tmp_path, secure=secure) as fleet:
        fleet.deploy(TenantSpec(name="stay", model="vad", slo_ms=500))

        def fire(op: object) -> threading.Thread:
            def call() -> None:
                with contextlib.suppress(Exception):  # the answer may never come: we kill its recipient
                    fleet.call(op, timeout_s=3.0)  # type: ignore[arg-type]

            t = threading.Thread(target=call)
            t.start()
            return t

        from edgefleet.wire import OpDeploy

        sent = fire(OpDeploy(tenant=TenantSpec(name="late", model="ocr-cls", slo_ms=500), device_id="k-b"))
        time.sleep(0.1)
        fleet.kill_agent("k-b")
        time.sleep(1.0)
        fleet.start_agent(plans[1])
        sent.join(10)
        wait_for(lambda: {t.name: t.state for t in fleet.status().tenants}.get("late") == "running", 60,
                 "the deploy finished on the restarted agent")

        moving = fire(OpMigrate(tenant="stay"))
        time.sleep(0.1)
        fleet.restart_coordinator(kill=True)
        moving.join(10)

        def converged() -> bool:
            status = fleet.status()
            if any(t.state != "running" for t in status.tenants):
                return False
            planned = {t.name: t.device_id for t in status.tenants}
            hosts = _hosts(fleet)
            where: dict[str, list[str]] = {}
            for device, tenants in hosts.items():
                for t in tenants:
                    where.setdefault(t, []).append(device)
            return where == {name: [device] for name, device in planned.items()}

        wait_for(converged, 60, "every tenant running exactly once, where the database says")
        assert {t.name for t in fleet.status().tenants} == {"stay", "late"}
        assert all(c.alive for c in fleet.children.values())
        if secure:
            from tests.test_dynsec_fleet import held

            planned = {(t.device_id, t.name) for t in fleet.status().tenants}
            wait_for(lambda: held(fleet) == planned, 30, "the broker's grants equal to the placement")

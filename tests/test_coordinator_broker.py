"""The coordinator through a real Mosquitto, against scripted fake agents built on MqttLink."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest

from edgefleet.cli.main import main as cli_main
from edgefleet.cli.opsclient import OpsClient, call_ops
from edgefleet.coordinator import CommandPolicy, Coordinator, CoordinatorConfig
from edgefleet.coordinator.fleet import FleetSnapshot, ModelFacts
from edgefleet.coordinator.placement import Decision
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings, Will
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    Configure,
    Death,
    Deploy,
    DeviceWindow,
    OpDeploy,
    OpMigrate,
    OpStatus,
    OpUndeploy,
    Telemetry,
    TelemetryAck,
    TenantSpec,
    TenantWindow,
    Topics,
    Undeploy,
    decode_to_device,
    encode,
)
from edgefleet.wire.codec import decode_reply

pytestmark = pytest.mark.broker
MB = 1_000_000


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FakeAgent:
    """Publishes a retained Birth, answers commands with Acks like the real agent (at most once per id)."""

    def __init__(self, settings: MqttSettings, topics: Topics, device_id: str, *, budget_mb: float = 100,
                 runtimes: tuple[str, ...] = ("onnxruntime",), ignore_deploys: int = 0,
                 tenants: tuple[str, ...] = ()) -> None:
        self.topics, self.device_id = topics, device_id
        self.boot_id = uuid.uuid4().hex[:8]
        self.budget_mb, self.runtimes = budget_mb, runtimes
        self.ignore_deploys = ignore_deploys  # drop this many Deploy messages without an answer
        self.tenants: set[str] = set(tenants)
        self.received: list[Deploy | Undeploy | Configure] = []
        self.received_at: list[float] = []  # monotonic time of each received command
        self.applied: dict[str, bool] = {}
        self._lock = threading.Lock()
        death = Death(device_id=device_id, reason="lost", boot_id=self.boot_id)
        self.link = MqttLink(settings, client_id=f"fake-{device_id}-{self.boot_id}",
                             will=Will(topics.status(device_id), encode(death)))
        self.link.subscribe(topics.commands(device_id), self._on_command, qos=1)

    def start(self) -> FakeAgent:
        self.link.start()
        assert self.link.wait_connected(10)
        self.publish_birth()
        return self

    def birth(self) -> Birth:
        caps = Capabilities(device_kind="fake", runtimes=list(self.runtimes), accelerators=["cpu"], cpu_count=2,
                            memory_total_bytes=1 << 30, memory_budget_bytes=int(self.budget_mb * MB),
                            max_payload_bytes=1 << 20, cached_models=[])
        return Birth(device_id=self.device_id, boot_id=self.boot_id, capabilities=caps,
                     tenants=sorted(self.tenants), agent_version="fake", ts=time.time())

    def publish_birth(self) -> None:
        self.link.publish(self.topics.status(self.device_id), encode(self.birth()), qos=1, retain=True)

    def _on_command(self, msg: Inbound) -> None:
        cmd = decode_to_device(msg.payload)
        if isinstance(cmd, TelemetryAck):  # the coordinator stored a window this fake sent: nothing to do
            return
        with self._lock:
            self.received.append(cmd)
            self.received_at.append(time.monotonic())
            if isinstance(cmd, Deploy) and self.ignore_deploys > 0:
                self.ignore_deploys -= 1
                return
            result: Literal["applied", "duplicate"]
            if cmd.command_id in self.applied:
                result = "duplicate"
            else:
                result = "applied"
                self.applied[cmd.command_id] = True
                if isinstance(cmd, Deploy):
                    self.tenants.add(cmd.tenant.name)
                elif isinstance(cmd, Undeploy):
                    self.tenants.discard(cmd.tenant)  # a Configure changes no tenant list
        if result == "applied":
            self.publish_birth()  # the real agent re-announces after every change
        ack = Ack(command_id=cmd.command_id, device_id=self.device_id, ok=True, result=result, ts=time.time())
        self.link.publish(self.topics.acks(self.device_id), encode(ack), qos=1)

    def deploys(self) -> list[Deploy]:
        with self._lock:
            return [c for c in self.received if isinstance(c, Deploy)]

    def telemetry(self, seq: int, tenant: str, rps: float, p95_ms: float = 9.0, completions: int = 0) -> bytes:
        t = Telemetry(device_id=self.device_id, boot_id=self.boot_id, seq=seq, window_start=seq * 1.0,
                      window_end=seq + 1.0,
                      device=DeviceWindow(cpu_percent=5.0, memory_used_bytes=1, memory_budget_bytes=1,
                                          model_memory_bytes=12 * MB),
                      tenants=[TenantWindow(tenant=tenant, model="ocr-rec", variant="fp32", slo_ms=50.0,
                                            arrival_rps=rps, latency_p50_ms=4.0, latency_p95_ms=p95_ms, errors=1,
                                            completions=completions)])
        return encode(t)

    def shutdown(self) -> None:
        death = Death(device_id=self.device_id, reason="shutdown", boot_id=self.boot_id, ts=time.time())
        self.link.stop(final=(self.topics.status(self.device_id), encode(death), True))

    def stop(self) -> None:
        self.link.stop()


def make_config(tmp_path: Path, settings: MqttSettings, prefix: str) -> CoordinatorConfig:
    return CoordinatorConfig(
        db_path=tmp_path / "coordinator.db", mqtt=settings, prefix=prefix,
        coordinator_id=f"coord-{uuid.uuid4().hex[:8]}", device_timeout_s=30.0, op_timeout_s=5.0,
        commands=CommandPolicy(ack_timeout_s=0.3, max_attempts=6, backoff_s=0.1, backoff_max_s=0.4),
    )


@pytest.fixture()
def agents() -> Iterator[list[FakeAgent]]:
    started: list[FakeAgent] = []
    yield started
    for a in started:
        a.stop()


@pytest.fixture()
def coordinator(tmp_path: Path, mqtt_settings: MqttSettings, prefix: str) -> Iterator[Coordinator]:
    c = Coordinator(make_config(tmp_path, mqtt_settings, prefix))
    c.start()
    yield c
    c.stop()


def spec(name: str, model: str = "ocr-rec") -> TenantSpec:
    return TenantSpec(name=name, model=model, slo_ms=50.0)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


def device_known(c: Coordinator, device_id: str) -> Callable[[], bool]:
    return lambda: any(d.device_id == device_id and d.online for d in c.status().devices)


def test_deploy_is_retried_with_the_same_id_and_acked(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    agent = FakeAgent(mqtt_settings, topics, "edge-a", ignore_deploys=1).start()
    agents.append(agent)
    wait_for(device_known(coordinator, "edge-a"), what="birth seen")
    reply = call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("ocr")), timeout=10)
    assert reply.ok, reply.message
    assert reply.device_id == "edge-a"
    first, second = agent.deploys()[:2]
    assert first.command_id == second.command_id  # the first went unanswered: resent with the same id
    # the same request again is idempotent; a different spec under the same name is a conflict
    again = call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("ocr")), timeout=10)
    assert again.ok and again.device_id == "edge-a"
    clash = call_ops(mqtt_settings, topics, OpDeploy(tenant=TenantSpec(name="ocr", model="vad", slo_ms=9.0)))
    assert (clash.ok, clash.code) == (False, "conflict")
    # the command-line tools, on the same fleet
    port = ["--port", str(mqtt_settings.port), "--prefix", prefix]
    rc, out = cli("deploy", "det", "--model", "ocr-det", "--variant", "int8", "--slo-ms", "30", *port)
    assert rc == 0 and "det running on edge-a (most free memory" in out
    rc, out = cli("deploy", "face", "--model", "face-detect", "--slo-ms", "30", *port)
    assert rc == 1 and "no runtime litert" in out
    rc, out = cli("status", *port)
    assert rc == 0 and "edge-a" in out and "ocr-det:int8" in out and "running" in out
    rc, out = cli("status", "--json", *port)
    assert rc == 0 and '"device_id": "edge-a"' in out
    rc, out = cli("undeploy", "det", *port)
    assert rc == 0, out
    assert "det" not in agent.tenants
    rc, out = cli("undeploy", "det", *port)
    assert rc == 1 and "unknown_tenant" in out


def test_death_moves_tenants_to_another_device(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics
) -> None:
    big = FakeAgent(mqtt_settings, topics, "big", budget_mb=200).start()
    small = FakeAgent(mqtt_settings, topics, "small", budget_mb=50).start()
    agents.extend([big, small])
    wait_for(lambda: device_known(coordinator, "big")() and device_known(coordinator, "small")(), what="births")
    with OpsClient(mqtt_settings, topics) as ops:
        for name in ("t1", "t2"):
            reply = ops.call(OpDeploy(tenant=spec(name)))
            assert reply.ok and reply.device_id == "big"  # 200 MB free beats 50 MB
        big.shutdown()  # graceful: a retained Death
        agents.remove(big)

        def moved() -> bool:
            tenants = {t.name: t for t in coordinator.status().tenants}
            return all(tenants[n].device_id == "small" and tenants[n].state == "running" for n in ("t1", "t2"))

        wait_for(moved, what="tenants running on small")
        status = ops.call(OpStatus()).status
        assert status is not None
        views = {d.device_id: d for d in status.devices}
        assert views["big"].online is False and views["small"].tenants == ["t1", "t2"]
    assert small.tenants == {"t1", "t2"}


def test_lost_connection_sends_the_will_and_tenants_move(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics
) -> None:
    big = FakeAgent(mqtt_settings, topics, "will-big", budget_mb=200).start()
    small = FakeAgent(mqtt_settings, topics, "will-small", budget_mb=50).start()
    agents.extend([big, small])
    wait_for(lambda: device_known(coordinator, "will-big")() and device_known(coordinator, "will-small")(),
             what="births")
    assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).device_id == "will-big"
    big.link._client.socket().shutdown(socket.SHUT_RDWR)  # a crash: the broker publishes the will
    wait_for(lambda: "t1" in small.tenants, what="t1 moved to will-small")
    [view] = coordinator.status().tenants
    assert view.device_id == "will-small" and "will-big offline (connection lost)" in view.detail


def test_telemetry_duplicates_are_stored_once(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics
) -> None:
    agent = FakeAgent(mqtt_settings, topics, "tele").start()
    agents.append(agent)
    wait_for(device_known(coordinator, "tele"), what="birth seen")
    assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).ok
    for seq, rps in ((0, 3.0), (0, 3.0), (1, 4.0), (1, 4.0), (1, 4.0)):
        agent.link.publish(topics.telemetry("tele"), agent.telemetry(seq, "t1", rps), qos=1)
    wait_for(lambda: coordinator.call(lambda e: e.duplicate_windows) == 3, what="duplicates counted")
    assert coordinator.call(lambda e: e.store.telemetry_count("tele")) == 2
    [view] = coordinator.status().tenants
    assert (view.arrival_rps, view.latency_p50_ms, view.latency_p95_ms, view.errors) == (4.0, 4.0, 9.0, 1)
    [device] = coordinator.status().devices
    assert device.memory_used_bytes == 12 * MB


def test_metrics_endpoint_serves_fleet_gauges_and_every_devices_telemetry(
    tmp_path: Path, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    import dataclasses
    import urllib.request

    from edgefleet.broker import free_port

    port = free_port()
    config = dataclasses.replace(make_config(tmp_path, mqtt_settings, prefix), metrics_port=port)
    coordinator = Coordinator(config)
    coordinator.start()
    try:
        agent = FakeAgent(mqtt_settings, topics, "scraped").start()
        agents.append(agent)
        wait_for(device_known(coordinator, "scraped"), what="birth seen")
        assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).ok
        for seq in (0, 1, 1):  # the redelivered window is counted once
            agent.link.publish(topics.telemetry("scraped"), agent.telemetry(seq, "t1", 3.0), qos=1)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return str(reply.read().decode())

        wait_for(lambda: 'edgefleet_tenants{state="running"} 1' in scrape(), what="fleet gauges")
        # two windows with errors=1 each -> a running total of 2 for the tenant on that device
        wait_for(lambda: any(line.startswith("edgefleet_tenant_errors_total{") and 'tenant="t1"' in line
                             and line.endswith(" 2") for line in scrape().splitlines()), what="totals")
        text = scrape()
        rc, out = cli("top", "--once", "--port", str(mqtt_settings.port), "--prefix", prefix)
        assert rc == 0 and "1/1 devices online, 1 tenants, 0 over SLO" in out and "4.0/9.0" in out, out
        assert 'edgefleet_devices{online="true"} 1' in text
        assert 'edgefleet_coordinator_messages_total{channel="telemetry"} 3' in text
    finally:
        coordinator.stop()


def _first(agent: FakeAgent, kind: type, tenant: str) -> float:
    for cmd, at in zip(agent.received, agent.received_at, strict=True):
        if isinstance(cmd, kind) and (cmd.tenant.name if isinstance(cmd, Deploy) else cmd.tenant) == tenant:
            return at
    raise AssertionError(f"{agent.device_id} got no {kind.__name__} for {tenant}")


def test_planned_migration_makes_before_it_breaks(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    a = FakeAgent(mqtt_settings, topics, "mig-a", budget_mb=500).start()
    b = FakeAgent(mqtt_settings, topics, "mig-b", budget_mb=100, ignore_deploys=1).start()
    agents.extend([a, b])
    wait_for(lambda: device_known(coordinator, "mig-a")() and device_known(coordinator, "mig-b")(), what="births")
    assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).device_id == "mig-a"
    rc, out = cli("migrate", "t1", "--port", str(mqtt_settings.port), "--prefix", prefix, "--timeout", "10")
    assert rc == 0 and "t1 moved from mig-a to mig-b" in out, out
    # b ignored the first Deploy: a kept serving (no Undeploy yet) until b acked the resent one
    deploy_b = [at for cmd, at in zip(b.received, b.received_at, strict=True) if isinstance(cmd, Deploy)]
    assert len(deploy_b) == 2
    wait_for(lambda: "t1" not in a.tenants, what="undeploy on the source")
    assert _first(a, Undeploy, "t1") > deploy_b[1]
    [view] = coordinator.status().tenants
    assert (view.device_id, view.state) == ("mig-b", "running")


def test_a_move_whose_target_never_acks_stays_on_the_source(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics
) -> None:
    a = FakeAgent(mqtt_settings, topics, "stay-a", budget_mb=500).start()
    b = FakeAgent(mqtt_settings, topics, "stay-b", budget_mb=100, ignore_deploys=100).start()
    agents.extend([a, b])
    wait_for(lambda: device_known(coordinator, "stay-a")() and device_known(coordinator, "stay-b")(),
             what="births")
    assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).device_id == "stay-a"
    reply = call_ops(mqtt_settings, topics, OpMigrate(tenant="t1", device_id="stay-b"), timeout=15)
    assert (reply.ok, reply.code, reply.device_id) == (False, "move_failed", "stay-a"), reply
    assert "t1" in a.tenants and not any(isinstance(c, Undeploy) for c in a.received)
    [view] = coordinator.status().tenants
    assert (view.device_id, view.state) == ("stay-a", "running") and "move to stay-b failed" in view.detail
    # moving a tenant that does not run, or to where it is, is answered at once
    assert call_ops(mqtt_settings, topics, OpMigrate(tenant="nope")).code == "unknown_tenant"
    assert call_ops(mqtt_settings, topics, OpMigrate(tenant="t1", device_id="stay-a")).ok


def test_plan_answers_where_a_tenant_would_go_without_deploying(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    agent = FakeAgent(mqtt_settings, topics, "plan-a", budget_mb=20).start()
    agents.append(agent)
    wait_for(device_known(coordinator, "plan-a"), what="birth seen")
    port = ["--port", str(mqtt_settings.port), "--prefix", prefix]
    rc, out = cli("plan", "--add", "maybe", "--model", "ocr-rec", "--slo-ms", "100", "--rate", "5", *port)
    assert rc == 0 and "maybe would run on plan-a" in out, out
    assert agent.deploys() == [] and coordinator.status().tenants == []  # nothing deployed
    # ocr-rec fp32 needs 10.9 MB; once "big" holds it, 20 - 10.9 = 9.1 MB are left: no room for another
    assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("big"))).ok
    rc, out = cli("plan", "--add", "more", "--model", "ocr-rec", "--slo-ms", "100", *port)
    assert rc == 1 and "no_fit" in out and "plan-a" in out, out
    rc, out = cli("plan", "--add", "big", "--model", "ocr-rec", "--slo-ms", "100", *port)
    assert rc == 1 and "conflict" in out


def test_persistent_slo_misses_move_the_tenant_and_one_bad_window_does_not(
    tmp_path: Path, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    import dataclasses

    from edgefleet.coordinator.rebalance import RebalancePolicy

    config = dataclasses.replace(make_config(tmp_path, mqtt_settings, prefix),
                                 rebalance=RebalancePolicy(windows=3, cooldown_s=0.0))
    coordinator = Coordinator(config)
    coordinator.start()
    try:
        slow = FakeAgent(mqtt_settings, topics, "slow", budget_mb=500).start()
        fast = FakeAgent(mqtt_settings, topics, "fast", budget_mb=100).start()
        agents.extend([slow, fast])
        wait_for(lambda: device_known(coordinator, "slow")() and device_known(coordinator, "fast")(), what="births")
        assert call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1"))).device_id == "slow"  # SLO 50 ms
        # p95 80 ms in two windows, then 20 ms, then 80 ms twice: never three in a row -> it stays
        for seq, p95 in enumerate((80.0, 80.0, 20.0, 80.0, 80.0)):
            slow.link.publish(topics.telemetry("slow"), slow.telemetry(seq, "t1", 5.0, p95, 25), qos=1)
        wait_for(lambda: coordinator.call(lambda e: e.store.telemetry_count("slow")) == 5, what="5 windows")
        assert fast.deploys() == [] and coordinator.call(lambda e: e.rebalance_moves) == []
        # a third bad window in a row: moved, make-before-break, to the device that keeps its SLO
        slow.link.publish(topics.telemetry("slow"), slow.telemetry(5, "t1", 5.0, 80.0, 25), qos=1)
        wait_for(lambda: "t1" in fast.tenants and "t1" not in slow.tenants, what="t1 moved to fast")
        [view] = coordinator.status().tenants
        assert (view.device_id, view.state) == ("fast", "running")
        [move] = coordinator.call(lambda e: e.rebalance_moves)
        assert (move.tenant, move.action, move.outcome) == ("t1", "migrate", "moving")
        assert "no performance model" in move.reason
    finally:
        coordinator.stop()


def test_top_flags_tenants_over_their_slo() -> None:
    from edgefleet.cli.top import frame
    from edgefleet.wire import DeviceView, FleetStatus, TenantView

    status = FleetStatus(
        devices=[DeviceView(device_id="d1", online=True, device_kind="x86_64-cpu", runtimes=["onnxruntime"],
                            memory_budget_bytes=100 * MB, memory_used_bytes=10 * MB, tenants=["fast", "slow"],
                            last_seen=0.0),
                 DeviceView(device_id="d2", online=False, device_kind="x86_64-cpu", runtimes=[],
                            memory_budget_bytes=MB, memory_used_bytes=0, tenants=[], last_seen=0.0)],
        tenants=[TenantView(name="fast", model="vad", variant="fp32", slo_ms=50, state="running", device_id="d1",
                            latency_p95_ms=12.0),
                 TenantView(name="slow", model="ocr-rec", variant="fp32", slo_ms=50, state="running",
                            device_id="d1", latency_p95_ms=80.0)],
        ts=0.0)
    text = frame(status, clock=0.0, where="here")
    assert "1/2 devices online, 2 tenants, 1 over SLO" in text
    assert text.endswith("over SLO (last p95 > SLO): slow")


def test_malformed_payloads_do_not_crash(
    coordinator: Coordinator, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics
) -> None:
    agent = FakeAgent(mqtt_settings, topics, "ok").start()
    agents.append(agent)
    wait_for(device_known(coordinator, "ok"), what="birth seen")
    root = topics.root
    garbage: list[tuple[str, bytes]] = [
        (topics.status("x1"), b"not json"),
        (topics.status("x2"), b'{"type": "birth", "device_id": 5}'),
        (topics.status("x3"), encode(agent.birth())),  # payload names "ok", topic names "x3"
        (f"{root}/devices/BAD ID/status", encode(agent.birth())),
        (topics.telemetry("ok"), b"[1, 2, 3]"),
        (topics.telemetry("ok"), b'{"type": "telemetry", "v": 1, "seq": "one"}'),
        (topics.telemetry("ok"), b"\xff\xfe"),
        (topics.acks("ok"), b"{}"),
        (topics.acks("ok"), b'{"type": "ack", "command_id": "nope", "device_id": "ok", "ok": true, '
                            b'"result": "applied"}'),
        (topics.acks("ok"), b'{"type": "ack", "v": 7, "command_id": "a", "device_id": "ok", "ok": true, '
                            b'"result": "applied"}'),
        (topics.ops(), b"{{{"),
        (topics.ops(), b'{"type": "op.deploy", "tenant": {"name": "UPPER", "model": "m", "slo_ms": 1}}'),
        (topics.ops(), b'{"type": "op.nothing"}'),
    ]
    for topic, payload in garbage:
        agent.link.publish(topic, payload, qos=1)
    # a malformed op that says where to answer gets bad_request there
    inbox = topics.replies("garbage-test")
    replies: list[bytes] = []
    agent.link.subscribe(inbox, lambda m: replies.append(m.payload), qos=1, wait_s=5)
    agent.link.publish(topics.ops(), b'{"type": "op.deploy"}', qos=1, response_topic=inbox, correlation_data=b"c")
    agent.link.publish(topics.ops(), encode(OpStatus()), qos=1, response_topic=f"{root}/bad/+", correlation_data=b"x")
    wait_for(lambda: replies, what="bad_request reply")
    reply = decode_reply(replies[0])
    assert (reply.ok, reply.code) == (False, "bad_request")
    status = call_ops(mqtt_settings, topics, OpStatus())
    assert status.ok and status.status is not None
    assert [d.device_id for d in status.status.devices] == ["ok"]
    malformed = coordinator.counters.malformed
    assert malformed.get("status", 0) >= 3 and malformed.get("telemetry", 0) == 3
    assert malformed.get("acks", 0) == 2
    assert malformed.get("ops", 0) == 5  # 3 undecodable, 1 answered bad_request, 1 unusable response topic
    assert coordinator.counters.errors == 0
    assert coordinator.call(lambda e: e.stray_acks) == 1
    for topic in (topics.status("x1"), topics.status("x2"), topics.status("x3")):
        agent.link.publish(topic, b"", qos=1, retain=True)  # clear what this test left retained


class ExplodingPlacement:
    """A placement with a bug, to show the worker survives it."""

    def place(self, spec: TenantSpec, model: ModelFacts, fleet: FleetSnapshot, perf: object = None) -> Decision:
        raise RuntimeError("placement bug")


def test_a_bug_in_a_handler_is_answered_and_survived(
    tmp_path: Path, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    c = Coordinator(make_config(tmp_path, mqtt_settings, prefix), placement=ExplodingPlacement())
    c.start()
    try:
        agents.append(FakeAgent(mqtt_settings, topics, "e1").start())
        wait_for(device_known(c, "e1"), what="birth seen")
        reply = call_ops(mqtt_settings, topics, OpDeploy(tenant=spec("t1")))
        assert (reply.ok, reply.code) == (False, "internal") and "placement bug" in reply.message
        # the reply goes out before the worker has rolled the message back and counted the failure
        wait_for(lambda: c.counters.errors == 1, what="the failure counted")
        status = call_ops(mqtt_settings, topics, OpStatus()).status
        assert status is not None and status.tenants == []  # the failed attempt left nothing behind
    finally:
        c.stop()


def test_restart_resumes_a_pending_command(
    tmp_path: Path, agents: list[FakeAgent], mqtt_settings: MqttSettings, topics: Topics, prefix: str
) -> None:
    config = make_config(tmp_path, mqtt_settings, prefix)
    agent = FakeAgent(mqtt_settings, topics, "slow", ignore_deploys=1000).start()
    agents.append(agent)
    first = Coordinator(config)
    first.start()
    try:
        wait_for(device_known(first, "slow"), what="birth seen")
        with OpsClient(mqtt_settings, topics) as ops:
            ops.link.publish(topics.ops(), encode(OpDeploy(tenant=spec("t1"))), qos=1)  # no answer wanted
            wait_for(lambda: agent.deploys(), what="deploy sent")
    finally:
        first.stop()
    [sent] = {c.command_id for c in agent.deploys()}
    agent.ignore_deploys = 0  # now the agent answers; only a resent command can reach it
    second = Coordinator(config)
    second.start()
    try:
        wait_for(lambda: "t1" in agent.tenants, what="deploy applied after the restart")
        assert {c.command_id for c in agent.deploys()} == {sent}  # the same command, resumed
        wait_for(lambda: second.status().tenants[0].state == "running", what="running")
        assert call_ops(mqtt_settings, topics, OpUndeploy(tenant="t1")).ok
        assert "t1" not in agent.tenants
    finally:
        second.stop()

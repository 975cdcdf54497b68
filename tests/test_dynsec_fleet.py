"""A whole fleet under dynamic security (real Mosquitto with the plugin, coordinator and agents as
processes, real models): each device reads only the requests of the tenants placed on it, before and
after migrations in both directions; planned moves lose no request; a dead device's tenants are
served elsewhere and it keeps no grant; a broker restart keeps the grants; a coordinator killed
between a grant and its Deploy converges when it comes back.

A compromised device is played by ``Spy``: a raw client with that device's credentials.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgefleet.coordinator.grants.mosquitto import MosquittoGrants
from edgefleet.localfleet import AgentPlan, LocalFleet
from edgefleet.sdk import InferenceClient, InferenceError
from edgefleet.wire import TenantSpec
from edgefleet.zoo import sample_inputs
from tests import fleetkit
from tests.spy import NOT_AUTHORIZED, Spy

pytestmark = pytest.mark.broker

A, B = "dyn-a", "dyn-b"
LOADERS = [f"app-load-{i}" for i in range(4)]
APPS = {"app-iso": ["iso"], "app-bystander": ["elsewhere"], "app-rescue": ["rescued"],
        **{name: ["moved"] for name in LOADERS}}


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    fleetkit.wait_for(cond, timeout, what, interval=0.2)


def _plans() -> list[AgentPlan]:
    return [AgentPlan(A, budget_mib=64, telemetry_period_s=0.5), AgentPlan(B, budget_mib=64, telemetry_period_s=0.5)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    with LocalFleet(agents=_plans(), prefix=f"dyn{uuid.uuid4().hex[:6]}", secure=True, apps=APPS,
                    device_timeout_s=10.0, workdir=tmp_path_factory.mktemp("dynfleet")) as f:
        yield f


def spy(fleet: LocalFleet, username: str, **kw: int) -> Spy:
    s = fleet.client_settings(username)
    assert s.password is not None
    return Spy(s.port, username, s.password, **kw)


def held(fleet: LocalFleet) -> set[tuple[str, str]]:
    """The (device, tenant) grants the broker holds now, read by a second admin client."""
    g = MosquittoGrants(fleet.client_settings("coordinator"), fleet.prefix, f"probe-{uuid.uuid4().hex[:6]}")
    g.start()
    try:
        assert g.link.wait_connected(10)
        grants = g.held()
        assert not isinstance(grants, str), grants
        return grants
    finally:
        g.stop()


def placed(fleet: LocalFleet) -> set[tuple[str, str]]:
    return {(t.device_id, t.name) for t in fleet.status().tenants if t.device_id is not None}


def wait_in_line(fleet: LocalFleet) -> None:
    """Wait until every tenant runs and the broker's grants are exactly the placement."""
    def in_line() -> bool:
        status = fleet.status()
        return all(t.state == "running" for t in status.tenants) and held(fleet) == placed(fleet)

    wait_for(in_line, 30, "the broker's grants equal to the placement")


def _deploy(fleet: LocalFleet, tenant: str, model: str = "ocr-cls") -> str:
    device = fleet.deploy(TenantSpec(name=tenant, model=model, slo_ms=500)).device_id
    assert device in (A, B)
    return device


def _other(device: str) -> str:
    return B if device == A else A


def _app(fleet: LocalFleet, name: str) -> InferenceClient:
    return InferenceClient(fleet.client_settings(name), prefix=fleet.prefix, client_id=name)


def _answer(client: InferenceClient, tenant: str, feeds: dict[str, object]) -> str | None:
    """Which device answered one call, or None when it failed."""
    try:
        return client.infer_with_meta(tenant, feeds, timeout_s=5.0).device  # type: ignore[arg-type]
    except InferenceError:
        return None


def check_isolated(fleet: LocalFleet, tenant: str, app: str, host: str, other: str) -> None:
    """``other`` (compromised) can neither read ``tenant``'s requests nor answer ``app``; ``host`` answers
    every call."""
    t = fleet.topics
    intruder = spy(fleet, other)
    try:
        for filter_ in (t.infer_shared(tenant), t.infer(tenant), f"{t.root}/tenants/+/infer", f"{t.root}/#"):
            assert intruder.subscribe(filter_) == NOT_AUTHORIZED, filter_
        assert intruder.publish(t.replies(app), b"forged") == NOT_AUTHORIZED
        feeds = dict(sample_inputs("ocr-cls"))
        with _app(fleet, app) as client:
            answers = {client.infer_with_meta(tenant, feeds, timeout_s=5.0).device for _ in range(10)}
        assert answers == {host}
        assert intruder.messages == []
    finally:
        intruder.close()
    server = spy(fleet, host)
    try:
        assert server.publish(t.replies(app), b"allowed") in (0, 16)  # 16: accepted, no one listening now
        assert server.publish(t.replies("app-bystander"), b"forged") == NOT_AUTHORIZED  # not its tenant's app
    finally:
        server.close()


def test_a_device_reads_only_its_tenants_requests_across_moves_both_ways(fleet: LocalFleet) -> None:
    # before any placement, neither device may read the tenant's requests
    for device in (A, B):
        intruder = spy(fleet, device)
        assert intruder.subscribe(fleet.topics.infer_shared("iso")) == NOT_AUTHORIZED
        intruder.close()
    first = _deploy(fleet, "iso")
    second = _other(first)
    wait_in_line(fleet)
    check_isolated(fleet, "iso", "app-iso", host=first, other=second)
    assert fleet.migrate("iso", second).device_id == second
    wait_in_line(fleet)
    check_isolated(fleet, "iso", "app-iso", host=second, other=first)
    assert fleet.migrate("iso", first).device_id == first
    wait_in_line(fleet)
    check_isolated(fleet, "iso", "app-iso", host=first, other=second)
    assert fleet.undeploy("iso").ok
    wait_in_line(fleet)
    assert not any(tenant == "iso" for _, tenant in held(fleet))


def test_a_subscription_kept_from_hosting_time_receives_nothing_after_the_move(fleet: LocalFleet) -> None:
    """A compromised host subscribes with a session the broker keeps; the tenant moves away. The
    plugin disconnects it to revoke, the kept subscription survives, and read access is checked per
    message: it is delivered nothing after the revoke."""
    host = _deploy(fleet, "iso")
    wait_in_line(fleet)
    cid = f"kept-{uuid.uuid4().hex[:6]}"
    intruder = spy(fleet, host, client_id=cid, session_expiry_s=300)
    assert intruder.subscribe(fleet.topics.infer_shared("iso")) == 1  # allowed while it hosts iso
    intruder.close()
    assert fleet.migrate("iso", _other(host)).device_id == _other(host)
    wait_in_line(fleet)
    back = spy(fleet, host, client_id=cid, session_expiry_s=300)  # resumes the session, subscription included
    feeds = dict(sample_inputs("ocr-cls"))
    try:
        with _app(fleet, "app-iso") as client:
            for _ in range(10):
                # the broker routes some requests to the kept session and drops them there
                with contextlib.suppress(InferenceError):
                    client.infer("iso", feeds, timeout_s=2.0)
        assert back.messages == []
    finally:
        back.close()
        closer = spy(fleet, host, client_id=cid)  # a clean start discards the kept session
        closer.close()
    assert fleet.undeploy("iso").ok
    wait_in_line(fleet)


def _more_than(items: list[str], n: int) -> Callable[[], bool]:
    return lambda: len(items) > n


def test_planned_moves_under_load_lose_no_request(fleet: LocalFleet) -> None:
    source = fleet.deploy(TenantSpec(name="moved", model="ocr-cls", slo_ms=500)).device_id
    assert source is not None
    target = ({A, B} - {source}).pop()
    wait_in_line(fleet)
    feeds = dict(sample_inputs("ocr-cls"))
    answered: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def app(name: str) -> None:  # a closed-loop caller that never pauses while the tenant moves
        with _app(fleet, name) as client:
            while not stop.is_set():
                try:
                    answered.append(client.infer_with_meta("moved", feeds, timeout_s=5.0).device or "?")
                except InferenceError as exc:
                    failed.append(exc.code.value)

    callers = [threading.Thread(target=app, args=(name,)) for name in LOADERS]  # four in flight
    for caller in callers:
        caller.start()
    try:
        wait_for(lambda: len(answered) > 20, 20, "calls before the moves")
        for there in (target, source):  # and back
            assert fleet.migrate("moved", there).device_id == there
            wait_for(_more_than(answered, len(answered) + 50), 30, f"calls after the move to {there}")
    finally:
        stop.set()
        for caller in callers:
            caller.join(15)
    assert failed == []
    assert target in answered and answered[-1] == source
    wait_in_line(fleet)
    assert fleet.undeploy("moved").ok


def test_a_dead_devices_tenant_is_served_elsewhere_and_the_dead_device_keeps_no_grant(fleet: LocalFleet) -> None:
    victim = fleet.deploy(TenantSpec(name="rescued", model="vad", slo_ms=200)).device_id
    assert victim is not None
    survivor = ({A, B} - {victim}).pop()
    wait_in_line(fleet)
    feeds = dict(sample_inputs("vad"))
    fleet.kill_agent(victim)

    def moved() -> bool:
        running = {(t.device_id, t.name) for t in fleet.status().tenants if t.state == "running"}
        return (survivor, "rescued") in running and (victim, "rescued") not in held(fleet)

    wait_for(moved, 40, f"rescued re-placed on {survivor} and revoked from {victim}")
    with _app(fleet, "app-rescue") as client:
        wait_for(lambda: _answer(client, "rescued", feeds) == survivor, 20, "the survivor answering")
        assert [client.infer_with_meta("rescued", feeds, timeout_s=5.0).device for _ in range(5)] == [survivor] * 5
    intruder = spy(fleet, victim)  # its credentials, stolen from the dead box
    assert intruder.subscribe(fleet.topics.infer_shared("rescued")) == NOT_AUTHORIZED
    intruder.close()
    fleet.start_agent(next(p for p in fleet.agents if p.device_id == victim))
    fleet.wait_online([victim], 60)
    wait_in_line(fleet)  # the restarted agent's stale copy is undeployed, and it gets no grant back
    assert (victim, "rescued") not in held(fleet)
    assert fleet.undeploy("rescued").ok


def test_a_broker_restart_keeps_the_grants(fleet: LocalFleet) -> None:
    host = _deploy(fleet, "iso")
    wait_in_line(fleet)
    before = held(fleet)
    fleet.restart_broker(kill=True, down_s=0.5)  # SIGKILL: the plugin saved its file at each change
    wait_for(lambda: fleet._status_or_none() is not None, 30, "the coordinator back on the broker")
    assert held(fleet) == before
    check_isolated(fleet, "iso", "app-iso", host=host, other=_other(host))
    assert fleet.undeploy("iso").ok
    wait_in_line(fleet)


# -- a coordinator killed between a grant and its Deploy --------------------------------------------------
DIE_AFTER_GRANT = """
import os, sys, threading
from coordinator import Coordinator, load_config
from edgefleet.coordinator.grants import make_grants

config = load_config(sys.argv[1])
inner = make_grants(config.grants, config.mqtt, config.prefix, config.coordinator_id)


class DieAfterGrant:
    active = True

    def start(self): inner.start()
    def stop(self): inner.stop()
    def reconcile(self, wanted, keep): return inner.reconcile(wanted, keep)

    def allow(self, device, spec):
        outcome = inner.allow(device, spec)  # granted on the broker (or already, by reconcile) ...
        if spec.name == sys.argv[2]:
            os._exit(9)  # ... and killed before the Deploy is published
        return outcome


Coordinator(config, grants=DieAfterGrant()).start()
threading.Event().wait()
"""


def test_a_coordinator_killed_between_grant_and_deploy_converges_on_restart(tmp_path: Path) -> None:
    apps = {"app-crash": ["crashed"]}
    with LocalFleet(agents=_plans(), prefix=f"die{uuid.uuid4().hex[:6]}", secure=True, apps=apps,
                    workdir=tmp_path) as fleet:
        assert fleet.coordinator is not None
        fleet.coordinator.stop()
        config = tmp_path / "coordinator" / "coordinator.toml"
        with open(tmp_path / "coordinator" / "dying.log", "wb") as log:
            dying = subprocess.Popen([sys.executable, "-c", DIE_AFTER_GRANT, str(config), "crashed"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: fleet._status_or_none() is not None, 30, "the dying coordinator answering")
            from edgefleet.cli.opsclient import OpsError
            from edgefleet.wire import OpDeploy

            with pytest.raises(OpsError):  # it dies before answering
                fleet.call(OpDeploy(tenant=TenantSpec(name="crashed", model="vad", slo_ms=200)), timeout_s=5.0)
            assert dying.wait(20) == 9
        finally:
            if dying.poll() is None:
                dying.kill()
                dying.wait(5)
        granted = held(fleet)
        assert [t for _, t in granted] == ["crashed"]  # the broker holds the grant ...
        for device in (A, B):  # ... and no agent got the Deploy
            assert "crashed" not in (tmp_path / device / "agent.log").read_text()
        fleet.restart_coordinator()
        wait_in_line(fleet)
        assert held(fleet) == granted  # deployed where it was granted, nothing else
        with _app(fleet, "app-crash") as client:
            feeds = dict(sample_inputs("vad"))
            device = client.infer_with_meta("crashed", feeds, timeout_s=5.0).device
        assert {(device, "crashed")} == granted

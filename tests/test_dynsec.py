"""Dynamic security: the plugin's file and roles as tables, the coordinator's grant seam, and what a
real Mosquitto with ``mosquitto_dynamic_security.so`` enforces as the coordinator grants and revokes.

The end-to-end cases through a whole fleet (isolation across migrations, planned moves under load,
failover, a coordinator killed between grant and deploy) come with LocalFleet in its own module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.broker import PrivateBroker
from edgefleet.cli.main import main as cli_main
from edgefleet.config import read_toml
from edgefleet.coordinator.commands import Outbox
from edgefleet.coordinator.config import CommandPolicy, ConfigError, config_from_dict
from edgefleet.coordinator.grants import Grant, Granted, GrantOutcome, GrantRefused, NullGrants, Settling
from edgefleet.coordinator.grants.mosquitto import MosquittoGrants
from edgefleet.coordinator.grants.wanted import WantedIndex, kept_grants, wanted_grants
from edgefleet.coordinator.store import CommandRow, Store, TenantRow
from edgefleet.mqtt import MqttSettings
from edgefleet.security import AppGrant, SecurityPlan
from edgefleet.security.bundle import BundleOptions, build_bundle
from edgefleet.security.dynsec import (
    AclType,
    ControlError,
    DynAcl,
    RoleNames,
    dynsec_password,
    parse_replies,
    plan_roles,
)
from edgefleet.wire import TenantSpec, Topics
from edgefleet.wire.streams import StreamSpec
from tests.spy import Spy

PLAN = SecurityPlan(prefix="ef", devices=("d1", "d2"),
                    apps=(AppGrant("a1", ("t1",)), AppGrant("a2", ("t1", "t2"))))
R, S, W, SL = AclType.PUBLISH_RECEIVE, AclType.SUBSCRIBE_PATTERN, AclType.PUBLISH_SEND, AclType.SUBSCRIBE_LITERAL


# -- the plugin's file ------------------------------------------------------------------------------------
def test_password_matches_mosquitto_ctrl() -> None:
    # `mosquitto_ctrl dynsec init f admin adminpw` (2.0.11) wrote this salt and hash
    salt = base64.b64decode("7dD4DRGG5P1p9WM5")
    fields = dynsec_password("adminpw", salt=salt)
    assert fields == {"password": "fbguw8NhBtjBpRZBZ8VrWYDlg4pqx/TGp5WsM3Ilx7xSM5h6ai8ankL5eh6R1waveG+atvq5RPf0NHhKinhEwQ==",
                      "salt": "7dD4DRGG5P1p9WM5", "iterations": 101}


@pytest.mark.parametrize(
    ("prefix", "role", "tenant"),
    [
        ("ef", "ef:tenant:t1", "t1"),
        ("lab/x", "lab/x:tenant:cam-2", "cam-2"),  # a prefix with '/'
        ("ef", "ef:device:d1", None),
        ("ef", "other:tenant:t1", None),  # another fleet's tenant
        ("ef", "ef:tenant:", None),
        ("ef", "ef:app:a1", None),
    ],
)
def test_tenant_roles_are_parsed_back_per_fleet(prefix: str, role: str, tenant: str | None) -> None:
    assert RoleNames(prefix).tenant_of(role) == tenant
    if tenant is not None:
        assert RoleNames(prefix).tenant(tenant) == role


def test_devices_start_with_their_own_topics_and_tenants_with_their_callers() -> None:
    planned = plan_roles(PLAN)
    assert planned.roles["ef:device:d1"] == (
        DynAcl(R, "ef/v1/devices/d1/commands"), DynAcl(S, "ef/v1/devices/d1/commands"),
        DynAcl(W, "ef/v1/devices/d1/status"), DynAcl(W, "ef/v1/devices/d1/telemetry"),
        DynAcl(W, "ef/v1/devices/d1/acks"),
    )
    # t1 is called by a1 and a2, t2 by a2 only: replies go to exactly those apps
    assert planned.roles["ef:tenant:t1"] == (
        DynAcl(R, "ef/v1/tenants/t1/infer"), DynAcl(SL, "$share/ef-t1/ef/v1/tenants/t1/infer"),
        DynAcl(W, "ef/v1/clients/a1/replies"), DynAcl(W, "ef/v1/clients/a2/replies"),
    )
    assert planned.roles["ef:tenant:t2"][2:] == (DynAcl(W, "ef/v1/clients/a2/replies"),)
    assert planned.roles["ef:app:a2"] == (
        DynAcl(W, "ef/v1/tenants/t1/infer"), DynAcl(W, "ef/v1/tenants/t2/infer"),
        DynAcl(R, "ef/v1/clients/a2/replies"), DynAcl(S, "ef/v1/clients/a2/replies"),
    )
    # nothing for any tenant's requests yet: no client holds a tenant role
    assert planned.clients == {"coordinator": ("ef:coordinator", "ef:dynsec-admin"), "operator": ("ef:operator",),
                               "d1": ("ef:device:d1",), "d2": ("ef:device:d2",), "a1": ("ef:app:a1",),
                               "a2": ("ef:app:a2",)}
    assert {a.topic for a in planned.roles["ef:dynsec-admin"]} == {"$CONTROL/dynamic-security/#"}


def test_the_file_denies_by_default_and_holds_every_principal(tmp_path: Path) -> None:
    bundle = build_bundle(PLAN, BundleOptions(tmp_path, dynamic=True), password_for=lambda n: f"pw-{n}-0123456789")
    assert {f.path for f in bundle.files if f.secret} == {"dynamic-security.json"} | {
        f"clients/{p.name}.toml" for p in PLAN.principals()}
    assert {f.path for f in bundle.files if not f.secret} == {"mosquitto.conf"}
    doc = json.loads(bundle.file("dynamic-security.json").content)
    assert doc["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}
    assert [c["username"] for c in doc["clients"]] == ["coordinator", "operator", "d1", "d2", "a1", "a2"]
    conf = bundle.file("mosquitto.conf").content.decode()
    assert f"plugin_opt_config_file {tmp_path}/dynamic-security.json" in conf
    assert "password_file" not in conf and "acl_file" not in conf


def test_cli_init_dynamic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sec"
    assert cli_main(["security", "init", "--dynamic", "--out", str(out), "--devices", "d1", "--app", "a1=t1"]) == 0
    printed = capsys.readouterr().out
    assert oct((out / "dynamic-security.json").stat().st_mode & 0o777) == "0o600"
    assert 'grants = "mosquitto-dynsec"' in printed
    assert read_toml(out / "clients" / "d1.toml")["mqtt"]["password"] not in printed
    assert cli_main(["security", "init", "--out", str(tmp_path / "x"), "--plugin-path", "/p.so"]) == 2
    assert "--plugin-path: needs --dynamic" in capsys.readouterr().err
    assert cli_main(["security", "init", "--dynamic", "--out", str(tmp_path / "y"), "--plugin-path", "p.so"]) == 2
    assert "plugin path must be absolute" in capsys.readouterr().err


# -- the control protocol -----------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [b"", b"[]", b"{}", b'{"responses": 3}', b'{"responses": [1]}',
                                     b'{"responses": [{"error": "x"}]}', b"\xff"])
def test_malformed_answers_are_refused(payload: bytes) -> None:
    with pytest.raises(ControlError):
        parse_replies(payload)


@given(st.binary(max_size=200))
def test_any_answer_parses_or_is_refused(payload: bytes) -> None:
    with contextlib.suppress(ControlError):
        parse_replies(payload)


def test_answers_keep_error_data_and_correlation() -> None:
    replies = parse_replies(b'{"responses": [{"command": "addClientRole", "correlationData": "r:0"},'
                            b' {"command": "listRoles", "data": {"roles": ["x"]}, "correlationData": "r:1"},'
                            b' {"command": "removeClientRole", "error": "Role not found"}]}')
    assert [(r.command, r.ok, r.correlation) for r in replies] == [
        ("addClientRole", True, "r:0"), ("listRoles", True, "r:1"), ("removeClientRole", False, None)]
    assert replies[1].data == {"roles": ["x"]} and replies[2].error == "Role not found"


# -- what the placement wants -------------------------------------------------------------------------------
def spec(name: str) -> TenantSpec:
    return TenantSpec(name=name, model="vad", slo_ms=100)


def _row(name: str, state: str, device: str | None, moving_from: str | None = None) -> TenantRow:
    return TenantRow.of(spec=TenantSpec(name=name, model="vad", slo_ms=100), runtime="onnxruntime", size_bytes=1, device_id=device,
                     state=state, detail="", tried=(), moving_from=moving_from)


@pytest.mark.parametrize(
    ("row", "wanted"),
    [
        (_row("t", "deploying", "a"), {("a", "t")}),  # granted before the Deploy goes out
        (_row("t", "running", "a"), {("a", "t")}),
        (_row("t", "moving", "b", moving_from="a"), {("a", "t"), ("b", "t")}),  # make before break: both
        (_row("t", "removing", "a"), {("a", "t")}),  # until its Undeploy is acked
        (_row("t", "unplaced", None), set()),
        (_row("t", "pending", "a"), set()),
    ],
)
def test_wanted_grants_follow_the_tenant_states(row: TenantRow, wanted: set[Grant]) -> None:
    assert set(wanted_grants([row])) == wanted
    assert all(spec == row.spec for spec in wanted_grants([row]).values())


_STATES = ("deploying", "running", "moving", "removing", "unplaced", "pending")
_WRITE = st.tuples(st.sampled_from(("t1", "t2", "t3")), st.none() | st.tuples(
    st.sampled_from(_STATES), st.sampled_from(("a", "b", None)), st.sampled_from(("a", "c", None))))


@given(st.lists(_WRITE, max_size=30), st.integers(min_value=0, max_value=30))
def test_the_wanted_index_equals_wanted_grants_of_the_rows_written(writes: list[Any], rebuild_at: int) -> None:
    # each write is (tenant, None: deleted | (state, device, moving_from)); whatever the order, and with a
    # rebuild from every row at any point, the index holds exactly what wanted_grants says of the rows now
    rows: dict[str, TenantRow] = {}
    index = WantedIndex()
    for i, (name, row) in enumerate(writes):
        if i == rebuild_at:
            index.rebuild(rows.values())
        before = dict(index.wanted)
        if row is None:
            rows.pop(name, None)
            changed = index.update(name, None)
        else:
            rows[name] = _row(name, row[0], row[1], moving_from=row[2])
            changed = index.update(name, rows[name])
        assert index.wanted == wanted_grants(rows.values())
        assert changed == (index.wanted != before)  # the index says when what is wanted changed


def test_outstanding_undeploys_are_kept_not_wanted() -> None:
    def cmd(kind: str, device: str) -> CommandRow:
        return CommandRow(1, "c", device, "t", kind, b"", "sent", 1, 0.0, 0.0, "")

    assert kept_grants([cmd("undeploy", "a"), cmd("deploy", "b"), cmd("configure", "c")]) == {("a", "t")}


def test_the_security_table_names_the_grants() -> None:
    assert config_from_dict({}).grants == "none"
    assert config_from_dict({"security": {"grants": "mosquitto-dynsec"}}).grants == "mosquitto-dynsec"
    with pytest.raises(ConfigError, match=r"\[security\] grants must be one of none, mosquitto-dynsec"):
        config_from_dict({"security": {"grants": "emqx"}})
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict({"security": {"grant": "none"}})


# -- the outbox asks before each Deploy -----------------------------------------------------------------------
@dataclass
class ScriptedGrants:
    """The seam's contract played from a list of outcomes, recording every call."""

    outcomes: list[GrantOutcome]
    calls: list[Grant] = field(default_factory=list)
    active = True

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def allow(self, device: str, spec: TenantSpec) -> GrantOutcome:
        self.calls.append((device, spec.name))
        return self.outcomes.pop(0) if self.outcomes else Granted()

    def reconcile(self, wanted: Mapping[Grant, TenantSpec], keep: Set[Grant]) -> list[str]:
        return []


POLICY = CommandPolicy(ack_timeout_s=1.0, max_attempts=2, backoff_s=0.0, backoff_max_s=0.0)


def _outbox(tmp_path: Path, grants: Any) -> tuple[Outbox, list[tuple[str, bytes]]]:
    sent: list[tuple[str, bytes]] = []
    return Outbox(Store(tmp_path / "s.db"), Topics("ef"), POLICY, lambda t, p: sent.append((t, p)), grants), sent


def test_a_deploy_waits_while_its_grant_settles_without_spending_an_attempt(tmp_path: Path) -> None:
    grants = ScriptedGrants([Settling(0.05), Settling(0.05), Granted()])
    outbox, sent = _outbox(tmp_path, grants)
    cmd = outbox.deploy("d1", TenantSpec(name="t1", model="vad", slo_ms=100), now=100.0)
    outbox.undeploy("d2", "t9", now=100.0)  # no grant asked for an Undeploy
    assert outbox.run(100.0, {"d1", "d2"}) == []
    assert [t for t, _ in sent] == ["ef/v1/devices/d2/commands"] and grants.calls == [("d1", "t1")]
    assert outbox.next_due_at({"d1"}) == pytest.approx(100.05)  # 100 + the settling's 0.05 s
    outbox.run(100.01, {"d1"})  # held: not asked again before 100.05
    assert len(grants.calls) == 1
    outbox.run(100.05, {"d1"})  # still settling
    outbox.run(100.10, {"d1"})  # granted: sent, first attempt
    assert [t for t, _ in sent][1:] == ["ef/v1/devices/d1/commands"]
    assert outbox.store.command(cmd.command_id).attempts == 1  # type: ignore[union-attr]


def test_a_refused_grant_sends_nothing_and_fails_with_the_reason(tmp_path: Path) -> None:
    grants = ScriptedGrants([GrantRefused("no client d1"), GrantRefused("no client d1")])
    outbox, sent = _outbox(tmp_path, grants)
    cmd = outbox.deploy("d1", TenantSpec(name="t1", model="vad", slo_ms=100), now=0.0)
    assert outbox.run(0.0, {"d1"}) == [] and outbox.run(10.0, {"d1"}) == []
    exhausted = outbox.run(20.0, {"d1"})  # max_attempts = 2, both refused
    assert sent == [] and [e.command.command_id for e in exhausted] == [cmd.command_id]
    assert outbox.store.command(cmd.command_id).result == "not granted by the broker: no client d1"  # type: ignore[union-attr]


def test_null_grants_change_nothing(tmp_path: Path) -> None:
    outbox, sent = _outbox(tmp_path, NullGrants())
    outbox.deploy("d1", TenantSpec(name="t1", model="vad", slo_ms=100), now=0.0)
    outbox.run(0.0, {"d1"})
    assert len(sent) == 1 and NullGrants().reconcile({("d1", "t1"): spec("t1")}, set()) == []


# -- a real Mosquitto with the plugin ------------------------------------------------------------------------
@dataclass
class DynBroker:
    broker: PrivateBroker
    passwords: dict[str, str]
    topics: Topics

    def settings(self, username: str) -> MqttSettings:
        return MqttSettings(host="127.0.0.1", port=self.broker.port, username=username,
                            password=self.passwords[username])

    def spy(self, username: str) -> Spy:
        return Spy(self.broker.port, username, self.passwords[username])

    def grants(self) -> MosquittoGrants:
        g = MosquittoGrants(self.settings("coordinator"), self.topics.prefix, f"c-{uuid.uuid4().hex[:6]}")
        g.start()
        assert g.link.wait_connected(10)
        return g


@pytest.fixture()
def dyn(tmp_path: Path) -> Iterator[DynBroker]:
    prefix = "ds" + uuid.uuid4().hex[:6]
    plan = SecurityPlan(prefix=prefix, devices=("d1", "d2"), apps=(AppGrant("a1", ("t1",)), AppGrant("a2", ("t2",))))
    bundle = build_bundle(plan, BundleOptions((tmp_path / "sec").resolve(), dynamic=True))
    from edgefleet.security.bundle import write_bundle

    write_bundle(bundle, tmp_path / "sec")
    run_as = "user root\n" if os.geteuid() == 0 else ""
    with PrivateBroker(workdir=tmp_path / "broker", extra_config=run_as + bundle.file("mosquitto.conf").content.decode()) as broker:
        yield DynBroker(broker, dict(bundle.passwords), Topics(prefix))


def test_a_device_gets_a_tenant_only_while_granted(dyn: DynBroker) -> None:
    t = dyn.topics
    grants = dyn.grants()
    try:
        app = dyn.spy("a1")
        d1 = dyn.spy("d1")
        # before any grant: neither the shared form the agent uses nor the plain topic is allowed,
        # and a reply to a1 is refused
        assert d1.subscribe(t.infer_shared("t1")) == 135 and d1.subscribe(t.infer("t1")) == 135
        assert d1.publish(t.replies("a1"), b"forged") == 135
        assert app.publish(t.infer("t1"), b"before") in (0, 16)
        assert isinstance(grants.allow("d1", spec("t1")), Settling)  # the plugin disconnects d1 to apply it
        assert grants.held() == {("d1", "t1")}
        d1.close()
        d1 = dyn.spy("d1")  # what the agent does: reconnect and subscribe again
        assert d1.subscribe(t.infer_shared("t1")) == 1
        assert d1.subscribe(t.infer("t1")) == 135  # only the shared form
        assert app.publish(t.infer("t1"), b"granted") in (0, 16)
        d1.wait_for(b"granted")
        assert not d1.got(b"before")  # published before the grant, when no reader was allowed
        assert app.subscribe(t.replies("a1")) == 1
        assert d1.publish(t.replies("a1"), b"answer") == 0
        app.wait_for(b"answer")
        assert d1.publish(t.replies("a2"), b"forged") == 135  # a2 does not call t1
        d2 = dyn.spy("d2")
        assert d2.subscribe(t.infer_shared("t1")) == 135  # the other device still has nothing
        requests = grants.requests
        grants.allow("d1", spec("t1"))
        assert grants.requests == requests  # already held: the broker is not asked again
        assert grants.revoke("d1", "t1") is None
        assert grants.revoke("d1", "t1") is None  # idempotent
        d1.close()
        d1 = dyn.spy("d1")
        assert d1.subscribe(t.infer_shared("t1")) == 135 and d1.publish(t.replies("a1"), b"late") == 135
        for spy in (app, d1, d2):
            spy.close()
    finally:
        grants.stop()


def test_a_tenant_no_app_was_granted_gets_a_role_on_first_use(dyn: DynBroker) -> None:
    grants = dyn.grants()
    try:
        assert isinstance(grants.allow("d2", spec("fresh")), Settling)
        d2 = dyn.spy("d2")
        assert d2.subscribe(dyn.topics.infer_shared("fresh")) == 1
        assert d2.publish(dyn.topics.replies("a1"), b"x") == 135  # no app calls it: no reply topic
        d2.close()
        refused = grants.allow("nobody", spec("t1"))
        assert isinstance(refused, GrantRefused) and "no client in the dynamic security plugin" in refused.reason
    finally:
        grants.stop()


def test_a_stream_tenant_is_granted_its_sources_results_events_and_handover(dyn: DynBroker) -> None:
    t = dyn.topics
    stream = TenantSpec(name="cam", model="face-detect", slo_ms=200,
                        stream=StreamSpec(sources=["site/cam-1/frames", "site/cam-2/+"]))
    grants = dyn.grants()
    try:
        d1 = dyn.spy("d1")
        assert d1.subscribe("site/cam-1/frames") == 135 and d1.publish(t.results("cam"), b"r") == 135
        d1.close()
        assert isinstance(grants.allow("d1", stream), Settling)
        d1 = dyn.spy("d1")
        for filter_ in ("site/cam-1/frames", "site/cam-2/+", t.handover("cam")):
            assert d1.subscribe(filter_) == 1, filter_
        assert d1.subscribe("site/#") == 135  # the sources as written, nothing wider
        for topic in (t.results("cam"), t.events("cam"), t.handover("cam")):
            assert d1.publish(topic, b"x") in (0, 16), topic
        assert d1.publish(t.infer("cam"), b"x") == 135
        d2 = dyn.spy("d2")
        assert d2.subscribe("site/cam-1/frames") == 135  # the other device: nothing
        for spy_ in (d1, d2):
            spy_.close()
    finally:
        grants.stop()


def test_a_role_made_for_an_app_gets_what_a_stream_tenant_needs_added(dyn: DynBroker) -> None:
    """``security init`` made t1's role for a request tenant; deployed as a stream tenant, its role is
    given the stream's topics as well."""
    grants = dyn.grants()
    try:
        stream = TenantSpec(name="t1", model="face-detect", slo_ms=200, stream=StreamSpec(sources=["s/1"]))
        assert isinstance(grants.allow("d1", stream), Settling)
        d1 = dyn.spy("d1")
        assert d1.subscribe("s/1") == 1 and d1.subscribe(dyn.topics.infer_shared("t1")) == 1
        d1.close()
    finally:
        grants.stop()


def test_a_new_coordinator_reads_the_brokers_grants_and_reconciles_them(dyn: DynBroker) -> None:
    first = dyn.grants()
    first.allow("d1", spec("t1"))
    first.allow("d2", spec("t2"))
    first.stop()  # a restart: the next one knows nothing but what the broker holds
    second = dyn.grants()
    try:
        assert second.held() == {("d1", "t1"), ("d2", "t2")}
        # placement now: t1 on d2, t2 gone except that d2's Undeploy of t2 is not acked yet
        assert second.reconcile({("d2", "t1"): spec("t1")}, keep={("d2", "t2")}) == []
        assert second.held() == {("d2", "t1"), ("d2", "t2")}
        assert second.reconcile({("d2", "t1"): spec("t1")}, keep=set()) == []
        third = dyn.grants()
        assert third.held() == {("d2", "t1")}  # the broker itself, not a mirror
        third.stop()
        problems = second.reconcile({("ghost", "t1"): spec("t1")}, set())
        assert len(problems) == 1 and "ghost has no client" in problems[0]
    finally:
        second.stop()

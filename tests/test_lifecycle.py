"""The tenant lifecycle's table: every state against every acknowledged command, from the tenant's own
device and from another, ok and failed. Pure: rows in, a step out."""

from __future__ import annotations

import itertools

import pytest

from coordinator.lifecycle import Acked, Cancel, Lost, SendUndeploy, UndeployAsked, transition
from coordinator.store import TenantRow, TenantState
from edgefleet.wire import TenantSpec

SPEC = TenantSpec(name="t", model="ocr-rec", slo_ms=50.0)
WIDER = TenantSpec(name="t", model="ocr-rec", slo_ms=50.0, max_batch=16)
S = TenantState


def row(state: TenantState) -> TenantRow:
    moving_from = "src" if state == S.MOVING else None
    return TenantRow(spec=SPEC, runtime="onnxruntime", size_bytes=10, device_id="dev", state=state,
                     detail="placed", tried=("dev",), moving_from=moving_from)


def ack(kind: str, ok: bool, device: str) -> Acked:
    if kind == "configure":
        return Acked(kind, device, ok, message="m", code="" if ok else "bad", result="applied" if ok else "failed",
                     spec=WIDER if ok else None, size_bytes=20 if ok else None)
    return Acked(kind, device, ok, message="m", code="" if ok else "load_failed",
                 result="applied" if ok else "failed")


# (state, command, ok) from the tenant's own device -> (state after or "gone" or "same", undeploys sent,
# call settled, deploy failure passed on). Anything not listed: nothing changes.
TABLE: dict[tuple[TenantState, str, bool], tuple[str, tuple[str, ...], str | None, bool]] = {
    (S.DEPLOYING, "deploy", True): ("running", (), "deploy", False),
    (S.MOVING, "deploy", True): ("running", ("src",), "migrate", False),  # break after make
    (S.RUNNING, "configure", True): ("same-state", (), None, False),  # takes the spec, stays running
    (S.RUNNING, "configure", False): ("same-state", (), None, False),  # only the detail says it was refused
    (S.REMOVING, "undeploy", True): ("gone", (), "undeploy", False),
    (S.REMOVING, "undeploy", False): ("gone", (), "undeploy", False),  # the device does not serve it either way
}
# a failed Deploy is passed on whatever the state: where to go next is a placement decision
for state in S:
    TABLE.setdefault((state, "deploy", False), ("same", (), None, True))

CASES = list(itertools.product(S, ("deploy", "configure", "undeploy"), (True, False), ("dev", "other")))


@pytest.mark.parametrize(("state", "kind", "ok", "device"), CASES)
def test_every_state_against_every_ack(state: TenantState, kind: str, ok: bool, device: str) -> None:
    before = row(state)
    step = transition(before, ack(kind, ok, device))
    if device == "other":  # an answer from a device the tenant is not on changes nothing, sends nothing
        expected = ("same", (), None, kind == "deploy" and not ok)
    else:
        expected = TABLE.get((state, kind, ok), ("same", (), None, False))
    after, undeploys, settled, failure = expected
    assert tuple(c.device_id for c in step.commands if isinstance(c, SendUndeploy)) == undeploys
    assert tuple(s.kind for s in step.replies) == ((settled,) if settled else ())
    assert (step.failed_deploy is not None) == failure
    if after == "gone":
        assert step.row is None
    elif after == "same":
        assert step.row is before
    elif after == "same-state":
        assert step.row is not None and step.row.state == state and step.row.device_id == "dev"
    else:
        assert step.row is not None and step.row.state == TenantState(after) and step.row.device_id == "dev"


def test_a_move_lands_on_the_new_device_and_forgets_the_source() -> None:
    step = transition(row(S.MOVING), ack("deploy", True, "dev"))
    assert step.row is not None and (step.row.moving_from, step.row.detail) == (None, "moved from src")
    [settle] = step.replies
    assert settle.reply.ok and settle.reply.message == "t moved from src to dev"


def test_a_configure_takes_its_spec_and_charge_and_keeps_what_was_asked() -> None:
    step = transition(row(S.RUNNING), ack("configure", True, "dev"))
    assert step.row is not None
    assert (step.row.spec, step.row.size_bytes, step.row.requested, step.row.asked) == (WIDER, 20, SPEC, SPEC)
    refused = transition(row(S.RUNNING), ack("configure", False, "dev"))
    assert refused.row is not None and refused.row.spec == SPEC and refused.row.detail == "reconfiguration refused: bad: m"


def test_a_deploy_failure_reason_names_the_code_or_else_the_result() -> None:
    coded = transition(row(S.DEPLOYING), Acked("deploy", "dev", False, message="no memory", code="load_failed",
                                               result="failed"))
    bare = transition(row(S.DEPLOYING), Acked("deploy", "dev", False, message="busy", result="rejected"))
    assert (coded.failed_deploy, bare.failed_deploy) == ("load_failed: no memory", "rejected: busy")


def test_an_undeploy_answer_settles_the_call_with_the_devices_words() -> None:
    failed = transition(row(S.REMOVING), Acked("undeploy", "dev", False, message="", code=""))
    [settle] = failed.replies
    assert (settle.reply.ok, settle.reply.code, settle.reply.message) == (False, "undeploy_failed", "t removed")


# a device going offline, per state of a tenant on it (and, for a move, whether its source is online):
# (row after: "gone" | "same" | a state on a device, Undeploys sent, call settled, another device needed)
LOST: dict[tuple[TenantState, bool], tuple[str, tuple[str, ...], str | None, bool]] = {
    (S.REMOVING, True): ("gone", (), "undeploy", False),  # nothing left to undeploy there
    (S.REMOVING, False): ("gone", (), "undeploy", False),
    (S.MOVING, True): ("running@src", ("dev",), "migrate", False),  # back to the source, the target released
    (S.MOVING, False): ("moving@dev", ("dev",), "migrate", True),  # the source is gone too: another device
}


@pytest.mark.parametrize(("state", "source_online"), list(itertools.product(S, (True, False))))
def test_every_state_when_its_device_goes_offline(state: TenantState, source_online: bool) -> None:
    before = row(state)
    step = transition(before, Lost("dev", "connection lost", source_online))
    after, undeploys, settled, relocate = LOST.get((state, source_online), ("same", (), None, True))
    assert tuple(c.device_id for c in step.commands if isinstance(c, SendUndeploy)) == undeploys
    assert tuple(c.device_id for c in step.commands if isinstance(c, Cancel) and c.kind == "deploy") == undeploys
    assert tuple(s.kind for s in step.replies) == ((settled,) if settled else ())
    assert (step.relocate is not None) == relocate
    if after == "gone":
        assert step.row is None
    elif after == "same":
        assert step.row is before and step.relocate == "dev offline (connection lost)"
    else:
        want_state, want_device = after.split("@")
        assert step.row is not None and (step.row.state, step.row.device_id) == (TenantState(want_state), want_device)
        assert step.row.moving_from is None
    # another device's loss changes nothing
    assert transition(before, Lost("other", "x", source_online)).row is before


def test_a_move_abandoned_says_where_the_tenant_stays() -> None:
    step = transition(row(S.MOVING), Lost("dev", "shut down", source_online=True))
    [settle] = step.replies
    assert (settle.reply.ok, settle.reply.code, settle.reply.device_id) == (False, "move_failed", "src")
    assert settle.reply.message == "t stays on src: dev went offline (shut down)"
    assert step.row is not None and step.row.detail == "move to dev failed: dev went offline (shut down)"


# an operator's undeploy, per state, with the tenant's device online or not (a placed tenant is on "dev";
# an unplaced one has no device): (row after, Undeploys sent, calls settled, answered now)
def _undeploy_expected(state: TenantState, online: bool) -> tuple[str, tuple[str, ...], tuple[str, ...], bool]:
    if state == S.REMOVING:
        return "same", (), (), False  # already on its way out
    placed = state != S.UNPLACED
    undeploys = (("src",) if state == S.MOVING else ()) + (("dev",) if placed else ())
    settled = (() if state == S.RUNNING else ("deploy",)) + (("migrate",) if state == S.MOVING else ())
    if not placed or not online:
        return "gone", undeploys, settled, True
    return "removing", undeploys, settled, False


@pytest.mark.parametrize(("state", "online"), list(itertools.product(S, (True, False))))
def test_every_state_when_the_operator_undeploys_it(state: TenantState, online: bool) -> None:
    before = row(state) if state != S.UNPLACED else TenantRow(
        spec=SPEC, runtime="onnxruntime", size_bytes=10, device_id=None, state=state, detail="no fit", tried=())
    step = transition(before, UndeployAsked(device_online=online))
    after, undeploys, settled, answered = _undeploy_expected(state, online)
    assert tuple(c.device_id for c in step.commands if isinstance(c, SendUndeploy)) == undeploys
    assert tuple(s.kind for s in step.replies) == settled
    assert (step.answer is not None) == answered and (step.answer is None or step.answer.ok)
    if after == "same":
        assert step.row is before and step.commands == ()
    elif after == "gone":
        assert step.row is None
    else:
        assert step.row is not None and step.row.state == S.REMOVING and step.row.detail == ""
    if after != "same":  # the tenant's other commands are cancelled wherever they were going
        assert {(c.kind, c.device_id) for c in step.commands if isinstance(c, Cancel)} == {("deploy", None),
                                                                                          ("configure", None)}

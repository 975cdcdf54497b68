"""The tenant lifecycle's table: every state (and no row at all) against every event — acknowledged
commands from the tenant's own device and from another, ok and failed, device losses, the operator's
calls, the decisions after a failure or a loss, the rebalancer's moves and reconfigurations, capacity
appearing, a device listing what it hosts — and a Hypothesis property over any sequence of events.
Pure: rows in, a step out."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.coordinator.lifecycle import (
    Acked,
    Cancel,
    ConfigureAsked,
    DeployAsked,
    DeployFailed,
    Event,
    Exhausted,
    Listed,
    Lost,
    MigrateAsked,
    PlaceUnplaced,
    Relocate,
    SendConfigure,
    SendDeploy,
    SendUndeploy,
    Step,
    UndeployAsked,
    deploy_needs_placement,
    move_needs_placement,
    retry_exclude,
    transition,
)
from edgefleet.coordinator.placement import NoFit, Placed
from edgefleet.coordinator.store import TenantRow, TenantState
from edgefleet.wire import TenantSpec

SPEC = TenantSpec(name="t", model="ocr-rec", slo_ms=50.0)
WIDER = TenantSpec(name="t", model="ocr-rec", slo_ms=50.0, max_batch=16)
S = TenantState


def row(state: TenantState) -> TenantRow:
    moving_from = "src" if state == S.MOVING else None
    return TenantRow.of(spec=SPEC, runtime="onnxruntime", size_bytes=10, device_id="dev", state=state,
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
    # the Deploys and Configures still out to the lost device are cancelled (a move's twice: as the
    # device's, and as the move's target)
    cancelled = {c.device_id for c in step.commands if isinstance(c, Cancel) and c.kind == "deploy"}
    assert cancelled == (set() if state == S.REMOVING else {"dev"})
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
    before = row(state) if state != S.UNPLACED else TenantRow.of(
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


# -- every other event, against every state and against no row ------------------------------------------
ABSENT = "absent"  # no row: the tenant does not exist
D2 = Placed("d2", 1.0, "fits on d2")
NOFIT = NoFit("d2: needs 10 B, 0 B free")


def before_row(state: TenantState | str) -> TenantRow | None:
    if state == ABSENT:
        return None
    if state == S.UNPLACED:
        return TenantRow.of(spec=SPEC, runtime="onnxruntime", size_bytes=10, device_id=None, state=S.UNPLACED,
                         detail="no fit", tried=())
    assert isinstance(state, TenantState)
    return row(state)


def summary(before: TenantRow | None, step: Step) -> tuple[str, tuple[str, ...], tuple[str, ...], str | None]:
    """(row after: "same" | "none" | "gone" | "state@device", commands sent as "kind@device", calls settled,
    the answer now: None, "ok" or its code)."""
    if step.row is None:
        after = "none" if before is None else "gone"
    elif step.row is before:
        after = "same"
    else:
        after = f"{step.row.state}@{step.row.device_id}"
    kinds = {SendDeploy: "deploy", SendConfigure: "configure", SendUndeploy: "undeploy"}
    sent = tuple(f"{kinds[type(c)]}@{c.device_id}" for c in step.commands if not isinstance(c, Cancel))
    answer = None if step.answer is None else (step.answer.code or "ok")
    return after, sent, tuple(s.kind for s in step.replies), answer


EVENTS: dict[str, Event] = {
    "deploy placed": DeployAsked(SPEC, None, D2, "onnxruntime", 10),
    "deploy no fit": DeployAsked(SPEC, None, NOFIT, "onnxruntime", 10),
    "deploy other spec": DeployAsked(WIDER, None, D2, "onnxruntime", 20),
    "retry placed": DeployFailed("dev", "load_failed: oom", source_online=True, decision=D2),
    "retry no fit": DeployFailed("dev", "load_failed: oom", source_online=False, decision=NOFIT),
    "migrate placed": MigrateAsked("t", None, D2),
    "migrate no fit": MigrateAsked("t", None, NOFIT),
    "migrate here": MigrateAsked("t", "dev", None),
    "configure": ConfigureAsked(WIDER, "batching pays"),
    "configure busy": ConfigureAsked(WIDER, "batching pays", busy=True),
    "relocate placed": Relocate("dev offline (x)", D2),
    "relocate no fit": Relocate("dev offline (x)", NOFIT),
    "place placed": PlaceUnplaced(D2),
    "place no fit": PlaceUnplaced(NOFIT),
    "listed hosts": Listed("dev", hosts=True),
    "listed lost it": Listed("dev", hosts=False),
    "listed deploy out": Listed("dev", hosts=False, deploying=True),
    "exhausted undeploy": Exhausted("undeploy", "dev", "no ack after 3 attempts"),
    "exhausted configure": Exhausted("configure", "dev", "no ack after 3 attempts"),
}
PLACED_STATES = (S.PENDING, S.DEPLOYING, S.RUNNING, S.MOVING)  # on a device, not on their way out
ON_ITS_WAY = (S.PENDING, S.DEPLOYING, S.MOVING)  # a deploy of the same spec waits for their Ack

Expected = tuple[str, tuple[str, ...], tuple[str, ...], str | None]
SAME: Expected = ("same", (), (), None)
NONE: Expected = ("none", (), (), None)
NEW: dict[tuple[str, TenantState | str], Expected] = {
    # a deploy: a new tenant, or an unplaced one of the same spec, goes where the decision says
    ("deploy placed", ABSENT): ("deploying@d2", ("deploy@d2",), (), None),
    ("deploy placed", S.UNPLACED): ("deploying@d2", ("deploy@d2",), (), None),
    ("deploy no fit", ABSENT): ("none", (), (), "no_fit"),
    ("deploy no fit", S.UNPLACED): ("same", (), (), "no_fit"),  # stays unplaced, the caller told why
    ("deploy placed", S.RUNNING): ("same", (), (), "ok"),  # idempotent: "already runs on dev"
    ("deploy no fit", S.RUNNING): ("same", (), (), "ok"),
    ("deploy placed", S.REMOVING): ("same", (), (), "conflict"),  # being removed
    ("deploy no fit", S.REMOVING): ("same", (), (), "conflict"),
    # ... a different spec is a conflict for any existing tenant, a fresh deploy for none
    ("deploy other spec", ABSENT): ("deploying@d2", ("deploy@d2",), (), None),
    **{("deploy other spec", s): ("same", (), (), "conflict") for s in S},
    # the decision after a failed Deploy to dev: a deploying tenant (tried: dev, 1 < 2 devices) goes to
    # d2; a moving one goes back to its source src (online) and dev unloads it; with no device left, unplaced
    ("retry placed", S.DEPLOYING): ("deploying@d2", ("deploy@d2",), (), None),
    ("retry placed", S.MOVING): ("running@src", ("undeploy@dev",), ("migrate",), None),
    ("retry no fit", S.DEPLOYING): ("unplaced@None", (), ("deploy",), None),
    ("retry no fit", S.MOVING): ("moving@dev", ("undeploy@dev",), ("migrate",), None),  # src offline: relocate
    # a move: only a running tenant moves; make before break: a Deploy to d2, src keeps serving
    ("migrate placed", S.RUNNING): ("moving@d2", ("deploy@d2",), (), None),
    ("migrate no fit", S.RUNNING): ("same", (), (), "no_fit"),
    ("migrate here", S.RUNNING): ("same", (), (), "ok"),  # already runs on dev
    **{(e, s): ("same", (), (), "conflict") for e in ("migrate placed", "migrate no fit", "migrate here")
       for s in S if s != S.RUNNING},
    **{(e, ABSENT): ("none", (), (), "unknown_tenant") for e in ("migrate placed", "migrate no fit", "migrate here",
                                                                "configure", "configure busy")},
    # a reconfiguration: a running tenant gets a Configure (its row only notes it: the Ack changes the spec)
    ("configure", S.RUNNING): ("running@dev", ("configure@dev",), (), None),
    ("configure busy", S.RUNNING): ("same", (), (), "conflict"),  # a command in flight
    **{(e, s): ("same", (), (), "conflict") for e in ("configure", "configure busy") for s in S if s != S.RUNNING},
    # re-placement after a loss: a placed tenant goes where the decision says, or waits unplaced (no call
    # is settled: nobody asked); a removing or unplaced one stays; a move in progress settles itself
    **{("relocate placed", s): ("deploying@d2", ("deploy@d2",), (), None) for s in PLACED_STATES if s != S.MOVING},
    **{("relocate no fit", s): ("unplaced@None", (), (), None) for s in PLACED_STATES if s != S.MOVING},
    # capacity appeared: only an unplaced tenant is placed
    ("place placed", S.UNPLACED): ("deploying@d2", ("deploy@d2",), (), None),
    # dev listed what it hosts: a tenant on its way there that it hosts is running (a move has landed:
    # src unloads it); one it lost is deployed again (a move stays a move); a removing one it no longer
    # hosts is gone; with a Deploy out, its Ack settles the rest
    ("listed hosts", S.PENDING): ("running@dev", (), (), None),
    ("listed hosts", S.DEPLOYING): ("running@dev", (), (), None),
    ("listed hosts", S.MOVING): ("running@dev", ("undeploy@src",), ("migrate",), None),
    ("listed lost it", S.PENDING): ("deploying@dev", ("deploy@dev",), (), None),
    ("listed lost it", S.DEPLOYING): ("deploying@dev", ("deploy@dev",), (), None),
    ("listed lost it", S.RUNNING): ("deploying@dev", ("deploy@dev",), (), None),
    ("listed lost it", S.MOVING): ("moving@dev", ("deploy@dev",), (), None),
    ("listed lost it", S.REMOVING): ("gone", (), ("undeploy",), None),
    ("listed deploy out", S.REMOVING): ("gone", (), ("undeploy",), None),
    # an Undeploy never answered: the removing tenant leaves the plan, the call answered as failed
    ("exhausted undeploy", S.REMOVING): ("gone", (), ("undeploy",), None),
}


@pytest.mark.parametrize(("name", "state"), list(itertools.product(EVENTS, (*S, ABSENT))))
def test_every_state_against_every_other_event(name: str, state: TenantState | str) -> None:
    before = before_row(state)
    default = NONE if state == ABSENT else SAME
    assert summary(before, transition(before, EVENTS[name])) == NEW.get((name, state), default)


@pytest.mark.parametrize("state", [*S, ABSENT])
def test_an_exhausted_deploy_asks_for_the_decision_after_a_failure(state: TenantState | str) -> None:
    before = before_row(state)
    step = transition(before, Exhausted("deploy", "dev", "no ack after 3 attempts"))
    assert step.row is before
    assert step.failed_deploy == ("no ack after 3 attempts" if before is not None else None)


def test_a_retry_is_due_once_per_round_and_never_for_a_pinned_tenant() -> None:
    first = row(S.DEPLOYING)  # tried dev: one more device
    assert retry_exclude(first, "dev") == ("dev",) and retry_exclude(first, "other") is None
    second = first.with_status(tried=("d0", "dev"))  # 2 devices tried = MAX_DEVICES_PER_ROUND
    assert retry_exclude(second, "dev") is None
    step = transition(second, DeployFailed("dev", "oom", decision=D2))
    assert summary(second, step) == ("unplaced@None", (), ("deploy",), None)
    assert step.row is not None and step.row.detail == "dev: oom"
    assert retry_exclude(replace(first, pinned="dev"), "dev") is None
    assert retry_exclude(row(S.MOVING), "dev") is None  # a move goes back, it is not retried
    retried = transition(first, DeployFailed("dev", "oom", decision=D2))
    assert retried.row is not None and (retried.row.tried, retried.row.detail) == (("dev", "d2"), "retrying after dev: oom")


def test_which_calls_need_a_placement_decision() -> None:
    # deciding declares the tenant's demand to the performance model: only when the call gets that far
    assert deploy_needs_placement(None, SPEC) and deploy_needs_placement(before_row(S.UNPLACED), SPEC)
    assert not any(deploy_needs_placement(row(s), SPEC) for s in S if s != S.UNPLACED)
    assert not deploy_needs_placement(before_row(S.UNPLACED), WIDER)  # a conflict first
    assert move_needs_placement(row(S.RUNNING), None) and move_needs_placement(row(S.RUNNING), "d2")
    assert not move_needs_placement(row(S.RUNNING), "dev") and not move_needs_placement(None, "d2")
    assert not move_needs_placement(replace(row(S.RUNNING), pinned="dev"), "d2")


def test_a_pinned_tenant_that_lost_its_device_waits_for_it() -> None:
    pinned = replace(row(S.RUNNING), pinned="dev")
    step = transition(pinned, Relocate("dev offline (x)", None))
    assert summary(pinned, step) == ("unplaced@None", (), (), None)
    assert step.row is not None and step.row.detail == "dev offline (x); pinned to dev, waiting for it"


def test_a_configure_asked_keeps_the_spec_until_the_ack() -> None:
    step = transition(row(S.RUNNING), ConfigureAsked(WIDER, "batching pays"))
    assert step.row is not None and (step.row.spec, step.row.detail) == (SPEC, "reconfiguring: batching pays")
    assert step.commands == (SendConfigure("dev", WIDER),)


# -- the property: any sequence of events keeps the lifecycle's invariants ---------------------------
DEVICES = ("a", "b", "c")
decisions = st.one_of(st.builds(lambda d: Placed(d, 1.0, f"fits on {d}"), st.sampled_from(DEVICES)),
                      st.just(NoFit("nothing fits")))
devices = st.sampled_from(DEVICES)
specs = st.sampled_from((SPEC, WIDER))
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(DeployAsked, specs, st.one_of(st.none(), devices), st.one_of(st.none(), decisions),
              st.just("onnxruntime"), st.integers(1, 100)),
    st.builds(Acked, st.sampled_from(("deploy", "configure", "undeploy")), devices, st.booleans(),
              spec=st.one_of(st.none(), specs), size_bytes=st.one_of(st.none(), st.integers(1, 100))),
    st.builds(Exhausted, st.sampled_from(("deploy", "configure", "undeploy")), devices, st.just("no ack")),
    st.builds(DeployFailed, devices, st.just("oom"), st.booleans(), st.one_of(st.none(), decisions)),
    st.builds(MigrateAsked, st.just("t"), st.one_of(st.none(), devices), st.one_of(st.none(), decisions)),
    st.builds(ConfigureAsked, specs, st.just("why"), st.booleans()),
    st.builds(Lost, devices, st.just("x"), st.booleans()),
    st.builds(Relocate, st.just("lost"), st.one_of(st.none(), decisions)),
    st.builds(PlaceUnplaced, decisions),
    st.builds(Listed, devices, st.booleans(), st.booleans()),
    st.builds(UndeployAsked, st.booleans(), st.just("t")),
)


def check_invariants(before: TenantRow | None, step: Step) -> None:
    after = step.row
    if after is not None:
        # charged to at most two devices, and to two only while moving (the target and the source)
        charged = {d for d in (after.device_id, after.moving_from) if d is not None}
        assert len(charged) <= 2 and (len(charged) < 2 or after.state == S.MOVING)
        assert after.moving_from is None or after.state == S.MOVING
        # a tenant holds a device exactly when it is not unplaced
        assert (after.device_id is None) == (after.state == S.UNPLACED)
    if before is not None and before.state == S.REMOVING:
        # a removing tenant never gains a device: it stays where it is being removed from, or goes
        assert after is None or (after.state, after.device_id) == (S.REMOVING, before.device_id)
    for c in step.commands:
        if isinstance(c, SendDeploy):  # every Deploy sent names the row's device, with its spec
            assert after is not None and (c.device_id, c.spec) == (after.device_id, after.spec)
        if isinstance(c, SendConfigure):  # a Configure goes to where the tenant runs
            assert after is not None and after.state == S.RUNNING and c.device_id == after.device_id
    assert step.failed_deploy is None or step.relocate is None


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=30))
def test_any_sequence_of_events_keeps_the_invariants(sequence: list[Event]) -> None:
    current: TenantRow | None = None
    for event in sequence:
        step = transition(current, event)
        check_invariants(current, step)
        current = step.row

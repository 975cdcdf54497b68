"""Pure tests of adaptive batch-size choice, the baseline policies (Triton-style dynamic and preferred
sizes, Clipper-style AIMD), the service-time model and tensor layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent import batch_axes
from edgefleet.agent.batching import BatchPolicy, ServiceModel, aimd_next, choose_batch, preferred_count
from edgefleet.runtime import TensorSpec


def _model(points: dict[int, float]) -> ServiceModel:
    m = ServiceModel()
    for b, t in points.items():
        m.observe(b, t)
    return m


@pytest.mark.parametrize(
    ("points", "deadlines", "expected"),
    [
        # t(1)=10 ms, t(4)=16 ms; U(1)=100/s, U(4)=250/s; 16 ms <= 20 ms -> all four
        ({1: 0.010, 4: 0.016}, [0.020] * 4, 4),
        # same model, deadlines 12 ms: on the fitted line (a=8 ms, c=2 ms) t(2) = 12 ms, both on time:
        # U(2) = 2/0.012 = 167/s > U(1) = 100/s; t(3) = 14 ms: nobody on time, U(3) = 0
        ({1: 0.010, 4: 0.016}, [0.012] * 4, 2),
        # batching does not pay: t(2)=22 ms > 2*t(1): U(1)=100/s > U(2)=91/s -> one at a time
        ({1: 0.010, 2: 0.022}, [1.0] * 4, 1),
        # nothing measured yet: explore the largest batch the queue offers
        ({}, [1.0] * 3, 3),
    ],
)
def test_choose_batch_table(points: dict[int, float], deadlines: list[float], expected: int) -> None:
    n = choose_batch(
        now=0.0, deadlines=deadlines, rows=[1] * len(deadlines), max_rows=8, model=_model(points)
    )
    assert n == expected


def test_unexplored_sizes_are_guessed_optimistically_then_measured() -> None:
    m = _model({1: 0.010})
    # one extra row guessed at half the per-row cost: t(2) = 10 + 5 = 15 ms
    assert m.estimate(2) == pytest.approx(0.015)
    m.observe(2, 0.030)
    # now measured; t(3) from the line through (1, 10) and (2, 30): 10 + 20*2 = 50 ms
    assert m.estimate(3) == pytest.approx(0.050)
    assert choose_batch(now=0.0, deadlines=[1.0] * 3, rows=[1] * 3, max_rows=8, model=m) == 1


def test_max_rows_caps_the_batch() -> None:
    # each request carries 3 rows; max 8 rows -> at most 2 requests (6 rows)
    n = choose_batch(now=0.0, deadlines=[1.0] * 5, rows=[3] * 5, max_rows=8, model=_model({1: 0.01, 8: 0.02}))
    assert n == 2


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.integers(1, 16), st.floats(1e-4, 0.1), max_size=5),
    st.lists(st.floats(0.0, 0.2), min_size=1, max_size=20),
    st.integers(1, 16),
)
def test_chosen_batch_is_never_worse_than_running_the_head_alone(
    points: dict[int, float], deadlines: list[float], max_rows: int
) -> None:
    m = _model(points)
    n = choose_batch(now=0.0, deadlines=deadlines, rows=[1] * len(deadlines), max_rows=max_rows, model=m)
    assert 1 <= n <= max(1, min(len(deadlines), max_rows))
    if n > 1:
        t, t1 = m.estimate(n), m.estimate(1)
        on_time = sum(1 for d in deadlines[:n] if t <= d)
        assert on_time > 0
        if t > 0 and t1 > 0:  # on-time requests per second at least those of the head alone
            assert on_time / t >= (1 if t1 <= deadlines[0] else 0) / t1


def test_layout_vad_like_state_batches_on_axis_1_and_shares_scalars() -> None:
    specs = [
        TensorSpec("input", "float32", (None, None)),
        TensorSpec("state", "float32", (2, None, 128)),
        TensorSpec("sr", "int64", ()),
    ]
    axes = batch_axes.input_axes(specs)
    assert axes == {"input": 0, "state": 1, "sr": None}
    a = {
        "input": np.zeros((1, 512), np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000),
    }
    b = {
        "input": np.ones((1, 512), np.float32),
        "state": np.ones((2, 1, 128), np.float32),
        "sr": np.array(16000),
    }
    c = dict(b, sr=np.array(8000))
    ra, ka = batch_axes.request_layout(axes, a)
    rb, kb = batch_axes.request_layout(axes, b)
    _, kc = batch_axes.request_layout(axes, c)
    assert ra == rb == 1 and ka == kb and ka != kc  # a different sample rate cannot share a batch
    stacked = batch_axes.stack(axes, [a, b])
    assert stacked["input"].shape == (2, 512) and stacked["state"].shape == (2, 2, 128)
    parts = batch_axes.split(
        {"state": stacked["state"], "out": stacked["input"][:, :1]}, {"state": 1, "out": 0}, [1, 1]
    )
    np.testing.assert_array_equal(parts[1]["state"], b["state"])


def test_learn_output_axes_refuses_models_whose_outputs_do_not_split() -> None:
    axes = {"x": 0}
    one = {"x": np.ones((1, 3), np.float32)}
    assert batch_axes.learn_output_axes(lambda f: {"y": f["x"] * 2}, axes, one) == {"y": 0}
    assert batch_axes.learn_output_axes(lambda f: {"y": f["x"].sum(keepdims=True)}, axes, one) is None


@pytest.mark.parametrize(
    ("cap", "missed", "max_batch", "expected"),
    [
        (4, False, 32, 5),  # additive increase: 4 + 1
        (32, False, 32, 32),  # capped at the max batch
        (10, True, 32, 9),  # multiplicative decrease: floor(10 * 0.9) = 9
        (5, True, 32, 4),  # floor(5 * 0.9) = floor(4.5) = 4
        (1, True, 32, 1),  # never below 1: floor(0.9) = 0 -> 1
        (40, False, 32, 32),  # a cap above a lowered max batch comes down to it
    ],
)
def test_aimd_next(cap: int, missed: bool, max_batch: int, expected: int) -> None:
    assert aimd_next(cap, missed=missed, max_batch=max_batch) == expected


@pytest.mark.parametrize(
    ("queued", "preferred", "expected"),
    [
        (9, (4, 8), 8),  # the largest preferred size that 9 fill
        (5, (4, 8), 4),
        (8, (4, 8), 8),
        (3, (4, 8), 3),  # none fits: everything there
        (1, (4, 8), 1),
    ],
)
def test_preferred_count(queued: int, preferred: tuple[int, ...], expected: int) -> None:
    assert preferred_count(queued, preferred) == expected


@pytest.mark.parametrize(
    ("text", "policy", "name"),
    [
        ("dynamic:8:2", BatchPolicy("delay", 8, 0.002), "dynamic:8:2"),  # max batch 8, 2 ms queue delay
        ("dynamic:1:0", BatchPolicy("delay", 1, 0.0), "dynamic:1:0"),
        ("delay:5", BatchPolicy("delay", 0, 0.005), "delay:5"),  # max batch = the tenant's
        ("preferred:8,4:1", BatchPolicy("preferred", 0, 0.001, (4, 8)), "preferred:4,8:1"),  # sorted
        ("aimd", BatchPolicy("aimd"), "aimd"),
        ("fixed:4", BatchPolicy("fixed", 4, 0.010), "fixed:4"),
        ("adaptive", BatchPolicy(), "adaptive"),
    ],
)
def test_policy_parse_and_name(text: str, policy: BatchPolicy, name: str) -> None:
    assert BatchPolicy.parse(text) == policy
    assert policy.name == name and BatchPolicy.parse(name) == policy


@pytest.mark.parametrize(
    "text", ["dynamic:0:1", "dynamic:8", "dynamic:8:-1", "preferred::1", "preferred:0,4:1", "preferred:4",
             "aimd:3", "dynamic:x:1"],
)
def test_bad_policies_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="batch policy must be"):
        BatchPolicy.parse(text)


@pytest.mark.parametrize(
    ("text", "queued", "head_age_s", "hold_s", "count"),
    [
        # max batch 8, delay 2 ms: 3 queued, head 0.5 ms old -> wait 1.5 ms more; then run the 3
        ("dynamic:8:2", 3, 0.0005, 0.0015, 3),
        ("dynamic:8:2", 10, 0.0, 0.0, 8),  # a full batch runs at once, capped at 8
        ("dynamic:4:0", 10, 0.0, 0.0, 4),  # no delay: whatever is queued, up to 4
        ("preferred:4,8:1", 5, 0.0, 0.001, 4),  # waits for 8; once run, the largest preferred size 5 fill
        ("preferred:4,8:1", 9, 0.0, 0.0, 8),
        ("aimd", 10, 0.0, 0.0, 1),  # AIMD starts at a cap of 1 and never waits
    ],
)
def test_baseline_hold_and_count(text: str, queued: int, head_age_s: float, hold_s: float, count: int) -> None:
    p = BatchPolicy.parse(text)
    assert p.hold(queued=queued, head_age_s=head_age_s, max_batch=32) == pytest.approx(hold_s)
    n = p.count(now=0.0, candidates_deadlines=[1.0] * queued, rows=[1] * queued, max_rows=32,
                model=ServiceModel(), tenant="t")
    assert n == count


def test_aimd_cap_follows_the_batches_of_each_tenant() -> None:
    p = BatchPolicy.parse("aimd")
    for _ in range(4):  # four clean batches: 1 -> 5
        p.finished("a", missed=False, max_batch=32)
    p.finished("b", missed=True, max_batch=32)  # another tenant's miss does not touch a
    assert p.caps == {"a": 5, "b": 1}
    count = p.count(now=0.0, candidates_deadlines=[1.0] * 9, rows=[1] * 9, max_rows=32, model=ServiceModel(),
                    tenant="a")
    assert count == 5
    p.finished("a", missed=True, max_batch=32)  # floor(5 * 0.9) = 4
    assert p.caps["a"] == 4
    assert BatchPolicy.parse("aimd") == p  # the learnt caps are state, not part of the policy's identity

"""Stream tenants without a broker: the spec and topics on the wire, event rules (hysteresis), newest frame
wins in the scheduler, image preparation and the BlazeFace decoder on a real face."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.scheduler import Request, Scheduler
from edgefleet.agent.stream_events import EventRules, result_values
from edgefleet.wire import (
    Above,
    FrameId,
    StreamEvent,
    StreamHandover,
    StreamResult,
    StreamSpec,
    TenantSpec,
    TopChange,
    TopicKind,
    Topics,
    WireError,
    decode,
    decode_stream_message,
    encode,
)
from edgefleet.wire.streams import check_source_filter
from edgefleet.zoo.images import ImageError, image_input, image_kind, prepare
from edgefleet.zoo.paths import SAMPLES_DIR

# -- the wire --------------------------------------------------------------------------------------


def test_stream_topics_build_and_parse() -> None:
    t = Topics("ef")
    assert t.results("cam-door") == "ef/v1/tenants/cam-door/results"
    assert t.events("cam-door") == "ef/v1/tenants/cam-door/events"
    assert t.handover("cam-door") == "ef/v1/tenants/cam-door/handover"
    for kind, topic in ((TopicKind.RESULTS, t.results("x")), (TopicKind.EVENTS, t.events("x")),
                        (TopicKind.HANDOVER, t.handover("x")), (TopicKind.INFER, t.infer("x"))):
        parsed = t.parse(topic)
        assert (parsed.kind, parsed.name) == (kind, "x")
    with pytest.raises(WireError):
        t.parse("ef/v1/tenants/x/resultz")


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("cams/door/frames", True),
        ("cams/+/frames", True),  # several sources through one filter
        ("cams/#", True),
        ("cams/door+/frames", False),  # '+' must be a whole level
        ("cams/#/frames", False),  # '#' only last
        ("$share/g/cams/door", False),  # a shared filter would split frames between hosts in a hand-over
        ("$SYS/broker/load", False),
        ("", False),
        ("a" * 257, False),
    ],
)
def test_source_filters(source: str, ok: bool) -> None:
    if ok:
        assert check_source_filter(source) == source
    else:
        with pytest.raises(ValueError):
            check_source_filter(source)


def test_a_stream_spec_round_trips_and_rejects_bad_rules() -> None:
    spec = TenantSpec(name="cam", model="face-detect", slo_ms=100.0, stream=StreamSpec(
        sources=["cams/door/frames", "cams/gate/frames"],
        events=[Above(name="someone", value="face_score_max", on=0.7, off=0.5),
                TopChange(name="label", value="scores.argmax", hold_frames=3, score="scores.max", min_score=0.4)]))
    assert decode(encode(spec), TenantSpec) == spec
    old = decode(b'{"name":"t","model":"vad","slo_ms":50}', TenantSpec)  # specs from before streams
    assert old.stream is None
    bad = [
        b'{"sources":[]}',  # no source
        b'{"sources":["a","a"]}',  # twice
        b'{"sources":["a"],"events":[{"kind":"above","name":"x","value":"v","on":0.5,"off":0.7}]}',  # off > on
        b'{"sources":["a"],"events":[{"kind":"top_change","name":"x","value":"v","hold_frames":0}]}',
        b'{"sources":["a"],"events":[{"kind":"above","name":"x","value":"a/b","on":1}]}',
        b'{"sources":["a"],"events":[{"kind":"above","name":"x","value":"v","on":1},'
        b'{"kind":"above","name":"x","value":"w","on":1}]}',  # two rules, one name
        b'{"sources":["a"],"results":"xml"}',
    ]
    for raw in bad:
        with pytest.raises(WireError):
            decode(raw, StreamSpec)


def test_stream_messages_round_trip() -> None:
    frame = FrameId(topic="cams/door/frames", seq=7, ts=1.5e9)
    for msg in (
        StreamResult(tenant="t", device="d", frame=frame, age_ms=12.5, service_ms=2.0, values={"s.max": 0.9},
                     decoded={"faces": 1}, skipped=2, ts=1.5e9),
        StreamEvent(tenant="t", device="d", event="someone", state="on", value=0.9, frame=frame),
        StreamHandover(tenant="t", device="d", since=1.5e9),
    ):
        assert decode_stream_message(encode(msg)) == msg
    with pytest.raises(WireError):
        decode_stream_message(b'{"type":"stream.result","tenant":"t"}')


# -- event rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # on 0.7, off 0.5: rises at 0.72, flickers (0.65, 0.55, 0.69) without events, falls at 0.48
        ([0.6, 0.72, 0.65, 0.55, 0.69, 0.48, 0.3], [("on", 0.72), ("off", 0.48)]),
        # exactly at the levels: >= on fires, < off clears (0.5 is not below 0.5)
        ([0.7, 0.5, 0.49], [("on", 0.7), ("off", 0.49)]),
        ([0.1, 0.2], []),
    ],
)
def test_above_has_hysteresis(values: list[float], expected: list[tuple[str, float]]) -> None:
    rules = EventRules([Above(name="someone", value="v", on=0.7, off=0.5)])
    fired = [f for v in values for f in rules.observe({"v": v})]
    assert [(f.state, f.value) for f in fired] == expected


def test_above_without_off_clears_below_on() -> None:
    rules = EventRules([Above(name="x", value="v", on=0.7)])
    fired = [f.state for v in (0.8, 0.75, 0.69) for f in rules.observe({"v": v})]
    assert fired == ["on", "off"]


def test_top_change_waits_for_the_class_to_hold() -> None:
    # hold 2: classes 3, 3 -> change (None -> 3); a lone 5 is ignored; 5, 5 -> change (3 -> 5)
    rules = EventRules([TopChange(name="label", value="c", hold_frames=2)])
    fired = [f for c in (3, 3, 5, 3, 5, 5, 5) for f in rules.observe({"c": float(c)})]
    assert [(f.value, f.previous) for f in fired] == [(3.0, None), (5.0, 3.0)]


def test_top_change_ignores_low_scores() -> None:
    rules = EventRules([TopChange(name="label", value="c", hold_frames=1, score="s", min_score=0.5)])
    fired = [f for c, s in ((1, 0.9), (2, 0.3), (2, 0.4), (2, 0.6)) for f in rules.observe({"c": c, "s": s})]
    assert [(f.value, f.previous) for f in fired] == [(1, None), (2, 1)]


def test_result_values_from_outputs_and_decoded_fields() -> None:
    values = result_values({"scores": np.array([[0.1, 0.7, 0.2]], np.float32)},
                           {"faces": 2, "face_score_max": 0.93, "boxes": [[0, 0, 1, 1]], "flag": True})
    assert values == {"scores.max": pytest.approx(0.7), "scores.argmax": 1.0, "faces": 2.0,
                      "face_score_max": 0.93}


# -- newest frame wins -----------------------------------------------------------------------------


def _frame(tenant: str, source: str, seq: int) -> Request:
    return Request(tenant, {}, 1, 0.0, 1e9, stream=seq, stream_key=source)


def test_a_newer_frame_replaces_the_waiting_one_of_its_source() -> None:
    sched = Scheduler(workers=1, max_queue=8)
    sched.add_tenant("cam", max_batch=1)
    assert sched.offer_latest(_frame("cam", "a", 0)) == 0
    assert sched.offer_latest(_frame("cam", "b", 0)) == 0  # another source keeps its own frame
    assert sched.offer_latest(_frame("cam", "a", 1)) == 1  # frame a/0 skipped
    assert sched.offer_latest(_frame("cam", "a", 2)) == 1  # frame a/1 skipped
    assert [(r.stream_key, r.stream) for r in sched.slots.get("cam").queue] == [("b", 0), ("a", 2)]  # type: ignore[union-attr]
    assert sched.offer_latest(_frame("nobody", "a", 0)) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=60))
def test_frames_are_run_or_counted_skipped_never_both_never_neither(ops: list[tuple[str, bool]]) -> None:
    """Offer frames of three sources, with workers taking some in between: every frame is either run or
    counted skipped, at most one frame per source waits, and what runs is each source's newest so far."""
    sched = Scheduler(workers=1, max_queue=8)
    sched.add_tenant("cam", max_batch=1)
    offered, skipped, ran = 0, 0, []
    for source, take in ops:
        skipped += sched.offer_latest(_frame("cam", source, offered)) or 0
        offered += 1
        queue = sched.slots.get("cam").queue  # type: ignore[union-attr]
        assert len({r.stream_key for r in queue}) == len(queue)
        if take:
            batch = sched.take(timeout=0)
            if batch is not None:
                ran += [r.stream for r in batch.requests]
                sched.done(batch)
    while (batch := sched.take(timeout=0)) is not None and batch.requests:
        ran += [r.stream for r in batch.requests]
        sched.done(batch)
    assert len(ran) + skipped == offered
    assert len(set(ran)) == len(ran)


# -- images and the decoder ------------------------------------------------------------------------


def test_image_kinds_and_bad_images() -> None:
    jpeg = (SAMPLES_DIR / "grace_hopper_256.jpg").read_bytes()
    assert image_kind(jpeg) == "jpeg"
    assert image_kind(b"\x89PNG\r\n\x1a\n....") == "png"
    assert image_kind(b"EFT1....") is None
    spec = image_input("face-detect")
    assert spec is not None and (spec.width, spec.height, spec.low, spec.high) == (128, 128, -1.0, 1.0)
    assert image_input("vad") is None
    with pytest.raises(ImageError, match="cannot decode"):
        prepare(jpeg[:200], spec)  # a truncated JPEG
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="GIF")
    with pytest.raises(ImageError, match="GIF"):
        prepare(out.getvalue(), spec)


def test_a_png_frame_becomes_the_same_input_as_the_sample() -> None:
    from PIL import Image

    from edgefleet.zoo import sample_inputs

    spec = image_input("face-detect")
    assert spec is not None
    png = io.BytesIO()
    with Image.open(SAMPLES_DIR / "grace_hopper_256.jpg") as img:
        img.convert("RGB").save(png, format="PNG")  # lossless: the same pixels as the JPEG decodes to
    feeds = prepare(png.getvalue(), spec)
    np.testing.assert_allclose(feeds["input"], sample_inputs("face-detect")["input"], atol=1e-6)


def test_blazeface_finds_the_face_and_nothing_in_a_blank_image() -> None:
    from edgefleet.runtime import SessionOptions, get_runtime
    from edgefleet.zoo import model_path, sample_set
    from edgefleet.zoo.decoders import blazeface, blazeface_anchors

    assert blazeface_anchors().shape == (896, 2)  # 16*16*2 + 8*8*6
    session = get_runtime("litert").open(model_path("face-detect", "fp32"), SessionOptions(threads=1))
    try:
        upright, mirrored = (blazeface(session.run(f)) for f in sample_set("face-detect"))
        blank = blazeface(session.run({"input": np.zeros((1, 128, 128, 3), np.float32)}))
    finally:
        session.close()
    assert upright["faces"] == 1 and upright["face_score_max"] > 0.9
    x0, y0, x1, y1 = upright["boxes"][0]["box"]
    assert 0.2 < x0 < x1 < 0.8 and 0.1 < y0 < y1 < 0.7  # the face is in the middle of the portrait
    mx0, _, mx1, _ = mirrored["boxes"][0]["box"]
    assert mx0 == pytest.approx(1 - x1, abs=0.05) and mx1 == pytest.approx(1 - x0, abs=0.05)  # mirrored
    assert blank == {"faces": 0, "face_score_max": 0.0, "boxes": []}
    assert msgspec.json.decode(msgspec.json.encode(upright)) == upright  # JSON-able as published


# -- the deploy command's flags --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("someone:face_score_max>=0.7/0.5", Above(name="someone", value="face_score_max", on=0.7, off=0.5)),
        ("someone:face_score_max>=0.7", Above(name="someone", value="face_score_max", on=0.7)),
        ("label:scores.argmax~3", TopChange(name="label", value="scores.argmax", hold_frames=3)),
        ("someone:v>=0.5/0.7", None),  # off above on
        ("someone:v>=high", None),
        ("label:c~0", None),
        ("nocolon>=1", None),
        ("Bad Name:v>=1", None),
    ],
)
def test_event_flags(text: str, expected: object) -> None:
    from edgefleet.cli.fleet import parse_event

    if expected is None:
        with pytest.raises(ValueError):
            parse_event(text)
    else:
        assert parse_event(text) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=200),
       st.floats(min_value=0.1, max_value=0.9), st.floats(min_value=0.0, max_value=0.3))
def test_above_alternates_and_each_event_crossed_its_level(values: list[float], on: float, gap: float) -> None:
    """Whatever the values: events alternate on, off, on...; an "on" value is >= on, an "off" value < off."""
    off = on - gap
    rules = EventRules([Above(name="x", value="v", on=on, off=off)])
    fired = [f for v in values for f in rules.observe({"v": v})]
    assert [f.state for f in fired] == ["on", "off"] * (len(fired) // 2) + ["on"] * (len(fired) % 2)
    assert all(f.value >= on if f.state == "on" else f.value < off for f in fired)

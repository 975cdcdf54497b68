"""Stream tenants on the wire: what a stream tenant declares, and the results, events and hand-over
messages its hosting device publishes.

A stream tenant is the other way round from a request tenant: a sensor publishes frames to a *source*
topic it chooses (``cams/door/frames``), the device hosting the tenant subscribes to it, runs the model
on the newest frame and publishes each result to ``{prefix}/v1/tenants/{tenant}/results`` (the latest
one retained) and events to ``{prefix}/v1/tenants/{tenant}/events``, for any number of subscribers.

A frame is an EFT1 request frame (``edgefleet.wire.tensors``) or an encoded image (JPEG or PNG, for
models whose catalog entry declares an image input). Its identity is the topic it came on plus the
``seq`` (an integer the source counts up) and/or ``ts`` (the capture time, Unix seconds) the source put
in the frame's meta (EFT1) or in MQTT 5 user properties ``seq`` / ``ts`` (any payload). Results carry
that identity, so a subscriber can tell frames apart and see that none is answered twice.

Events are declared conditions on a result's *values*: ``{output}.max`` and ``{output}.argmax`` for
every output tensor (the flattened maximum and its index), and the fields the model's catalog decoder
adds (for face-detect: ``faces`` and ``face_score_max``). ``Above`` fires when a value rises to ``on``
and clears when it falls below ``off`` (hysteresis: ``off`` <= ``on``); ``TopChange`` fires when an
index value settles on a new class for ``hold_frames`` frames in a row.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from edgefleet.wire.names import NAME_RE

MAX_SOURCES = 16
MAX_TOPIC_CHARS = 256
MAX_EVENT_RULES = 16
MAX_HOLD_FRAMES = 1000
RESULT_FORMATS = ("auto", "json", "tensors")
VALUE_RE_CHARS = 128


class _Plain(msgspec.Struct, frozen=True, kw_only=True):
    pass


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = 1


def check_source_filter(value: object) -> str:
    """Return ``value`` if it can be a stream source: an MQTT topic filter (``+`` and ``#`` allowed as
    whole levels) that is not a ``$`` system or shared-subscription filter; raise ValueError otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_TOPIC_CHARS:
        raise ValueError(f"a source must be a topic filter of 1..{MAX_TOPIC_CHARS} characters, got {value!r}")
    if value.startswith("$") or "\x00" in value:
        raise ValueError(f"source {value!r}: '$' topics and NUL are not allowed")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"source {value!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"source {value!r}: '+' must be a whole level")
    return value


class Above(_Plain, frozen=True, tag_field="kind", tag="above"):
    """An event when ``value`` rises to ``on`` or more ("on"), and when it then falls below ``off``
    ("off"). A score flickering between ``off`` and ``on`` publishes nothing."""

    name: str
    value: str  # e.g. "face_score_max", "classificators.max"
    on: float
    off: float | None = None  # None: the same as ``on`` (no hysteresis)

    def __post_init__(self) -> None:
        _rule_name(self.name)
        _value_name(self.value)
        if not math.isfinite(self.on):
            raise ValueError(f"event {self.name!r}: on must be a finite number")
        off = self.on if self.off is None else self.off
        if not math.isfinite(off) or off > self.on:
            raise ValueError(f"event {self.name!r}: off must be a finite number <= on ({self.on}), got {off}")

    @property
    def off_level(self) -> float:
        return self.on if self.off is None else self.off


class TopChange(_Plain, frozen=True, tag_field="kind", tag="top_change"):
    """An event when ``value`` (an index, such as ``{output}.argmax``) settles on a new class: the same new
    class for ``hold_frames`` frames in a row, each with ``score`` (if named) at least ``min_score``."""

    name: str
    value: str
    hold_frames: int = 2
    score: str | None = None  # e.g. "scores.max": frames below min_score do not count
    min_score: float = 0.0

    def __post_init__(self) -> None:
        _rule_name(self.name)
        _value_name(self.value)
        if self.score is not None:
            _value_name(self.score)
        if not (1 <= self.hold_frames <= MAX_HOLD_FRAMES):
            raise ValueError(f"event {self.name!r}: hold_frames must be in [1, {MAX_HOLD_FRAMES}]")
        if not math.isfinite(self.min_score):
            raise ValueError(f"event {self.name!r}: min_score must be finite")


EventRule = Above | TopChange


def _rule_name(value: str) -> None:
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid event name {value!r}: must match {NAME_RE.pattern}")


def _value_name(value: str) -> None:
    if not value or len(value) > VALUE_RE_CHARS or any(c in value for c in "/+#\x00 "):
        raise ValueError(f"invalid value name {value!r}: 1..{VALUE_RE_CHARS} characters, no '/', '+', '#' or spaces")


class StreamSpec(_Plain, frozen=True):
    """What makes a tenant a stream tenant: where its frames come from and what it tells subscribers."""

    sources: list[str]  # topic filters the hosting device subscribes to (not tenant topics)
    events: list[Above | TopChange] = msgspec.field(default_factory=list)
    # results as JSON (values and decoded fields, no tensors) or as EFT1 result frames (tensors; the same
    # fields in the meta); "auto": JSON when the model's catalog entry declares a decoder
    results: Literal["auto", "json", "tensors"] = "auto"

    def __post_init__(self) -> None:
        if not (1 <= len(self.sources) <= MAX_SOURCES):
            raise ValueError(f"a stream needs 1..{MAX_SOURCES} sources, got {len(self.sources)}")
        for s in self.sources:
            check_source_filter(s)
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("a source appears twice")
        if len(self.events) > MAX_EVENT_RULES:
            raise ValueError(f"at most {MAX_EVENT_RULES} event rules")
        names = [e.name for e in self.events]
        if len(set(names)) != len(names):
            raise ValueError("two event rules share a name")


# -- what the hosting device publishes -----------------------------------------------------------
class FrameId(_Plain, frozen=True, omit_defaults=True):
    """Which frame a result answers: the topic it came on, and the source's ``seq`` and/or ``ts``."""

    topic: str
    seq: int | None = None
    ts: float | None = None  # capture time, Unix seconds (the source's clock)


class StreamResult(_Msg, frozen=True, kw_only=True, tag="stream.result"):
    """One frame's result, on ``{prefix}/v1/tenants/{tenant}/results`` (QoS 0; the latest retained)."""

    tenant: str
    device: str
    frame: FrameId
    age_ms: float  # result time - capture time (ts), or - receipt at the device when the frame has no ts
    service_ms: float  # the model's run
    values: dict[str, float] = msgspec.field(default_factory=dict)  # "{output}.max", "{output}.argmax"
    decoded: dict[str, Any] = msgspec.field(default_factory=dict)  # the catalog decoder's fields
    skipped: int = 0  # frames of this source skipped (newer ones arrived) since the previous result
    ts: float = 0.0  # when the result was published, Unix seconds


class StreamEvent(_Msg, frozen=True, kw_only=True, tag="stream.event"):
    """A declared condition changed, on ``{prefix}/v1/tenants/{tenant}/events`` (QoS 1, not retained)."""

    tenant: str
    device: str
    event: str  # the rule's name
    state: Literal["on", "off", "change"]
    value: float  # the value that crossed (Above) or the new class (TopChange)
    previous: float | None = None  # TopChange: the class before
    frame: FrameId
    ts: float = 0.0


class StreamHandover(_Msg, frozen=True, tag="stream.handover"):
    """Sent by a device that starts hosting a stream tenant, on ``{prefix}/v1/tenants/{tenant}/handover``
    (QoS 1, not retained). A device that hosted the tenant before (``since`` older) answers the frames it
    received before this message and none after it; the sender answers only the frames it receives after
    its own copy of this message came back. One broker routes both in order, so no frame is answered twice
    and none is left out. ``release``: the sender leaves; the device that yielded to it resumes."""

    tenant: str
    device: str
    since: float  # when the sender started hosting, Unix seconds: the newer host wins
    # the sender, which had taken the tenant up, stops hosting it (a move rolled back, an undeploy): a
    # device that yielded to it takes the frames up again from this message on
    release: bool = False

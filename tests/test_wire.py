"""Properties of the wire contract: frames and control messages round-trip, and bad input only ever
raises WireError with the code the contract promises.

Peers in other languages parse these payloads from untrusted senders, so the Python decoders are held
to the same standard: any byte string, however mangled, yields a value or a WireError, never another
exception that would kill a handler.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.wire import (
    Ack,
    Closed,
    Configure,
    Deploy,
    DeviceWindow,
    ErrorCode,
    ErrorFrame,
    FleetStatus,
    ModelReport,
    OpDeploy,
    OpReply,
    OpStatus,
    OpUndeploy,
    ParsedTopic,
    Periodic,
    Poisson,
    RequestFrame,
    ResultFrame,
    ServiceProfile,
    Telemetry,
    TenantModelError,
    TenantSpec,
    TenantWindow,
    TopicKind,
    Topics,
    Undeploy,
    WireError,
    decode,
    decode_command,
    decode_frame,
    decode_op,
    decode_status,
    encode,
    encode_error,
    encode_request,
    encode_result,
)
from edgefleet.wire.codec import (
    MAX_CONTROL_BYTES,
    decode_ack,
    decode_model_report,
    decode_reply,
    decode_stream_message,
    decode_telemetry,
    decode_to_device,
)
from edgefleet.wire.names import NAME_RE
from edgefleet.wire.tensors import DTYPES, MAGIC, MAX_HEADER_BYTES, encode_reply

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ----------------------------------------------------------------------------------------
names = st.from_regex(NAME_RE, fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)
counts = st.integers(min_value=0, max_value=2**53)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    name = draw(st.sampled_from(sorted(DTYPES)))
    dtype = np.dtype(name)
    if dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">")  # big-endian arrays go out little-endian and come back equal
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


tensor_maps = st.dictionaries(st.text(min_size=1, max_size=12), arrays(), max_size=5)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64) | finite | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def same_tensors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Equal names, dtypes, shapes and bytes; NaNs (including their payload bits) compare equal."""
    assert list(a) == list(b)
    for name, x in a.items():
        y = b[name]
        assert y.dtype == x.dtype.newbyteorder("=") and y.shape == x.shape, name
        assert x.astype(x.dtype.newbyteorder("<")).tobytes() == y.astype(y.dtype.newbyteorder("<")).tobytes()
        np.testing.assert_array_equal(x, y)  # equal_nan by default


# -- frame round trip ------------------------------------------------------------------------------------
@SETTINGS
@given(
    tensor_maps,
    st.none() | st.floats(min_value=0.0, max_value=3.6e6),
    st.none() | st.floats(min_value=0.0, max_value=1.0),
)
def test_request_round_trip(
    tensors: dict[str, np.ndarray], timeout_ms: float | None, min_fidelity: float | None
) -> None:
    payload = encode_request(tensors, timeout_ms=timeout_ms, min_fidelity=min_fidelity)
    assert payload[:4] == MAGIC
    frame = decode_frame(payload)
    assert isinstance(frame, RequestFrame)
    same_tensors(tensors, frame.tensors)
    assert frame.timeout_ms == timeout_ms and frame.min_fidelity == min_fidelity


@SETTINGS
@given(tensor_maps, st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_result_round_trip(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    frame = decode_frame(encode_result(tensors, meta))
    assert isinstance(frame, ResultFrame)
    same_tensors(tensors, frame.tensors)
    assert frame.meta == meta


@SETTINGS
@given(tensor_maps)
def test_frame_decodes_from_any_buffer_type(tensors: dict[str, np.ndarray]) -> None:
    payload = encode_result(tensors)
    for buf in (bytearray(payload), memoryview(payload)):
        frame = decode_frame(buf)
        assert isinstance(frame, ResultFrame)
        same_tensors(tensors, frame.tensors)


@SETTINGS
@given(st.sampled_from(list(ErrorCode)), st.text(max_size=200))
def test_error_round_trip(code: ErrorCode, message: str) -> None:
    frame = decode_frame(encode_error(code, message, {"device": "d1"}))
    assert isinstance(frame, ErrorFrame)
    assert (frame.code, frame.message, frame.meta["device"]) == (code, message, "d1")


@SETTINGS
@given(tensor_maps)
def test_frame_layout(tensors: dict[str, np.ndarray]) -> None:
    """The byte layout docs/protocol.md promises: magic, length, JSON header, pad to 8, aligned data."""
    payload = encode_result(tensors)
    (hlen,) = struct.unpack_from("<I", payload, 4)
    header = json.loads(payload[8 : 8 + hlen])
    start = 8 + hlen + (-(8 + hlen)) % 8
    assert set(payload[8 + hlen : start]) <= {0}
    for spec in header["tensors"]:
        assert spec["offset"] % 8 == 0
        arr = tensors[spec["name"]]
        raw = payload[start + spec["offset"] : start + spec["offset"] + spec["nbytes"]]
        assert raw == arr.astype(arr.dtype.newbyteorder("<")).tobytes()


# -- control message round trip ----------------------------------------------------------------------
demands = st.one_of(
    st.none(),
    st.builds(Poisson, rate_rps=st.floats(min_value=1e-6, max_value=1e6)),
    st.builds(Periodic, fps=st.floats(min_value=1e-6, max_value=1e6),
              jitter_ms=st.floats(min_value=0.0, max_value=3_600_000.0)),
    st.builds(Closed, in_flight=st.integers(1, 4096), think_ms=st.floats(min_value=0.0, max_value=3_600_000.0)),
)
tenant_specs = st.builds(
    TenantSpec,
    name=names,
    model=names,
    slo_ms=st.floats(min_value=0.001, max_value=600_000.0),
    variant=st.sampled_from(["fp32", "fp16", "int8"]),
    min_fidelity=st.floats(min_value=0.0, max_value=1.0),
    max_batch=st.integers(1, 1024),
    demand=demands,
)
tenant_windows = st.builds(
    TenantWindow,
    tenant=names,
    model=names,
    variant=st.sampled_from(["fp32", "fp16", "int8"]),
    slo_ms=nonneg,
    arrivals=counts,
    completions=counts,
    errors=counts,
    shed=counts,
    deadline_misses=counts,
    slo_misses=counts,
    warm_starts=counts,
    cold_starts=counts,
    batches=counts,
    batch_size_mean=nonneg,
    service_ms_mean=nonneg,
    service_scv=nonneg,
    queue_ms_mean=nonneg,
    latency_p50_ms=nonneg,
    latency_p95_ms=nonneg,
    latency_p99_ms=nonneg,
    arrival_rps=nonneg,
    arrival_scv=nonneg,
)
device_windows = st.builds(
    DeviceWindow,
    cpu_percent=nonneg,
    memory_used_bytes=counts,
    memory_budget_bytes=counts,
    model_memory_bytes=counts,
    gpu_percent=st.none() | nonneg,
    temperature_c=st.none() | finite,
    power_w=st.none() | nonneg,
)


@st.composite
def telemetry(draw: st.DrawFn) -> Telemetry:
    start = draw(st.floats(min_value=0.0, max_value=4e9))
    return Telemetry(
        device_id=draw(names),
        boot_id=draw(st.text(max_size=40)),
        seq=draw(counts),
        window_start=start,
        window_end=start + draw(st.floats(min_value=0.0, max_value=3600.0)),
        device=draw(device_windows),
        tenants=draw(st.lists(tenant_windows, max_size=3)),
    )


deploys = st.builds(
    Deploy, command_id=st.text(max_size=40), device_id=names, tenant=tenant_specs, issued_at=nonneg
)
undeploys = st.builds(
    Undeploy, command_id=st.text(max_size=40), device_id=names, tenant=names, issued_at=nonneg
)
configures = st.builds(
    Configure, command_id=st.text(max_size=40), device_id=names, tenant=tenant_specs, issued_at=nonneg
)
profile_ms = st.floats(min_value=1e-9, max_value=3_600_000.0, allow_nan=False)
profiles = st.builds(
    ServiceProfile,
    model=names,
    variant=st.sampled_from(["fp32", "fp16", "int8"]),
    ms_by_batch=st.tuples(profile_ms, st.dictionaries(st.integers(2, 1024), profile_ms, max_size=15)).map(
        lambda t: {1: t[0], **t[1]}
    ),
)
acks = st.builds(
    Ack,
    command_id=st.text(max_size=40),
    device_id=names,
    ok=st.booleans(),
    result=st.sampled_from(["applied", "duplicate", "failed", "rejected"]),
    code=st.sampled_from([""] + [c.value for c in ErrorCode]),
    message=st.text(max_size=80),
    ts=nonneg,
    profile=st.none() | profiles,
)
ops = st.one_of(
    st.builds(OpDeploy, tenant=tenant_specs, device_id=st.none() | names),
    st.builds(OpUndeploy, tenant=st.text(max_size=20)),
    st.just(OpStatus()),
)


@SETTINGS
@given(deploys | undeploys | configures)
def test_command_round_trip(cmd: Deploy | Undeploy | Configure) -> None:
    data = encode(cmd)
    assert json.loads(data)["type"] in ("deploy", "undeploy", "configure") and json.loads(data)["v"] == 1
    assert decode_command(data) == cmd


@SETTINGS
@given(telemetry())
def test_telemetry_round_trip(msg: Telemetry) -> None:
    assert decode_telemetry(encode(msg)) == msg


@SETTINGS
@given(acks)
def test_ack_round_trip(msg: Ack) -> None:
    assert decode_ack(encode(msg)) == msg


_ACK = {"type": "ack", "v": 1, "command_id": "c-1", "device_id": "box-1", "ok": True, "result": "applied"}
_PROFILE = {"model": "ocr-cls", "variant": "int8", "ms_by_batch": {"1": 0.9, "8": 4.1}}


def test_an_ack_without_a_profile_still_decodes() -> None:
    """Agents that predate the profile send none; the field is optional and defaults to null."""
    assert decode_ack(json.dumps(_ACK).encode()).profile is None
    ack = decode_ack(json.dumps({**_ACK, "profile": _PROFILE}).encode())
    assert ack.profile == ServiceProfile(model="ocr-cls", variant="int8", ms_by_batch={1: 0.9, 8: 4.1})


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ms_by_batch": {"1": -0.5}}, "time must be a finite number"),
        ({"ms_by_batch": {"1": 0.0}}, "time must be a finite number"),
        ({"ms_by_batch": {"1": 1e999}}, "Number out of range"),  # JSON 1e999 would be inf
        ({"ms_by_batch": {"1": 4e6}}, "time must be a finite number"),  # over an hour
        ({"ms_by_batch": {"1": 1.0, "4096": 2.0}}, "batch size must be in [1, 1024]"),
        ({"ms_by_batch": {"1": 1.0, "0": 2.0}}, "batch size must be in [1, 1024]"),
        ({"ms_by_batch": {"1": 1.0, "-3": 2.0}}, "batch size must be in [1, 1024]"),
        ({"ms_by_batch": {"8": 2.0}}, "must hold batch 1"),
        ({"ms_by_batch": {}}, "must hold batch 1"),
        ({"ms_by_batch": {str(b): 1.0 for b in range(1, 18)}}, "at most 16 batch sizes"),
        ({"ms_by_batch": {"one": 1.0}}, "Expected `int`"),
        ({"ms_by_batch": {"1": "fast"}}, "Expected `float`"),
        ({"variant": "fp64"}, "variant must be one of"),
        ({"model": "Bad/Model"}, "invalid model name"),
    ],
)
def test_malformed_profiles_are_wire_errors(change: dict[str, Any], why: str) -> None:
    doc = {**_ACK, "profile": {**_PROFILE, **change}}
    payload = json.dumps(doc).replace("Infinity", "1e999").encode()
    with pytest.raises(WireError) as info:
        decode_ack(payload)
    assert info.value.code is BAD and why in info.value.message


@SETTINGS
@given(ops)
def test_op_round_trip(msg: OpDeploy | OpUndeploy | OpStatus) -> None:
    assert decode_op(encode(msg)) == msg


model_errors = st.builds(
    TenantModelError,
    tenant=names,
    device_id=names,
    device_kind=st.sampled_from(["x86-cpu", "arm-cpu", "jetson-gpu", "coral-tpu", ""]),
    model=names,
    variant=st.sampled_from(["fp32", "fp16", "int8"]),
    predicted_p95_ms=nonneg,
    observed_p95_ms=st.floats(min_value=1e-6, max_value=1e9),
    arrival_rps=nonneg,
    ape_ratio=st.floats(min_value=0.0, max_value=1e6),
    bias_ratio=st.floats(min_value=-1.0, max_value=1e6),
    windows=st.integers(1, 2**53),
)


@st.composite
def model_reports(draw: st.DrawFn) -> ModelReport:
    entries = draw(st.lists(model_errors, max_size=4, unique_by=lambda e: e.tenant))
    mean = sum(e.ape_ratio for e in entries) / len(entries) if entries else None
    return ModelReport(tenants=entries, mean_ape_ratio=mean, ts=draw(nonneg))


@SETTINGS
@given(model_reports())
def test_model_report_round_trip(report: ModelReport) -> None:
    data = encode(report)
    assert json.loads(data)["type"] == "model.report" and json.loads(data)["v"] == 1
    assert decode_model_report(data) == report
    # op.status carries the same report in its FleetStatus
    reply = OpReply(ok=True, status=FleetStatus(devices=[], tenants=[], ts=report.ts, model=report))
    assert decode_reply(encode(reply)) == reply


_ENTRY = {"tenant": "t", "device_id": "d", "device_kind": "x86-cpu", "model": "m", "variant": "fp32",
          "predicted_p95_ms": 10.0, "observed_p95_ms": 8.0, "arrival_rps": 2.0, "ape_ratio": 0.25,
          "bias_ratio": 0.25, "windows": 1}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"windows": 0}, "windows must be >= 1"),
        ({"observed_p95_ms": 0.0}, "observed_p95_ms > 0"),
        ({"ape_ratio": -0.1}, "ape_ratio must be >= 0"),
        ({"predicted_p95_ms": 1e999}, "Number out of range"),  # JSON 1e999 would be inf
        ({"variant": "fp64"}, "variant must be one of"),
        ({"tenant": "Bad/Name"}, "invalid tenant name"),
        ({"device_id": "a b"}, "invalid device id"),
        ({"windows": "1"}, "Expected `int`"),
    ],
)
def test_malformed_model_reports_are_wire_errors(change: dict[str, Any], why: str) -> None:
    doc = {"type": "model.report", "v": 1, "tenants": [{**_ENTRY, **change}], "mean_ape_ratio": 0.25, "ts": 1.0}
    payload = json.dumps(doc).replace("Infinity", "1e999").encode()
    with pytest.raises(WireError) as info:
        decode_model_report(payload)
    assert info.value.code is BAD and why in info.value.message


def test_model_report_refuses_a_tenant_twice_a_negative_mean_and_other_versions() -> None:
    twice = {"type": "model.report", "v": 1, "tenants": [_ENTRY, _ENTRY], "ts": 1.0}
    with pytest.raises(WireError, match="appears twice"):
        decode_model_report(json.dumps(twice).encode())
    with pytest.raises(WireError, match="mean_ape_ratio"):
        decode_model_report(b'{"type":"model.report","v":1,"tenants":[],"mean_ape_ratio":-1}')
    with pytest.raises(WireError) as info:
        decode_model_report(b'{"type":"model.report","v":2,"tenants":[]}')
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    with pytest.raises(ValueError, match="must be finite"):  # the coordinator cannot build one with inf
        TenantModelError(**{**_ENTRY, "predicted_p95_ms": float("inf")})
    # defaults: no mean when nobody was scored, time 0
    assert decode_model_report(b'{"type":"model.report","v":1,"tenants":[]}') == ModelReport(tenants=[])


@SETTINGS
@given(tenant_specs)
def test_tenant_spec_round_trip(spec: TenantSpec) -> None:
    assert decode(encode(spec), TenantSpec) == spec


def test_a_spec_from_before_demand_kinds_decodes_as_before() -> None:
    old = b'{"name":"ocr","model":"ocr-cls","slo_ms":50.0,"variant":"fp32","min_fidelity":0.0,"max_batch":8}'
    assert decode(old, TenantSpec) == TenantSpec(name="ocr", model="ocr-cls", slo_ms=50.0)
    assert decode(old, TenantSpec).demand is None


@pytest.mark.parametrize(
    ("demand", "kind"),
    [
        ('{"kind":"poisson","rate_rps":20}', Poisson(rate_rps=20.0)),
        ('{"kind":"periodic","fps":30}', Periodic(fps=30.0)),  # jitter defaults to a strict clock
        ('{"kind":"periodic","fps":30,"jitter_ms":2.5}', Periodic(fps=30.0, jitter_ms=2.5)),
        ('{"kind":"closed","in_flight":1}', Closed(in_flight=1)),  # back to back
        ('{"kind":"closed","in_flight":4,"think_ms":10}', Closed(in_flight=4, think_ms=10.0)),
    ],
)
def test_demand_kinds_decode(demand: str, kind: object) -> None:
    spec = decode(f'{{"name":"t","model":"vad","slo_ms":5,"demand":{demand}}}'.encode(), TenantSpec)
    assert spec.demand == kind


@pytest.mark.parametrize(
    ("demand", "why"),
    [
        ('{"kind":"bursty","rate_rps":20}', "Invalid value 'bursty'"),
        ('{"rate_rps":20}', "Object missing required field `kind`"),
        ('{"kind":"poisson","rate_rps":0}', "rate_rps must be in"),
        ('{"kind":"poisson","rate_rps":2e6}', "rate_rps must be in"),
        ('{"kind":"periodic","fps":-30}', "fps must be in"),
        ('{"kind":"periodic","fps":30,"jitter_ms":-1}', "jitter_ms must be in"),
        ('{"kind":"closed","in_flight":0}', "in_flight must be in"),
        ('{"kind":"closed","in_flight":5000}', "in_flight must be in"),
        ('{"kind":"closed","in_flight":1.5}', "Expected `int`"),
        ('{"kind":"closed","in_flight":1,"think_ms":"x"}', "Expected `float`, got `str`"),
        ('"closed"', "Expected `object | null`"),
    ],
)
def test_malformed_demands_are_wire_errors(demand: str, why: str) -> None:
    with pytest.raises(WireError, match=re.escape(why)) as info:
        decode_command(('{"type":"deploy","v":1,"command_id":"c","device_id":"d","tenant":'
                        f'{{"name":"t","model":"vad","slo_ms":5,"demand":{demand}}}}}').encode())
    assert info.value.code is ErrorCode.BAD_REQUEST


@SETTINGS
@given(deploys, st.integers().filter(lambda v: v != 1))
def test_other_versions_are_refused(cmd: Deploy, version: int) -> None:
    doc = json.loads(encode(cmd))
    doc["v"] = version
    with pytest.raises(WireError) as info:
        decode_command(json.dumps(doc).encode())
    assert info.value.code in (ErrorCode.UNSUPPORTED_VERSION, ErrorCode.BAD_REQUEST)
    if -(2**63) <= version < 2**63:
        assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


# -- fuzz: nothing but WireError ----------------------------------------------------------------------
DECODERS: list[Callable[[bytes], object]] = [decode_frame, decode_command, decode_status, decode_op,
                                              decode_model_report]
CONTROL_DECODERS = DECODERS[1:]


def only_wire_errors(fn: Callable[[Any], object], data: Any) -> None:
    try:
        fn(data)
    except WireError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
    # Any other exception propagates and fails the property.


@FUZZ
@given(st.binary(max_size=512))
def test_decoders_on_arbitrary_bytes(data: bytes) -> None:
    for fn in DECODERS:
        only_wire_errors(fn, data)


@FUZZ
@given(st.binary(max_size=64))
def test_decoders_on_bytes_behind_a_valid_prefix(tail: bytes) -> None:
    for head in (MAGIC, MAGIC + struct.pack("<I", len(tail)), b'{"type":"deploy","v":1,', b'{"type":'):
        for fn in DECODERS:
            only_wire_errors(fn, head + tail)


@FUZZ
@given(st.text(max_size=200) | st.from_regex(r"\At[a-z0-9]{0,4}/v1/[a-z/+#$]{0,40}\Z"))
def test_topic_parse_on_arbitrary_strings(topic: str) -> None:
    only_wire_errors(Topics("t").parse, topic)


def test_topic_parse_on_non_strings() -> None:
    for value in (None, b"t/v1/coordinator/ops", 3, ["t"]):
        only_wire_errors(Topics("t").parse, value)


valid_frames = st.one_of(
    st.builds(lambda t: encode_request(t, timeout_ms=100.0), tensor_maps),
    st.builds(encode_result, tensor_maps),
    st.builds(lambda c, m: encode_error(c, m), st.sampled_from(list(ErrorCode)), st.text(max_size=20)),
)


@FUZZ
@given(valid_frames, st.data())
def test_mutated_frames(payload: bytes, data: st.DataObject) -> None:
    mutation = data.draw(st.sampled_from(["truncate", "flip", "length", "splice"]))
    buf = bytearray(payload)
    if mutation == "truncate":
        buf = buf[: data.draw(st.integers(0, max(0, len(buf) - 1)))]
    elif mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
    elif mutation == "length":
        edges = st.sampled_from([0, 2**32 - 1, MAX_HEADER_BYTES + 1])
        declared = data.draw(st.integers(0, 2**32 - 1) | edges)
        struct.pack_into("<I", buf, 4, declared)
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    only_wire_errors(decode_frame, bytes(buf))


# Shape entries stay small: numpy itself refuses zero-size arrays whose other dims overflow, which
# test_known_decoder_escapes pins separately.
shape_values = st.lists(st.integers(-2, 128) | st.booleans() | finite, max_size=10)
header_values: dict[str, st.SearchStrategy[Any]] = {
    "v": json_values,
    "kind": json_values | st.sampled_from(["request", "result", "error"]),
    "tensors": json_values,
    "meta": json_values,
    "name": json_values,
    "dtype": json_values | st.sampled_from(sorted(DTYPES)),
    "shape": shape_values,
    "offset": st.integers(-(2**64), 2**64) | json_values,
    "nbytes": st.integers(-(2**64), 2**64) | json_values,
    "code": json_values,
    "timeout_ms": json_values,
    "min_fidelity": json_values,
}


def reframe(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    head = MAGIC + struct.pack("<I", len(raw)) + raw
    return head + b"\x00" * ((-len(head)) % 8) + data


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    (hlen,) = struct.unpack_from("<I", payload, 4)
    start = 8 + hlen + (-(8 + hlen)) % 8
    return json.loads(payload[8 : 8 + hlen]), payload[start:]


@FUZZ
@given(valid_frames, st.data())
def test_mutated_headers(payload: bytes, data: st.DataObject) -> None:
    header, body = split(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(header_values)))
        value = data.draw(header_values[key])
        if key in ("v", "kind", "tensors", "meta"):
            header[key] = value
        elif key in ("code", "timeout_ms", "min_fidelity"):
            if isinstance(header.get("meta"), dict):
                header["meta"][key] = value
        elif isinstance(header.get("tensors"), list) and header["tensors"]:
            spec = data.draw(st.sampled_from(header["tensors"]))
            if isinstance(spec, dict):
                spec[key] = value
    only_wire_errors(decode_frame, reframe(header, body))


control_samples = st.one_of(deploys.map(encode), undeploys.map(encode), acks.map(encode), ops.map(encode))


@FUZZ
@given(control_samples, st.data())
def test_mutated_control_messages(payload: bytes, data: st.DataObject) -> None:
    doc = json.loads(payload)
    key = data.draw(st.sampled_from([*doc.keys(), "type", "v", "extra"]))
    doc[key] = data.draw(json_values | st.sampled_from(["deploy", "undeploy", "op.deploy", "birth", "ack"]))
    mutated = json.dumps(doc).encode()
    cut = data.draw(st.integers(0, len(mutated)))
    for blob in (mutated, mutated[:cut]):
        for fn in CONTROL_DECODERS:
            only_wire_errors(fn, blob)


# -- specific malformed frames and their codes ----------------------------------------------------------
def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "x", "dtype": "float32", "shape": [2], "offset": 0, "nbytes": 8}
    base.update(over)
    return base


def hdr(tensors: list[Any] | None = None, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "kind": "request",
        "tensors": [spec()] if tensors is None else tensors,
        "meta": {},
    }
    base.update(over)
    return base


DATA8 = b"\x00" * 8
BAD = ErrorCode.BAD_REQUEST
MALFORMED: list[tuple[str, bytes, ErrorCode]] = [
    ("empty", b"", BAD),
    ("three bytes", b"EFT", BAD),
    ("wrong magic", b"XXXX\x02\x00\x00\x00{}", BAD),
    ("json instead of a frame", b'{"v":1,"kind":"request"}', BAD),
    ("future frame version in magic", b"EFT2\x02\x00\x00\x00{}", ErrorCode.UNSUPPORTED_VERSION),
    ("header length past the end", MAGIC + struct.pack("<I", 100) + b"{}", BAD),
    ("header length 4 GiB", MAGIC + struct.pack("<I", 2**32 - 1) + b"{}", BAD),
    (
        "header over the limit",
        MAGIC + struct.pack("<I", MAX_HEADER_BYTES + 1) + b" " * (MAX_HEADER_BYTES + 1),
        BAD,
    ),
    ("header not json", MAGIC + struct.pack("<I", 3) + b"{x}", BAD),
    ("header not utf-8", MAGIC + struct.pack("<I", 2) + b"\xff\xfe", BAD),
    ("header a list", reframe([], b""), BAD),  # type: ignore[arg-type]
    ("no version", reframe({"kind": "request", "tensors": []}, b""), ErrorCode.UNSUPPORTED_VERSION),
    ("version 2", reframe(hdr(v=2), DATA8), ErrorCode.UNSUPPORTED_VERSION),
    ("version as string", reframe(hdr(v="1"), DATA8), ErrorCode.UNSUPPORTED_VERSION),
    ("unknown kind", reframe(hdr(kind="query"), DATA8), BAD),
    ("no kind", reframe({"v": 1, "tensors": []}, b""), BAD),
    ("meta a list", reframe(hdr(meta=[]), DATA8), BAD),
    ("tensors an object", reframe(hdr(tensors={"x": 1}), DATA8), BAD),  # type: ignore[arg-type]
    ("33 tensors", reframe(hdr([spec(name=f"t{i}", shape=[0], nbytes=0) for i in range(33)]), b""), BAD),
    ("spec not an object", reframe(hdr(["x"]), DATA8), BAD),
    ("empty name", reframe(hdr([spec(name="")]), DATA8), BAD),
    ("name too long", reframe(hdr([spec(name="n" * 257)]), DATA8), BAD),
    ("duplicate names", reframe(hdr([spec(), spec(offset=8)]), DATA8 * 2), BAD),
    ("complex dtype", reframe(hdr([spec(dtype="complex64", nbytes=16)]), DATA8 * 2), ErrorCode.BAD_DTYPE),
    ("object dtype", reframe(hdr([spec(dtype="object")]), DATA8), ErrorCode.BAD_DTYPE),
    ("big-endian dtype name", reframe(hdr([spec(dtype=">f4")]), DATA8), ErrorCode.BAD_DTYPE),
    ("no dtype", reframe(hdr([spec(dtype=None)]), DATA8), ErrorCode.BAD_DTYPE),
    ("rank 9", reframe(hdr([spec(shape=[1] * 9, nbytes=4)]), DATA8), ErrorCode.BAD_SHAPE),
    ("negative dim", reframe(hdr([spec(shape=[-2], nbytes=8)]), DATA8), ErrorCode.BAD_SHAPE),
    ("bool dim", reframe(hdr([spec(shape=[True, True], nbytes=4)]), DATA8), ErrorCode.BAD_SHAPE),
    ("float dim", reframe(hdr([spec(shape=[2.0])]), DATA8), ErrorCode.BAD_SHAPE),
    ("shape a string", reframe(hdr([spec(shape="2")]), DATA8), ErrorCode.BAD_SHAPE),
    ("nbytes short of the shape", reframe(hdr([spec(nbytes=4)]), DATA8), ErrorCode.BAD_SHAPE),
    ("nbytes huge", reframe(hdr([spec(nbytes=2**62)]), DATA8), ErrorCode.BAD_SHAPE),
    (
        "huge shape and nbytes",
        reframe(hdr([spec(dtype="float64", shape=[2**59], nbytes=2**62)]), DATA8),
        ErrorCode.BAD_SHAPE,
    ),
    ("data missing", reframe(hdr(), b""), BAD),
    ("data short", reframe(hdr(), b"\x00" * 7), BAD),
    ("offset past the end", reframe(hdr([spec(offset=8)]), DATA8), BAD),
    ("offset huge", reframe(hdr([spec(offset=2**64)]), DATA8), BAD),
    ("negative offset", reframe(hdr([spec(offset=-8)]), DATA8), BAD),
    ("offset a float", reframe(hdr([spec(offset=0.0)]), DATA8), BAD),
    ("nbytes a bool", reframe(hdr([spec(shape=[], dtype="uint8", nbytes=True)]), DATA8), BAD),
    ("overlapping tensors", reframe(hdr([spec(), spec(name="y", offset=4)]), DATA8 * 2), BAD),
    ("tensors out of order", reframe(hdr([spec(offset=8), spec(name="y")]), DATA8 * 2), BAD),
    ("negative timeout", reframe(hdr(meta={"timeout_ms": -1}), DATA8), BAD),
    ("timeout over an hour", reframe(hdr(meta={"timeout_ms": 3.6e6 + 1}), DATA8), BAD),
    ("timeout a string", reframe(hdr(meta={"timeout_ms": "100"}), DATA8), BAD),
    ("timeout a bool", reframe(hdr(meta={"timeout_ms": True}), DATA8), BAD),
    ("timeout NaN", reframe(hdr([], meta={"timeout_ms": float("nan")}), b""), BAD),
    ("min_fidelity above 1", reframe(hdr(meta={"min_fidelity": 1.5}), DATA8), BAD),
    (
        "result with a bad tensor",
        reframe(hdr(kind="result", tensors=[spec(dtype="str")]), DATA8),
        ErrorCode.BAD_DTYPE,
    ),
]


@pytest.mark.parametrize(
    ("payload", "code"), [(p, c) for _, p, c in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_frames(payload: bytes, code: ErrorCode) -> None:
    with pytest.raises(WireError) as info:
        decode_frame(payload)
    assert info.value.code is code, info.value.message


def test_error_frame_with_unknown_code_reads_as_internal() -> None:
    frame = decode_frame(reframe({"v": 1, "kind": "error", "tensors": [], "meta": {"code": "meltdown"}}, b""))
    assert isinstance(frame, ErrorFrame)
    assert frame.code is ErrorCode.INTERNAL and frame.message == "meltdown"


def test_zero_size_and_scalar_tensors() -> None:
    tensors: dict[str, np.ndarray] = {"empty": np.zeros((0, 3), np.float32), "scalar": np.array(5, np.int16)}
    frame = decode_frame(encode_result(tensors))
    assert isinstance(frame, ResultFrame)
    same_tensors(tensors, frame.tensors)


def test_encoder_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(WireError) as info:
        encode_request({"x": np.zeros(2, np.complex64)})
    assert info.value.code is ErrorCode.BAD_DTYPE
    with pytest.raises(WireError):
        encode_request({f"t{i}": np.zeros(1) for i in range(33)})


@pytest.mark.parametrize(
    ("fn", "payload"),
    [
        pytest.param(
            decode_frame,
            reframe(hdr([spec(shape=[0, 10**30], nbytes=0)]), b""),
            id="zero-size-shape-with-huge-dim",
        ),
        pytest.param(
            decode_command,
            b'{"type":"deploy","a":' * 2000,
            id="deeply-nested-control-json",
        ),
        pytest.param(
            decode_command,
            b'{"type":"\x80"}',
            id="invalid-utf8-type-tag",
        ),
    ],
)
def test_decoder_escapes_found_by_fuzzing_are_wire_errors(
    fn: Callable[[bytes], object], payload: bytes
) -> None:
    with pytest.raises(WireError):
        fn(payload)


# -- control messages: specific cases --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "payload", "code"),
    [
        (decode_command, b"", BAD),
        (decode_command, b"[]", BAD),
        (decode_command, b'{"type":"reboot","v":1}', BAD),
        (
            decode_command,
            b'{"type":"undeploy","v":1,"command_id":"c","device_id":"d","tenant":"Bad/Name"}',
            BAD,
        ),
        (
            decode_command,
            b'{"type":"undeploy","v":2,"command_id":"c","device_id":"d","tenant":"t"}',
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (decode_status, b'{"type":"death","v":1,"device_id":"d","reason":"exploded"}', BAD),
        (decode_op, b'{"type":"op.status","v":"1"}', BAD),
        (decode_op, b" " * (MAX_CONTROL_BYTES + 1), ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
def test_malformed_control_messages(fn: Callable[[bytes], object], payload: bytes, code: ErrorCode) -> None:
    with pytest.raises(WireError) as info:
        fn(payload)
    assert info.value.code is code


# -- topics -------------------------------------------------------------------------------------------------
@SETTINGS
@given(names, st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"))
def test_topics_round_trip(name: str, client: str) -> None:
    t = Topics("ef")
    assert t.parse(t.infer(name)) == ParsedTopic(TopicKind.INFER, name)
    assert t.parse(t.status(name)) == ParsedTopic(TopicKind.STATUS, name)
    assert t.parse(t.telemetry(name)) == ParsedTopic(TopicKind.TELEMETRY, name)
    assert t.parse(t.commands(name)) == ParsedTopic(TopicKind.COMMANDS, name)
    assert t.parse(t.acks(name)) == ParsedTopic(TopicKind.ACKS, name)
    assert t.parse(t.replies(client)) == ParsedTopic(TopicKind.REPLIES, client)
    assert t.parse(t.ops()) == ParsedTopic(TopicKind.OPS, "")
    assert t.parse(t.model()) == ParsedTopic(TopicKind.MODEL, "") and t.model() == "ef/v1/coordinator/model"
    assert t.infer_shared(name) == f"$share/ef-{name}/ef/v1/tenants/{name}/infer"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "ef",
        "ef/v1",
        "ef/v2/tenants/a/infer",
        "other/v1/tenants/a/infer",
        "ef/v1/tenants/A/infer",
        "ef/v1/tenants/a/b/infer",
        "ef/v1/tenants/+/infer",
        "ef/v1/devices/d/reboot",
        "ef/v1/clients/a b/replies",
        "ef/v1/coordinator/ops/x",
        "ef/v1/coordinator/model/x",
        "ef/v1/coordinator/models",
        "ef/v1/tenants//infer",
    ],
)
def test_topic_parse_refuses(topic: str) -> None:
    with pytest.raises(WireError) as info:
        Topics("ef").parse(topic)
    assert info.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("prefix", ["", "$sys", "a/+/b", "a//b", "#", "a\x00"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(WireError):
        Topics(prefix)


def test_arbitrary_text_tensor_names_survive() -> None:
    tensors = {"ünïcode/name with spaces": np.ones(1, np.uint8), '"quoted"': np.zeros(1, np.bool_)}
    frame = decode_frame(encode_request(tensors))
    assert isinstance(frame, RequestFrame)
    same_tensors(tensors, frame.tensors)


# -- docs/protocol.md shows real bytes and messages ------------------------------------------------------
PROTOCOL_MD = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_protocol_worked_example_is_what_the_encoder_writes() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    dump = re.search(r"```\n(0000  45 46 54 31.*?)```", text, re.S)
    assert dump, "hex dump not found in docs/protocol.md"
    documented = bytes.fromhex("".join(line[6:53] for line in dump.group(1).splitlines()))
    assert documented == encode_request({"x": np.array([[1.0, 2.0]], np.float32)}, timeout_ms=500)


def test_protocol_json_examples_decode() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.S)
    decoders: dict[str, Callable[[bytes], msgspec.Struct]] = {
        "birth": decode_status,
        "death": decode_status,
        "telemetry": decode_telemetry,
        "deploy": decode_command,
        "undeploy": decode_command,
        "configure": decode_command,
        "ack": decode_ack,
        "op.deploy": decode_op,
        "op.undeploy": decode_op,
        "op.migrate": decode_op,
        "op.plan": decode_op,
        "telemetry.ack": decode_to_device,
        "op.status": decode_op,
        "op.reply": lambda b: decode(b, OpReply),
        "model.report": decode_model_report,
        "stream.result": decode_stream_message,
        "stream.event": decode_stream_message,
        "stream.handover": decode_stream_message,
    }
    seen = set()
    for block in blocks:
        doc = json.loads(block) if block.lstrip().startswith('{"type"') else None
        if doc is None:
            continue
        decoded = decoders[doc["type"]](block.encode())
        assert json.loads(encode(decoded)) == {**doc, "v": 1}, doc["type"]  # every field shown, none invented
        seen.add(doc["type"])
    assert seen == set(decoders)


# -- the request header memo and the reply encoder -------------------------------------------------------
@SETTINGS
@given(tensor_maps, st.none() | st.floats(min_value=0.0, max_value=3.6e6))
def test_a_remembered_header_decodes_as_the_first_parse_did(
    tensors: dict[str, np.ndarray], timeout_ms: float | None
) -> None:
    payload = encode_request(tensors, timeout_ms=timeout_ms)
    first, again = decode_frame(payload), decode_frame(bytearray(payload))
    assert isinstance(first, RequestFrame) and isinstance(again, RequestFrame)
    same_tensors(first.tensors, again.tensors)
    assert (again.timeout_ms, again.min_fidelity, again.meta) == (first.timeout_ms, first.min_fidelity, first.meta)
    assert again.signature is not None and again.signature == first.signature


def test_a_remembered_header_still_checks_the_frame_length_and_meta_is_per_frame() -> None:
    payload = encode_request({"x": np.ones((2, 3), np.float32)}, timeout_ms=100.0, meta={"tag": "a"})
    frame = decode_frame(payload)
    assert isinstance(frame, RequestFrame)
    frame.meta["tag"] = "changed"  # a receiver editing its frame's meta changes no later frame
    again = decode_frame(payload)
    assert isinstance(again, RequestFrame) and again.meta["tag"] == "a"
    with pytest.raises(WireError, match="run past the frame") as info:  # the header is remembered now
        decode_frame(payload[:-8])  # 24 bytes of data, the header says 2*3*4
    assert info.value.code is ErrorCode.BAD_REQUEST


@SETTINGS
@given(tensor_maps, st.floats(min_value=0.0, max_value=1e6), st.integers(1, 64))
def test_encode_reply_writes_what_encode_result_writes(
    tensors: dict[str, np.ndarray], queue_ms: float, batch: int
) -> None:
    meta = {"device": "d-1", "tenant": "tenant é", "variant": "fp32", "queue_ms": round(queue_ms, 3),
            "service_ms": 0.25, "batch": batch}
    reply = encode_reply(tensors, json.dumps(meta, separators=(",", ":")))
    assert bytes(reply) == encode_result(tensors, meta)


@SETTINGS
@given(tensor_maps, st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=3), min_size=2, max_size=4))
def test_results_whose_headers_differ_in_meta_alone_decode_as_a_full_parse_would(
    tensors: dict[str, np.ndarray], metas: list[dict[str, Any]]
) -> None:
    for meta in metas:  # the first parse remembers the part before the meta; the others reuse it
        frame = decode_frame(encode_result(tensors, meta))
        assert isinstance(frame, ResultFrame) and frame.meta == meta
        same_tensors(tensors, frame.tensors)


def _raw_result(header: str, data: bytes) -> bytes:
    raw = header.encode()
    start = 8 + len(raw) + (-(8 + len(raw))) % 8
    return MAGIC + struct.pack("<I", len(raw)) + raw + b"\x00" * (start - 8 - len(raw)) + data


def test_a_remembered_result_prefix_never_hides_what_the_rest_of_the_header_says() -> None:
    spec = '{"name":"y","dtype":"float32","shape":[1],"offset":0,"nbytes":4}'
    data = np.float32(2.5).tobytes() + b"\x00" * 4
    decode_frame(_raw_result(f'{{"v":1,"kind":"result","tensors":[{spec}],"meta":{{"a":1}}}}', data))  # remembered
    # after the meta, another key: the full parse reads it as JSON does (the meta is still {"a": 2})
    extra = decode_frame(_raw_result(f'{{"v":1,"kind":"result","tensors":[{spec}],"meta":{{"a":2}},"x":3}}', data))
    assert isinstance(extra, ResultFrame) and extra.meta == {"a": 2} and extra.tensors["y"].tolist() == [2.5]
    # a meta that is not JSON is still reported as the full parse reports it
    with pytest.raises(WireError, match="not JSON"):
        decode_frame(_raw_result(f'{{"v":1,"kind":"result","tensors":[{spec}],"meta":{{"a":}}}}', data))
    # a "meta" key inside a tensor's entry is not taken for the header's
    odd = spec[:-1] + ',"q":[1],"meta":{}}'
    for _ in range(2):
        frame = decode_frame(_raw_result(f'{{"v":1,"kind":"result","tensors":[{odd}],"meta":{{"z":1}}}}', data))
        assert isinstance(frame, ResultFrame) and frame.meta == {"z": 1}
    # the frame must still hold the tensors' bytes
    with pytest.raises(WireError, match="run past the frame"):
        decode_frame(_raw_result(f'{{"v":1,"kind":"result","tensors":[{spec}],"meta":{{"a":3}}}}', b""))

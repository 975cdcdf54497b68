"""Fuzzing every inbound handler: the wire decoders, the agent, the coordinator and the SDK.

Payloads are malformed, truncated, bit-flipped, oversized or type-confused (valid JSON with wrong types,
huge numbers, deep nesting, huge strings, unknown tags, wrong versions; EFT1 frames with lying lengths,
huge dimensions, unknown dtypes, negative sizes), and topic names are odd, long or unknown. The rules
checked: only the documented error type comes out of a decoder, nothing allocates what a header merely
claims, no handler raises, every requester who said where to answer gets exactly one clear error, and the
processes keep serving with bounded memory. Model names from messages never leave the model directory and
a model file whose sha256 differs from the catalog is never opened.

The same seeded generators feed the Hypothesis properties (through ``st.randoms``) and the broker run.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import random
import shutil
import struct
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from edgefleet.agent.config import AgentConfig
from edgefleet.agent.host import DeployError, LocalModels, ModelHost, ZooResolver
from edgefleet.agent.service import Agent
from edgefleet.bench.mlp import build_mlp
from edgefleet.broker import PrivateBroker
from edgefleet.cli.opsclient import call_ops
from edgefleet.coordinator import Coordinator
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.runtime import SessionOptions
from edgefleet.sdk import InferenceClient, InferenceError, NoReply
from edgefleet.sdk._core import parse_reply
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    Closed,
    Configure,
    Death,
    Deploy,
    DeviceWindow,
    ErrorCode,
    ErrorFrame,
    FleetStatus,
    ModelReport,
    OpDeploy,
    OpMigrate,
    OpPlan,
    OpReply,
    OpStatus,
    OpUndeploy,
    Periodic,
    Poisson,
    RequestFrame,
    ResultFrame,
    ServiceProfile,
    Telemetry,
    TelemetryAck,
    TenantModelError,
    TenantSpec,
    TenantWindow,
    Topics,
    Undeploy,
    WireError,
    decode_command,
    decode_frame,
    decode_model_report,
    decode_op,
    decode_status,
    decode_to_device,
    encode,
    encode_error,
    encode_request,
    encode_result,
    validate_device_id,
    validate_tenant_name,
)
from edgefleet.wire.codec import MAX_CONTROL_BYTES, decode_ack, decode_reply, decode_telemetry
from edgefleet.wire.tensors import MAGIC, MAX_HEADER_BYTES
from edgefleet.zoo import ModelIntegrityError, ModelNotFound, data_dir, model_path
from tests.fleetkit import Watcher, wait_for
from tests.test_coordinator_broker import FakeAgent, make_config

MiB = 1 << 20
DEVICE = "dev-a"  # the in-process agent
FUZZ_DEVICE = "fz-1"  # the device the fuzzed control messages claim to come from (never a real one)

# ---------------------------------------------------------------------------------------------------
# Generators. Each takes a random.Random, so Hypothesis (st.randoms) and the broker run share them.
# ---------------------------------------------------------------------------------------------------
_CAPS = Capabilities(device_kind="fuzz", runtimes=["onnxruntime"], accelerators=["cpu"], cpu_count=2,
                     memory_total_bytes=1 << 30, memory_budget_bytes=1 << 28, max_payload_bytes=1 << 20,
                     cached_models=["vad:fp32"])
_WINDOW = TenantWindow(tenant="fz-t", model="vad", variant="fp32", slo_ms=50.0, arrivals=3, completions=2,
                       errors=1, service_ms_by_batch={1: 2.5, 4: 6.0}, batches_by_size={1: 2},
                       colocated=["other"])
_SPEC = TenantSpec(name="fz-t", model="vad", slo_ms=50.0)

# Valid encodings of every control message, by the channel that receives them. Fuzzing cannot turn them
# against the tenant the agent serves: the commands name a model the agent cannot load or a tenant nobody
# hosts, and no mutation below writes the serving tenant's name or a model the agent has.
CONTROL: dict[str, list[bytes]] = {
    "status": [
        encode(Birth(device_id=FUZZ_DEVICE, boot_id="b1", capabilities=_CAPS, tenants=[], agent_version="0",
                     ts=1.0)),
        encode(Death(device_id=FUZZ_DEVICE, reason="lost", boot_id="b1", ts=2.0)),
    ],
    "telemetry": [
        encode(Telemetry(device_id=FUZZ_DEVICE, boot_id="b1", seq=3, window_start=1.0, window_end=2.0,
                         device=DeviceWindow(cpu_percent=5.0, memory_used_bytes=1, memory_budget_bytes=2,
                                             model_memory_bytes=3, gpu_percent=1.0),
                         tenants=[_WINDOW])),
    ],
    "acks": [
        encode(Ack(command_id="c-1", device_id=FUZZ_DEVICE, ok=True, result="applied", ts=1.0)),
        encode(Ack(command_id="c-2", device_id=FUZZ_DEVICE, ok=False, result="failed", code="no_memory",
                   message="full")),
        encode(Ack(command_id="c-3", device_id=FUZZ_DEVICE, ok=True, result="applied", ts=1.0,
                   profile=ServiceProfile(model="vad", variant="int8", ms_by_batch={1: 0.25, 8: 0.8}))),
    ],
    "ops": [
        encode(OpDeploy(tenant=_SPEC)),
        encode(OpDeploy(tenant=_SPEC, device_id=FUZZ_DEVICE)),
        encode(OpUndeploy(tenant="fz-t")),
        encode(OpStatus()),
        encode(OpMigrate(tenant="fz-t", device_id=FUZZ_DEVICE)),
        encode(OpPlan(tenant=_SPEC, rate_rps=20.0)),
        # declared demand kinds (the performance model's prior)
        encode(OpDeploy(tenant=TenantSpec(name="fz-t", model="vad", slo_ms=50.0, demand=Poisson(rate_rps=20.0)))),
        encode(OpPlan(tenant=TenantSpec(name="fz-t", model="vad", slo_ms=50.0,
                                        demand=Periodic(fps=30.0, jitter_ms=2.0)))),
        encode(OpDeploy(tenant=TenantSpec(name="fz-t", model="vad", slo_ms=50.0,
                                          demand=Closed(in_flight=2, think_ms=5.0)))),
    ],
    "commands": [
        encode(Deploy(command_id="c-1", device_id=DEVICE,
                      tenant=TenantSpec(name="fz-t", model="no-such-model", slo_ms=5.0))),
        encode(Deploy(command_id="c-2", device_id="other", tenant=_SPEC)),
        encode(Undeploy(command_id="c-3", device_id=DEVICE, tenant="ghost")),
        encode(Deploy(command_id="c-5", device_id=DEVICE,
                      tenant=TenantSpec(name="fz-t", model="no-such-model", slo_ms=5.0, demand=Closed(in_flight=1)))),
        encode(Configure(command_id="c-4", device_id=DEVICE,
                         tenant=TenantSpec(name="ghost", model="no-such-model", slo_ms=5.0, max_batch=16))),
        encode(TelemetryAck(device_id=DEVICE, boot_id="old-boot", seqs=[1, 2, 3])),
    ],
}
# What the coordinator publishes for operators: the model report (retained) and op.status carrying it.
_REPORT = ModelReport(tenants=[TenantModelError(tenant="fz-t", device_id=FUZZ_DEVICE, device_kind="x86-cpu",
                                                model="vad", variant="fp32", predicted_p95_ms=2.5,
                                                observed_p95_ms=3.0, arrival_rps=20.0, ape_ratio=0.17,
                                                bias_ratio=-0.17, windows=4)],
                      mean_ape_ratio=0.17, ts=1.0)
REPORTS = [encode(_REPORT), encode(ModelReport(tenants=[], ts=2.0))]
REPLIES = [encode(OpReply(ok=False, code="conflict", message="m", device_id="d")),
           encode(OpReply(ok=True, status=FleetStatus(devices=[], tenants=[], ts=1.0, model=_REPORT)))]
ALL_CONTROL = [p for ps in CONTROL.values() for p in ps] + REPLIES + REPORTS
TAGS = ["birth", "death", "telemetry", "deploy", "undeploy", "telemetry.ack", "ack", "op.deploy",
        "op.undeploy", "op.status", "op.migrate", "op.plan", "op.reply", "model.report", "op.nuke", "", "DEPLOY"]
_DEEP = "\x00deep\x00"  # placeholder replaced by deeply nested JSON after serialising


def nasty_value(rng: random.Random) -> Any:
    """A JSON value of a random wrong kind: huge, tiny, deep, long, odd text, or an odd container."""
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice([None, True, False, 0, -1, 1, 1.5, -0.0, 1e308, -1e308, 5e-324])
    if choice == 1:
        return rng.choice([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30)])
    if choice == 2:
        return rng.choice(["", " ", "\x00", "fz-1\n", "../../etc/passwd", "/abs", "a/+/#", "$SYS", "é" * 50, "\u202e",
                           "\U0001f4a5", "\\", "\"'", "NaN", "1", "true", "null"])
    if choice == 3:
        return "x" * rng.choice([64, 257, 4096, 70_000])
    if choice == 4:
        return _DEEP
    if choice == 5:
        return [nasty_value(rng) for _ in range(rng.randrange(4))]
    if choice == 6:
        return {rng.choice(["type", "v", "x", "", "device_id"]): nasty_value(rng) for _ in range(rng.randrange(3))}
    if choice == 7:
        return rng.choice(TAGS)
    if choice == 8:
        return list(range(rng.choice([100, 10_001, 20_000])))
    if choice == 9:
        return {str(i): i for i in range(rng.choice([10, 1000]))}
    if choice == 10:
        return rng.uniform(-1e9, 1e9)
    return rng.randrange(-(2**70), 2**70)


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*here, i))


def _dumps(doc: Any, rng: random.Random) -> bytes:
    raw = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    if b"\\u0000deep\\u0000" in raw:  # json.dumps always escapes NUL
        depth = rng.choice([50, 2000, 20_000, 100_000])
        opener = rng.choice([b"[", b'{"a":'])
        closer = b"]" if opener == b"[" else b"}"
        raw = raw.replace(b'"\\u0000deep\\u0000"', opener * depth + b"1" + closer * depth)
    return raw


def mutate_json(base: bytes, rng: random.Random) -> bytes:
    """Valid JSON of the wrong shape: a value swapped, a field dropped or added, the tag or version changed."""
    doc = json.loads(base)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        op = rng.randrange(5)
        if not path or op == 0:  # the whole document, or its tag / version
            if isinstance(doc, dict) and rng.random() < 0.7:
                doc[rng.choice(["type", "v"])] = rng.choice([*TAGS, 0, 2, "1", 1.0, True, 2**64, None])
            else:
                doc = nasty_value(rng)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == 1 and isinstance(parent, dict):
            del parent[key]
        elif op == 2 and isinstance(parent, dict):
            parent[rng.choice(["extra", "v", "type", "device_id", "tenant"])] = nasty_value(rng)
        else:
            parent[key] = nasty_value(rng)
    return _dumps(doc, rng)


EXTREME_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30, 10**400]
EXTREME_FLOATS = [0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 9.3e18, -1.0]


def extreme_like(value: Any, rng: random.Random) -> Any:
    """A value of the same JSON type as ``value`` that the schema may accept, at an extreme."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([*EXTREME_INTS, rng.randrange(-(2**70), 2**70)])
    if isinstance(value, float):
        return rng.choice([*EXTREME_FLOATS, rng.uniform(-1e15, 1e15)])
    if isinstance(value, str):
        return rng.choice([value, value + "-x", "fz-" + uuid.UUID(int=rng.getrandbits(128)).hex, "a" * 63,
                           "a" * 64, "", "x" * 2000, "é", FUZZ_DEVICE, DEVICE, "ghost", "ghost\n", DEVICE + "\n"])
    if isinstance(value, list):
        return value * rng.choice([0, 2, 100]) if value else [rng.choice(EXTREME_INTS)]
    if isinstance(value, dict):
        return {rng.choice(["1", "-5", "0", "99999999999999999999", "x"]): v for v in value.values()}
    return rng.choice([0, 1.5, "s", None])


def mutate_typed(base: bytes, rng: random.Random) -> bytes:
    """The same message with a few values swapped for extreme values of the same type."""
    doc = json.loads(base)
    for _ in range(rng.randint(1, 4)):
        path = rng.choice([p for p in _paths(doc) if p and p[-1] not in ("type", "v")] or [()])
        if not path:
            break
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = extreme_like(parent[path[-1]], rng)
    return _dumps(doc, rng)


RAW_CONTROL = [
    b"", b" ", b"null", b"[]", b"{}", b'"deploy"', b"1e999", b"-", b"{" * 100_000, b"[" * 200_000,
    b'{"type":"deploy","type":"ack"}', b"\xef\xbb\xbf{}", '{"type":"ack"}'.encode("utf-16"),
    b'{"type":"death","v":1,"device_id":"fz-1","reason":"lost"} trailing', b'{"type":"\xff"}',
    b'{"type":"death","v":1,"device_id":"fz-1","reason":"lost","boot_id":"\\ud800"}',
    b'{"type":"telemetry.ack","v":1,"device_id":"dev-a","boot_id":"b","seqs":[' + b"1," * 20_000 + b"1]}",
]


def fuzz_bits(base: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: truncation, bit flips, inserted or deleted bytes."""
    buf = bytearray(base)
    op = rng.randrange(4)
    if op == 0 or not buf:
        return bytes(buf[: rng.randrange(len(buf) + 1)])
    if op == 1:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif op == 2:
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = rng.randbytes(rng.randint(1, 16))
    else:
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randint(1, 16)]
    return bytes(buf)


def fuzz_control(base: bytes, rng: random.Random) -> bytes:
    """One fuzzed control message derived from ``base`` (a valid encoding). Oversized ones are sent apart."""
    r = rng.random()
    if r < 0.08:
        return rng.randbytes(rng.choice([0, 1, 7, 64, 512]))
    if r < 0.13:
        return rng.choice(RAW_CONTROL)
    if r < 0.45:
        return fuzz_bits(base, rng)
    if r < 0.75:
        return mutate_typed(base, rng)
    return mutate_json(base, rng)


# -- EFT1 frames ----------------------------------------------------------------------------------------
def _frame(header: Any, data: bytes, *, hlen: int | None = None, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    head = MAGIC + struct.pack("<I", len(text) if hlen is None else hlen) + text
    return head + b"\x00" * ((-len(head)) % 8) + data


def _split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    (hlen,) = struct.unpack_from("<I", payload, 4)
    start = 8 + hlen + (-(8 + hlen)) % 8
    return json.loads(payload[8 : 8 + hlen]), payload[start:]


def base_frames(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    x = np.random.default_rng(rng.randrange(1 << 30)).random((rng.randint(1, 3), 784), dtype=np.float32)
    if choice == 0:
        return encode_request({"x": x}, timeout_ms=rng.choice([50.0, 2000.0]))
    if choice == 1:
        return encode_request({"x": x}, min_fidelity=0.5, meta={"trace": "t"})
    if choice == 2:
        return encode_request({"x": x.astype(np.float64), "y": np.arange(3, dtype=np.int8)})
    if choice == 3:
        return encode_result({"probs": x[:, :10], "idx": np.arange(2, dtype=np.int64)}, {"device": "d"})
    if choice == 4:
        return encode_error(rng.choice(list(ErrorCode)), "m", {"device": "d"})
    return encode_request({"s": np.array(3, np.uint8), "e": np.zeros((0, 5), np.bool_)})


HUGE_SHAPES: list[list[Any]] = [
    [10**6, 10**6],  # 10^12 elements
    [2**31 - 1] * 8,
    [0, 2**31 - 1],
    [2**31],
    [-1, 784],
    [1, -784],
    [1.5],
    ["1"],
    [True, 784],
    [None],
    [1] * 9,
    [],
]
BAD_DTYPES: list[Any] = ["complex128", "float8", "<f4", ">f4", "object", "str", "", "FLOAT32", "float32 ",
                         None, 4, ["float32"], "x" * 10_000, "é" * 20_000]


def mutate_frame_header(payload: bytes, rng: random.Random) -> bytes:
    """A frame whose header lies: sizes, shapes, dtypes, names, kinds, versions or meta of the wrong kind."""
    header, data = _split(payload)
    specs = header.get("tensors") or [{"name": "x", "dtype": "float32", "shape": [1], "offset": 0, "nbytes": 4}]
    header["tensors"] = specs
    spec = rng.choice(specs)
    op = rng.randrange(12)
    if op == 0:
        shape = rng.choice(HUGE_SHAPES)
        spec["shape"] = shape
        ints = [d for d in shape if isinstance(d, int) and not isinstance(d, bool)]
        size = 1
        for d in ints:
            size *= d
        spec["nbytes"] = rng.choice([size * 4, size, len(data), -1])  # matching the claim, or not
    elif op == 1:
        spec[rng.choice(["nbytes", "offset"])] = rng.choice([-1, -(2**63), 2**63, 2**64, 10**30, 4.0, "8", None,
                                                            True, len(data) + 8])
    elif op == 2:
        spec["dtype"] = rng.choice(BAD_DTYPES)
    elif op == 3:
        spec["name"] = rng.choice(["", None, 7, "n" * 257, "é" * 30_000, "x"])
        if rng.random() < 0.5:
            specs.append(dict(spec))
    elif op == 4:
        header["tensors"] = rng.choice([{}, "x", None, 3, [1, 2], [dict(spec) | {"name": f"t{i}"} for i in range(40)]])
    elif op == 5:
        header["v"] = rng.choice([0, 2, "1", 1.0, True, None, 2**64, [1], "é" * 30_000])
    elif op == 6:
        header["kind"] = rng.choice(["query", "", None, 1, ["request"], "k" * 60_000, "é" * 30_000])
    elif op == 7:
        meta = header.setdefault("meta", {})
        if not isinstance(meta, dict):
            header["meta"] = meta = {}
        meta[rng.choice(["timeout_ms", "min_fidelity", "code", "message"])] = rng.choice(
            [-1, 1e308, 2**64, "100", "é" * 30_000, "t" * 60_000, None, True, [1], {"a": 1}, _DEEP]
        )
    elif op == 8:
        header["meta"] = rng.choice([[], "m", 1, None, _DEEP, {"k": "v" * 60_000}])
    elif op == 9:
        header = rng.choice([[], "h", 1, None, _DEEP])
    elif op == 10:
        data = data[: rng.randrange(len(data) + 1)]
    else:
        header[rng.choice(["extra", "tensors", "meta"])] = nasty_value(rng)
    raw = _dumps(header, rng)
    if rng.random() < 0.2:
        return _frame(None, data, raw=raw, hlen=rng.choice([0, 1, len(raw) - 1, len(raw) + 1, 2**32 - 1,
                                                            MAX_HEADER_BYTES + 1]))
    return _frame(None, data, raw=raw)


def fuzz_frame(rng: random.Random) -> bytes:
    """One fuzzed EFT1 payload (rarely a valid one: a bit flip in tensor data keeps a frame valid)."""
    r = rng.random()
    if r < 0.06:
        return rng.randbytes(rng.choice([0, 3, 8, 64, 512]))
    if r < 0.12:
        return MAGIC + rng.randbytes(rng.choice([0, 4, 64]))
    if r < 0.16:
        return rng.choice([b"EFT2" + b"\x02\x00\x00\x00{}", b"EFT1\xff\xff\xff\xff", b"{}", b"\x00" * 8])
    base = base_frames(rng)
    if r < 0.30:
        return fuzz_bits(base, rng)
    if r < 0.38:
        buf = bytearray(base)
        struct.pack_into("<I", buf, 4, rng.choice([0, 1, 2**31, 2**32 - 1, MAX_HEADER_BYTES + 1, len(buf)]))
        return bytes(buf)
    return mutate_frame_header(base, rng)


HYPOTHESIS = settings(max_examples=300, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CONTROL_DECODERS: list[Callable[[bytes], object]] = [decode_status, decode_telemetry, decode_to_device,
                                                     decode_command, decode_ack, decode_op, decode_reply,
                                                     decode_model_report]


INT64 = range(-(2**63), 2**63)


def ints_in(value: Any) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from ints_in(k)
            yield from ints_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from ints_in(v)


def only_wire_errors(fn: Callable[[bytes], object], payload: bytes) -> None:
    """``fn`` decodes ``payload`` into something every handler can store, or raises WireError."""
    try:
        msg = fn(payload)
    except WireError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        return
    # anything but WireError propagates and fails the test
    if isinstance(msg, msgspec.Struct):
        assert all(i in INT64 for i in ints_in(msgspec.to_builtins(msg))), msg


# ---------------------------------------------------------------------------------------------------
# 1. Pure properties: every decoder raises only WireError, and nothing is allocated on a header's word.
# ---------------------------------------------------------------------------------------------------
@HYPOTHESIS
@given(st.sampled_from(ALL_CONTROL), st.randoms(use_true_random=False))
def test_control_decoders_raise_only_wire_errors(base: bytes, rng: random.Random) -> None:
    payload = fuzz_control(base, rng)
    for fn in CONTROL_DECODERS:
        only_wire_errors(fn, payload)


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=2048))
def test_control_decoders_on_arbitrary_bytes(payload: bytes) -> None:
    for fn in CONTROL_DECODERS:
        only_wire_errors(fn, payload)


@pytest.mark.parametrize("payload", RAW_CONTROL, ids=range(len(RAW_CONTROL)))
def test_control_decoders_on_crafted_payloads(payload: bytes) -> None:
    for fn in CONTROL_DECODERS:
        only_wire_errors(fn, payload)


def test_oversized_control_messages_are_refused_before_parsing() -> None:
    big = b'{"type":"op.status","v":1,"pad":"' + b"x" * MAX_CONTROL_BYTES + b'"}'
    for fn in CONTROL_DECODERS:
        with pytest.raises(WireError) as info:
            fn(big)
        assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE


@HYPOTHESIS
@given(st.randoms(use_true_random=False))
def test_frame_decoder_raises_only_wire_errors(rng: random.Random) -> None:
    only_wire_errors(decode_frame, fuzz_frame(rng))


def _reply(payload: bytes, corr: bytes | None = b"c") -> Inbound:
    return Inbound(topic="t/v1/clients/c/replies", payload=payload, qos=1, retain=False, correlation_data=corr)


@HYPOTHESIS
@given(st.randoms(use_true_random=False))
def test_sdk_reply_parsing_raises_only_inference_errors(rng: random.Random) -> None:
    try:
        result = parse_reply(_reply(fuzz_frame(rng)), "fz", time.monotonic())
    except InferenceError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
    else:
        assert isinstance(result.outputs, dict)


def test_integers_past_64_bits_are_refused_in_every_control_message() -> None:
    topics, ctopics = Topics("a"), Topics("c")
    crafted = crafted_extremes(topics, ctopics)
    decoders = {"status": decode_status, "telemetry": decode_telemetry, "commands": decode_to_device}
    for topic, payload in crafted:
        channel = topic.rsplit("/", 1)[-1]
        if b"9223372036854775807" in payload:  # 2^63 - 1, the largest value that fits
            decoders[channel](payload)
            continue
        with pytest.raises(WireError) as info:
            decoders[channel](payload)
        assert info.value.code is ErrorCode.BAD_REQUEST and "<= 9223372036854775807" in info.value.message


@pytest.mark.parametrize("name", ["digits\n", "digits\r", "dig\nits", "digits\t", "digits\x00", "digits ",
                                  "Digits", "digits/x", "+", "#", ""])
def test_names_that_cannot_be_topic_segments_are_refused(name: str) -> None:
    """re.match lets '$' match before a trailing newline. Such a name, accepted, would reach the broker in a
    topic, and the broker disconnects the client that subscribes to it, again after every reconnect."""
    for check in (validate_tenant_name, validate_device_id):
        with pytest.raises(WireError):
            check(name)
    with pytest.raises(WireError):
        Topics("t").infer(name)
    with pytest.raises(ValueError, match="invalid tenant name"):
        TenantSpec(name=name, model="mlp", slo_ms=5.0)
    undeploy = {"type": "undeploy", "v": 1, "command_id": "c", "device_id": DEVICE, "tenant": name}
    with pytest.raises(WireError):
        decode_command(json.dumps(undeploy).encode())
    birth = json.loads(CONTROL["status"][0])
    birth["device_id"] = name
    with pytest.raises(WireError):
        decode_status(json.dumps(birth).encode())


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [([10**6, 10**6], "float32"), ([2**31 - 1] * 8, "float64"), ([10**4] * 3, "uint8"), ([2**31 - 1, 1], "bool")],
)
def test_a_frame_claiming_a_huge_tensor_is_refused_without_allocating(shape: list[int], dtype: str) -> None:
    size = int(np.prod(np.array(shape, dtype=object))) * np.dtype(dtype).itemsize
    payloads = [
        _frame({"v": 1, "kind": kind, "tensors": [{"name": "x", "dtype": dtype, "shape": shape, "offset": 0,
                                                  "nbytes": nbytes}], "meta": {}}, b"\x00" * 64)
        for kind in ("request", "result")
        for nbytes in (size, 64, -size)
    ]
    tracemalloc.start()
    try:
        for payload in payloads:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            with pytest.raises(WireError) as info:
                decode_frame(payload)
            assert info.value.code in (ErrorCode.BAD_SHAPE, ErrorCode.BAD_REQUEST)
            with pytest.raises(InferenceError):
                parse_reply(_reply(payload), "fz", time.monotonic())
            assert tracemalloc.get_traced_memory()[1] - before < 256 * 1024  # a few copies of the frame at most
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "header",
    [
        b"[" * 60_000,
        b'{"v":1,"kind":"request","tensors":[],"meta":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001,
        b'{"v":1,"kind":"error","tensors":[],"meta":{"code":"internal","message":' + b"[" * 20_000 + b"]" * 20_000
        + b"}}",
    ],
    ids=["list", "meta", "error-message"],
)
def test_deeply_nested_frame_headers_are_wire_errors(header: bytes) -> None:
    assert len(header) <= MAX_HEADER_BYTES  # within the size limit: refused for its depth
    payload = _frame(None, b"", raw=header)
    with pytest.raises(WireError) as info:
        decode_frame(payload)
    assert info.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(InferenceError):
        parse_reply(_reply(payload), "fz", time.monotonic())


@pytest.mark.parametrize("field", ["timeout_ms", "dtype", "kind", "v"])
def test_an_error_about_a_huge_field_can_still_be_answered(field: str) -> None:
    """The error a device sends back echoes the offending value; it must stay encodable however long it is."""
    tensor = {"name": "x", "dtype": "float32", "shape": [1], "offset": 0, "nbytes": 4}
    header: dict[str, Any] = {"v": 1, "kind": "request", "tensors": [tensor], "meta": {}}
    long = "é" * 25_000  # 50 kB of UTF-8 in the header; six times that once escaped in a reply
    if field == "timeout_ms":
        header["meta"]["timeout_ms"] = long
    elif field == "dtype":
        tensor["dtype"] = long
    else:
        header[field] = long
    payload = _frame(None, b"\x00" * 8, raw=json.dumps(header, ensure_ascii=False).encode())
    assert len(payload) < 64 * 1024
    with pytest.raises(WireError) as info:
        decode_frame(payload)
    reply = decode_frame(encode_error(info.value.code, info.value.message))
    assert isinstance(reply, ErrorFrame) and reply.code is info.value.code and reply.message


def test_sdk_reply_parsing_of_every_error_code_and_odd_error_frames() -> None:
    for code in ErrorCode:
        with pytest.raises(InferenceError) as info:
            parse_reply(_reply(encode_error(code, "why")), "fz", time.monotonic())
        assert info.value.code is code and info.value.message == "why"
    odd = [{"code": [1]}, {"code": {"a": 1}}, {"code": None}, {"code": 2**64}, {"message": ["m"]}, {}]
    for meta in odd:
        payload = _frame({"v": 1, "kind": "error", "tensors": [], "meta": meta}, b"")
        with pytest.raises(InferenceError) as info:
            parse_reply(_reply(payload), "fz", time.monotonic())
        assert info.value.code is ErrorCode.INTERNAL
    request = encode_request({"x": np.zeros((1, 2), np.float32)})
    with pytest.raises(InferenceError):
        parse_reply(_reply(request), "fz", time.monotonic())


# ---------------------------------------------------------------------------------------------------
# 2. Through the real broker: a running agent, coordinator and SDK client under ~11k fuzzed messages.
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture(scope="module")
def tampered_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with this machine's catalog and ocr-cls's fp32 file with one byte changed."""
    src = data_dir()
    if not (src / "catalog.json").is_file():
        pytest.skip("the model zoo is not fetched (make zoo)")
    root = tmp_path_factory.mktemp("zoo")
    shutil.copy(src / "catalog.json", root / "catalog.json")
    (root / "models" / "ocr-cls").mkdir(parents=True)
    model = root / "models" / "ocr-cls" / "fp32.onnx"
    shutil.copy(src / "models" / "ocr-cls" / "fp32.onnx", model)
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    model.write_bytes(bytes(blob))
    return root


def start_agent(settings: MqttSettings, topics: Topics, state: Path, mlp: Path, zoo: Path) -> Agent:
    cfg = AgentConfig(device_id=DEVICE, state_dir=state, mqtt=settings, prefix=topics.prefix, data_dir=zoo,
                      telemetry_period_s=0.5, workers=2, max_payload_bytes=MiB)
    agent = Agent(cfg, local_models=LocalModels({"mlp": mlp}))
    agent.start()
    assert agent.wait_connected(10)
    return agent


class Replies:
    """Counts the replies arriving on one topic by correlation data, and what each one was."""

    def __init__(self, settings: MqttSettings, topic: str, classify: Callable[[bytes], str]) -> None:
        self.topic = topic
        self.classify = classify
        self.count: dict[bytes | None, int] = {}
        self.kind: dict[bytes | None, str] = {}
        self._lock = threading.Lock()
        self.link = MqttLink(settings, client_id=f"replies-{uuid.uuid4().hex[:8]}")
        self.link.subscribe(topic, self._on, qos=1)
        self.link.start()
        assert self.link.wait_connected(10)

    def _on(self, msg: Inbound) -> None:
        kind = self.classify(msg.payload)
        with self._lock:
            key = msg.correlation_data
            self.count[key] = self.count.get(key, 0) + 1
            self.kind[key] = kind

    def close(self) -> None:
        self.link.stop()


def frame_kind(payload: bytes) -> str:
    try:
        frame = decode_frame(payload)
    except WireError:
        return "undecodable"
    if isinstance(frame, ErrorFrame):
        return f"error:{frame.code.value}" if frame.message else "error-without-message"
    return "result" if isinstance(frame, ResultFrame) else "request"


def op_kind(payload: bytes) -> str:
    try:
        reply = decode_reply(payload)
    except WireError:
        return "undecodable"
    return "ok" if reply.ok else f"error:{reply.code}" if reply.message else "error-without-message"


def serves_digits(payload: bytes) -> bool:
    """Whether the agent could run this request on the mlp (else it must answer with an error)."""
    if len(payload) > MiB:
        return False
    try:
        frame = decode_frame(payload)
    except WireError:
        return False
    if not isinstance(frame, RequestFrame) or set(frame.tensors) != {"x"}:
        return False
    x = frame.tensors["x"]
    return x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 784


WEIRD_SEGMENTS = ["BAD ID", "UPPER", "a" * 64, "x" * 5000, "дев", "..", ".", "$x", "-lead", "é",
                  "", "\u202eevil", "\U0001f4a5", "fz-1 ", "%2e%2e", "'", '"', "\\", "a,b", "null"]
ODD_RESPONSE_TOPICS = ["r/+", "r/#", "+", "#/x", "$SYS/x", "x" * 60_000, "é/ö", "/", "a//b"]


@dataclasses.dataclass
class FuzzPlan:
    """How many messages of each kind one run publishes."""

    infer_counted: int = 3000  # to the hosted tenant, with this test's inbox and unique correlation data
    infer_no_reply_topic: int = 500
    infer_odd_reply: int = 200  # response topics with wildcards, huge or odd; no correlation data on half
    infer_oversized: int = 60  # over the agent's 1 MiB limit (1 to 2 MiB)
    commands: int = 1800
    status: int = 900
    telemetry: int = 900
    acks: int = 900
    ops_counted: int = 900  # with a usable response topic and unique correlation data
    ops_other: int = 300  # no response topic, or an unusable one
    control_oversized: int = 40  # over 1 MiB, to every channel of the coordinator and the agent's commands
    odd_topics: int = 600  # odd device segments under the coordinator's filters, unknown tenants, stray levels
    direct_topics: int = 300  # odd topic names straight into the agent's request handler (not via the broker)
    sdk_calls: int = 300  # SDK calls, each answered with one fuzzed frame
    sdk_inbox_garbage: int = 200  # garbage on the SDK client's inbox, with and without correlation data

    @property
    def through_broker(self) -> int:
        return sum(dataclasses.asdict(self).values()) - self.direct_topics


class Fuzzer:
    """Publishes fuzzed messages through one MQTT link, mostly QoS 0, and counts them.

    It never runs more than ``window`` messages ahead of what the receivers have handled (``backlog``):
    a receiver that falls far behind has its broker's PINGRESP queued behind megabytes of messages and its
    client gives up on the connection after the keep-alive, which would make the run depend on timing.
    """

    def __init__(self, settings: MqttSettings, seed: int, window: int = 400) -> None:
        self.rng = random.Random(seed)
        self.link = MqttLink(settings, client_id=f"fuzzer-{uuid.uuid4().hex[:8]}")
        self.link.start()
        assert self.link.wait_connected(10)
        self.window = window
        self.backlog: Callable[[], int] = lambda: 0
        self.published = 0
        self.bytes = 0
        self._qos1: list[Any] = []

    def qos(self) -> int:
        return 1 if self.rng.random() < 0.2 else 0

    def publish(self, topic: str, payload: bytes, *, qos: int | None = None, **props: Any) -> None:
        q = self.qos() if qos is None else qos
        info = self.link.publish(topic, payload, qos=q, **props)
        self.published += 1
        self.bytes += len(payload)
        if q:
            self._qos1.append(info)
        if self.published % (self.window // 2) == 0:
            self.flush()
            wait_for(lambda: self.backlog() <= self.window, 60, "the receivers to catch up")

    def flush(self) -> None:
        for info in self._qos1:
            info.wait_for_publish(30)
        self._qos1.clear()
        marker = self.link.publish("fuzz/flush", b"", qos=1)  # QoS 0 messages before it are written too
        marker.wait_for_publish(30)

    def close(self) -> None:
        self.flush()
        self.link.stop()


def rss() -> int:
    """Resident memory after returning what the allocators hold free (glibc keeps freed blocks of big,
    short-lived payloads in per-thread arenas; that is reuse, not growth)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


def crafted_extremes(topics: Topics, ctopics: Topics) -> list[tuple[str, bytes]]:
    """Messages that follow the schema's types but carry integers no SQLite column or size arithmetic
    holds. Were they decoded, a birth claiming a 10^400-byte budget would make every later placement fail,
    and telemetry or a telemetry.ack with a number past 2^63 would raise in the handler that stores it."""
    birth = json.loads(CONTROL["status"][0])
    window = json.loads(CONTROL["telemetry"][0])
    out: list[tuple[str, bytes]] = []

    def variant(doc: dict[str, Any], *path: Any, value: Any) -> bytes:
        copy = json.loads(json.dumps(doc))
        node = copy
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return json.dumps(copy).encode()

    out.append((ctopics.status(FUZZ_DEVICE), variant(birth, "capabilities", "memory_budget_bytes",
                                                     value=2**63 - 1)))  # the largest, and valid
    for value in (2**63, 2**64, 10**400):  # the last birth seen is the one placement uses next
        out.append((ctopics.status(FUZZ_DEVICE), variant(birth, "capabilities", "cpu_count", value=value)))
        out.append((ctopics.telemetry(FUZZ_DEVICE), variant(window, "seq", value=value)))
        out.append((ctopics.telemetry(FUZZ_DEVICE), variant(window, "device", "model_memory_bytes", value=value)))
        out.append((ctopics.telemetry(FUZZ_DEVICE), variant(window, "tenants", 0, "errors", value=value)))
        out.append((ctopics.telemetry(FUZZ_DEVICE), variant(window, "tenants", 0, "batches_by_size",
                                                            value={str(value): 1})))
        ack = {"type": "telemetry.ack", "v": 1, "device_id": DEVICE, "boot_id": "b", "seqs": [1, value]}
        out.append((topics.commands(DEVICE), json.dumps(ack).encode()))
        out.append((ctopics.status(FUZZ_DEVICE), variant(birth, "capabilities", "memory_budget_bytes", value=value)))
    return out


def run_fleet_fuzz(plan: FuzzPlan, *, seed: int, settings: MqttSettings, prefix: str, tmp_path: Path,
                   mlp: Path, zoo: Path) -> None:
    topics = Topics(prefix + "a")  # the agent's fleet
    ctopics = Topics(prefix + "c")  # the coordinator's fleet, with one fake agent that acks everything
    agent = start_agent(settings, topics, tmp_path / "agent", mlp, zoo)
    # the fake agent sends no telemetry: it must not be declared silent however long the run takes
    config = dataclasses.replace(make_config(tmp_path, settings, ctopics.prefix), op_timeout_s=1.0,
                                 device_timeout_s=3600.0)
    coordinator = Coordinator(config)
    coordinator.start()
    watcher = Watcher(settings, topics)
    fake = FakeAgent(settings, ctopics, "fz-real").start()
    infer_inbox = topics.replies("fuzz-infer")
    ops_inbox = ctopics.replies("fuzz-ops")
    infers = Replies(settings, infer_inbox, frame_kind)
    ops = Replies(settings, ops_inbox, op_kind)
    sdk = InferenceClient(settings, prefix=topics.prefix, client_id="fuzz-sdk").open()
    fuzz = Fuzzer(settings, seed)
    rng = fuzz.rng
    expect_reply: dict[bytes, bool] = {}  # correlation -> whether the request was one the mlp can run
    coordinator_filters = [ctopics.all_status, ctopics.all_telemetry, ctopics.all_acks, ctopics.ops()]
    to_coordinator = 0

    def publish(topic: str, payload: bytes, **kw: Any) -> None:
        nonlocal to_coordinator
        to_coordinator += any(topic_matches_sub(f, topic) for f in coordinator_filters)
        fuzz.publish(topic, payload, **kw)

    def backlog() -> int:
        handled = sum(dict(coordinator.counters.received).values())
        answered = len(expect_reply.keys() & infers.count.keys())
        return max(to_coordinator - handled, len(expect_reply) - answered)

    fuzz.backlog = backlog
    responder = MqttLink(settings, client_id=f"responder-{uuid.uuid4().hex[:8]}")

    def answer(msg: Inbound) -> None:
        responder.publish(msg.response_topic or "none", fuzz_frame(rng), qos=1,
                          correlation_data=msg.correlation_data)

    responder.subscribe(topics.infer("fz-sdk"), answer, qos=1)
    responder.start()
    assert responder.wait_connected(10)
    try:
        # -- ready: a tenant serving, the fake device known, everything warm --------------------------
        ack = watcher.command(Deploy(command_id="deploy-digits", device_id=DEVICE,
                                     tenant=TenantSpec(name="digits", model="mlp", slo_ms=50.0)))
        assert ack.ok, ack
        wait_for(lambda: any(d.device_id == "fz-real" for d in coordinator.status().devices), 10, "fake birth")
        good = {"x": np.random.default_rng(0).random((2, 784), dtype=np.float32)}
        assert isinstance(sdk.infer_with_meta("digits", good, timeout_s=10).outputs["probs"], np.ndarray)
        baseline = rss()

        # -- integers of the right type and the wrong size (see crafted_extremes) ---------------------------
        expect_op: set[bytes] = set()
        for topic, payload in crafted_extremes(topics, ctopics):
            publish(topic, payload, qos=1)
        corr = uuid.uuid4().bytes
        expect_op.add(corr)
        publish(ctopics.ops(), CONTROL["ops"][0], qos=1, response_topic=ops_inbox, correlation_data=corr)

        # -- the agent's inference topic ----------------------------------------------------------------
        for _ in range(plan.infer_counted):
            payload = fuzz_frame(rng)
            corr = uuid.uuid4().bytes * rng.choice([1, 1, 1, 64])
            expect_reply[corr] = serves_digits(payload)
            publish(topics.infer("digits"), payload, response_topic=infer_inbox, correlation_data=corr)
        for _ in range(plan.infer_oversized):
            corr = uuid.uuid4().bytes
            expect_reply[corr] = False
            payload = fuzz_frame(rng)
            publish(topics.infer("digits"), payload + b"\x00" * (MiB + 1 - len(payload) + rng.randrange(MiB)),
                         qos=0, response_topic=infer_inbox, correlation_data=corr)
        dropped_before = agent.server.dropped_no_reply_topic
        for _ in range(plan.infer_no_reply_topic):
            corr_or_none = uuid.uuid4().bytes if rng.random() < 0.5 else None
            publish(topics.infer("digits"), fuzz_frame(rng), correlation_data=corr_or_none)
        for i in range(plan.infer_odd_reply):
            publish(topics.infer("digits"), fuzz_frame(rng), response_topic=rng.choice(ODD_RESPONSE_TOPICS),
                         correlation_data=uuid.uuid4().bytes if i % 2 else None)

        # -- the agent's command topic -------------------------------------------------------------------
        malformed_before = agent.commands.malformed
        for _ in range(plan.commands):
            publish(topics.commands(DEVICE), fuzz_control(rng.choice(CONTROL["commands"]), rng))

        # -- the coordinator's status, telemetry, acks and ops --------------------------------------------
        for channel, n, topic in (("status", plan.status, ctopics.status(FUZZ_DEVICE)),
                                  ("telemetry", plan.telemetry, ctopics.telemetry(FUZZ_DEVICE)),
                                  ("acks", plan.acks, ctopics.acks(FUZZ_DEVICE))):
            for _ in range(n):
                publish(topic, fuzz_control(rng.choice(CONTROL[channel]), rng))
        for _ in range(plan.ops_counted):
            corr = uuid.uuid4().bytes
            expect_op.add(corr)
            payload = fuzz_control(rng.choice(CONTROL["ops"]), rng)
            publish(ctopics.ops(), payload, response_topic=ops_inbox, correlation_data=corr)
        for i in range(plan.ops_other):
            payload = fuzz_control(rng.choice(CONTROL["ops"]), rng)
            reply_to = rng.choice(ODD_RESPONSE_TOPICS) if i % 2 else None
            publish(ctopics.ops(), payload, response_topic=reply_to,
                         correlation_data=uuid.uuid4().bytes if i % 3 else None)
        for i in range(plan.control_oversized):
            channel = ("status", "telemetry", "acks", "ops", "commands")[i % 5]
            big = CONTROL[channel][0][:-1] + b',"pad":"' + b"x" * (MAX_CONTROL_BYTES + i) + b'"}'
            topic = {"status": ctopics.status(FUZZ_DEVICE), "telemetry": ctopics.telemetry(FUZZ_DEVICE),
                     "acks": ctopics.acks(FUZZ_DEVICE), "ops": ctopics.ops(),
                     "commands": topics.commands(DEVICE)}[channel]
            publish(topic, big, qos=0)

        # -- odd topic names ------------------------------------------------------------------------------
        for _ in range(plan.odd_topics):
            seg = rng.choice(WEIRD_SEGMENTS)
            channel = rng.choice(["status", "telemetry", "acks"])
            where = rng.randrange(4)
            if where == 0:
                topic = f"{ctopics.root}/devices/{seg}/{channel}"
            elif where == 1:
                topic = f"{ctopics.root}/devices/{seg or 'x'}/{channel}/extra/{seg}"
            elif where == 2:
                topic = f"{topics.root}/tenants/{seg}/infer"
            else:
                topic = f"{topics.root}/{seg}/devices/{DEVICE}/commands"
            publish(topic, fuzz_control(rng.choice(CONTROL[channel]), rng),
                         response_topic=infer_inbox if where == 2 else None)
        # Topics the broker would never deliver here (wildcards, NUL, other channels), straight into the
        # handler from this thread; every one of them stops before the handler's per-tenant state.
        direct: set[bytes] = set()
        good_request = encode_request({"x": np.zeros((1, 784), np.float32)})
        for _ in range(plan.direct_topics):
            seg = rng.choice([*WEIRD_SEGMENTS, "nobody", "digits/x", "+", "#", "\x00", "a\tb", "a/+/b"])
            topic = rng.choice([f"{topics.root}/tenants/{seg}/infer", f"{topics.root}/{seg}",
                                f"$share/ef-x/{topics.root}/tenants/{seg}/infer", seg,
                                f"{topics.root}/devices/{DEVICE}/commands", topics.ops()])
            corr = uuid.uuid4().bytes
            direct.add(corr)
            agent.server.on_request(topic, good_request if rng.random() < 0.5 else fuzz_frame(rng), infer_inbox,
                                    corr, rng.choice([0, 1]))

        # -- the SDK: replies that are fuzzed frames, and garbage on its inbox ------------------------------
        outcomes: dict[str, int] = {}
        for _ in range(plan.sdk_calls):
            try:
                sdk.infer_with_meta("fz-sdk", good, timeout_s=10)
                outcome = "result"
            except NoReply:
                outcome = "no-reply"
            except InferenceError as exc:
                assert exc.message
                outcome = type(exc).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        late_before, stray_before = sdk.stats()["late_replies"], sdk.stats()["stray_replies"]
        for i in range(plan.sdk_inbox_garbage):
            publish(sdk.inbox, fuzz_frame(rng), correlation_data=uuid.uuid4().bytes if i % 2 else None)
        fuzz.flush()
        published = fuzz.published + plan.sdk_calls  # the responder published one fuzzed reply per call
        assert published >= plan.through_broker >= 10_000

        # -- every requester that gave a usable inbox got exactly one answer -------------------------------
        wait_for(lambda: set(expect_reply) | direct <= set(infers.count), 60, "a reply to every fuzzed request")
        wait_for(lambda: expect_op <= set(ops.count), 30, "a reply to every fuzzed operator call")
        wait_for(lambda: agent.server.dropped_no_reply_topic - dropped_before == plan.infer_no_reply_topic, 10,
                 "requests without a response topic")
        wait_for(lambda: sdk.stats()["late_replies"] - late_before == plan.sdk_inbox_garbage // 2, 10, "late")
        wait_for(lambda: sdk.stats()["stray_replies"] - stray_before == plan.sdk_inbox_garbage // 2, 10, "stray")
        after = watcher.command(Undeploy(command_id="after-fuzz", device_id=DEVICE, tenant="ghost"))
        assert after.ok  # commands are handled in order: every fuzzed one is behind us
        time.sleep(0.5)  # room for a second answer, which must not come
        assert all(infers.count[c] == 1 for c in expect_reply), "a request was answered more than once"
        assert all(infers.count[c] == 1 for c in direct)
        assert all(ops.count[c] == 1 for c in expect_op), "an operator call was answered more than once"
        wrong = {c: infers.kind[c] for c, runnable in expect_reply.items()
                 if not (infers.kind[c].startswith("error:") or (runnable and infers.kind[c] == "result"))}
        assert not wrong, f"{len(wrong)} requests got no clear error, e.g. {next(iter(wrong.values()))}"
        assert all(infers.kind[c].startswith("error:") for c in direct)
        assert all(ops.kind[c] == "ok" or ops.kind[c].startswith("error:") for c in expect_op)
        assert set(outcomes) <= {"result", "BadRequest", "UnknownTenant", "FidelityUnavailable",
                                 "DeadlineExceeded", "Overloaded", "NotReady", "ModelFailed", "InternalError"}
        assert agent.commands.malformed > malformed_before

        # -- and everything still serves -------------------------------------------------------------------
        threads = [agent.commands._thread, agent.outbox._thread, agent._telemetry_thread, *agent.server._threads,
                   coordinator._thread, agent.link._client._thread, coordinator.link._client._thread]
        assert all(t is not None and t.is_alive() for t in threads), threads
        assert agent.link.connected and coordinator.link.connected
        result = sdk.infer_with_meta("digits", good, timeout_s=10)
        assert result.outputs["probs"].shape == (2, 10) and result.device == DEVICE
        deployed = watcher.command(Deploy(command_id="deploy-after", device_id=DEVICE,
                                          tenant=TenantSpec(name="digits-2", model="mlp", slo_ms=50.0)))
        assert deployed.ok and deployed.result == "applied"
        assert sdk.infer("digits-2", good, timeout_s=10)["probs"].shape == (2, 10)
        status = call_ops(settings, ctopics, OpStatus(), timeout=10)
        assert status.ok and status.status is not None
        assert any(d.device_id == "fz-real" and d.online for d in status.status.devices)
        placed = call_ops(settings, ctopics, OpDeploy(tenant=TenantSpec(name="after-fuzz", model="ocr-rec",
                                                                        slo_ms=50.0), device_id="fz-real"),
                          timeout=10)
        assert placed.ok and placed.device_id == "fz-real", placed

        # -- nothing crashed, nothing piled up -------------------------------------------------------------
        assert agent.link.handler_errors == 0
        assert coordinator.link.handler_errors == 0
        assert coordinator.counters.errors == 0
        assert sdk._require_link().handler_errors == 0
        assert sum(coordinator.counters.malformed.values()) > 0
        # What the handlers may keep is bounded: queues drain, SQLite holds rows on disk with a bounded page
        # cache, counters are per tenant or device. 100 MiB is a few times what that and the allocators' slack
        # take here, and under half of what was sent: keeping even half the payloads would break it.
        growth = rss() - baseline
        assert growth < 100 * MiB, f"RSS grew {growth / MiB:.0f} MiB over {published} messages"
        assert fuzz.bytes > 200 * MiB
    finally:
        responder.stop()
        sdk.close()
        fuzz.close()
        ops.close()
        infers.close()
        fake.stop()
        watcher.close()
        coordinator.stop()
        agent.stop()


def crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Tracebacks logged by the fleet's code: a handler, worker or thread that caught an exception."""
    return [r for r in caplog.records if r.exc_info and r.name.split(".")[0] in ("agent", "coordinator", "edgefleet")]


def test_ten_thousand_fuzzed_messages_through_the_broker(
    broker: PrivateBroker, mqtt_settings: MqttSettings, prefix: str, tmp_path: Path, mlp_path: Path,
    tampered_zoo: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    plan = FuzzPlan()
    assert plan.through_broker >= 10_000
    run_fleet_fuzz(plan, seed=1, settings=mqtt_settings, prefix=prefix, tmp_path=tmp_path, mlp=mlp_path,
                   zoo=tampered_zoo)
    crashes = crash_records(caplog)
    assert not crashes, crashes[0].getMessage()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_longer_fuzz_run_through_the_broker(
    broker: PrivateBroker, mqtt_settings: MqttSettings, prefix: str, tmp_path: Path, mlp_path: Path,
    tampered_zoo: Path, caplog: pytest.LogCaptureFixture, seed: int,
) -> None:
    caplog.set_level(logging.ERROR)
    base = FuzzPlan()
    plan = FuzzPlan(**{k: v * 4 for k, v in dataclasses.asdict(base).items()})
    run_fleet_fuzz(plan, seed=seed, settings=mqtt_settings, prefix=prefix, tmp_path=tmp_path, mlp=mlp_path,
                   zoo=tampered_zoo)
    crashes = crash_records(caplog)
    assert not crashes, crashes[0].getMessage()


# ---------------------------------------------------------------------------------------------------
# 3. Model names and files: nothing outside the model directory, nothing whose hash is not the catalog's.
# ---------------------------------------------------------------------------------------------------
# Names a Deploy could carry that must never become a path. The first group breaks the wire's name rule
# (TenantSpec refuses it, so the command does not even decode); the second passes that rule but not the
# zoo's, or names nothing in the catalog, and is refused by the resolver.
BAD_MODEL_NAMES = ["../../etc/passwd", "/abs/path", "ocr-cls/../../x", "ocr-cls\x00", "ocr-cls\x00.onnx", "..",
                   ".", "./ocr-cls", "ocr-cls/fp32", "models/ocr-cls", "OCR-CLS", "ocr-cls ", " ocr-cls",
                   "ocr-cls\n", "%2e%2e%2f", "~root", "C:\\x", "\\\\host\\share", "оcr-cls", "", "-x",
                   "a" * 64, "ocr-cls/", "ocr-cls.onnx"]
UNKNOWN_MODEL_NAMES = ["ocr_cls", "etc-passwd", "passwd", "catalog", "models", "fp32", "a" * 63]
BAD_VARIANTS = ["../fp32", "fp32/../../x", "/fp32", "fp32\x00", "FP32", "fp64", ""]


def raw_deploy(command_id: str, model: str, variant: str = "fp32") -> bytes:
    tenant = {"name": "victim", "model": model, "slo_ms": 50.0, "variant": variant}
    return json.dumps({"type": "deploy", "v": 1, "command_id": command_id, "device_id": DEVICE,
                       "tenant": tenant}).encode()


class SpyOpen:
    """Stands in for the runtime: records every file a host tries to open, and opens none."""

    def __init__(self) -> None:
        self.opened: list[Path] = []

    def __call__(self, runtime: str, path: Path, options: SessionOptions) -> Any:
        self.opened.append(path)
        raise AssertionError(f"{path} must not be opened")


@pytest.mark.parametrize("model", BAD_MODEL_NAMES)
def test_model_names_that_are_paths_are_refused_before_any_path_is_built(model: str, tampered_zoo: Path) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        TenantSpec(name="victim", model=model, slo_ms=50.0)
    for decoder in (decode_command, decode_to_device):
        with pytest.raises(WireError) as info:
            decoder(raw_deploy("c", model))
        assert info.value.code is ErrorCode.BAD_REQUEST and "model name" in info.value.message
    op = json.dumps({"type": "op.deploy", "v": 1, "tenant": {"name": "victim", "model": model, "slo_ms": 5}})
    with pytest.raises(WireError, match="model name"):
        decode_op(op.encode())
    # below the wire's validation, the zoo and the host refuse the name on their own
    with pytest.raises(ModelNotFound, match=r"invalid model name|not in the catalog"):
        model_path(model, "fp32", data_dir=tampered_zoo)
    spy = SpyOpen()
    host = ModelHost([ZooResolver(tampered_zoo)], budget_bytes=1 << 30, threads=1, open_session=spy)
    with pytest.raises(DeployError) as refused:
        host.resolve(model, "fp32")
    assert refused.value.code == "unknown_model"
    assert spy.opened == []


@pytest.mark.parametrize("model", UNKNOWN_MODEL_NAMES)
def test_names_the_wire_allows_but_the_catalog_lacks_resolve_to_nothing(model: str, tampered_zoo: Path) -> None:
    TenantSpec(name="victim", model=model, slo_ms=50.0)  # a well-formed name...
    with pytest.raises(ModelNotFound):
        model_path(model, "fp32", data_dir=tampered_zoo)  # ...that is not a catalog entry
    assert ZooResolver(tampered_zoo).resolve(model, "fp32") is None


@pytest.mark.parametrize("variant", BAD_VARIANTS)
def test_variants_that_are_paths_are_refused(variant: str, tampered_zoo: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        TenantSpec(name="victim", model="ocr-cls", slo_ms=50.0, variant=variant)
    with pytest.raises(WireError, match="variant"):
        decode_command(raw_deploy("c", "ocr-cls", variant))
    with pytest.raises(ModelNotFound, match="invalid variant"):
        model_path("ocr-cls", variant, data_dir=tampered_zoo)
    with pytest.raises(DeployError) as refused:
        ZooResolver(tampered_zoo).resolve("ocr-cls", variant)
    assert refused.value.code == "variant_unavailable"


def test_a_model_file_whose_hash_differs_from_the_catalog_is_never_opened(tampered_zoo: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="differs from the catalog"):
        model_path("ocr-cls", "fp32", data_dir=tampered_zoo)
    with pytest.raises(DeployError) as refused:
        ZooResolver(tampered_zoo).resolve("ocr-cls", "fp32")
    assert refused.value.code == "integrity" and "sha256" in refused.value.message
    spy = SpyOpen()
    host = ModelHost([ZooResolver(tampered_zoo)], budget_bytes=1 << 30, threads=1, open_session=spy)
    with pytest.raises(DeployError) as refused:
        host.load(TenantSpec(name="victim", model="ocr-cls", slo_ms=50.0))
    assert refused.value.code == "integrity"
    with pytest.raises(DeployError) as none_left:
        host.options(TenantSpec(name="victim", model="ocr-cls", slo_ms=50.0))  # fp16/int8 not fetched here
    assert "differs from the catalog" in none_left.value.message
    assert spy.opened == []


def test_a_local_model_changed_after_registration_is_refused(tmp_path: Path, mlp_path: Path) -> None:
    local = tmp_path / "mlp.onnx"
    shutil.copy(mlp_path, local)
    models = LocalModels({"mlp": local})
    assert models.resolve("mlp", "fp32") is not None
    blob = bytearray(local.read_bytes())
    blob[-1] ^= 0x80
    local.write_bytes(bytes(blob))
    spy = SpyOpen()
    host = ModelHost([models], budget_bytes=1 << 30, threads=1, open_session=spy)
    with pytest.raises(DeployError) as refused:
        host.load(TenantSpec(name="victim", model="mlp", slo_ms=50.0))
    assert refused.value.code == "integrity" and "changed since it was registered" in refused.value.message
    assert spy.opened == []


def test_deploy_commands_naming_paths_or_tampered_models_load_nothing(
    mqtt_settings: MqttSettings, topics: Topics, tmp_path: Path, mlp_path: Path, tampered_zoo: Path,
) -> None:
    agent = start_agent(mqtt_settings, topics, tmp_path / "agent", mlp_path, tampered_zoo)
    watcher = Watcher(mqtt_settings, topics)
    try:
        malformed, connects = agent.commands.malformed, agent.link.connects
        refused_ids = [f"path-{i}" for i in range(len(BAD_MODEL_NAMES) + len(BAD_VARIANTS))]
        payloads = [raw_deploy(cid, m) for cid, m in zip(refused_ids, BAD_MODEL_NAMES, strict=False)]
        payloads += [raw_deploy(cid, "ocr-cls", v) for cid, v in zip(refused_ids[len(BAD_MODEL_NAMES):],
                                                                    BAD_VARIANTS, strict=True)]
        # tenant names with control characters: subscribing to their topics would get the agent disconnected
        # by the broker, on every reconnect
        payloads += [raw_deploy(f"name-{i}", "mlp").replace(b'"victim"', json.dumps(name).encode())
                     for i, name in enumerate(["victim\n", "vic\ntim", "victim\r", "victim\t", "victim\x00"])]
        refused_ids += [f"name-{i}" for i in range(5)]
        for payload in payloads:
            watcher.link.publish(topics.commands(DEVICE), payload, qos=1)
        # well-formed names that are not models, and a model whose file was altered: failed, with why
        for i, model in enumerate(UNKNOWN_MODEL_NAMES):
            ack = watcher.command(Deploy(command_id=f"unknown-{i}", device_id=DEVICE,
                                         tenant=TenantSpec(name="victim", model=model, slo_ms=50.0)))
            assert (ack.ok, ack.result, ack.code) == (False, "failed", "unknown_model"), ack
            assert "not in the catalog" in ack.message
        ack = watcher.command(Deploy(command_id="tampered", device_id=DEVICE,
                                     tenant=TenantSpec(name="victim", model="ocr-cls", slo_ms=50.0)))
        assert (ack.ok, ack.result) == (False, "failed"), ack
        assert "sha256" in ack.message and "differs from the catalog" in ack.message
        # commands are handled in order: the ones that named paths were refused as malformed, and their
        # senders told so ("rejected", bad_request) since their ids were readable; nothing was applied
        assert agent.commands.malformed - malformed == len(payloads)
        for cid in refused_ids:
            wait_for(lambda cid=cid: cid in watcher.acks, 10, f"rejection of {cid}")
            [rejection] = watcher.acks[cid]
            assert (rejection.ok, rejection.result, rejection.code) == (False, "rejected", "bad_request")
        assert agent.host.tenants() == {} and agent.state.tenants() == []
        assert agent.link.handler_errors == 0 and agent.link.connects == connects and agent.link.connected
        # and the agent still deploys what is real
        ok = watcher.command(Deploy(command_id="real", device_id=DEVICE,
                                    tenant=TenantSpec(name="digits", model="mlp", slo_ms=50.0)))
        assert ok.ok, ok
    finally:
        watcher.close()
        agent.stop()

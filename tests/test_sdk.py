"""The SDK against a real broker and a scripted responder that plays the agent's side of the protocol.

The responder is built only on MqttLink and the wire module, as an agent in another language would be,
so these tests pin what the SDK sends (topic, properties, frame) and how it reads every kind of answer.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from edgefleet.broker import free_port
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.sdk import (
    AsyncInferenceClient,
    BadRequest,
    BrokerUnavailable,
    ClientClosed,
    DeadlineExceeded,
    FidelityUnavailable,
    InferenceClient,
    InferenceError,
    InternalError,
    ModelFailed,
    NoReply,
    NotReady,
    Overloaded,
    UnknownTenant,
    exception_class,
    raise_for,
)
from edgefleet.wire import (
    ErrorCode,
    ErrorFrame,
    RequestFrame,
    Topics,
    decode_frame,
    encode_error,
    encode_result,
)
from edgefleet.wire.tensors import CONTENT_TYPE

pytestmark = pytest.mark.broker

EXPECTED: dict[ErrorCode, type[InferenceError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.BAD_SHAPE: BadRequest,
    ErrorCode.BAD_DTYPE: BadRequest,
    ErrorCode.PAYLOAD_TOO_LARGE: BadRequest,
    ErrorCode.UNSUPPORTED_VERSION: BadRequest,
    ErrorCode.BUDGET_EXPIRED: BadRequest,  # the same budget can never succeed: fix the request
    ErrorCode.UNKNOWN_TENANT: UnknownTenant,
    ErrorCode.FIDELITY_UNAVAILABLE: FidelityUnavailable,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorCode.OVERLOADED: Overloaded,
    ErrorCode.NOT_READY: NotReady,
    ErrorCode.MODEL_FAILED: ModelFailed,
    ErrorCode.INTERNAL: InternalError,
}


def error_tenant(code: ErrorCode) -> str:
    return f"err-{code.value.replace('_', '-')}"


class Responder:
    """Answers requests the way the protocol says an agent does, with per-tenant scripted behaviour.

    ``echo``: result ``x * 2`` for every input; ``jitter``: the same after a random 0-20 ms delay, so
    replies come back out of order; ``slow``: the same after ``slow_s``; ``silent``: never answers;
    ``err-<code>``: an error frame with that code; ``garbage``: a reply that is not a frame.
    """

    TENANTS = ("echo", "jitter", "slow", "silent", "garbage", *(error_tenant(c) for c in ErrorCode))

    def __init__(self, settings: MqttSettings, topics: Topics, *, slow_s: float = 0.3) -> None:
        self.topics = topics
        self.slow_s = slow_s
        self.requests: list[Inbound] = []
        self._probe = threading.Event()
        self.link = MqttLink(settings, client_id=f"responder-{topics.prefix}")
        for tenant in self.TENANTS:
            self.link.subscribe(topics.infer_shared(tenant), self._on_request, qos=1)
        probe_topic = topics.replies(f"probe-{topics.prefix}")
        self.link.subscribe(probe_topic, lambda _m: self._probe.set(), qos=1)
        self.link.start()
        assert self.link.wait_connected(10)
        # Subscriptions are processed in order, so once the probe comes back every one of them is live.
        self.link.publish(probe_topic, b"probe", qos=1)
        assert self._probe.wait(10)

    def _on_request(self, msg: Inbound) -> None:
        self.requests.append(msg)
        tenant = self.topics.parse(msg.topic).name
        if tenant == "silent":
            return
        if tenant.startswith("err-"):
            code = ErrorCode(tenant[4:].replace("-", "_"))
            self._reply(msg, encode_error(code, f"scripted {code.value}", {"device": "box-1"}), "error")
            return
        if tenant == "garbage":
            self._reply(msg, b"not a frame", "ok")
            return
        frame = decode_frame(msg.payload)
        assert isinstance(frame, RequestFrame)
        payload = encode_result(
            {name: arr * 2 for name, arr in frame.tensors.items()},
            {"device": "box-1", "variant": "fp32", "queue_ms": 0.5, "service_ms": 1.5, "batch": 1},
        )
        if tenant == "slow":
            threading.Timer(self.slow_s, self._reply, (msg, payload, "ok")).start()
        elif tenant == "jitter":
            threading.Timer(random.uniform(0.0, 0.02), self._reply, (msg, payload, "ok")).start()
        else:
            self._reply(msg, payload, "ok")

    def _reply(self, msg: Inbound, payload: bytes, status: str) -> None:
        assert msg.response_topic is not None
        self.link.publish(msg.response_topic, payload, qos=1, correlation_data=msg.correlation_data,
                          content_type=CONTENT_TYPE, user_properties=[("ef-status", status)])

    def close(self) -> None:
        self.link.stop()


@pytest.fixture()
def responder(mqtt_settings: MqttSettings, topics: Topics) -> Iterator[Responder]:
    r = Responder(mqtt_settings, topics)
    yield r
    r.close()


@pytest.fixture()
def client(mqtt_settings: MqttSettings, prefix: str, responder: Responder) -> Iterator[InferenceClient]:
    with InferenceClient(mqtt_settings, prefix=prefix) as c:
        yield c


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


# -- sync client ----------------------------------------------------------------------------------
def test_result_round_trip(client: InferenceClient) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([1, 2, 3], dtype=np.int64)
    out = client.infer("echo", {"x": x, "ids": ids})
    assert set(out) == {"x", "ids"}
    np.testing.assert_array_equal(out["x"], x * 2)
    assert out["x"].dtype == np.float32 and out["ids"].dtype == np.int64
    np.testing.assert_array_equal(out["ids"], ids * 2)
    out["x"][0, 0] = -1.0  # outputs are the caller's to modify


def test_result_meta(client: InferenceClient) -> None:
    res = client.infer_with_meta("echo", {"x": np.ones(3, np.float32)})
    assert res.device == "box-1" and res.variant == "fp32" and res.batch == 1
    assert res.meta["queue_ms"] == 0.5 and res.meta["service_ms"] == 1.5
    assert 0.0 < res.latency_ms < 5000.0 and res.meta["latency_ms"] == res.latency_ms


def test_request_follows_protocol(client: InferenceClient, responder: Responder, topics: Topics) -> None:
    client.infer("echo", {"x": np.zeros(2, np.float32)}, timeout_s=2.5, min_fidelity=0.9)
    msg = responder.requests[-1]
    assert msg.topic == topics.infer("echo")
    assert msg.qos == 1
    assert msg.response_topic == topics.replies(client.client_id)
    assert msg.correlation_data is not None and len(msg.correlation_data) == 16
    assert msg.content_type == CONTENT_TYPE
    frame = decode_frame(msg.payload)
    assert isinstance(frame, RequestFrame)
    assert frame.timeout_ms == 2500.0 and frame.min_fidelity == 0.9


def test_an_encoded_image_carries_its_budget_as_a_user_property(
    client: InferenceClient, responder: Responder
) -> None:
    """An image has no frame meta: the call's timeout travels as ``ef-timeout-ms``; a tensor request's
    stays in its frame and adds no property."""
    jpeg = b"\xff\xd8\xff\xe0" + bytes(60)  # the responder never decodes it: only the magic matters here
    with pytest.raises(NoReply):
        client.infer("silent", jpeg, timeout_s=0.3)
    image = responder.requests[-1]
    assert image.payload == jpeg and ("ef-timeout-ms", "300.000") in image.user_properties
    client.infer("echo", {"x": np.zeros(2, np.float32)}, timeout_s=2.5)
    assert not any(k == "ef-timeout-ms" for k, _ in responder.requests[-1].user_properties)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_error_codes_raise_their_class(client: InferenceClient, code: ErrorCode) -> None:
    with pytest.raises(InferenceError) as info:
        client.infer(error_tenant(code), {"x": np.zeros(1, np.float32)})
    exc = info.value
    assert type(exc) is EXPECTED[code]
    assert exc.code is code and exc.retryable == code.retryable
    assert exc.message == f"scripted {code.value}" and exc.device == "box-1"
    assert error_tenant(code) in str(exc) and code.value in str(exc)


def test_undecodable_reply_is_internal(client: InferenceClient) -> None:
    with pytest.raises(InternalError, match="undecodable reply"):
        client.infer("garbage", {"x": np.zeros(1, np.float32)})


def test_timeout_raises_no_reply(client: InferenceClient) -> None:
    t0 = time.monotonic()
    with pytest.raises(NoReply) as info:
        client.infer("silent", {"x": np.zeros(1, np.float32)}, timeout_s=0.2)
    elapsed = time.monotonic() - t0
    assert 0.19 <= elapsed < 1.0
    assert str(info.value) == "no device answered tenant 'silent' within 0.2 s; is it deployed?"
    assert info.value.retryable and info.value.tenant == "silent"
    assert client.in_flight == 0


def test_nobody_subscribed_raises_no_reply(client: InferenceClient) -> None:
    with pytest.raises(NoReply, match="'nobody-here'"):
        client.infer("nobody-here", {"x": np.zeros(1, np.float32)}, timeout_s=0.1)


def test_late_reply_is_dropped_and_counted(client: InferenceClient, responder: Responder) -> None:
    with pytest.raises(NoReply):
        client.infer("slow", {"x": np.full(2, 7.0, np.float32)}, timeout_s=0.05)
    wait_until(lambda: client.late_replies == 1, timeout=responder.slow_s + 3)
    assert client.in_flight == 0
    # The late answer (14.0) must never be taken for a later call's.
    out = client.infer("echo", {"x": np.full(2, 1.0, np.float32)})
    np.testing.assert_array_equal(out["x"], [2.0, 2.0])
    assert client.stats() == {"sent": 2, "in_flight": 0, "late_replies": 1, "stray_replies": 0}


def test_threads_share_one_client(client: InferenceClient) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(10):
                v = np.full(3, k * 100 + i, np.int32)
                np.testing.assert_array_equal(client.infer("jitter", {"v": v})["v"], v * 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.in_flight == 0


@pytest.mark.parametrize(
    ("tenant", "inputs", "code", "match"),
    [
        ("Bad/Tenant", {"x": np.zeros(1, np.float32)}, ErrorCode.BAD_REQUEST, "invalid tenant name"),
        ("echo", {"x": np.array(["a", "b"])}, ErrorCode.BAD_DTYPE, "input 'x' has dtype <U1"),
        ("echo", {"x": np.array([1, "a"], dtype=object)}, ErrorCode.BAD_DTYPE, "dtype object"),
        ("echo", {"x": np.zeros(2, np.complex64)}, ErrorCode.BAD_DTYPE, "complex64"),
        ("echo", {"x": np.zeros((1,) * 9, np.float32)}, ErrorCode.BAD_SHAPE, "rank 9"),
        ("echo", {"": np.zeros(1, np.float32)}, ErrorCode.BAD_REQUEST, "input name"),
    ],
)
def test_refused_before_publishing(
    client: InferenceClient, responder: Responder, tenant: str, inputs: dict[str, np.ndarray],
    code: ErrorCode, match: str,
) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        client.infer(tenant, inputs)
    assert info.value.code is code and not info.value.retryable
    assert isinstance(info.value, ValueError)
    assert client.sent == 0 and not responder.requests


@pytest.mark.parametrize("kw", [{"timeout_s": 0.0}, {"timeout_s": float("nan")}, {"timeout_s": 4000.0},
                                {"min_fidelity": 1.5}])
def test_bad_arguments(client: InferenceClient, kw: dict[str, float]) -> None:
    with pytest.raises(BadRequest):
        client.infer("echo", {"x": np.zeros(1, np.float32)}, **kw)
    assert client.sent == 0


def test_closed_client_refuses(mqtt_settings: MqttSettings, prefix: str) -> None:
    c = InferenceClient(mqtt_settings, prefix=prefix)
    with pytest.raises(ClientClosed):
        c.infer("echo", {"x": np.zeros(1, np.float32)})
    with c:
        pass
    with pytest.raises(ClientClosed):
        c.infer("echo", {"x": np.zeros(1, np.float32)})


def test_close_wakes_waiting_calls(mqtt_settings: MqttSettings, prefix: str, responder: Responder) -> None:
    c = InferenceClient(mqtt_settings, prefix=prefix).open()
    caught: list[BaseException] = []

    def call() -> None:
        try:
            c.infer("silent", {"x": np.zeros(1, np.float32)}, timeout_s=30.0)
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: c.in_flight == 1)
    c.close()
    t.join(5)
    assert not t.is_alive() and len(caught) == 1 and isinstance(caught[0], ClientClosed)


def test_connect_failure_is_clear_and_bounded() -> None:
    port = free_port()  # nothing listens here
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=rf"127\.0\.0\.1:{port}"), InferenceClient(
        MqttSettings(port=port), connect_timeout_s=0.5
    ):
        pass
    assert time.monotonic() - t0 < 3.0


# -- error mapping without a broker ------------------------------------------------------------------
@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_raise_for_maps_every_code(code: ErrorCode) -> None:
    assert exception_class(code) is EXPECTED[code]
    frame = decode_frame(encode_error(code, "why", {"device": "d1"}))
    assert isinstance(frame, ErrorFrame)
    with pytest.raises(EXPECTED[code]) as info:
        raise_for(frame, tenant="t1")
    assert info.value.code is code and info.value.message == "why"
    assert str(info.value) == f"tenant 't1' on device 'd1': {code.value}: why"


# -- asyncio client --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_async_200_concurrent_calls(
    mqtt_settings: MqttSettings, prefix: str, responder: Responder
) -> None:
    async with AsyncInferenceClient(mqtt_settings, prefix=prefix) as c:

        async def one(i: int) -> None:
            v = np.full((2, 3), i, np.float32)
            out = await c.infer("jitter", {"v": v}, timeout_s=10.0)
            np.testing.assert_array_equal(out["v"], v * 2)

        await asyncio.gather(*(one(i) for i in range(200)))
        assert c.in_flight == 0 and c.sent == 200 and c.late_replies == 0


@pytest.mark.asyncio
async def test_async_calls_of_one_loop_pass_go_out_together_and_a_cancelled_one_is_not_sent(
    mqtt_settings: MqttSettings, prefix: str, responder: Responder
) -> None:
    async with AsyncInferenceClient(mqtt_settings, prefix=prefix) as c:
        calls = [asyncio.ensure_future(c.infer("echo", {"x": np.full(2, i, np.float64)}, timeout_s=10.0))
                 for i in range(5)]
        await asyncio.sleep(0)  # each call ran to its await: five requests wait in the outbox
        calls[2].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        assert [d["x"].tolist() for i, d in enumerate(done) if i != 2] == [[2.0 * i] * 2 for i in (0, 1, 3, 4)]
        assert c.sent == 4 and c.in_flight == 0 and c.late_replies == 0


@pytest.mark.asyncio
async def test_async_errors_timeouts_and_meta(
    mqtt_settings: MqttSettings, prefix: str, responder: Responder
) -> None:
    async with AsyncInferenceClient(mqtt_settings, prefix=prefix) as c:
        res = await c.infer_with_meta("echo", {"x": np.ones(2, np.float64)})
        assert res.device == "box-1" and res.outputs["x"].tolist() == [2.0, 2.0]
        with pytest.raises(Overloaded) as info:
            await c.infer(error_tenant(ErrorCode.OVERLOADED), {"x": np.ones(1, np.float32)})
        assert info.value.retryable
        with pytest.raises(UnknownTenant):
            await c.infer(error_tenant(ErrorCode.UNKNOWN_TENANT), {"x": np.ones(1, np.float32)})
        t0 = time.monotonic()
        with pytest.raises(NoReply, match=r"within 0\.15 s"):
            await c.infer("silent", {"x": np.ones(1, np.float32)}, timeout_s=0.15)
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(NoReply):
            await c.infer("slow", {"x": np.ones(1, np.float32)}, timeout_s=0.05)
        with pytest.raises(BadRequest):
            await c.infer("echo", {"x": np.array(["s"])})
        for _ in range(300):
            if c.late_replies:
                break
            await asyncio.sleep(0.01)
        assert c.late_replies == 1 and c.in_flight == 0


@pytest.mark.asyncio
async def test_async_cancelled_call_leaves_nothing(
    mqtt_settings: MqttSettings, prefix: str, responder: Responder
) -> None:
    async with AsyncInferenceClient(mqtt_settings, prefix=prefix) as c:
        task = asyncio.ensure_future(c.infer("silent", {"x": np.ones(1, np.float32)}, timeout_s=30.0))
        while c.in_flight == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.in_flight == 0


@pytest.mark.asyncio
async def test_async_connect_failure() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=rf"127\.0\.0\.1:{port}"):
        async with AsyncInferenceClient(MqttSettings(port=port), connect_timeout_s=0.5):
            pass
    assert time.monotonic() - t0 < 3.0


def test_acks_that_come_before_their_waiter_are_kept() -> None:
    """The broker can answer SUBSCRIBE or UNSUBSCRIBE before paho's call returns the message id; a
    waiter registered after the ack must see it at once instead of waiting out its timeout."""
    link = MqttLink(MqttSettings(host="127.0.0.1", port=free_port()), client_id="early-acks")
    link._handle_subscribe(None, None, 7, [])  # type: ignore[arg-type]
    link._handle_unsubscribe(None, None, 9, [])  # type: ignore[arg-type]
    assert link._waiter("sub", 7).is_set()
    assert link._waiter("unsub", 9).is_set()
    assert not link._waiter("sub", 9).is_set()  # an UNSUBACK is not a SUBACK
    assert not link._waiter("sub", 7).is_set()  # each early ack serves one waiter

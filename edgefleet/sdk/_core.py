"""What the sync and asyncio clients share: request checks, encoding, the pending-call table, replies.

Both clients publish an EFT1 request to the tenant's topic with ResponseTopic set to this client's own
inbox and CorrelationData set to 16 random bytes, and match replies to callers by those bytes. Replies
arrive on paho's network thread; this module keeps that side short (a dict pop under a lock and a hand
off) and leaves decoding to the caller's thread or event loop. A pending call is removed exactly once:
by its reply, by its timeout or by close, whichever comes first; a reply that finds nothing to resolve
is counted in ``late_replies`` and dropped, so timed-out calls never leave anything behind.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from edgefleet.mqtt import DataLink, Inbound, MqttSettings, Outgoing, data_link, publish_many
from edgefleet.sdk.errors import (
    BadRequest,
    BrokerUnavailable,
    ClientClosed,
    InternalError,
    from_wire_error,
    raise_for,
)
from edgefleet.wire import ErrorCode, ErrorFrame, ResultFrame, Topics, WireError, decode_frame, encode_request
from edgefleet.wire.tensors import CONTENT_TYPE, DTYPES, MAX_RANK, MAX_TENSORS

CORRELATION_BYTES = 16
IMAGE_TIMEOUT_PROPERTY = "ef-timeout-ms"  # an encoded image's budget (protocol.md section 9)
MAX_TIMEOUT_S = 3600.0  # devices refuse a timeout_ms above one hour
MAX_NAME_CHARS = 256  # devices refuse longer tensor names
_SENDABLE_KINDS = frozenset("biuf")  # bool, signed and unsigned integers, floats

P = TypeVar("P")


@dataclass(frozen=True)
class Result:
    """A tenant's answer: its output tensors and where and how it was computed.

    ``meta`` is the device's result meta (``device``, ``variant``, ``queue_ms``, ``service_ms``,
    ``batch``, ...) plus ``latency_ms``: the time from publishing the request to the reply's arrival at
    this client, measured here.
    """

    outputs: dict[str, np.ndarray]
    latency_ms: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str | None:
        value = self.meta.get("device")
        return value if isinstance(value, str) else None

    @property
    def variant(self) -> str | None:
        value = self.meta.get("variant")
        return value if isinstance(value, str) else None

    @property
    def batch(self) -> int | None:
        value = self.meta.get("batch")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Prepared:
    """A checked, encoded request ready to publish."""

    tenant: str
    topic: str
    payload: bytes
    timeout_s: float  # the deadline the device must meet, counted from its receipt of the request
    expiry_s: int
    # MQTT 5 user properties of the request: an encoded image's budget (``ef-timeout-ms``), which a
    # tensor frame carries in its meta instead
    user_properties: list[tuple[str, str]] | None = None

    @property
    def wait_s(self) -> float:
        """How long the client waits for the answer: the deadline plus a grace for the trip back, so a
        device that answers ``deadline_exceeded`` or ``overloaded`` at its deadline is heard."""
        return self.timeout_s + reply_grace_s(self.timeout_s)


def reply_grace_s(timeout_s: float) -> float:
    """10% of the deadline, at least 50 ms and at most 500 ms."""
    return min(0.5, max(0.05, 0.1 * timeout_s))


def closed_error() -> ClientClosed:
    return ClientClosed("the client is not open: use it in a `with` block or call open(), not after close()")


def new_client_id() -> str:
    return f"ef-sdk-{uuid.uuid4().hex[:16]}"


_CORRELATIONS_PER_DRAW = 256  # correlation data drawn from the OS's random source this many at a time
_drawn = memoryview(b"")
_drawn_lock = threading.Lock()


def new_correlation() -> bytes:
    """Unpredictable correlation data (16 random bytes): a reply cannot be forged by guessing it. Drawn
    from ``os.urandom`` 256 at a time (a system call per request cost the asyncio client 6% of its time)."""
    global _drawn
    with _drawn_lock:
        if len(_drawn) < CORRELATION_BYTES:
            _drawn = memoryview(os.urandom(CORRELATION_BYTES * _CORRELATIONS_PER_DRAW))
        cid, _drawn = bytes(_drawn[:CORRELATION_BYTES]), _drawn[CORRELATION_BYTES:]
    return cid


_SENDABLE_DTYPES = frozenset(np.dtype(name) for name in DTYPES)  # native ones (numpy's dtype.name is slow)


def check_inputs(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Return the inputs as numeric numpy arrays, or raise BadRequest saying which one is wrong."""
    if not isinstance(inputs, Mapping):
        raise BadRequest(ErrorCode.BAD_REQUEST, f"inputs must map names to arrays: {type(inputs).__name__}")
    if len(inputs) > MAX_TENSORS:
        raise BadRequest(ErrorCode.BAD_REQUEST, f"at most {MAX_TENSORS} input tensors, got {len(inputs)}")
    out: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise BadRequest(
                ErrorCode.BAD_REQUEST,
                f"input name {name!r} must be a non-empty string of at most {MAX_NAME_CHARS} characters",
            )
        arr = np.asarray(value)
        if arr.dtype not in _SENDABLE_DTYPES and (arr.dtype.kind not in _SENDABLE_KINDS or arr.dtype.name not in DTYPES):
            raise BadRequest(
                ErrorCode.BAD_DTYPE,
                f"input {name!r} has dtype {arr.dtype}, which cannot be sent; use a numeric array of one of "
                f"{', '.join(DTYPES)}",
            )
        if arr.ndim > MAX_RANK:
            raise BadRequest(ErrorCode.BAD_SHAPE, f"input {name!r} has rank {arr.ndim}; at most {MAX_RANK}")
        out[name] = arr
    return out


def check_timeout(timeout_s: float) -> float:
    value = float(timeout_s)
    if not (math.isfinite(value) and 0.0 < value <= MAX_TIMEOUT_S):
        raise BadRequest(ErrorCode.BAD_REQUEST, f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {value!r}")
    return value


def check_fidelity(min_fidelity: float | None) -> float | None:
    if min_fidelity is None:
        return None
    value = float(min_fidelity)
    if not (0.0 <= value <= 1.0):
        raise BadRequest(ErrorCode.BAD_REQUEST, f"min_fidelity must be in [0, 1], got {min_fidelity!r}")
    return value


def prepare(
    topics: Topics,
    tenant: str,
    inputs: Mapping[str, Any] | bytes,
    *,
    timeout_s: float,
    min_fidelity: float | None,
) -> Prepared:
    """Check everything that can be checked here and encode the request frame. ``inputs`` may also be
    an encoded image (JPEG or PNG bytes), sent as it is for tenants whose model takes images (the
    device decodes it; its deadline is then the tenant's default, and ``min_fidelity`` cannot ride
    along). An image's ``timeout_s`` travels as the user property ``ef-timeout-ms``."""
    try:
        topic = topics.infer(tenant)
    except WireError as exc:
        raise from_wire_error(exc) from None
    if isinstance(inputs, (bytes, bytearray)):
        if not (inputs[:3] == b"\xff\xd8\xff" or inputs[:8] == b"\x89PNG\r\n\x1a\n"):
            raise BadRequest(ErrorCode.BAD_REQUEST, "bytes inputs must be an encoded JPEG or PNG image")
        if min_fidelity is not None:
            raise BadRequest(ErrorCode.BAD_REQUEST, "min_fidelity cannot be sent with an encoded image")
        timeout = check_timeout(timeout_s)
        return Prepared(tenant, topic, bytes(inputs), timeout, max(1, math.ceil(timeout)),
                        [(IMAGE_TIMEOUT_PROPERTY, f"{timeout * 1000.0:.3f}")])
    arrays = check_inputs(inputs)
    timeout = check_timeout(timeout_s)
    fidelity = check_fidelity(min_fidelity)
    try:
        payload = encode_request(arrays, timeout_ms=timeout * 1000.0, min_fidelity=fidelity)
    except WireError as exc:
        raise from_wire_error(exc, tenant=tenant) from None
    return Prepared(tenant, topic, payload, timeout, max(1, math.ceil(timeout)))


def parse_reply(reply: Inbound, tenant: str, sent_at: float) -> Result:
    """Turn a device's reply into a Result, or raise the InferenceError it stands for."""
    latency_ms = max(0.0, (reply.received_at - sent_at) * 1000.0)
    try:
        # A bytearray makes the decoded arrays writable views of one private copy of the payload.
        frame = decode_frame(bytearray(reply.payload))
    except WireError as exc:
        raise InternalError(
            ErrorCode.INTERNAL, f"undecodable reply ({exc.code.value}: {exc.message})", tenant=tenant
        ) from None
    if isinstance(frame, ErrorFrame):
        raise_for(frame, tenant=tenant)
    if not isinstance(frame, ResultFrame):
        raise InternalError(ErrorCode.INTERNAL, "reply is a request frame, not a result", tenant=tenant)
    meta = dict(frame.meta)
    meta["latency_ms"] = latency_ms
    return Result(outputs=frame.tensors, latency_ms=latency_ms, meta=meta)


class ClientCore(Generic[P]):
    """The connection, the inbox subscription and the table of pending calls of one client.

    ``P`` is what a pending call waits on (a threading waiter or an asyncio future); subclasses say
    how a reply, or the closing of the client, is handed to it.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        prefix: str,
        client_id: str | None,
        qos: int,
        connect_timeout_s: float,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
        self.settings = settings
        self.topics = Topics(prefix)
        self.client_id = client_id or new_client_id()
        self.inbox = self.topics.replies(self.client_id)
        self.qos = qos
        self.connect_timeout_s = float(connect_timeout_s)
        self.transport = "auto"  # the data link: lean (mqtt5 codec) where installed, else paho
        self._pending: dict[bytes, P] = {}
        self._lock = threading.Lock()
        self._link: DataLink | None = None
        self._closed = False
        self._stream_sinks: dict[str, list[Callable[[Inbound], None]]] = {}  # filter -> subscriptions
        self.late_replies = 0  # replies that arrived after their call timed out or was abandoned
        self.stray_replies = 0  # replies without correlation data
        self.sent = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def _start_link(self) -> DataLink:
        if self._closed:
            raise closed_error()
        if self._link is not None:
            return self._link
        link = data_link(self.settings, self.client_id, self.transport)
        # Subscribed before connecting: the link makes the subscription on connect, ahead of any publish.
        link.subscribe(self.inbox, self._on_reply, qos=self.qos)
        link.start()
        self._link = link
        return link

    def _stream_feed(self, tenant: str, events: bool) -> Any:
        """What a stream subscription attaches to: the tenant's results (QoS 0) and events (QoS 1)."""
        from edgefleet.sdk.stream import _Feed

        filters = [(self.topics.results(tenant), 0)]
        if events:
            filters.append((self.topics.events(tenant), 1))
        return _Feed(self._attach, self._detach, filters)

    def _attach(self, filter_: str, qos: int, handler: Callable[[Inbound], None]) -> None:
        link = self._require_link()
        with self._lock:
            sinks = self._stream_sinks.setdefault(filter_, [])
            first = not sinks
            sinks.append(handler)
        if first:
            def fan_out(msg: Inbound, f: str = filter_) -> None:
                for sink in list(self._stream_sinks.get(f, ())):
                    sink(msg)

            link.subscribe(filter_, fan_out, qos=qos, wait_s=self.connect_timeout_s)

    def _detach(self, filter_: str, handler: Callable[[Inbound], None]) -> None:
        with self._lock:
            sinks = self._stream_sinks.get(filter_, [])
            if handler in sinks:
                sinks.remove(handler)
            last = not sinks
            if last:
                self._stream_sinks.pop(filter_, None)
        link = self._link
        if last and link is not None:
            link.unsubscribe(filter_, wait_s=self.connect_timeout_s)

    def _unreachable(self, detail: str) -> BrokerUnavailable:
        return BrokerUnavailable(self.settings.host, self.settings.port, detail)

    def _stop_link(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        with self._lock:
            abandoned = list(self._pending.values())
            self._pending.clear()
        for pending in abandoned:
            self._abandon(pending)
        if link is not None:
            link.stop()

    def _require_link(self) -> DataLink:
        link = self._link
        if link is None:
            raise closed_error()
        return link

    @property
    def in_flight(self) -> int:
        """Calls published and not yet resolved."""
        with self._lock:
            return len(self._pending)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def stats(self) -> dict[str, int]:
        """Counters: requests sent, calls in flight, late and stray replies dropped."""
        with self._lock:
            return {
                "sent": self.sent,
                "in_flight": len(self._pending),
                "late_replies": self.late_replies,
                "stray_replies": self.stray_replies,
            }

    # -- pending calls --------------------------------------------------------------------------
    def _register(self, pending: P) -> bytes:
        with self._lock:
            while True:
                cid = new_correlation()
                if cid not in self._pending:
                    self._pending[cid] = pending
                    return cid

    def _forget(self, cid: bytes) -> bool:
        """Remove a pending call; True if it was still pending (so no reply will resolve it)."""
        with self._lock:
            return self._pending.pop(cid, None) is not None

    def _count_late(self) -> None:
        with self._lock:
            self.late_replies += 1

    def _publish(self, prepared: Prepared, cid: bytes) -> None:
        self._publish_all([(prepared, cid)])

    def _publish_all(self, calls: Sequence[tuple[Prepared, bytes]]) -> None:
        """Publish requests (with one write where the link can), each to the tenant's topic with this
        client's inbox as its Response Topic and its correlation data."""
        publish_many(self._require_link(), [
            Outgoing(p.topic, p.payload, qos=self.qos, correlation_data=cid, content_type=CONTENT_TYPE,
                     user_properties=p.user_properties, response_topic=self.inbox, expiry_s=p.expiry_s)
            for p, cid in calls
        ])
        with self._lock:
            self.sent += len(calls)

    def _on_reply(self, msg: Inbound) -> None:
        """On paho's network thread: find the caller and hand the reply over; nothing slow here."""
        cid = msg.correlation_data
        if cid is None:
            with self._lock:
                self.stray_replies += 1
            return
        with self._lock:
            pending = self._pending.pop(bytes(cid), None)
            if pending is None:
                self.late_replies += 1
                return
        self._deliver(pending, msg)

    def _deliver(self, pending: P, msg: Inbound) -> None:
        raise NotImplementedError

    def _abandon(self, pending: P) -> None:
        raise NotImplementedError

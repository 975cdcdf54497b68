"""Inference serving: the request path from a received MQTT message to a reply, with one hand-off.

``on_request`` runs on the data connection's network thread. It finds the tenant's slot (topics are
parsed once and remembered), decodes the frame without copying the tensors (they are views of the
received payload), sheds at once what cannot finish by its deadline (before any tensor is checked or
anything is queued: overload costs little), checks the inputs against the model and appends the
request to the slot's queue. That queue is the one hand-off: a worker thread (``ef-worker-N``) takes a
batch, runs the model, splits the outputs per request and publishes each reply, encoded once, to the
request's MQTT 5 response topic with its correlation data.

Bookkeeping is folded: an arrival is counted in the window and in the slot (the memory thread folds
the slot's counts into its forecast), a finished batch is one call for all its requests (and one lock
of the scheduler for the service model and the fair share).

A request whose payload is an encoded image (JPEG or PNG, by its magic bytes) instead of a tensor frame
is accepted by tenants whose model's catalog entry declares an image input: it is queued as it is and
the worker decodes, resizes and scales it as declared (``edgefleet.zoo.images``) before running it.

Every failure becomes a typed error reply built by ``Server.error`` (the one place a request is
answered with an error); nothing a requester sends can stop a worker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgefleet.agent import batch_axes
from edgefleet.agent.host import ModelHost
from edgefleet.agent.memory.manager import MemoryManager
from edgefleet.agent.scheduler import Batch, Request, Scheduler
from edgefleet.agent.slots import TenantSlot
from edgefleet.agent.telemetry import WindowStats
from edgefleet.mqtt import Outgoing
from edgefleet.runtime import EdgeRuntimeError, InputError, check_feeds
from edgefleet.wire import ErrorCode, RequestFrame, TenantSpec, TopicKind, Topics, WireError, decode_frame
from edgefleet.wire.tensors import CONTENT_TYPE, MAGIC, encode_error, encode_reply
from edgefleet.zoo.images import ImageError, image_input, image_kind
from edgefleet.zoo.images import prepare as prepare_image

log = logging.getLogger(__name__)

Publish = Callable[..., Any]
_INPUT_CODES = {"bad_shape": ErrorCode.BAD_SHAPE, "bad_dtype": ErrorCode.BAD_DTYPE}
TOPICS_REMEMBERED = 4096  # request topics whose tenant is remembered (cleared when full)
REPLY_HEADS_REMEMBERED = 1024  # (tenant, variant) pairs whose reply meta's first keys are kept written
LAYOUTS_REMEMBERED = 256  # request header signatures whose checked layout a slot remembers (cleared when full)
_OK = [("ef-status", "ok")]
_ERROR = [("ef-status", "error")]


class Server:
    def __init__(
        self,
        *,
        device_id: str,
        topics: Topics,
        host: ModelHost,
        memory: MemoryManager,
        scheduler: Scheduler,
        stats: WindowStats,
        publish: Publish,
        max_payload_bytes: int,
        default_timeout_ms: float,
        clock: Callable[[], float] = time.monotonic,
        publish_many: Callable[[list[Outgoing]], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.topics = topics
        self.host = host
        self.memory = memory
        self.scheduler = scheduler
        self.slots = scheduler.slots
        self.stats = stats
        self.publish = publish
        self.publish_many = publish_many  # a batch's replies in one write, where the link can
        self.max_payload_bytes = max_payload_bytes
        self.default_timeout_ms = default_timeout_ms
        self.clock = clock
        self.dropped_no_reply_topic = 0
        # runs stream tenants' frames (edgefleet.agent.stream.StreamServer.run): they publish results, not replies
        self.run_stream: Callable[[Batch], tuple[int, float] | None] | None = None
        self._tenant_of: dict[str, str] = {}  # request topic -> tenant
        self._meta_heads: dict[tuple[str, str], str] = {}  # (tenant, variant) -> a reply meta's first keys
        self.dropped_bad_reply_topic = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- the network thread ------------------------------------------------------------------------
    def on_request(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview,
        response_topic: str | None,
        correlation: bytes | None,
        qos: int,
        received: float | None = None,
        properties: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``properties``: the request's MQTT 5 user properties (read only for an encoded image, whose
        ``ef-timeout-ms`` stands in for the frame's ``timeout_ms``)."""
        now = received if received is not None else self.clock()
        if not response_topic:
            self.dropped_no_reply_topic += 1  # nobody to answer; nothing else to do
            return
        if not usable_reply_topic(response_topic):
            self.dropped_bad_reply_topic += 1  # MQTT forbids publishing there: nobody can be answered
            if self.dropped_bad_reply_topic == 1:
                log.warning("dropped a request whose Response Topic %r cannot be published to (a wildcard, "
                            "NUL or too long); further ones are counted in dropped_bad_reply_topic",
                            response_topic[:200])
            return
        if correlation is None:
            self.error(response_topic, correlation, qos, ErrorCode.BAD_REQUEST,
                       "the request has no Correlation Data: its reply could not be matched to it; set the "
                       "MQTT 5 Correlation Data property")
            return
        tenant = self._tenant_of.get(topic)
        if tenant is None:
            try:
                parsed = self.topics.parse(topic)
                if parsed.kind is not TopicKind.INFER:
                    raise WireError(ErrorCode.BAD_REQUEST, f"{topic!r} is not an inference topic")
            except WireError as exc:
                self.error(response_topic, correlation, qos, exc.code, exc.message)
                return
            tenant = parsed.name
            if len(self._tenant_of) >= TOPICS_REMEMBERED:
                self._tenant_of.clear()
            self._tenant_of[topic] = tenant
        slot = self.slots.get(tenant)
        spec = slot.spec if slot is not None else None
        if slot is None or spec is None:
            self.error(response_topic, correlation, qos, ErrorCode.UNKNOWN_TENANT,
                       f"tenant {tenant!r} is not hosted on {self.device_id}")
            return
        warm = self.memory.arrived(slot)
        stats = self.stats
        stats.arrival(tenant, now)
        if len(payload) > self.max_payload_bytes:
            stats.error(tenant)
            self.error(response_topic, correlation, qos, ErrorCode.PAYLOAD_TOO_LARGE,
                       f"request of {len(payload)} bytes exceeds this device's limit of "
                       f"{self.max_payload_bytes} bytes")
            return
        if payload[:4] != MAGIC and image_kind(payload) is not None:
            self._image_request(slot, spec, payload, now, response_topic, correlation, qos, properties)
            return
        try:
            frame = decode_frame(payload)
            if not isinstance(frame, RequestFrame):
                raise WireError(ErrorCode.BAD_REQUEST, "expected a request frame")
        except WireError as exc:
            stats.error(tenant)
            self.error(response_topic, correlation, qos, exc.code, exc.message)
            return
        timeout_ms = frame.timeout_ms or self.default_timeout_ms or max(4 * spec.slo_ms, 1000.0)
        deadline = now + timeout_ms / 1e3
        spent_ms = 1e3 * (self.clock() - now)
        if spent_ms >= timeout_ms:  # no queue could help: the budget itself is too short
            stats.error(tenant)
            self.error(response_topic, correlation, qos, ErrorCode.BUDGET_EXPIRED,
                       f"timeout_ms {timeout_ms:g} was spent before the request could be queued ({spent_ms:.3f} ms "
                       f"after receipt); the same budget cannot succeed: send a larger one")
            return
        if len(slot.queue) >= self.scheduler.workers:  # a backlog: shed before checking the tensors
            early = self.scheduler.admission(slot, deadline)
            if not early.ok:
                stats.shed(tenant)
                self.error(response_topic, correlation, qos, ErrorCode.OVERLOADED,
                           f"{tenant} on {self.device_id}: {early.reason}")
                return
        try:
            rows, batch_key = self._layout(slot, frame)
        except WireError as exc:
            stats.error(tenant)
            self.error(response_topic, correlation, qos, exc.code, exc.message)
            return
        if frame.min_fidelity is not None:
            why = self._fidelity_problem(slot, frame.min_fidelity)
            if why:
                stats.error(tenant)
                self.error(response_topic, correlation, qos, ErrorCode.FIDELITY_UNAVAILABLE, why)
                return
        req = Request(tenant, frame.tensors, rows, now, deadline, response_topic, correlation, qos,
                      batch_key=batch_key)
        decision = self.scheduler.submit(req)
        if not decision.ok:
            stats.shed(tenant)
            self.error(response_topic, correlation, qos, ErrorCode.OVERLOADED,
                       f"{tenant} on {self.device_id}: {decision.reason}")
            return
        stats.start(tenant, warm=warm)

    def _image_request(self, slot: TenantSlot, spec: TenantSpec, payload: bytes | bytearray | memoryview,
                       now: float, response_topic: str, correlation: bytes | None, qos: int,
                       properties: tuple[tuple[str, str], ...] = ()) -> None:
        """A request whose payload is an encoded image: queued as it is, prepared by the worker (decoding
        takes milliseconds: never on the network thread) as the model's catalog entry declares. Its
        budget is the user property ``ef-timeout-ms`` when present (an image has no frame ``meta``)."""
        tenant = slot.name
        if image_input(spec.model) is None:
            self.stats.error(tenant)
            self.error(response_topic, correlation, qos, ErrorCode.BAD_REQUEST,
                       f"{spec.model} takes no encoded images (its catalog entry declares no image input); "
                       "send an EFT1 tensor frame")
            return
        try:
            asked_ms = image_timeout_ms(properties)
        except WireError as exc:
            self.stats.error(tenant)
            self.error(response_topic, correlation, qos, exc.code, exc.message)
            return
        deadline = now + (asked_ms or self.default_timeout_ms or max(4 * spec.slo_ms, 1000.0)) / 1e3
        key = ("image", spec.model) if slot.out_axes is not None else None
        req = Request(tenant, {}, 1, now, deadline, response_topic, correlation, qos, batch_key=key,
                      image=bytes(payload))
        decision = self.scheduler.submit(req)
        if not decision.ok:
            self.stats.shed(tenant)
            self.error(response_topic, correlation, qos, ErrorCode.OVERLOADED,
                       f"{tenant} on {self.device_id}: {decision.reason}")
            return
        self.stats.start(tenant, warm=slot.hosted is not None)

    def _prepare_images(self, reqs: list[Request], model: str) -> list[Request]:
        """Decode the batch's encoded frames into tensors; a frame that cannot be is answered
        ``bad_request`` and leaves the batch."""
        spec = image_input(model)
        kept: list[Request] = []
        for r in reqs:
            if r.image is None:
                kept.append(r)
                continue
            try:
                if spec is None:
                    raise ImageError(f"{model} takes no encoded images")
                r.tensors = prepare_image(r.image, spec)
                r.image = None
            except ImageError as exc:
                self.stats.error(r.tenant)
                self.error(r.response_topic, r.correlation, r.qos, ErrorCode.BAD_REQUEST, str(exc))
                continue
            kept.append(r)
        return kept

    def _layout(self, slot: TenantSlot, frame: RequestFrame) -> tuple[int, object]:
        """(rows, batch key) of a request checked against the tenant's model; remembered by the frame's
        header signature when the layout does not depend on tensor contents. Raises WireError."""
        signature = frame.signature
        layouts = slot.layouts  # this dict, whatever a load puts in the slot meanwhile
        known = layouts.get(signature) if signature is not None else None
        if known is not None:
            return known
        rows = self._check(slot, frame)
        batch_key: object = None
        if slot.out_axes is not None:
            rows, batch_key = batch_axes.request_layout(slot.in_axes, frame.tensors)
            if not batch_axes.content_free(slot.in_axes, frame.tensors):
                return rows, batch_key
        if signature is not None:
            if len(layouts) >= LAYOUTS_REMEMBERED:
                layouts.clear()
            layouts[signature] = (rows, batch_key)
        return rows, batch_key

    def _check(self, slot: TenantSlot, frame: RequestFrame) -> int:
        try:
            rows = check_feeds(slot.inputs, frame.tensors, loose_batch=slot.capabilities.loose_batch_axis)
        except InputError as exc:
            raise WireError(_INPUT_CODES.get(exc.code or "", ErrorCode.BAD_REQUEST), str(exc)) from None
        return max(1, rows)

    def _fidelity_problem(self, slot: TenantSlot, wanted: float) -> str:
        """Why the tenant cannot serve this request's minimum fidelity now ('' if it can)."""
        hosted = slot.hosted
        if hosted is not None and hosted.fidelity >= wanted:
            return ""
        options = slot.options
        better = sorted((r.fidelity, v) for v, r in options.items() if r.fidelity >= wanted)
        have = f"runs {hosted.variant} (fidelity {hosted.fidelity:.3f})" if hosted else "is not resident"
        if not better:
            return (
                f"tenant {slot.name!r} {have}; none of its accepted variants reaches fidelity {wanted} "
                f"(accepted: {', '.join(f'{v} {r.fidelity:.3f}' for v, r in options.items())})"
            )
        return f"tenant {slot.name!r} {have} < requested {wanted}; variant {better[-1][1]} would meet it"

    # -- replies (any thread) ----------------------------------------------------------------------
    def error(
        self, topic: str | None, correlation: bytes | None, qos: int, code: ErrorCode, message: str
    ) -> None:
        """Answer one request with an error: the one place the request path does."""
        self._send(topic, correlation, qos, encode_error(code, message, {"device": self.device_id}), _ERROR)

    def _send(
        self, topic: str | None, correlation: bytes | None, qos: int, payload: Any, status: list[tuple[str, str]]
    ) -> None:
        if not topic:
            return
        try:
            self.publish(
                topic,
                payload,
                qos=1 if qos else 0,
                correlation_data=correlation,
                content_type=CONTENT_TYPE,
                user_properties=status,
            )
        except Exception:
            log.warning("could not publish reply to %r", topic, exc_info=True)

    def _send_all(self, replies: list[Outgoing]) -> None:
        if self.publish_many is None or len(replies) == 1:
            for m in replies:
                self._send(m.topic, m.correlation_data, m.qos, m.payload, _OK)
            return
        try:
            self.publish_many(replies)
        except Exception:
            log.warning("could not publish %d replies", len(replies), exc_info=True)

    def reject(self, requests: list[Request], code: ErrorCode, message: str) -> None:
        """Answer requests that will not be served (tenant leaving, agent stopping)."""
        for r in requests:
            self.error(r.response_topic, r.correlation, r.qos, code, message)

    # -- workers -------------------------------------------------------------------------------------
    def start(self, workers: int) -> None:
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"ef-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.reject(self.scheduler.close(), ErrorCode.NOT_READY, f"{self.device_id} is shutting down")
        for t in self._threads:
            t.join(5)

    def _work(self) -> None:
        take = self.scheduler.take
        while not self._stop.is_set():
            try:
                batch = take(timeout=0.2)
                if batch is None:
                    continue
                ran: tuple[int, float] | None = None
                try:
                    ran = self.run_batch(batch)
                finally:
                    if ran is None:
                        self.scheduler.done(batch)
                    else:
                        self.scheduler.done(batch, rows=ran[0], service_s=ran[1])
            except Exception:  # a bug must not end the worker
                log.exception("worker failed on a batch")

    def run_batch(self, batch: Batch) -> tuple[int, float] | None:
        """Run one batch and answer its requests; returns (rows, service seconds) when the model ran."""
        first = batch.requests[0] if batch.requests else batch.expired[0] if batch.expired else None
        if first is not None and first.stream is not None and self.run_stream is not None:
            return self.run_stream(batch)
        for r in batch.expired:
            self.stats.error(r.tenant, deadline=True)
            self.error(r.response_topic, r.correlation, r.qos, ErrorCode.DEADLINE_EXCEEDED,
                       f"deadline passed after {1e3 * (self.clock() - r.received):.1f} ms in queue")
        reqs = batch.requests
        if not reqs:
            return None
        slot = self.slots.get(batch.tenant)
        hosted = slot.hosted if slot is not None else None
        if slot is None or hosted is None:
            self.reject(reqs, ErrorCode.UNKNOWN_TENANT, f"tenant {batch.tenant!r} was removed")
            return None
        if any(r.image is not None for r in reqs):
            reqs = self._prepare_images(reqs, hosted.spec.model)
            if not reqs:
                return None
        start = self.clock()
        try:
            if len(reqs) == 1:
                outs_per_req = [hosted.session.run(reqs[0].tensors)]
            elif slot.out_axes is None:
                outs_per_req = [hosted.session.run(r.tensors) for r in reqs]
            else:
                outs = hosted.session.run(batch_axes.stack(slot.in_axes, [r.tensors for r in reqs]))
                outs_per_req = batch_axes.split(outs, slot.out_axes, [r.rows for r in reqs])
        except InputError as exc:
            self._failed(reqs, _INPUT_CODES.get(exc.code or "", ErrorCode.BAD_REQUEST), str(exc))
            return None
        except EdgeRuntimeError as exc:
            self._failed(reqs, ErrorCode.MODEL_FAILED, f"{hosted.spec.model}: {exc}")
            return None
        except Exception as exc:
            log.exception("unexpected failure running %s", batch.tenant)
            self._failed(reqs, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            return None
        end = self.clock()
        service = end - start
        hosted.served += 1
        rows = sum(r.rows for r in reqs) if len(reqs) > 1 else reqs[0].rows
        service_ms = round(1e3 * service, 3)
        tenant = batch.tenant
        # every reply's meta is {"device", "tenant", "variant", "queue_ms", "service_ms", "batch"}: the
        # JSON around queue_ms is written once per batch (json.dumps writes a float as its repr)
        before, after = self._reply_meta(tenant, hosted.variant, service_ms, rows)
        replies: list[Outgoing] = []
        for r, outs in zip(reqs, outs_per_req, strict=True):
            if r.response_topic:
                meta_json = f"{before}{round(1e3 * (start - r.received), 3)!r}{after}"
                replies.append(Outgoing(r.response_topic, encode_reply(outs, meta_json), 1 if r.qos else 0,
                                        r.correlation, CONTENT_TYPE, _OK))
        self._send_all(replies)
        done = self.clock()
        self.stats.served(tenant, rows=rows, service_s=service, started=start, finished=done,
                          received=[r.received for r in reqs], slo_ms=hosted.spec.slo_ms)
        return rows, service

    def _reply_meta(self, tenant: str, variant: str, service_ms: float, rows: int) -> tuple[str, str]:
        """The compact JSON of a reply's meta before and after its ``queue_ms`` value."""
        before = self._meta_heads.get((tenant, variant))
        if before is None:
            if len(self._meta_heads) >= REPLY_HEADS_REMEMBERED:
                self._meta_heads.clear()
            before = self._meta_heads[(tenant, variant)] = (
                f'{{"device":{json.dumps(self.device_id)},"tenant":{json.dumps(tenant)},'
                f'"variant":{json.dumps(variant)},"queue_ms":'
            )
        return before, f',"service_ms":{service_ms!r},"batch":{rows}}}'

    def _failed(self, reqs: list[Request], code: ErrorCode, message: str) -> None:
        for r in reqs:
            self.stats.error(r.tenant)
        self.reject(reqs, code, message)


TIMEOUT_PROPERTY = "ef-timeout-ms"  # an encoded image's budget, as a user property (protocol.md section 9)
MAX_TIMEOUT_MS = 3_600_000.0  # as a frame's timeout_ms


def image_timeout_ms(properties: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> float | None:
    """The budget an encoded image's request asks for in its ``ef-timeout-ms`` user property: None when
    absent or 0 (the tenant's default, as a frame's ``timeout_ms`` of 0); a WireError (bad_request) when
    it is not a number in [0, 3 600 000] or is given twice.

    >>> image_timeout_ms([("ef-timeout-ms", "250")]), image_timeout_ms([]), image_timeout_ms([("ef-timeout-ms", "0")])
    (250.0, None, None)
    """
    values = [v for k, v in properties if k == TIMEOUT_PROPERTY]
    if not values:
        return None
    if len(values) > 1:
        raise WireError(ErrorCode.BAD_REQUEST, f"the user property {TIMEOUT_PROPERTY} is given {len(values)} times")
    try:
        value = float(values[0])
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= MAX_TIMEOUT_MS:  # NaN fails both
        raise WireError(ErrorCode.BAD_REQUEST, f"the user property {TIMEOUT_PROPERTY} must be a number of "
                        f"milliseconds in [0, {MAX_TIMEOUT_MS:g}], got {values[0][:40]!r}")
    return value or None


def usable_reply_topic(topic: str) -> bool:
    """Whether a requester's Response Topic is a topic one may publish to (MQTT 5, 4.7: no wildcards, no
    NUL; at most 65535 bytes of UTF-8)."""
    return not ("#" in topic or "+" in topic or "\x00" in topic) and len(topic.encode("utf-8", "replace")) <= 65535


def answer_bad_name(server: Server, topic: str, payload: bytes, response_topic: str | None,
                    correlation: bytes | None, qos: int) -> bool:
    """A request from the fleet-wide shared group (``Topics.infer_any_shared``): answered with bad_request
    when its tenant name breaks the rules (no replica subscribes to such a topic); returns whether it was.
    Requests to valid names are left to the tenant's own replicas."""
    try:
        server.topics.parse(topic)
    except WireError:
        server.on_request(topic, payload, response_topic, correlation, qos)
        return True
    return False

"""Inference serving: turn MQTT requests into queued work, run batches, answer every requester.

``on_request`` runs on the MQTT network thread and only parses, validates and enqueues (or answers an
error at once). Worker threads (``workers`` of them, named ``ef-worker-N``) take batches from the
scheduler, run the model, split the outputs back per request and publish each reply to the request's
MQTT 5 response topic with its correlation data. Every failure becomes a typed error reply; nothing a
requester sends can stop a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent import layout
from agent.host import ModelHost
from agent.memory.manager import Assignment, MemoryManager
from agent.scheduler import Batch, Request, Scheduler
from agent.telemetry import WindowStats
from edgefleet.runtime import EdgeRuntimeError, InputError, check_feeds
from edgefleet.wire import ErrorCode, RequestFrame, TopicKind, Topics, WireError, decode_frame
from edgefleet.wire.tensors import CONTENT_TYPE, encode_error, encode_result

log = logging.getLogger(__name__)

Publish = Callable[..., Any]
_INPUT_CODES = {"bad_shape": ErrorCode.BAD_SHAPE, "bad_dtype": ErrorCode.BAD_DTYPE}


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
    ) -> None:
        self.device_id = device_id
        self.topics = topics
        self.host = host
        self.memory = memory
        self.scheduler = scheduler
        self.stats = stats
        self.publish = publish
        self.max_payload_bytes = max_payload_bytes
        self.default_timeout_ms = default_timeout_ms
        self.clock = clock
        self.dropped_no_reply_topic = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- MQTT thread -------------------------------------------------------------------------------
    def on_request(
        self,
        topic: str,
        payload: bytes,
        response_topic: str | None,
        correlation: bytes | None,
        qos: int,
        received: float | None = None,
    ) -> None:
        now = received if received is not None else self.clock()
        if not response_topic:
            self.dropped_no_reply_topic += 1  # nobody to answer; nothing else to do
            return
        reply = _Reply(self.publish, response_topic, correlation, qos, self.device_id)
        try:
            parsed = self.topics.parse(topic)
            if parsed.kind is not TopicKind.INFER:
                raise WireError(ErrorCode.BAD_REQUEST, f"{topic!r} is not an inference topic")
            tenant = parsed.name
        except WireError as exc:
            reply.error(exc.code, exc.message)
            return
        tenant_info = self.memory.assigned.get(tenant)
        if tenant_info is None:
            reply.error(ErrorCode.UNKNOWN_TENANT, f"tenant {tenant!r} is not hosted on {self.device_id}")
            return
        self.stats.arrival(tenant, now)
        if len(payload) > self.max_payload_bytes:
            self.stats.error(tenant)
            reply.error(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"request of {len(payload)} bytes exceeds this device's limit of "
                f"{self.max_payload_bytes} bytes",
            )
            return
        try:
            frame = decode_frame(payload)
            if not isinstance(frame, RequestFrame):
                raise WireError(ErrorCode.BAD_REQUEST, "expected a request frame")
            rows = self._check(tenant_info, frame)
        except WireError as exc:
            self.stats.error(tenant)
            reply.error(exc.code, exc.message)
            return
        if frame.min_fidelity is not None:
            why = self._fidelity_problem(tenant, frame.min_fidelity)
            if why:
                self.stats.error(tenant)
                reply.error(ErrorCode.FIDELITY_UNAVAILABLE, why)
                return
        spec = tenant_info.spec
        timeout_ms = frame.timeout_ms or self.default_timeout_ms or max(4 * spec.slo_ms, 1000.0)
        batch_key: object = None
        if tenant_info.out_axes is not None:
            rows, batch_key = layout.request_layout(tenant_info.in_axes, frame.tensors)
        req = Request(
            tenant=tenant,
            tensors=frame.tensors,
            rows=rows,
            batch_key=batch_key,
            received=now,
            deadline=now + timeout_ms / 1e3,
            response_topic=response_topic,
            correlation=correlation,
            qos=qos,
        )
        decision = self.scheduler.submit(req)
        if not decision.ok:
            self.stats.shed(tenant)
            reply.error(ErrorCode.OVERLOADED, f"{tenant} on {self.device_id}: {decision.reason}")
            return
        self.stats.start(tenant, warm=self.memory.arrival(tenant))

    def _check(self, a: Assignment, frame: RequestFrame) -> int:
        try:
            rows = check_feeds(a.inputs, frame.tensors, loose_batch=a.runtime == "litert")
        except InputError as exc:
            raise WireError(_INPUT_CODES.get(exc.code or "", ErrorCode.BAD_REQUEST), str(exc)) from None
        return max(1, rows)

    def _fidelity_problem(self, tenant: str, wanted: float) -> str:
        """Why the tenant cannot serve this request's minimum fidelity now ('' if it can)."""
        hosted = self.host.get(tenant)
        a = self.memory.assigned.get(tenant)
        if hosted is not None and hosted.fidelity >= wanted:
            return ""
        better = sorted((r.fidelity, v) for v, r in (a.options.items() if a else ()) if r.fidelity >= wanted)
        have = f"runs {hosted.variant} (fidelity {hosted.fidelity:.3f})" if hosted else "is not resident"
        if not better:
            return (
                f"tenant {tenant!r} {have}; none of its accepted variants reaches fidelity {wanted} "
                f"(accepted: {', '.join(f'{v} {r.fidelity:.3f}' for v, r in (a.options.items() if a else ()))})"
            )
        return f"tenant {tenant!r} {have} < requested {wanted}; variant {better[-1][1]} would meet it"

    # -- workers -------------------------------------------------------------------------------------
    def start(self, workers: int) -> None:
        for i in range(workers):
            t = threading.Thread(target=self._work, name=f"ef-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def reject(self, requests: list[Request], code: ErrorCode, message: str) -> None:
        """Answer requests that will not be served (tenant leaving, agent stopping)."""
        for r in requests:
            _Reply.of(self, r).error(code, message)

    def stop(self) -> None:
        self._stop.set()
        self.reject(self.scheduler.close(), ErrorCode.NOT_READY, f"{self.device_id} is shutting down")
        for t in self._threads:
            t.join(5)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.scheduler.take(timeout=0.2)
                if batch is None:
                    continue
                try:
                    self.run_batch(batch)
                finally:
                    self.scheduler.done(batch)
            except Exception:  # a bug must not end the worker
                log.exception("worker failed on a batch")

    def run_batch(self, batch: Batch) -> None:
        for r in batch.expired:
            self.stats.error(r.tenant, deadline=True)
            _Reply.of(self, r).error(
                ErrorCode.DEADLINE_EXCEEDED,
                f"deadline passed after {1e3 * (self.clock() - r.received):.1f} ms in queue",
            )
        if not batch.requests:
            return
        hosted = self.host.get(batch.tenant)
        if hosted is None:
            for r in batch.requests:
                _Reply.of(self, r).error(ErrorCode.UNKNOWN_TENANT, f"tenant {batch.tenant!r} was removed")
            return
        reqs = batch.requests
        start = self.clock()
        for r in reqs:
            r.started = start
        try:
            if len(reqs) == 1 or hosted.out_axes is None:
                outs_per_req = [hosted.session.run(r.tensors) for r in reqs]
            else:
                outs = hosted.session.run(layout.stack(hosted.in_axes, [r.tensors for r in reqs]))
                outs_per_req = layout.split(outs, hosted.out_axes, [r.rows for r in reqs])
        except InputError as exc:
            for r in reqs:
                self.stats.error(r.tenant)
                _Reply.of(self, r).error(_INPUT_CODES.get(exc.code or "", ErrorCode.BAD_REQUEST), str(exc))
            return
        except EdgeRuntimeError as exc:
            for r in reqs:
                self.stats.error(r.tenant)
                _Reply.of(self, r).error(ErrorCode.MODEL_FAILED, f"{hosted.spec.model}: {exc}")
            return
        except Exception as exc:
            log.exception("unexpected failure running %s", batch.tenant)
            for r in reqs:
                self.stats.error(r.tenant)
                _Reply.of(self, r).error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            return
        end = self.clock()
        service = end - start
        hosted.served += 1
        rows = sum(r.rows for r in reqs)
        self.stats.batch(batch.tenant, rows=rows, service_s=service)
        self.scheduler.observe(batch.tenant, rows, service)
        for r, outs in zip(reqs, outs_per_req, strict=True):
            meta = {
                "device": self.device_id,
                "tenant": r.tenant,
                "variant": hosted.variant,
                "queue_ms": round(1e3 * (start - r.received), 3),
                "service_ms": round(1e3 * service, 3),
                "batch": rows,
            }
            _Reply.of(self, r).result(outs, meta)
            self.stats.completion(
                r.tenant,
                latency_s=self.clock() - r.received,
                queue_s=start - r.received,
                slo_ms=hosted.spec.slo_ms,
            )


class _Reply:
    """Publishes one answer to a requester's response topic."""

    def __init__(
        self, publish: Publish, topic: str, correlation: bytes | None, qos: int, device: str
    ) -> None:
        self.publish, self.topic, self.correlation, self.qos, self.device = (
            publish,
            topic,
            correlation,
            qos,
            device,
        )

    @classmethod
    def of(cls, server: Server, r: Request) -> _Reply:
        return cls(server.publish, r.response_topic or "", r.correlation, r.qos, server.device_id)

    def _send(self, payload: bytes, status: str) -> None:
        if not self.topic:
            return
        try:
            self.publish(
                self.topic,
                payload,
                qos=min(self.qos, 1),
                correlation_data=self.correlation,
                content_type=CONTENT_TYPE,
                user_properties=[("ef-status", status)],
            )
        except Exception:
            log.warning("could not publish reply to %r", self.topic, exc_info=True)

    def result(self, outs: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self._send(encode_result(outs, meta), "ok")

    def error(self, code: ErrorCode, message: str) -> None:
        self._send(encode_error(code, message, {"device": self.device}), "error")

"""Stream tenants on the device: frames from a source topic in, results and events out.

A stream tenant's frames arrive on topics the sensors chose (``TenantSpec.stream.sources``), on the data
connection. ``on_frame`` (network thread) reads the frame's identity (topic, ``seq``, ``ts``), checks an
EFT1 frame's tensors (an encoded JPEG/PNG frame is decoded only if it runs: a skipped frame costs
nothing) and offers it to the scheduler, where it *replaces* any frame of the same source still waiting:
newest frame wins, a stream never builds a queue, and every replaced frame is counted as skipped. The
scheduler's workers run stream frames beside the request tenants (same deadlines-first dispatch and fair
share); ``run`` prepares the input, runs the model, decodes the outputs with the catalog's decoder,
publishes the result (QoS 0, retained: a late subscriber sees the current state) and whatever events the
tenant's rules fire (QoS 1). The broker fans results out to every subscriber: the device publishes each
result once, however many apps listen.

Hand-over (a migration, or a second device taking the tenant up): the device that starts hosting
subscribes to the tenant's handover topic and its sources on the *same* connection, publishes a
``StreamHandover`` and takes up the frames it receives after its own copy of that message comes back.
A device that hosted the tenant before receives the same message on its data connection before any of
those frames (one broker routes them in order), answers what it had received before it, and ignores
the rest; its last results are not retained, so the retained result stays the newest. Results carry
the frame's identity, and no frame is answered by both devices or by neither. When a device that took
the tenant up leaves it while the older one still hosts it (a move rolled back), it announces a release
and the older device takes the frames up again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.agent.memory.manager import MemoryManager
from edgefleet.agent.scheduler import Batch, Request, Scheduler
from edgefleet.agent.stream_events import EventRules, result_values
from edgefleet.agent.telemetry import WindowStats
from edgefleet.mqtt import DataLink, Inbound
from edgefleet.runtime import EdgeRuntimeError, InputError, check_feeds
from edgefleet.wire import (
    FrameId,
    RequestFrame,
    StreamEvent,
    StreamHandover,
    StreamResult,
    TenantSpec,
    Topics,
    WireError,
    decode,
    decode_frame,
    encode,
)
from edgefleet.wire.tensors import CONTENT_TYPE, MAGIC, encode_result

log = logging.getLogger(__name__)

TAKE_UP_FALLBACK_S = 2.0  # take frames up anyway when the own handover never comes back (broker trouble)
STREAM_DEADLINE_S = 30.0  # a waiting frame is replaced by the next one long before this
JSON = "application/json"
WARN_EVERY_S = 10.0  # bad frames of one tenant are logged at most this often


@dataclass
class StreamFrame:
    """What a stream request carries besides its tensors: the frame's identity and, for encoded images,
    the bytes still to be decoded."""

    frame: FrameId
    wall_received: float  # Unix seconds at receipt (the age of frames without ``ts``)
    image: bytes | None = None


@dataclass
class _Stream:
    spec: TenantSpec
    since: float  # Unix seconds: when this device started hosting (newer host wins a hand-over)
    hosted_at: float  # monotonic
    rules: EventRules
    decoder: Callable[[Any], dict[str, Any]] | None
    image: Any  # edgefleet.zoo.catalog.ImageInput | None
    as_json: bool
    taking: bool = False  # our own handover came back: frames from now on are ours
    took_up: threading.Event = field(default_factory=threading.Event)  # set with ``taking``
    yielded: bool = False  # a newer host took the tenant up: frames from now on are not ours
    yielded_to: tuple[float, str] | None = None  # (since, device) of that host
    leaving: bool = False
    skipped_since_result: dict[str, int] = field(default_factory=dict)  # source topic -> frames
    last_warning: float = -math.inf
    lock: threading.Lock = field(default_factory=threading.Lock)  # the rules' state and skip counts


class StreamServer:
    def __init__(
        self,
        *,
        device_id: str,
        topics: Topics,
        link: DataLink,
        scheduler: Scheduler,
        memory: MemoryManager,
        stats: WindowStats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.topics = topics
        self.link = link
        self.scheduler = scheduler
        self.memory = memory
        self.slots = scheduler.slots
        self.stats = stats
        self.clock = clock
        self.wall = wall
        self._streams: dict[str, _Stream] = {}
        self._by_filter: dict[str, set[str]] = {}  # source filter -> tenants (one route per filter)
        self._lock = threading.Lock()
        self.results_published = 0
        self.events_published = 0

    # -- hosting (command thread) ----------------------------------------------------------------
    def host(self, spec: TenantSpec) -> None:
        """Start taking frames for ``spec`` (its model is resident): subscribe to the handover topic and
        the sources, then announce the hand-over; returns once the announcement came back (the deploy is
        acknowledged taking frames), or after TAKE_UP_FALLBACK_S."""
        assert spec.stream is not None
        from edgefleet.zoo.decoders import get_decoder
        from edgefleet.zoo.images import decoder_name, image_input

        decoder_id = decoder_name(spec.model)
        fmt = spec.stream.results
        stream = _Stream(
            spec=spec,
            since=self.wall(),
            hosted_at=self.clock(),
            rules=EventRules(list(spec.stream.events)),
            decoder=get_decoder(decoder_id),
            image=image_input(spec.model),
            as_json=fmt == "json" or (fmt == "auto" and decoder_id is not None),
        )
        with self._lock:
            old = self._streams.get(spec.name)
            self._streams[spec.name] = stream
        if old is not None:  # the same tenant with new sources or rules: keep taking frames
            stream.taking, stream.since = old.taking, old.since
            self._unroute(spec.name, set(old.spec.stream.sources) - set(spec.stream.sources) if old.spec.stream else set())
        name = spec.name
        self.link.subscribe(self.topics.handover(name), lambda m: self._on_handover(name, m), qos=1, wait_s=5.0)
        for source in spec.stream.sources:
            self._route(name, source)
        if old is None:
            announce = StreamHandover(tenant=name, device=self.device_id, since=stream.since)
            try:
                self.link.publish(self.topics.handover(name), encode(announce), qos=1, content_type=JSON)
            except Exception as exc:  # offline (an agent restoring its tenants before it connects)
                log.info("stream %s: no handover announced (%s); taking frames up at once", name, exc)
                stream.taking = True
                stream.took_up.set()
            if not stream.took_up.wait(TAKE_UP_FALLBACK_S):
                log.warning("stream %s: own handover did not come back in %.0f s; taking frames up anyway",
                            name, TAKE_UP_FALLBACK_S)
                stream.taking = True

    def update(self, spec: TenantSpec) -> None:
        """The tenant's stream part changed in place (sources, rules, results format)."""
        self.host(spec)

    def leave(self, name: str) -> None:
        """Stop taking frames of ``name`` (frames already waiting are still answered)."""
        with self._lock:
            stream = self._streams.get(name)
        if stream is None:
            return
        was_active = stream.taking and not stream.yielded
        stream.yielded = stream.leaving = True
        if was_active:  # a device that yielded to this one (a move rolled back) takes the frames up again
            note = StreamHandover(tenant=name, device=self.device_id, since=stream.since, release=True)
            try:
                self.link.publish(self.topics.handover(name), encode(note), qos=1, content_type=JSON)
            except Exception as exc:
                log.info("stream %s: no release announced (%s)", name, exc)
        self._unroute(name, set(stream.spec.stream.sources) if stream.spec.stream else set())
        self.link.unsubscribe(self.topics.handover(name), wait_s=2.0)

    def forget(self, name: str) -> None:
        with self._lock:
            self._streams.pop(name, None)

    def hosts(self, name: str) -> bool:
        return name in self._streams

    def stop(self) -> None:
        for name in list(self._streams):
            self.leave(name)

    def _route(self, tenant: str, source: str) -> None:
        with self._lock:
            tenants = self._by_filter.setdefault(source, set())
            first = not tenants
            tenants.add(tenant)
        if first:
            def handler(msg: Inbound, f: str = source) -> None:
                self._dispatch(f, msg)

            self.link.subscribe(source, handler, qos=0, wait_s=5.0)

    def _unroute(self, tenant: str, sources: set[str]) -> None:
        for source in sources:
            with self._lock:
                tenants = self._by_filter.get(source, set())
                tenants.discard(tenant)
                last = not tenants
                if last:
                    self._by_filter.pop(source, None)
            if last:
                self.link.unsubscribe(source, wait_s=2.0, linger_s=0.1)

    # -- network thread ----------------------------------------------------------------------------
    def _dispatch(self, source: str, msg: Inbound) -> None:
        with self._lock:
            tenants = list(self._by_filter.get(source, ()))
        for tenant in tenants:
            self.on_frame(tenant, msg)

    def _on_handover(self, tenant: str, msg: Inbound) -> None:
        stream = self._streams.get(tenant)
        if stream is None:
            return
        try:
            note: StreamHandover = decode(msg.payload, StreamHandover)
        except WireError as exc:
            log.warning("ignoring a malformed handover of %s: %s", tenant, exc.message)
            return
        if note.tenant != tenant:
            return
        mine = note.device == self.device_id and abs(note.since - stream.since) < 1e-6
        if note.release:
            if not mine and stream.yielded and not stream.leaving and stream.yielded_to == (note.since, note.device):
                stream.yielded, stream.yielded_to = False, None
                log.info("stream %s: %s left it; taking the frames up again", tenant, note.device)
        elif mine:
            stream.taking = True  # our own: every frame from now on comes after it at the other hosts
            stream.took_up.set()
        elif (note.since, note.device) > (stream.since, self.device_id) and not stream.yielded:
            stream.yielded, stream.yielded_to = True, (note.since, note.device)  # to the next host only
            log.info("stream %s: %s takes it up; answering the frames received before", tenant, note.device)

    def on_frame(self, tenant: str, msg: Inbound) -> None:
        stream = self._streams.get(tenant)
        if stream is None or stream.yielded:
            return
        now = msg.received_at
        if not stream.taking:
            return  # another host answers frames until our handover comes back
        slot = self.slots.get(tenant)
        if slot is None or slot.spec is None:
            return
        warm = self.memory.arrived(slot)
        self.stats.arrival(tenant, now)
        props = dict(msg.user_properties)
        try:
            frame = FrameId(topic=msg.topic, seq=_int_prop(props.get("seq")), ts=_float_prop(props.get("ts")))
            image: bytes | None = None
            tensors: dict[str, np.ndarray] = {}
            if msg.payload[:4] == MAGIC:
                decoded = decode_frame(msg.payload)
                if not isinstance(decoded, RequestFrame):
                    raise ValueError("expected a request frame")
                meta = decoded.meta
                frame = FrameId(
                    topic=msg.topic,
                    seq=_int_prop(meta.get("seq")) if "seq" in meta else frame.seq,
                    ts=_float_prop(meta.get("ts")) if "ts" in meta else frame.ts,
                )
                tensors = decoded.tensors
                check_feeds(slot.inputs, tensors, loose_batch=slot.capabilities.loose_batch_axis)
            else:
                from edgefleet.zoo.images import image_kind

                if stream.image is None or image_kind(msg.payload) is None:
                    raise ValueError(
                        "a frame must be an EFT1 request frame"
                        + (" or a JPEG/PNG image" if stream.image is not None else f" ({slot.spec.model} takes no images)")
                    )
                image = msg.payload
        except (WireError, InputError, ValueError) as exc:
            self.stats.error(tenant)
            self._warn(stream, f"stream {tenant}: bad frame on {msg.topic}: {getattr(exc, 'message', exc)}")
            return
        req = Request(
            tenant, tensors, 1, now, now + STREAM_DEADLINE_S,
            stream=StreamFrame(frame, self.wall(), image), stream_key=msg.topic,
        )
        skipped = self.scheduler.offer_latest(req)
        if skipped is None:
            return
        if skipped:
            self.stats.skipped(tenant, skipped)
            with stream.lock:
                stream.skipped_since_result[msg.topic] = stream.skipped_since_result.get(msg.topic, 0) + skipped
        self.stats.start(tenant, warm=warm)

    def _warn(self, stream: _Stream, message: str) -> None:
        now = self.clock()
        if now - stream.last_warning >= WARN_EVERY_S:
            stream.last_warning = now
            log.warning("%s", message)

    # -- workers -------------------------------------------------------------------------------------
    def run(self, batch: Batch) -> tuple[int, float] | None:
        """Run a batch of stream frames (``Server.run_batch`` hands them here); returns (rows, service s)."""
        for r in batch.expired:
            self.stats.skipped(r.tenant, 1)
        if not batch.requests:
            return None
        slot = self.slots.get(batch.tenant)
        hosted = slot.hosted if slot is not None else None
        stream = self._streams.get(batch.tenant)
        if slot is None or hosted is None or stream is None:
            return None
        total = 0.0
        for r in batch.requests:
            sf: StreamFrame = r.stream  # type: ignore[assignment]
            try:
                feeds = r.tensors
                if sf.image is not None:
                    from edgefleet.zoo.images import prepare

                    feeds = prepare(sf.image, stream.image)
                start = self.clock()
                outputs = hosted.session.run(feeds)
                service = self.clock() - start
            except (InputError, EdgeRuntimeError, ValueError) as exc:
                self.stats.error(r.tenant)
                self._warn(stream, f"stream {r.tenant}: frame {sf.frame} failed: {exc}")
                continue
            hosted.served += 1
            total += service
            self._publish(stream, r, sf, outputs, service, hosted.variant, start)
        return len(batch.requests), total

    def _publish(self, stream: _Stream, r: Request, sf: StreamFrame, outputs: dict[str, np.ndarray],
                 service_s: float, variant: str, started: float) -> None:
        tenant = r.tenant
        decoded: dict[str, Any] = {}
        if stream.decoder is not None:
            try:
                decoded = stream.decoder(outputs)
            except Exception as exc:
                self._warn(stream, f"stream {tenant}: decoder failed: {exc}")
        values = result_values(outputs, decoded)
        wall = self.wall()
        age_ms = 1e3 * (wall - (sf.frame.ts if sf.frame.ts is not None else sf.wall_received))
        with stream.lock:
            skipped = stream.skipped_since_result.pop(sf.frame.topic, 0)
            fired = stream.rules.observe(values) if stream.rules else []
        result = StreamResult(tenant=tenant, device=self.device_id, frame=sf.frame, age_ms=round(age_ms, 3),
                              service_ms=round(1e3 * service_s, 3), values=values, decoded=decoded,
                              skipped=skipped, ts=wall)
        retain = not stream.yielded  # a device handing over never overwrites the newer host's result
        try:
            if stream.as_json:
                self.link.publish(self.topics.results(tenant), encode(result), qos=0, retain=retain,
                                  content_type=JSON)
            else:
                meta = {"device": self.device_id, "tenant": tenant, "variant": variant,
                        "frame": {"topic": sf.frame.topic, "seq": sf.frame.seq, "ts": sf.frame.ts},
                        "age_ms": result.age_ms, "service_ms": result.service_ms, "values": values,
                        "decoded": decoded, "skipped": skipped, "ts": wall}
                self.link.publish(self.topics.results(tenant), encode_result(outputs, meta), qos=0,
                                  retain=retain, content_type=CONTENT_TYPE)
            self.results_published += 1
            for f in fired:
                event = StreamEvent(tenant=tenant, device=self.device_id, event=f.rule, state=f.state,  # type: ignore[arg-type]
                                    value=f.value, previous=f.previous, frame=sf.frame, ts=wall)
                self.link.publish(self.topics.events(tenant), encode(event), qos=1, content_type=JSON)
                self.events_published += 1
        except Exception:
            log.warning("could not publish a result of %s", tenant, exc_info=True)
        done = self.clock()
        spec = stream.spec
        self.stats.served(tenant, rows=1, service_s=service_s, started=started, finished=done,
                          received=[r.received], slo_ms=math.inf)
        self.stats.frame_age(tenant, age_ms, slo_ms=spec.slo_ms)


def _int_prop(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"seq must be an integer, got {value!r}")
    try:
        out: int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"seq must be an integer, got {value!r}") from None
    if not (0 <= out < 2**63):
        raise ValueError(f"seq must be in [0, 2^63), got {out}")
    if isinstance(value, float) and value != out:
        raise ValueError(f"seq must be an integer, got {value!r}")
    return out


def _float_prop(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"ts must be a number (Unix seconds), got {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"ts must be a number (Unix seconds), got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"ts must be a finite number >= 0, got {value!r}")
    return out

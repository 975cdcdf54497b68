"""The coordinator process: one MQTT link, one worker thread that owns the database, one timer.

paho's network thread only enqueues what arrives. The worker takes one message at a time, applies it
in a database transaction, then runs the timer duties (send due commands, declare silent devices dead,
answer operator calls whose time ran out, publish the performance model's report when it is due).
``queue.get(timeout=...)`` is the timer, so nothing needs a lock. Every message is handled
defensively: a malformed payload is logged and counted, never fatal.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coordinator.commands import Outbox
from coordinator.config import CoordinatorConfig
from coordinator.engine import Engine
from coordinator.models import ModelLookup, ZooModels
from coordinator.ops import OpsDesk, fleet_status, model_report
from coordinator.perf.report import ReportSchedule
from coordinator.placement import MostFreeMemory, Placement
from coordinator.placement.live import LivePredictedLatency
from coordinator.store import Store
from edgefleet.metrics import MetricsServer, Sample, TelemetryMetrics, start_metrics
from edgefleet.mqtt import Inbound, MqttLink
from edgefleet.wire import (
    Birth,
    ErrorCode,
    FleetStatus,
    OpReply,
    TelemetryAck,
    TopicKind,
    WireError,
    encode,
)
from edgefleet.wire.codec import decode_ack, decode_status, decode_telemetry

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_WAIT_S = 1.0  # the worker wakes at least this often
PRUNE_EVERY_S = 60.0


@dataclass
class Counters:
    """What the coordinator has seen, for logs, tests and status."""

    received: dict[str, int] = field(default_factory=dict)  # channel -> messages
    malformed: dict[str, int] = field(default_factory=dict)  # channel -> payloads or topics refused
    errors: int = 0  # handler bugs caught by the worker


@dataclass
class _Call:
    fn: Callable[[Engine], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_STOP = object()


class Coordinator:
    """Run in-process with ``start()`` / ``stop()``; ``main()`` wraps it for the command line."""

    def __init__(self, config: CoordinatorConfig, *, models: ModelLookup | None = None,
                 placement: Placement | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.topics = config.topics
        self.models: ModelLookup = models if models is not None else ZooModels()
        self.placement: Placement = placement if placement is not None else _placement(config.placement)
        self.clock = clock
        self.counters = Counters()
        self.metrics = TelemetryMetrics()  # every device's windows, served on config.metrics_port (0: off)
        self._fleet_gauges: list[Sample] = []  # rebuilt by the worker after each message or timer tick
        self._metrics_server: MetricsServer | None = None
        self._gauges_at = 0.0
        self._stored: list[tuple[str, str, int]] = []  # (device, boot, seq) held by the open transaction
        self._reports = ReportSchedule(config.model_report_period_s)  # the model's retained error report
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.link = MqttLink(config.mqtt, client_id=config.coordinator_id)
        for filter_, channel in ((self.topics.all_status, "status"), (self.topics.all_telemetry, "telemetry"),
                                 (self.topics.all_acks, "acks"), (self.topics.ops(), "ops")):
            self.link.subscribe(filter_, self._enqueue(channel), qos=1)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Open the database, start the worker and connect (reconnecting forever in the background)."""
        self._thread = threading.Thread(target=self._run, name="ef-coordinator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._start_error is not None:
            raise self._start_error
        self._metrics_server = start_metrics(self._samples, self.config.metrics_port)
        self.link.start()
        if not self.link.wait_connected(timeout_s):
            log.warning("not connected to %s:%d yet; retrying in the background",
                        self.config.mqtt.host, self.config.mqtt.port)

    def stop(self) -> None:
        """Finish the message in hand, close the database and disconnect."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(10)
            self._thread = None
        self.link.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def _samples(self) -> list[Sample]:
        """What ``GET /metrics`` serves (metrics thread): telemetry totals, fleet gauges, message counts."""
        c = self.counters
        out = self.metrics.samples() + list(self._fleet_gauges)
        if isinstance(self.placement, LivePredictedLatency):
            for tenant, stat in sorted(self.placement.errors.stats.items()):
                out.append(Sample("edgefleet_model_p95_error_ratio", stat.ape, {"tenant": tenant}, "gauge",
                                  "EWMA of |predicted - measured| / measured p95 latency, per tenant"))
                out.append(Sample("edgefleet_model_p95_bias_ratio", stat.bias, {"tenant": tenant}, "gauge",
                                  "EWMA of (predicted - measured) / measured p95: < 0 means optimistic"))
        for channel, n in sorted(dict(c.received).items()):
            out.append(Sample("edgefleet_coordinator_messages_total", n, {"channel": channel}, "counter",
                              "Messages the coordinator received, by channel"))
        for channel, n in sorted(dict(c.malformed).items()):
            out.append(Sample("edgefleet_coordinator_malformed_total", n, {"channel": channel}, "counter",
                              "Messages refused as malformed, by channel"))
        out.append(Sample("edgefleet_coordinator_handler_errors_total", c.errors, {}, "counter",
                          "Handler failures caught by the coordinator's worker (state rolled back)"))
        return out

    def call(self, fn: Callable[[Engine], T], timeout_s: float = 10.0) -> T:
        """Run ``fn(engine)`` on the worker thread (which owns the database) and return its result."""
        item = _Call(fn)
        self._queue.put(item)
        if not item.done.wait(timeout_s):
            raise TimeoutError("the coordinator's worker did not answer")
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[no-any-return]

    def status(self) -> FleetStatus:
        return self.call(fleet_status)

    # -- paho thread: enqueue only ------------------------------------------------------------------
    def _enqueue(self, channel: str) -> Callable[[Inbound], None]:
        def handler(msg: Inbound) -> None:
            self._queue.put((channel, msg))

        return handler

    # -- worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            store = Store(self.config.db_path)
            outbox = Outbox(store, self.topics, self.config.commands,
                            lambda topic, payload: self._publish(topic, payload))
            engine = Engine(store=store, outbox=outbox, models=self.models, placement=self.placement,
                            clock=self.clock, device_timeout_s=self.config.device_timeout_s,
                            rebalance=self.config.rebalance)
            desk = OpsDesk(engine, self._reply, self.clock, self.config.op_timeout_s)
            engine.set_settled(desk.settled)
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        last_prune = 0.0
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._wait_s(engine, desk))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    return
                if isinstance(item, _Call):
                    self._do_call(engine, item)
                elif item is not None:
                    channel, msg = item
                    if self._guarded(store, functools.partial(self._dispatch, engine, desk, channel, msg)):
                        self._confirm_telemetry()  # only after the commit: the agent then forgets them
                    self._stored.clear()
                self._guarded(store, lambda: self._tick(engine, desk))
                if self.clock() - last_prune > PRUNE_EVERY_S:
                    last_prune = self.clock()
                    self._guarded(store, lambda: store.prune_telemetry(
                        self.clock() - self.config.telemetry_retention_s))
        finally:
            store.close()

    def _wait_s(self, engine: Engine, desk: OpsDesk) -> float:
        """Seconds until the timer has something to do: a command due, or an operator call's deadline."""
        try:
            now = self.clock()
            sending = None
            if self.link.connected:
                sending = engine.outbox.next_due_at({d.device_id for d in engine.store.devices() if d.online})
            due = [t for t in (sending, desk.next_deadline()) if t is not None]
            return max(0.01, min(MAX_WAIT_S, *(t - now for t in due))) if due else MAX_WAIT_S
        except Exception:
            self.counters.errors += 1
            log.exception("coordinator worker: computing the next wake-up failed")
            return MAX_WAIT_S

    def _guarded(self, store: Store, fn: Callable[[], object]) -> bool:
        try:
            with store.atomic():
                fn()
            return True
        except Exception:
            self.counters.errors += 1
            log.exception("coordinator worker: handling failed (state rolled back, service continues)")
            return False

    def _confirm_telemetry(self) -> None:
        """Tell each device which of its windows the database now holds (stored now or before)."""
        by_boot: dict[tuple[str, str], list[int]] = {}
        for device, boot, seq in self._stored:
            by_boot.setdefault((device, boot), []).append(seq)
        for (device, boot), seqs in by_boot.items():
            ack = TelemetryAck(device_id=device, boot_id=boot, seqs=seqs)
            self.link.publish(self.topics.commands(device), encode(ack), qos=1)

    @staticmethod
    def _do_call(engine: Engine, item: _Call) -> None:
        try:
            item.result = item.fn(engine)
        except BaseException as exc:
            item.error = exc
        item.done.set()

    def _tick(self, engine: Engine, desk: OpsDesk) -> None:
        engine.check_liveness()
        if self._metrics_server is not None and self.clock() - self._gauges_at >= 1.0:
            self._gauges_at = self.clock()
            self._fleet_gauges = _fleet_gauges(engine)
        if self.link.connected:
            online = {d.device_id for d in engine.store.devices() if d.online}
            engine.send_due(online)
            self._publish_model_report(engine)
        desk.expire()

    def _publish_model_report(self, engine: Engine) -> None:
        """The performance model's error per tenant, retained, when due (see coordinator.perf.report)."""
        now = self.clock()
        if not self._reports.ready(now):
            return
        report = model_report(engine, now)
        if report is not None and self._reports.due(report, now):
            self._publish(self.topics.model(), encode(report), retain=True)
            self._reports = self._reports.published(report, now)

    def _dispatch(self, engine: Engine, desk: OpsDesk, channel: str, msg: Inbound) -> None:
        c = self.counters
        c.received[channel] = c.received.get(channel, 0) + 1
        try:
            if channel == "ops":
                before = desk.malformed
                desk.handle(msg.payload, msg.response_topic, msg.correlation_data)
                if desk.malformed != before:
                    c.malformed["ops"] = c.malformed.get("ops", 0) + desk.malformed - before
                return
            parsed = self.topics.parse(msg.topic)
            device = parsed.name
            if channel == "status" and parsed.kind is TopicKind.STATUS:
                if not msg.payload:
                    return  # a cleared retained status: nothing to learn
                status = decode_status(msg.payload)
                self._same_device(status.device_id, device)
                if isinstance(status, Birth):
                    engine.birth(status)
                else:
                    engine.death(status)
            elif channel == "telemetry" and parsed.kind is TopicKind.TELEMETRY:
                window = decode_telemetry(msg.payload)
                self._same_device(window.device_id, device)
                engine.telemetry(window)
                self._stored.append((device, window.boot_id, window.seq))
                self.metrics.observe(window)
            elif channel == "acks" and parsed.kind is TopicKind.ACKS:
                engine.ack(decode_ack(msg.payload), device)
            else:
                raise WireError(ErrorCode.BAD_REQUEST, f"unexpected topic {msg.topic!r}")
        except WireError as exc:
            c.malformed[channel] = c.malformed.get(channel, 0) + 1
            log.warning("ignoring %s message on %r: %s", channel, msg.topic, exc.message)

    @staticmethod
    def _same_device(in_payload: str, in_topic: str) -> None:
        if in_payload != in_topic:
            raise WireError(ErrorCode.BAD_REQUEST, f"payload is from {in_payload!r}, topic names {in_topic!r}")

    # -- publishing (worker thread) ----------------------------------------------------------------
    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.link.publish(topic, payload, qos=1, retain=retain)

    def _reply(self, topic: str, corr: bytes | None, reply: OpReply) -> None:
        self.link.publish(topic, encode(reply), qos=1, correlation_data=corr)


def _placement(name: str) -> Placement:
    if name == "predicted-latency":
        from coordinator.perf.calibration import build_book

        return LivePredictedLatency(build_book())
    return MostFreeMemory()


def _fleet_gauges(engine: Engine) -> list[Sample]:
    """Devices online and tenants by state, from the store (worker thread)."""
    devices = engine.store.devices()
    states: dict[str, int] = {}
    for t in engine.store.tenants():
        states[t.state] = states.get(t.state, 0) + 1
    out = [
        Sample("edgefleet_devices", sum(1 for d in devices if d.online), {"online": "true"}, "gauge",
               "Devices the coordinator knows, by liveness"),
        Sample("edgefleet_devices", sum(1 for d in devices if not d.online), {"online": "false"}, "gauge",
               "Devices the coordinator knows, by liveness"),
    ]
    for state, n in sorted(states.items()):
        out.append(Sample("edgefleet_tenants", n, {"state": state}, "gauge", "Tenants by placement state"))
    return out

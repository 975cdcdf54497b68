"""The coordinator process: two MQTT connections, one worker thread that owns the database, one timer.

The control link (paho) carries births and wills, command acks, operator calls and the commands sent;
the ingest link (``[coordinator] ingest_link``: the lean client on the ``mqtt5`` codec where it
installs, else paho) carries the telemetry windows in and their ``TelemetryAck``s out, so the bulk of
the traffic pays neither paho's per-packet Python nor a wait behind it, and a flood of windows never
delays a birth or an operator call. Both network threads only enqueue what arrives, stamping when each
device was last heard from. The
worker takes what is queued in small batches (up to ``BATCH_MAX`` messages or ``BATCH_S`` seconds of
work), applies each message in its own savepoint of one database transaction per batch, commits, and
only then tells devices which telemetry windows the database now holds (``TelemetryAck``s, QoS 0, the
batch's in one write: a lost one costs one resent window, stored once and confirmed again); then it runs
the timer duties (send due commands, declare silent devices dead, answer operator calls whose time ran
out, publish the performance model's report when it is due). ``queue.get(timeout=...)`` is the timer,
so nothing needs a lock. Every message is handled defensively: a malformed payload is logged and
counted, never fatal; a handler that fails rolls back its own message only.

Back-pressure: when more than ``PAUSE_AT`` messages wait, the telemetry subscription is dropped until
the queue is down to ``RESUME_AT``, so the broker sheds windows at no cost to this process; past
``MAX_QUEUED`` windows that still arrive are shed on arrival. A shed window is never acknowledged, so
its agent sends it again after ``telemetry_resend_s``; the worker keeps acknowledging at its capacity
instead of falling behind a backlog that resends feed. Statuses, command acks and operator calls are
never shed. Liveness is judged from arrival: a device whose messages wait in this queue has been heard
and is not declared dead; while telemetry is paused, and for a timeout after, no device is declared
dead by silence (deaths still come as the broker's last wills).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgefleet.coordinator.commands import Outbox
from edgefleet.coordinator.config import CoordinatorConfig
from edgefleet.coordinator.engine import Engine
from edgefleet.coordinator.grants import Grants, make_grants
from edgefleet.coordinator.grants.wanted import WantedIndex, kept_grants
from edgefleet.coordinator.models import ModelLookup, ZooModels
from edgefleet.coordinator.ops import OpsDesk, fleet_status, model_report
from edgefleet.coordinator.perf.report import ReportSchedule
from edgefleet.coordinator.placement import MostFreeMemory, Placement
from edgefleet.coordinator.placement.live import LearnedModel, ModelPlacement, NullModel, PerfModel
from edgefleet.coordinator.store import Changes, Store
from edgefleet.metrics import MetricsServer, Sample, TelemetryMetrics, start_metrics
from edgefleet.mqtt import DataLink, Inbound, MqttLink, Outgoing, data_link, publish_many
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
GRANTS_EVERY_S = 0.2  # the placement's wanted grants are brought up to date at most this often
GRANTS_FULL_EVERY_S = 5.0  # ... and compared with the broker's even when nothing changed at least this often
PRUNE_BATCH = 5_000  # telemetry rows deleted per transaction, so pruning never stalls the worker long
BATCH_MAX = 256  # messages applied in one transaction, their telemetry acknowledged after its commit
BATCH_S = 0.05  # seconds of work after which a batch is committed even if more is queued
MAX_QUEUED = 5_000  # messages waiting; past this, arriving telemetry windows are shed (to be resent)
PAUSE_AT = 4_000  # messages waiting: the telemetry subscription is dropped (the broker sheds, at no cost here)
RESUME_AT = 1_000  # ... and taken again once the queue is down to this
LIVENESS_EVERY_S = 1.0  # the liveness check's period


@dataclass
class Counters:
    """What the coordinator has seen, for logs, tests and status."""

    received: dict[str, int] = field(default_factory=dict)  # channel -> messages
    malformed: dict[str, int] = field(default_factory=dict)  # channel -> payloads or topics refused
    errors: int = 0  # handler bugs caught by the worker
    shed: int = 0  # telemetry windows refused on arrival because the queue was full (agents resend them)
    pauses: int = 0  # times the telemetry subscription was dropped because the queue was deep
    batches: int = 0  # transactions of queued messages committed
    unconfirmed: int = 0  # TelemetryAcks that could not be sent (link down): their windows come again


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
                 placement: Placement | None = None, model: PerfModel | None = None,
                 clock: Callable[[], float] = time.time, grants: Grants | None = None) -> None:
        """``placement`` and ``model`` default to what ``config.placement`` names (the performance model
        of ``predicted-latency``, or none); a ``placement`` given alone runs without a model. ``grants``
        defaults to what ``config.grants`` names (edgefleet.coordinator.grants)."""
        self.config = config
        self.topics = config.topics
        self.models: ModelLookup = models if models is not None else ZooModels()
        if placement is None:
            placement, model = _placement(config.placement)
        self.placement: Placement = placement
        self.model: PerfModel = model if model is not None else NullModel()
        self.clock = clock
        self.counters = Counters()
        self.metrics = TelemetryMetrics()  # every device's windows, served on config.metrics_port (0: off)
        self._fleet_gauges: list[Sample] = []  # rebuilt by the worker after each message or timer tick
        self._metrics_server: MetricsServer | None = None
        self._gauges_at = 0.0
        self._stored: list[tuple[str, str, int]] = []  # (device, boot, seq) held by the open transaction
        self._heard: dict[str, float] = {}  # device -> when its latest message arrived (paho thread writes)
        self._liveness_at = 0.0
        self._lag_s = 0.0  # how long the last message handled had waited in the queue
        self._paused = False  # the telemetry subscription is dropped (back-pressure, see _pace)
        self._paused_until = -1e18  # when the last pause ended (liveness waits a timeout after it)
        self._reports = ReportSchedule(config.model_report_period_s)  # the model's retained error report
        self._queue: queue.Queue[Any] = queue.Queue()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.link = MqttLink(config.mqtt, client_id=config.coordinator_id)
        # telemetry in, TelemetryAcks out: a connection of its own (same credentials and TLS, so the same
        # broker ACL), the lean client where it installs
        self.ingest: DataLink = data_link(config.mqtt, ingest_client_id(config.coordinator_id), config.ingest_link)
        self._on_telemetry = self._enqueue("telemetry")
        # the broker's per-device grants (edgefleet.coordinator.grants): kept equal to the placement
        self.grants: Grants = grants if grants is not None else make_grants(
            config.grants, config.mqtt, config.prefix, config.coordinator_id)
        self._grant_problems: list[str] = []
        self._grants_at = float("-inf")
        self._grants_full_at = float("-inf")  # when the broker's grants were last compared with the placement
        self._grant_changes: Changes | None = None  # the tenant rows written since the last check
        self._wanted = WantedIndex()
        self._grants_kept: frozenset[tuple[str, str]] = frozenset()
        for filter_, channel in ((self.topics.all_status, "status"), (self.topics.all_acks, "acks"),
                                 (self.topics.ops(), "ops")):
            self.link.subscribe(filter_, self._enqueue(channel), qos=1)
        self.ingest.subscribe(self.topics.all_telemetry, self._on_telemetry, qos=1)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Open the database, start the worker and connect (reconnecting forever in the background)."""
        self._thread = threading.Thread(target=self._run, name="ef-coordinator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._start_error is not None:
            raise self._start_error
        self._metrics_server = start_metrics(self._samples, self.config.metrics_port)
        self.grants.start()
        self.link.start()
        self.ingest.start()
        end = time.monotonic() + timeout_s
        if not (self.link.wait_connected(timeout_s)
                and self.ingest.wait_connected(max(0.0, end - time.monotonic()))):
            log.warning("not connected to %s:%d yet; retrying in the background",
                        self.config.mqtt.host, self.config.mqtt.port)

    def stop(self) -> None:
        """Finish the message in hand, close the database and disconnect."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(10)
            self._thread = None
        self.ingest.stop()
        self.link.stop()
        self.grants.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def _samples(self) -> list[Sample]:
        """What ``GET /metrics`` serves (metrics thread): telemetry totals, fleet gauges, message counts."""
        c = self.counters
        out = self.metrics.samples() + list(self._fleet_gauges)
        for tenant, stat in sorted(self.model.errors.stats.items()):
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
        out.append(Sample("edgefleet_coordinator_telemetry_pauses_total", c.pauses, {}, "counter",
                          "Times the telemetry subscription was dropped because the coordinator's queue was deep"))
        out.append(Sample("edgefleet_coordinator_unconfirmed_windows_total", c.unconfirmed, {}, "counter",
                          "TelemetryAcks not sent because the ingest link was down (agents send those windows again)"))
        out.append(Sample("edgefleet_coordinator_shed_windows_total", c.shed, {}, "counter",
                          "Telemetry windows refused on arrival because the coordinator's queue was full"
                          " (not acknowledged: agents send them again)"))
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
        device_topic = channel in ("status", "telemetry", "acks")
        queue_ = self._queue
        heard = self._heard
        clock = self.clock

        def handler(msg: Inbound) -> None:
            now = clock()
            if device_topic:
                parts = msg.topic.rsplit("/", 2)
                if len(parts) == 3:
                    heard[parts[1]] = now  # a malformed topic names no device; the worker refuses it
            if channel == "telemetry" and queue_.qsize() >= MAX_QUEUED:
                self.counters.shed += 1  # not acknowledged: the agent sends it again
                return
            queue_.put((channel, msg, now))

        return handler

    # -- worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            store = Store(self.config.db_path)
            outbox = Outbox(store, self.topics, self.config.commands,
                            lambda topic, payload: self._publish(topic, payload), grants=self.grants)
            engine = Engine(store=store, outbox=outbox, models=self.models, placement=self.placement, model=self.model,
                            clock=self.clock, device_timeout_s=self.config.device_timeout_s,
                            rebalance=self.config.rebalance)
            desk = OpsDesk(engine, self._reply, self.clock, self.config.op_timeout_s)
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        last_prune = 0.0
        pending: Any = None  # an item taken from the queue that ended a batch, handled next
        try:
            while True:
                item = pending
                pending = None
                if item is None:
                    try:
                        item = self._queue.get(timeout=self._wait_s(engine, desk))
                    except queue.Empty:
                        item = None
                if item is _STOP:
                    return
                if isinstance(item, _Call):
                    self._do_call(engine, item)
                elif item is not None:
                    pending = self._batch(store, engine, desk, item)
                self._pace()
                self._guarded(store, lambda: self._tick(engine, desk))
                if self.clock() - last_prune > PRUNE_EVERY_S:
                    last_prune = self.clock()
                    self._forget_unheard(engine)
                    before = self.clock() - self.config.telemetry_retention_s
                    while self._prune(store, before) >= PRUNE_BATCH:
                        pass
        finally:
            store.close()

    def _pace(self) -> None:
        """Back-pressure at the broker: while more than ``PAUSE_AT`` messages wait, the telemetry
        subscription is dropped, so the broker sheds windows (their agents send them again: no ack came)
        instead of this process paying to receive and refuse each one; it is taken again at
        ``RESUME_AT``. Receiving a window costs a fair share of handling it, so refusing on arrival alone
        would let resends crowd out the work once offered more than capacity."""
        try:
            waiting = self._queue.qsize()
            if not self._paused and waiting >= PAUSE_AT:
                self._paused = True
                self.counters.pauses += 1
                self.ingest.unsubscribe(self.topics.all_telemetry)
                log.warning("telemetry paused: %d messages wait (agents send unconfirmed windows again)", waiting)
            elif self._paused and waiting <= RESUME_AT:
                self._paused = False
                self._paused_until = self.clock()
                self.ingest.subscribe(self.topics.all_telemetry, self._on_telemetry, qos=1)
                log.info("telemetry resumed: %d messages wait", waiting)
        except Exception:
            self.counters.errors += 1
            log.exception("coordinator worker: pacing telemetry failed")

    def _forget_unheard(self, engine: Engine) -> None:
        """Drop arrival stamps too old to matter (bounded memory, whatever topics were seen)."""
        horizon = self.clock() - 2 * engine.device_timeout_s
        for device, at in list(self._heard.items()):
            if at < horizon:
                self._heard.pop(device, None)

    def _prune(self, store: Store, before: float) -> int:
        pruned = [0]

        def prune() -> None:
            pruned[0] = store.prune_telemetry(before, PRUNE_BATCH)

        self._guarded(store, prune)
        return pruned[0]

    def _batch(self, store: Store, engine: Engine, desk: OpsDesk, first: tuple[str, Inbound, float]) -> Any:
        """Apply ``first`` and what else is queued (up to ``BATCH_MAX`` messages or ``BATCH_S`` seconds)
        in one transaction, each message in its own savepoint; acknowledge the stored telemetry after
        the commit. Returns an item taken from the queue that is not a message (handled next), or None."""
        started = time.monotonic()
        follow: Any = None
        ok = False
        try:
            with store.atomic():
                item: Any = first
                n = 0
                while True:
                    channel, msg, arrived = item
                    self._lag_s = self.clock() - arrived
                    mark = len(self._stored)
                    try:
                        with store.atomic():
                            self._dispatch(engine, desk, channel, msg)
                    except Exception:
                        del self._stored[mark:]
                        self.counters.errors += 1
                        log.exception("coordinator worker: handling failed (message rolled back, service continues)")
                    n += 1
                    if n >= BATCH_MAX or time.monotonic() - started >= BATCH_S:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not (isinstance(item, tuple) and len(item) == 3):
                        follow = item
                        break
            ok = True
        except Exception:
            self.counters.errors += 1
            log.exception("coordinator worker: committing a batch failed (rolled back, service continues)")
        if ok:
            self.counters.batches += 1
            self._confirm_telemetry()  # only after the commit: the agents then forget them
        self._stored.clear()
        return follow

    def _wait_s(self, engine: Engine, desk: OpsDesk) -> float:
        """Seconds until the timer has something to do: a command due, or an operator call's deadline."""
        try:
            now = self.clock()
            sending = None
            if self.link.connected:
                sending = engine.outbox.next_due_at(engine.store.online_ids())
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
        """Tell each device which of its windows the database now holds (stored now or before): one
        ``TelemetryAck`` per device and boot, the batch's in one write on the ingest link, at QoS 0 (a lost
        one costs a resent window, which is stored once and confirmed again; QoS 1 would add a PUBACK per
        window to read and an in-flight window to wait on, for nothing the resend does not already give)."""
        if not self._stored:
            return
        by_boot: dict[tuple[str, str], list[int]] = {}
        for device, boot, seq in self._stored:
            by_boot.setdefault((device, boot), []).append(seq)
        commands = self.topics.commands
        acks = [Outgoing(commands(device), encode(TelemetryAck(device_id=device, boot_id=boot, seqs=seqs)))
                for (device, boot), seqs in by_boot.items()]
        try:
            publish_many(self.ingest, acks)
        except Exception as exc:  # not connected: the agents send those windows again
            self.counters.unconfirmed += len(acks)
            log.warning("could not confirm %d telemetry windows (%s): their agents will send them again",
                        len(self._stored), exc)

    @staticmethod
    def _do_call(engine: Engine, item: _Call) -> None:
        try:
            item.result = item.fn(engine)
        except BaseException as exc:
            item.error = exc
        item.done.set()

    def _tick(self, engine: Engine, desk: OpsDesk) -> None:
        now = self.clock()
        # Liveness once a second, and never from a backlog: arrival times count as heard, and while the
        # messages handled had waited long in the queue the check waits too.
        liveness = now - self._liveness_at >= LIVENESS_EVERY_S or now < self._liveness_at
        if liveness:
            self._liveness_at = now
        # nor while telemetry is paused or was within a timeout: a device's windows may all have been shed
        heard_all = not self._paused and now - self._paused_until > engine.device_timeout_s
        engine.tick(self._heard, liveness=liveness and heard_all and self._lag_s < engine.device_timeout_s / 3,
                    sending=self.link.connected)
        if self._metrics_server is not None and now - self._gauges_at >= 1.0:
            self._gauges_at = now
            self._fleet_gauges = _fleet_gauges(engine)
        if self.link.connected:
            self._sync_grants(engine, now)
            self._publish_model_report(engine)
        desk.expire()

    def _sync_grants(self, engine: Engine, now: float) -> None:
        """The broker's grants follow the placement: what a completed undeploy or hand-over no longer
        needs is revoked, what a restart or a broker change lost is restored (edgefleet.coordinator.grants). At
        most every GRANTS_EVERY_S, so a telemetry burst does not pay for it per message; the grant a
        Deploy needs is asked for by the outbox itself, just before it is sent.

        What the placement wants is kept incrementally (``WantedIndex``, fed with the tenant rows the
        store reports written), and the broker is compared with it only when that or the grants to keep
        changed, or every GRANTS_FULL_EVERY_S (what a broker restart lost, a step to retry): a quiet
        fleet's check costs what changed, not a pass over every tenant five times a second."""
        if not self.grants.active or 0 <= now - self._grants_at < GRANTS_EVERY_S:
            return
        self._grants_at = now
        store = engine.store
        if self._grant_changes is None:
            self._grant_changes = store.watch()
        everything, _, written = self._grant_changes.drain()
        changed = everything
        if everything:
            self._wanted.rebuild(store.tenants())
        else:
            for name in written:
                changed = self._wanted.update(name, store.tenant(name)) or changed
        keep = kept_grants(engine.outbox.outstanding(kind="undeploy"))
        if keep != self._grants_kept:
            self._grants_kept = keep
            changed = True
        if not changed and self._grant_problems == [] and 0 <= now - self._grants_full_at < GRANTS_FULL_EVERY_S:
            return
        self._grants_full_at = now
        problems = self.grants.reconcile(self._wanted.wanted, keep)
        if problems and problems != self._grant_problems:
            log.warning("broker grants not in line with the placement: %s", "; ".join(problems))
        self._grant_problems = problems

    def _publish_model_report(self, engine: Engine) -> None:
        """The performance model's error per tenant, retained, when due (see edgefleet.coordinator.perf.report)."""
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
                engine.telemetry(window, bytes(msg.payload))
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


def ingest_client_id(coordinator_id: str) -> str:
    """The ingest connection's MQTT client id: the coordinator's own with ``-ingest`` (within 128 characters)."""
    return f"{coordinator_id[:121]}-ingest"


def _placement(name: str) -> tuple[Placement, PerfModel]:
    """The placement ``name`` and the performance model it reads (a null one for memory alone)."""
    if name == "predicted-latency":
        from edgefleet.coordinator.perf.calibration import build_book

        return ModelPlacement(), LearnedModel(build_book())
    return MostFreeMemory(), NullModel()


def _fleet_gauges(engine: Engine) -> list[Sample]:
    """Devices online and tenants by state, from the store's in-memory counts (worker thread)."""
    online, offline = engine.store.device_count()
    out = [
        Sample("edgefleet_devices", online, {"online": "true"}, "gauge",
               "Devices the coordinator knows, by liveness"),
        Sample("edgefleet_devices", offline, {"online": "false"}, "gauge",
               "Devices the coordinator knows, by liveness"),
    ]
    for state, n in engine.store.tenant_count().items():
        out.append(Sample("edgefleet_tenants", n, {"state": state}, "gauge", "Tenants by placement state"))
    return out

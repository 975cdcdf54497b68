"""The agent process: wires MQTT, model hosting, serving, commands, telemetry and durable state.

Threads, chosen deliberately (ONNX Runtime releases the GIL while running, so threads give real
parallelism on the cores; asyncio would add nothing to blocking runtime calls): two MQTT network
threads, ``ef-worker-N`` (inference), ``ef-commands`` (deploy/undeploy, which load models),
``ef-memory``, ``ef-telemetry`` (one window per period), ``ef-outbox``.

Two broker connections, so that inference traffic cannot starve the control plane: the control link
(client id ``ef-agent-<device>``: birth, will, commands, telemetry, acks) and the data link (client id
``ef-agent-<device>-data``: the tenants' shared request subscriptions and the replies), with the same
credentials. A flood of requests queues behind the data link's socket and is shed there, while the
control link's keepalives, telemetry and commands never wait behind it.

Tenants: each has one ``TenantSlot`` (``edgefleet.agent.slots``). Deploy, Configure and Undeploy set what is
wanted and ``reconcile`` moves the slot there (host, change in place, replace or remove), so a repeated
command finds nothing to do.

Status: a retained birth message on connect (and after every change of tenants), and a retained last
will that the broker publishes if the agent vanishes. A clean stop publishes a "shutdown" death itself.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid

import psutil

from edgefleet import __version__
from edgefleet.agent.batching import BatchPolicy
from edgefleet.agent.collectors import select_collector
from edgefleet.agent.commands import CommandRunner
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.fakes import FakeModels, open_fake
from edgefleet.agent.host import DeployError, LocalModels, ModelHost, ModelResolver, ZooResolver
from edgefleet.agent.memory.manager import MemoryManager
from edgefleet.agent.outbox import Outbox
from edgefleet.agent.scheduler import Scheduler
from edgefleet.agent.serving import Server, answer_bad_name
from edgefleet.agent.slots import Slots
from edgefleet.agent.state import AgentState
from edgefleet.agent.stream import StreamServer
from edgefleet.agent.telemetry import WindowStats
from edgefleet.metrics import MetricsServer, TelemetryMetrics, start_metrics
from edgefleet.mqtt import Inbound, MqttLink, Will, data_link, publish_many
from edgefleet.runtime import available_runtimes
from edgefleet.runtime.detect import detect_accelerators, device_kind
from edgefleet.wire import (
    Ack,
    Birth,
    Capabilities,
    Death,
    DeviceWindow,
    ErrorCode,
    Telemetry,
    TelemetryAck,
    TenantSpec,
    WireError,
    decode_to_device,
    encode,
)

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: AgentConfig, *, local_models: LocalModels | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self.device_id = config.device_id
        self.boot_id = uuid.uuid4().hex[:12]
        self.state = AgentState(config.state_dir / "agent.db")
        resolvers: list[ModelResolver] = [ZooResolver(config.data_dir)]
        if local_models is not None:
            resolvers.insert(0, local_models)
        # Simulating a device (edgefleet sim --live): fakes stand in for every model and runtime.
        self.fakes = FakeModels(config.fake_models_dir) if config.fake_models_dir is not None else None
        if self.fakes is not None:
            resolvers = [self.fakes]
        self.slots = Slots()  # one record per tenant, shared by the host, the scheduler and serving
        self.host = ModelHost(
            resolvers,
            budget_bytes=config.memory_budget_bytes,
            threads=config.threads_per_session,
            open_session=open_fake if self.fakes is not None else None,
            slots=self.slots,
        )
        self.scheduler = Scheduler(
            workers=config.worker_count,
            max_queue=config.max_queue,
            policy=BatchPolicy.parse(config.batch_policy),
            slots=self.slots,
        )
        self.memory = MemoryManager(self.host, self.scheduler, policy=config.memory_policy)
        self.stats = WindowStats()
        death = Death(device_id=self.device_id, reason="lost", boot_id=self.boot_id, ts=time.time())
        self.link = MqttLink(
            config.mqtt,
            client_id=f"ef-agent-{self.device_id}",
            will=Will(self.topics.status(self.device_id), encode(death), qos=1, retain=True),
            on_connect=self._on_connect,
        )
        # requests and replies: their own connection (see the module docstring)
        # (large requests reach the request path as views of the buffer they were read into: no copy)
        self.data = data_link(config.mqtt, f"ef-agent-{self.device_id}-data", config.data_link, payload_views=True)
        self.server = Server(
            device_id=self.device_id,
            topics=self.topics,
            host=self.host,
            memory=self.memory,
            scheduler=self.scheduler,
            stats=self.stats,
            publish=self.data.publish,
            publish_many=lambda replies: publish_many(self.data, replies),
            max_payload_bytes=config.max_payload_bytes,
            default_timeout_ms=config.default_timeout_ms,
        )
        # opt-in: a second connection so that its fleet-wide subscription never routes into the tenants' own
        self.names_link = (MqttLink(config.mqtt, client_id=f"ef-agent-{self.device_id}-names")
                           if config.answer_bad_names else None)
        # stream tenants: sources and handovers on the data link, so a handover is ordered with the frames
        self.stream = StreamServer(device_id=self.device_id, topics=self.topics, link=self.data,
                                   scheduler=self.scheduler, memory=self.memory, stats=self.stats)
        self.server.run_stream = self.stream.run
        self.outbox = Outbox(self.state, self.link, max_bytes=config.outbox_max_bytes,
                             resend_after_s=config.telemetry_resend_s)
        self.commands = CommandRunner(
            device_id=self.device_id,
            state=self.state,
            deploy=self.deploy,
            undeploy=self.undeploy,
            configure=self.configure,
            send_ack=self._send_ack,
            profile=self.memory.take_profile,
        )
        self._tenant_lock = threading.Lock()
        self._stop = threading.Event()
        self._seq = 0
        self._telemetry_thread = threading.Thread(
            target=self._telemetry_loop, name="ef-telemetry", daemon=True
        )
        self._window_start = time.time()
        self.collector = select_collector()  # jtop, NVML or psutil: logged once, here
        self.metrics = TelemetryMetrics()  # served on config.metrics_port (0: off)
        self._metrics_server: MetricsServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        for spec in self.state.tenants():  # come back with the tenants we had
            try:
                self._host(spec)
            except DeployError as exc:
                log.error(
                    "could not restore tenant %s: %s (%s); dropping it", spec.name, exc.message, exc.code
                )
                self.state.remove_tenant(spec.name)
        self.link.subscribe(self.topics.commands(self.device_id), self._on_command, qos=1)
        self.server.start(self.config.worker_count)
        self.memory.start()
        self.commands.start()
        self.outbox.start()
        self._telemetry_thread.start()
        self.data.start()
        self.link.start()
        if self.names_link is not None:
            self.names_link.subscribe(self.topics.infer_any_shared, self._on_any_request, qos=0)
            self.names_link.start()
        self._metrics_server = start_metrics(self.metrics.samples, self.config.metrics_port)

    def stop(self) -> None:
        """Leave cleanly: stop taking requests, answer the queued ones, say goodbye, disconnect."""
        self._stop.set()
        for name in list(self.memory.assigned):
            self.data.unsubscribe(self.topics.infer_shared(name))
        if self.names_link is not None:
            self.names_link.stop()
        for name, slot in list(self.memory.assigned.items()):
            if slot.spec is not None and slot.spec.stream is None:
                self.data.unsubscribe(self.topics.infer_shared(name))
        self.stream.stop()
        self.commands.stop()
        self.memory.stop()
        self.server.stop()
        self._telemetry_thread.join(5)
        self.collector.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.outbox.stop()
        goodbye = Death(device_id=self.device_id, reason="shutdown", boot_id=self.boot_id, ts=time.time())
        self.data.stop()
        self.link.stop(final=(self.topics.status(self.device_id), encode(goodbye), True))
        self.host.close()
        self.state.close()

    def wait_connected(self, timeout: float) -> bool:
        """Both links connected (and their subscriptions acknowledged) within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        return self.data.wait_connected(timeout) and self.link.wait_connected(max(0.0, end - time.monotonic()))

    # -- status ------------------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        if self.fakes is not None:
            runtimes = self.fakes.runtimes()
        else:
            runtimes = [r for r in available_runtimes() if r != "fake"]
        accelerators = detect_accelerators()
        return Capabilities(
            device_kind=self.config.device_kind or device_kind(accelerators=accelerators),
            runtimes=runtimes,
            accelerators=accelerators,
            cpu_count=os.cpu_count() or 1,
            memory_total_bytes=int(psutil.virtual_memory().total),
            memory_budget_bytes=self.config.memory_budget_bytes,
            max_payload_bytes=self.config.max_payload_bytes,
            cached_models=self._cached_models(),
            arch=platform.machine(),
            python=platform.python_version(),
        )

    def _cached_models(self) -> list[str]:
        if self.fakes is not None:
            return self.fakes.cached()
        try:
            from edgefleet.zoo import load_catalog
            from edgefleet.zoo.paths import local_catalog_path

            path = local_catalog_path(self.config.data_dir)
            if not path.is_file():
                return []
            cat = load_catalog(path)
            root = path.parent
            return sorted(
                f"{m.name}:{v}"
                for m in cat.models
                for v, rec in m.variants.items()
                if rec.available and rec.file and (root / rec.file).is_file()
            )
        except Exception:
            log.warning("could not list cached models", exc_info=True)
            return []

    def birth(self) -> Birth:
        return Birth(
            device_id=self.device_id,
            boot_id=self.boot_id,
            capabilities=self.capabilities(),
            tenants=sorted(self.memory.assigned),
            agent_version=__version__,
            ts=time.time(),
        )

    def _publish_birth(self) -> None:
        if self.link.connected and not self._stop.is_set():
            self.link.publish(self.topics.status(self.device_id), encode(self.birth()), qos=1, retain=True)

    def _on_connect(self, link: MqttLink) -> None:
        self._publish_birth()
        self.outbox.kick()

    # -- tenants: reconciled toward what the commands ask ------------------------------------------
    def deploy(self, spec: TenantSpec) -> None:
        """Host ``spec`` (idempotent). Raises DeployError and then changes nothing."""
        self.reconcile(spec.name, spec)

    def configure(self, spec: TenantSpec) -> str:
        """Change a hosted tenant in place (``Configure``): it stays subscribed; see
        ``MemoryManager.reconfigure``. Raises DeployError (unknown_tenant, bad_request, ...) and then
        changes nothing."""
        return self.reconcile(spec.name, spec, in_place=True)

    def undeploy(self, name: str) -> None:
        self.reconcile(name, None)

    def reconcile(self, name: str, desired: TenantSpec | None, *, in_place: bool = False) -> str:
        """Move tenant ``name`` from what runs to ``desired`` (None: not hosted) and say what was done.

        The steps, by what runs and what is wanted: nothing -> spec: host it (subscribe after the model
        is resident, make-before-break); the same spec: nothing; the same model: change in place (never
        unsubscribed); another model: remove, then host; something -> None: remove. ``in_place``
        (Configure) refuses the steps that are not a change in place. The durable state and the birth
        follow the outcome."""
        with self._tenant_lock:
            slot = self.slots.get(name)
            current = slot.spec if slot is not None else None
            if in_place and current is None:
                raise DeployError("unknown_tenant", f"{name} is not hosted on {self.device_id}")
            if current is None and desired is None:
                self.state.remove_tenant(name)  # nothing runs: only forget it durably
                return f"{name} is not hosted"
            if desired is not None and current == desired:
                return f"{name} already runs as asked"
            if (desired is not None and current is not None and current.model == desired.model
                    and (current.stream is None) == (desired.stream is None)):
                message = self.memory.reconfigure(desired)  # same model: changed in place
                if desired.stream is not None and desired.stream != current.stream:
                    self.stream.update(desired)  # new sources, rules or results format
                self.state.put_tenant(desired)
                return message
            if in_place:
                self.memory.reconfigure(desired)  # type: ignore[arg-type]  # raises: another model
            if current is not None:
                self._remove(name)
            if desired is None:
                self.state.remove_tenant(name)
                outcome = f"{name} removed"
            else:
                self._host(desired)
                self.state.put_tenant(desired)
                outcome = f"{name} hosted"
        self._publish_birth()
        return outcome

    def _host(self, spec: TenantSpec) -> None:
        self.memory.assign(spec)
        # make-before-break: acknowledged by the broker before the deploy is acknowledged. If the data
        # connection is away (the broker may have just disconnected it to apply this tenant's grant), the
        # route is subscribed when it is back, and ``wait_connected`` returns once that is acknowledged.
        if spec.stream is not None:
            self.stream.host(spec)  # sources, then the hand-over announcement (edgefleet.agent.stream)
        elif not self.data.subscribe(self.topics.infer_shared(spec.name), self._on_request, qos=1, wait_s=5.0):
            self.data.wait_connected(5.0)

    def _remove(self, name: str) -> None:
        # Stop taking new requests first (after the broker's UNSUBACK, plus a moment for deliveries it
        # had already started); answer what is queued; then free the model. A planned move loses nothing.
        if self.stream.hosts(name):
            self.stream.leave(name)  # frames already received are still answered
        else:
            self.data.unsubscribe(self.topics.infer_shared(name), wait_s=2.0, linger_s=0.2)
        self.scheduler.wait_drained(name, timeout=5.0)
        self.stream.forget(name)
        self.server.reject(
            self.scheduler.remove_tenant(name),
            ErrorCode.NOT_READY,
            f"tenant {name!r} is leaving {self.device_id}",
        )
        self.memory.unassign(name)

    # -- MQTT handlers (network thread: enqueue only) ---------------------------------------------
    def _on_request(self, msg: Inbound) -> None:
        self.server.on_request(msg.topic, msg.payload, msg.response_topic, msg.correlation_data, msg.qos,
                               msg.received_at, msg.user_properties)

    def _on_any_request(self, msg: Inbound) -> None:
        answer_bad_name(self.server, msg.topic, msg.payload, msg.response_topic, msg.correlation_data, msg.qos)

    def _on_command(self, msg: Inbound) -> None:
        try:
            inbound = decode_to_device(msg.payload)
        except WireError:
            inbound = None  # the command runner reports malformed commands
        if isinstance(inbound, TelemetryAck):
            if inbound.device_id == self.device_id:
                self.outbox.confirm(inbound.boot_id, inbound.seqs)
            return
        self.commands.submit(msg.payload, inbound)  # decoded once; None: the runner reports why

    def _send_ack(self, ack: Ack) -> None:
        self.outbox.put(self.topics.acks(self.device_id), encode(ack), kind="ack")

    # -- telemetry ---------------------------------------------------------------------------------
    def _telemetry_loop(self) -> None:
        period = self.config.telemetry_period_s
        while not self._stop.wait(period):
            try:
                window = self.roll_window()
                self.outbox.put(self.topics.telemetry(self.device_id), encode(window), kind="telemetry",
                                boot_id=window.boot_id, seq=window.seq)
            except Exception:
                log.exception("telemetry window failed")

    @property
    def windows_produced(self) -> int:
        """Telemetry windows made in this boot (their seqs are 0 .. windows_produced - 1)."""
        return self._seq

    def roll_window(self) -> Telemetry:
        now = time.time()
        start, self._window_start = self._window_start, now
        hosted = self.host.tenants()
        windows = self.stats.roll(
            {n: a.spec for n, a in self.memory.assigned.items() if a.spec is not None},
            {n: h.variant for n, h in hosted.items()},
            now - start,
        )
        sample = self.collector.sample()
        device = DeviceWindow(
            cpu_percent=sample.cpu_percent,
            memory_used_bytes=sample.memory_used_bytes or 0,
            memory_budget_bytes=self.config.memory_budget_bytes,
            model_memory_bytes=self.host.memory_used(),
            gpu_percent=sample.gpu_percent,
            temperature_c=sample.temperature_c,
            power_w=sample.power_w,
        )
        seq, self._seq = self._seq, self._seq + 1
        telemetry = Telemetry(
            device_id=self.device_id,
            boot_id=self.boot_id,
            seq=seq,
            window_start=start,
            window_end=now,
            device=device,
            tenants=windows,
        )
        self.metrics.observe(telemetry)
        return telemetry

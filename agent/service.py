"""The agent process: wires MQTT, model hosting, serving, commands, telemetry and durable state.

Threads, chosen deliberately (ONNX Runtime releases the GIL while running, so threads give real
parallelism on the cores; asyncio would add nothing to blocking runtime calls):
``paho`` network thread (parse and enqueue only), ``ef-worker-N`` (inference), ``ef-commands``
(deploy/undeploy, which load models), ``ef-telemetry`` (one window per period), ``ef-outbox``.

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

from agent.batching import BatchPolicy
from agent.collectors import select_collector
from agent.commands import CommandRunner
from agent.config import AgentConfig
from agent.fakes import FakeModels, open_fake
from agent.host import DeployError, LocalModels, ModelHost, ModelResolver, ZooResolver
from agent.memory.manager import MemoryManager
from agent.outbox import Outbox
from agent.scheduler import Scheduler
from agent.serving import Server
from agent.state import AgentState
from agent.telemetry import WindowStats
from edgefleet import __version__
from edgefleet.metrics import MetricsServer, TelemetryMetrics, start_metrics
from edgefleet.mqtt import Inbound, MqttLink, Will
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
        self.host = ModelHost(
            resolvers,
            budget_bytes=config.memory_budget_bytes,
            threads=config.threads_per_session,
            open_session=open_fake if self.fakes is not None else None,
        )
        self.scheduler = Scheduler(
            workers=config.worker_count,
            max_queue=config.max_queue,
            policy=BatchPolicy.parse(config.batch_policy),
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
        self.server = Server(
            device_id=self.device_id,
            topics=self.topics,
            host=self.host,
            memory=self.memory,
            scheduler=self.scheduler,
            stats=self.stats,
            publish=self.link.publish,
            max_payload_bytes=config.max_payload_bytes,
            default_timeout_ms=config.default_timeout_ms,
        )
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
        self.link.start()
        self._metrics_server = start_metrics(self.metrics.samples, self.config.metrics_port)

    def stop(self) -> None:
        """Leave cleanly: stop taking requests, answer the queued ones, say goodbye, disconnect."""
        self._stop.set()
        for name in list(self.memory.assigned):
            self.link.unsubscribe(self.topics.infer_shared(name))
        self.commands.stop()
        self.memory.stop()
        self.server.stop()
        self._telemetry_thread.join(5)
        self.collector.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.outbox.stop()
        goodbye = Death(device_id=self.device_id, reason="shutdown", boot_id=self.boot_id, ts=time.time())
        self.link.stop(final=(self.topics.status(self.device_id), encode(goodbye), True))
        self.host.close()
        self.state.close()

    def wait_connected(self, timeout: float) -> bool:
        return self.link.wait_connected(timeout)

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

    # -- tenants -----------------------------------------------------------------------------------
    def _host(self, spec: TenantSpec) -> None:
        self.memory.assign(spec)
        # make-before-break: acknowledged by the broker before the deploy is acknowledged
        self.link.subscribe(self.topics.infer_shared(spec.name), self._on_request, qos=1, wait_s=5.0)

    def deploy(self, spec: TenantSpec) -> None:
        with self._tenant_lock:
            current = self.memory.assigned.get(spec.name)
            if current is not None and current.spec == spec:
                return  # already exactly this: idempotent
            if current is not None and current.spec.model == spec.model:
                self.memory.reconfigure(spec)  # same model: changed in place, never unsubscribed
                self.state.put_tenant(spec)
                return
            if current is not None:
                self._remove(spec.name)
            self._host(spec)
            self.state.put_tenant(spec)
        self._publish_birth()

    def configure(self, spec: TenantSpec) -> str:
        """Change a hosted tenant in place (``Configure``): it stays subscribed; see
        ``MemoryManager.reconfigure``. Raises DeployError (unknown_tenant, bad_request, ...) and then
        changes nothing."""
        with self._tenant_lock:
            current = self.memory.assigned.get(spec.name)
            if current is None:
                raise DeployError("unknown_tenant", f"{spec.name} is not hosted on {self.device_id}")
            if current.spec == spec:
                return f"{spec.name} already runs as asked"
            message = self.memory.reconfigure(spec)
            self.state.put_tenant(spec)
            return message

    def undeploy(self, name: str) -> None:
        with self._tenant_lock:
            if not self.memory.is_assigned(name):
                self.state.remove_tenant(name)
                return
            self._remove(name)
            self.state.remove_tenant(name)
        self._publish_birth()

    def _remove(self, name: str) -> None:
        # Stop taking new requests first (after the broker's UNSUBACK, plus a moment for deliveries it
        # had already started); answer what is queued; then free the model. A planned move loses nothing.
        self.link.unsubscribe(self.topics.infer_shared(name), wait_s=2.0, linger_s=0.2)
        self.scheduler.wait_drained(name, timeout=5.0)
        self.server.reject(
            self.scheduler.remove_tenant(name),
            ErrorCode.NOT_READY,
            f"tenant {name!r} is leaving {self.device_id}",
        )
        self.memory.unassign(name)

    # -- MQTT handlers (network thread: enqueue only) ---------------------------------------------
    def _on_request(self, msg: Inbound) -> None:
        self.server.on_request(msg.topic, msg.payload, msg.response_topic, msg.correlation_data, msg.qos)

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
            {n: a.spec for n, a in self.memory.assigned.items()},
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

"""A Prometheus scrape endpoint for edgefleet telemetry, off unless a port is configured.

The endpoint is the standard library's HTTP server in one daemon thread (``ef-metrics``) answering
``GET /metrics`` in the Prometheus text format (``text/plain; version=0.0.4``). What it serves comes from
a callable returning :class:`Sample` values, called on every scrape, so the endpoint holds no state of its
own. :class:`TelemetryMetrics` is such a callable for edgefleet's telemetry windows: the agent feeds it
its own windows and the coordinator can feed it every device's, and it turns the per-window counts into
the running totals Prometheus counters must be, plus last-window gauges.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

from edgefleet.wire.messages import Telemetry

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
THREAD_NAME = "ef-metrics"
SEEN_WINDOWS = 4096  # recent windows remembered per device to drop redeliveries


@dataclass(frozen=True)
class Sample:
    """One value of one metric family; samples sharing a ``name`` form the family."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: Literal["counter", "gauge"] = "gauge"
    help: str = ""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(samples: Iterable[Sample]) -> str:
    """The Prometheus text format: one ``# HELP`` and ``# TYPE`` line per family, then its samples."""
    families: dict[str, list[Sample]] = {}
    for s in samples:
        families.setdefault(s.name, []).append(s)
    lines: list[str] = []
    for name, members in families.items():
        first = members[0]
        if first.help:
            lines.append(f"# HELP {name} {_escape_help(first.help)}")
        lines.append(f"# TYPE {name} {first.kind}")
        for s in members:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
            lines.append(
                f"{name}{{{labels}}} {_format_value(s.value)}"
                if labels
                else f"{name} {_format_value(s.value)}"
            )
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in a daemon thread; ``port`` 0 in the constructor picks a free one
    (read it back from :attr:`port`)."""

    def __init__(self, collect: Callable[[], Iterable[Sample]], port: int, host: str = "") -> None:
        self._collect = collect
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=THREAD_NAME, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collect = self._collect

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgefleet-metrics"

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
                    return
                try:
                    body = render(collect()).encode()
                except Exception:
                    log.exception("collecting metrics failed")
                    self._reply(500, "text/plain; charset=utf-8", b"collecting metrics failed\n")
                    return
                self._reply(200, CONTENT_TYPE, body)

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics %s: " + format, self.address_string(), *args)

        return Handler

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def start_metrics(collect: Callable[[], Iterable[Sample]], port: int, host: str = "") -> MetricsServer | None:
    """Serve ``collect`` on ``port`` (all interfaces unless ``host`` says otherwise); None when port is 0,
    or when the port cannot be bound (logged as an error)."""
    if port <= 0:
        return None
    try:
        server = MetricsServer(collect, port, host).start()
    except OSError as exc:  # a taken port must not stop the device from serving its tenants
        log.error("cannot serve Prometheus metrics on port %d: %s", port, exc)
        return None
    log.info("Prometheus metrics on http://%s:%d/metrics", host or "0.0.0.0", server.port)
    return server


# -- edgefleet telemetry as Prometheus metrics ---------------------------------------------------------------
_COUNTERS = (  # TenantWindow field, metric name, help
    ("arrivals", "edgefleet_tenant_arrivals_total", "Inference requests received."),
    ("completions", "edgefleet_tenant_completions_total", "Inference requests answered with a result."),
    ("errors", "edgefleet_tenant_errors_total", "Requests answered with an error (not shed, not deadline)."),
    ("shed", "edgefleet_tenant_shed_total", "Requests refused at admission (device overloaded)."),
    ("deadline_misses", "edgefleet_tenant_deadline_misses_total", "Requests answered deadline_exceeded."),
    ("slo_misses", "edgefleet_tenant_slo_misses_total", "Requests completed later than the tenant's SLO."),
)
_DEVICE_GAUGES = (  # DeviceWindow field, metric name, help
    ("cpu_percent", "edgefleet_device_cpu_percent", "CPU use of the agent process (100 = one core)."),
    ("memory_used_bytes", "edgefleet_device_memory_used_bytes", "Resident memory of the agent process."),
    ("memory_budget_bytes", "edgefleet_device_memory_budget_bytes", "Bytes models may take."),
    ("model_memory_bytes", "edgefleet_device_model_memory_bytes", "Bytes resident models take."),
    ("gpu_percent", "edgefleet_device_gpu_percent", "GPU load."),
    ("temperature_c", "edgefleet_device_temperature_celsius", "Hottest sensor on the device."),
    ("power_w", "edgefleet_device_power_watts", "Power drawn by the board or GPUs."),
)


@dataclass
class _TenantTotals:
    model: str
    variant: str
    counts: dict[str, int] = field(default_factory=dict)
    p95_s: float = 0.0
    rps: float = 0.0


class TelemetryMetrics:
    """Running totals and last-window gauges from telemetry windows, labelled by device and tenant.

    Call :meth:`observe` with each window (from any thread; a redelivered window is ignored) and pass
    :meth:`samples` to :func:`start_metrics`. Totals survive agent restarts because they are summed here,
    not on the device.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[tuple[str, str], _TenantTotals] = {}
        self._devices: dict[str, Telemetry] = {}
        self._windows: dict[str, int] = {}
        self._seen: dict[str, collections.deque[tuple[str, int]]] = {}  # recent (boot_id, seq) per device

    def observe(self, telemetry: Telemetry) -> bool:
        """Add one window; False (and nothing counted) for a window already seen, as MQTT at-least-once
        delivery may hand it over twice."""
        device = telemetry.device_id
        key = (telemetry.boot_id, telemetry.seq)
        with self._lock:
            seen = self._seen.setdefault(device, collections.deque(maxlen=SEEN_WINDOWS))
            if key in seen:
                return False
            seen.append(key)
            last = self._devices.get(device)
            if last is None or telemetry.window_end >= last.window_end:  # gauges: the newest window wins
                self._devices[device] = telemetry
            self._windows[device] = self._windows.get(device, 0) + 1
            for w in telemetry.tenants:
                totals = self._tenants.get((device, w.tenant))
                if totals is None:
                    totals = self._tenants[(device, w.tenant)] = _TenantTotals(w.model, w.variant)
                totals.model, totals.variant = w.model, w.variant
                for attr, _, _ in _COUNTERS:
                    totals.counts[attr] = totals.counts.get(attr, 0) + int(getattr(w, attr))
                if self._devices[device] is telemetry:
                    totals.p95_s = w.latency_p95_ms / 1e3
                    totals.rps = w.arrival_rps
        return True

    def forget_tenant(self, device: str, tenant: str) -> None:
        """Stop exporting a tenant that left a device."""
        with self._lock:
            self._tenants.pop((device, tenant), None)

    def samples(self) -> list[Sample]:
        with self._lock:
            tenants = sorted(self._tenants.items())
            devices = sorted(self._devices.items())
            windows = dict(self._windows)
        out: list[Sample] = []
        for attr, name, text in _COUNTERS:
            for (device, tenant), t in tenants:
                labels = {"device": device, "tenant": tenant, "model": t.model, "variant": t.variant}
                out.append(Sample(name, t.counts.get(attr, 0), labels, "counter", text))
        for (device, tenant), t in tenants:
            labels = {"device": device, "tenant": tenant}
            out.append(
                Sample(
                    "edgefleet_tenant_latency_p95_seconds",
                    t.p95_s,
                    labels,
                    "gauge",
                    "95th percentile latency, receipt to reply, over the last window.",
                )
            )
        for (device, tenant), t in tenants:
            out.append(
                Sample(
                    "edgefleet_tenant_arrival_rate_rps",
                    t.rps,
                    {"device": device, "tenant": tenant},
                    "gauge",
                    "Requests per second over the last window.",
                )
            )
        for attr, name, text in _DEVICE_GAUGES:
            for device, tel in devices:
                value = getattr(tel.device, attr)
                if value is not None:
                    out.append(Sample(name, float(value), {"device": device}, "gauge", text))
        for device, tel in devices:
            out.append(
                Sample(
                    "edgefleet_device_window_end_timestamp_seconds",
                    tel.window_end,
                    {"device": device},
                    "gauge",
                    "When the last telemetry window ended.",
                )
            )
        for device, count in sorted(windows.items()):
            out.append(
                Sample(
                    "edgefleet_telemetry_windows_total",
                    count,
                    {"device": device},
                    "counter",
                    "Telemetry windows received.",
                )
            )
        return out

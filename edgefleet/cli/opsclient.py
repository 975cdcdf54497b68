"""A small client for the coordinator's operator API (MQTT 5 request/response), for any tool.

The request goes to ``{prefix}/v1/coordinator/ops`` with a ResponseTopic (this client's reply inbox)
and a CorrelationData; the coordinator answers one ``OpReply`` there. Built only on the wire contract
and the MQTT link, so the CLI, the demo, tests and other tools share it without importing a role.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from types import TracebackType

from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import (
    OpDeploy,
    OpMigrate,
    OpPlan,
    OpReply,
    OpStatus,
    OpUndeploy,
    Topics,
    WireError,
    encode,
)
from edgefleet.wire.codec import decode_reply

Op = OpDeploy | OpUndeploy | OpStatus | OpMigrate | OpPlan


CONNECT_TIMEOUT_S = 2.0  # an unreachable broker is reported within this long


def tcp_problem(host: str, port: int, timeout_s: float) -> str:
    """Why a TCP connection to the broker fails ('' when it opens): refused, timed out, unknown host."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except socket.gaierror as exc:
        return f"unknown host: {exc.strerror}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


class OpsError(RuntimeError):
    """The call got no usable answer: broker unreachable, no coordinator, or a garbled reply."""


def _unreachable(settings: MqttSettings, problem: str) -> OpsError:
    return OpsError(f"cannot reach the MQTT broker at {settings.host}:{settings.port} ({problem}); set "
                    f"EDGEFLEET_MQTT_URL, --mqtt-config or --host/--port, or start one with `edgefleet broker`")


class OpsClient:
    """One connection for any number of calls; use as a context manager or call ``close()``."""

    def __init__(self, settings: MqttSettings, topics: Topics, *, connect_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topics = topics
        self.client_id = f"efops-{uuid.uuid4().hex[:12]}"
        self.inbox = topics.replies(self.client_id)
        self._lock = threading.Lock()
        self._waiting: dict[bytes, threading.Event] = {}
        self._answers: dict[bytes, bytes] = {}
        budget_s = min(connect_timeout_s, CONNECT_TIMEOUT_S)
        start = time.monotonic()
        problem = tcp_problem(settings.host, settings.port, budget_s / 2)  # refused: known at once
        if problem:
            raise _unreachable(settings, problem)
        self.link = MqttLink(settings, client_id=self.client_id)
        self.link.subscribe(self.inbox, self._on_reply, qos=1)
        self.link.start()
        if not self.link.wait_connected(max(0.1, budget_s - (time.monotonic() - start))):
            self.link.stop()
            raise _unreachable(settings, "the port answers, but no MQTT connection within "
                                         f"{budget_s:g} s: check TLS and credentials")

    def _on_reply(self, msg: Inbound) -> None:  # paho thread: store and wake the caller
        corr = msg.correlation_data or b""
        with self._lock:
            event = self._waiting.get(corr)
            if event is not None:
                self._answers[corr] = msg.payload
                event.set()

    def call(self, op: Op, timeout_s: float = 10.0) -> OpReply:
        """Send ``op`` and wait for its OpReply; OpsError when none comes within ``timeout_s``."""
        corr = uuid.uuid4().bytes
        event = threading.Event()
        with self._lock:
            self._waiting[corr] = event
        try:
            self.link.publish(self.topics.ops(), encode(op), qos=1, response_topic=self.inbox,
                              correlation_data=corr)
            if not event.wait(timeout_s):
                raise OpsError(
                    f"no answer from the coordinator within {timeout_s:g} s "
                    f"(is it running, with topic prefix {self.topics.prefix!r}?)"
                )
            with self._lock:
                payload = self._answers.pop(corr)
        finally:
            with self._lock:
                self._waiting.pop(corr, None)
                self._answers.pop(corr, None)
        try:
            return decode_reply(payload)
        except WireError as exc:
            raise OpsError(f"the coordinator's reply is malformed: {exc.message}") from None

    def close(self) -> None:
        self.link.stop()

    def __enter__(self) -> OpsClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def call_ops(settings: MqttSettings, topics: Topics, op: Op, timeout: float = 10.0) -> OpReply:
    """One call on a fresh connection: connect, send ``op``, wait for the reply, disconnect."""
    start = time.monotonic()
    with OpsClient(settings, topics, connect_timeout_s=timeout) as client:
        return client.call(op, max(0.1, timeout - (time.monotonic() - start)))

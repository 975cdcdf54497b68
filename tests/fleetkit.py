"""Test helpers: a raw MQTT 5 caller and a command sender, built only on the wire contract."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping

import numpy as np

from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import Ack, Command, Topics, decode, decode_frame, encode, encode_request
from edgefleet.wire.tensors import Frame


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.01) -> None:
    """Poll ``cond`` every ``interval`` seconds until it is true; AssertionError after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class RawCaller:
    """Publishes raw payloads to tenant topics and collects replies by correlation data."""

    def __init__(self, settings: MqttSettings, topics: Topics) -> None:
        self.topics = topics
        self.inbox = f"{topics.root}/clients/raw-{uuid.uuid4().hex[:8]}/replies"
        self.replies: dict[bytes, Inbound] = {}
        self._cond = threading.Condition()
        self.link = MqttLink(settings, client_id=f"raw-{uuid.uuid4().hex[:8]}")
        self.link.subscribe(self.inbox, self._on_reply, qos=1)
        self.link.start()
        assert self.link.wait_connected(10)

    def _on_reply(self, msg: Inbound) -> None:
        with self._cond:
            self.replies[msg.correlation_data or b""] = msg
            self._cond.notify_all()

    def send(self, tenant: str, payload: bytes, *, qos: int = 1) -> bytes:
        corr = uuid.uuid4().bytes
        self.link.publish(self.topics.infer(tenant), payload, qos=qos, response_topic=self.inbox,
                          correlation_data=corr)
        return corr

    def wait(self, corr: bytes, timeout: float = 10.0) -> Frame:
        with self._cond:
            ok = self._cond.wait_for(lambda: corr in self.replies, timeout)
        assert ok, "no reply"
        return decode_frame(self.replies[corr].payload)

    def call(self, tenant: str, tensors: Mapping[str, np.ndarray], timeout: float = 10.0, **kw: float) -> Frame:
        return self.wait(self.send(tenant, encode_request(tensors, **kw)), timeout)

    def close(self) -> None:
        self.link.stop()


class Watcher:
    """Collects acks, status and telemetry of a fleet prefix."""

    def __init__(self, settings: MqttSettings, topics: Topics) -> None:
        self.topics = topics
        self.acks: dict[str, list[Ack]] = {}
        self.status: dict[str, bytes] = {}
        self.telemetry: list[bytes] = []
        self.link = MqttLink(settings, client_id=f"watch-{uuid.uuid4().hex[:8]}")
        self.link.subscribe(topics.all_acks, self._ack, qos=1)
        self.link.subscribe(topics.all_status, self._status, qos=1)
        self.link.subscribe(topics.all_telemetry, lambda m: self.telemetry.append(m.payload), qos=1)
        self.link.start()
        assert self.link.wait_connected(10)

    def _ack(self, msg: Inbound) -> None:
        ack = decode(msg.payload, Ack)
        self.acks.setdefault(ack.command_id, []).append(ack)

    def _status(self, msg: Inbound) -> None:
        self.status[self.topics.parse(msg.topic).name] = msg.payload

    def command(self, cmd: Command, timeout: float = 60.0) -> Ack:
        n = len(self.acks.get(cmd.command_id, []))
        self.link.publish(self.topics.commands(cmd.device_id), encode(cmd), qos=1)
        wait_for(lambda: len(self.acks.get(cmd.command_id, [])) > n, timeout, f"ack of {cmd.command_id}")
        return self.acks[cmd.command_id][-1]

    def close(self) -> None:
        self.link.stop()

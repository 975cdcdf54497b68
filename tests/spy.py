"""A raw MQTT 5 client with some principal's credentials, for what a broker enforces: the SUBACK and
PUBACK reason codes it answers and the messages it delivers. Used to play a compromised device."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

NOT_AUTHORIZED = 135


class Spy:
    """A raw client with some principal's credentials: what the broker lets it subscribe to, what it is
    delivered, and what it may publish (PUBACK reason codes)."""

    def __init__(self, port: int, username: str, password: str, *, client_id: str | None = None,
                 session_expiry_s: int = 0) -> None:
        self.cond = threading.Condition()
        self.suback: dict[int, int] = {}
        self.puback: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.connected = False
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"spy-{uuid.uuid4().hex[:8]}",
                        protocol=paho.MQTTv5, reconnect_on_failure=False)
        c.username_pw_set(username, password)
        c.on_connect = lambda _c, _u, _f, rc, _p=None: self._note(lambda: setattr(self, "connected", not rc.is_failure))
        c.on_subscribe = lambda _c, _u, mid, rcs, _p=None: self._note(lambda: self.suback.__setitem__(mid, rcs[0].value))
        c.on_publish = lambda _c, _u, mid, rc, _p=None: self._note(lambda: self.puback.__setitem__(mid, rc.value))
        c.on_message = lambda _c, _u, m: self._note(lambda: self.messages.append((m.topic, bytes(m.payload))))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry_s:  # a session the broker keeps (with its subscriptions) across a disconnection
            props.SessionExpiryInterval = session_expiry_s
        c.connect("127.0.0.1", port, clean_start=session_expiry_s == 0, properties=props)
        c.loop_start()
        self.client = c
        self._wait(lambda: self.connected, "connection")

    def _note(self, change: Callable[[], None]) -> None:
        with self.cond:
            change()
            self.cond.notify_all()

    def _wait(self, pred: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, 10.0), f"no {what}"

    def subscribe(self, filter_: str) -> int:
        """The SUBACK reason code: 1 (granted QoS 1) or 135 (not authorized)."""
        _, mid = self.client.subscribe(filter_, qos=1)
        self._wait(lambda: mid in self.suback, f"SUBACK of {filter_}")
        return self.suback[mid]

    def publish(self, topic: str, payload: bytes) -> int:
        """The PUBACK reason code: 0 (or 16, no subscribers) accepted, 135 not authorized."""
        mid = self.client.publish(topic, payload, qos=1).mid
        self._wait(lambda: mid in self.puback, f"PUBACK on {topic}")
        return self.puback[mid]

    def wait_for(self, payload: bytes) -> None:
        self._wait(lambda: any(p == payload for _, p in self.messages), f"message {payload!r}")

    def got(self, payload: bytes) -> bool:
        with self.cond:
            return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

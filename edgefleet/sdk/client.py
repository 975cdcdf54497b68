"""The blocking client: call a tenant by name and get its outputs, from any number of threads.

Apps never address a device: they publish to the tenant's topic and whichever replica the broker
picks answers on this client's own reply topic. Each call blocks its thread on a threading.Event until
the reply arrives (set from paho's network thread) or ``timeout_s`` passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType

import numpy as np

from edgefleet.mqtt import Inbound, MqttSettings
from edgefleet.sdk._core import ClientCore, Result, closed_error, parse_reply, prepare
from edgefleet.sdk.errors import NoReply
from edgefleet.sdk.stream import Subscription
from edgefleet.wire import validate_tenant_name


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Inbound | None = None


class InferenceClient(ClientCore[_Waiter]):
    """Blocking client for a fleet's tenants. Use as ``with InferenceClient(settings) as c:``.

    ``prefix`` is the fleet's topic prefix, ``client_id`` the MQTT client id (random when None; it also
    names the reply topic), ``qos`` the QoS of requests and of the reply subscription, and
    ``connect_timeout_s`` how long ``open()`` (and a call made while the link is down) waits for the
    broker before raising BrokerUnavailable. Thread-safe: many threads may call ``infer`` at once.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        prefix: str = "ef",
        client_id: str | None = None,
        qos: int = 1,
        connect_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            settings, prefix=prefix, client_id=client_id, qos=qos, connect_timeout_s=connect_timeout_s
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> InferenceClient:
        """Connect and subscribe to the reply topic; raise BrokerUnavailable after the connect timeout."""
        link = self._start_link()
        if not link.wait_connected(self.connect_timeout_s):
            self.close()
            raise self._unreachable(f"no connection within {self.connect_timeout_s:g} s")
        return self

    def close(self) -> None:
        """Disconnect. Calls still waiting raise ClientClosed."""
        self._stop_link()

    def __enter__(self) -> InferenceClient:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- stream tenants ---------------------------------------------------------------------------
    def subscribe(self, tenant: str, *, events: bool = True, max_pending: int = 1000) -> Subscription:
        """Results (and, with ``events``, events) of the stream tenant ``tenant``, as a blocking
        iterator; the retained latest result comes first when there is one. Close it (or use ``with``)
        to unsubscribe. Raises ClientClosed when the client is not open."""
        validate_tenant_name(tenant)
        return Subscription(tenant, self._stream_feed(tenant, events), max_pending)

    # -- calls ----------------------------------------------------------------------------------
    def infer(
        self,
        tenant: str,
        inputs: Mapping[str, np.ndarray] | bytes,
        *,
        timeout_s: float = 1.0,
        min_fidelity: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``tenant``'s model on ``inputs`` and return its outputs by name. ``inputs`` may be an
        encoded JPEG or PNG frame (bytes) for a tenant whose model takes images: the device decodes it.

        Raises a subclass of InferenceError: BadRequest before publishing when the request cannot be
        valid, the class matching the device's error code, or NoReply when nothing answered in time.
        """
        return self.infer_with_meta(tenant, inputs, timeout_s=timeout_s, min_fidelity=min_fidelity).outputs

    def infer_with_meta(
        self,
        tenant: str,
        inputs: Mapping[str, np.ndarray] | bytes,
        *,
        timeout_s: float = 1.0,
        min_fidelity: float | None = None,
    ) -> Result:
        """Like ``infer``, and also say which device and variant answered and how long it took."""
        prepared = prepare(self.topics, tenant, inputs, timeout_s=timeout_s, min_fidelity=min_fidelity)
        link = self._require_link()
        deadline = time.monotonic() + prepared.wait_s
        if not link.connected and not link.wait_connected(min(self.connect_timeout_s, prepared.timeout_s)):
            raise self._unreachable("not connected")
        waiter = _Waiter()
        cid = self._register(waiter)
        sent_at = time.monotonic()
        try:
            self._publish(prepared, cid)
        except BaseException:
            self._forget(cid)
            raise
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())) and self._forget(cid):
            raise NoReply(prepared.tenant, prepared.timeout_s)
        # Either the reply came, or it was being delivered as the wait ended: the event is set now.
        waiter.event.wait()
        if waiter.reply is None:
            raise closed_error()
        return parse_reply(waiter.reply, prepared.tenant, sent_at)

    # -- hand-offs from paho's thread -------------------------------------------------------------
    def _deliver(self, pending: _Waiter, msg: Inbound) -> None:
        pending.reply = msg
        pending.event.set()

    def _abandon(self, pending: _Waiter) -> None:
        pending.event.set()

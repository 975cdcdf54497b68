"""MQTT 5 transport shared by agent, coordinator, SDK and operator tools.

``MqttLink`` (paho-mqtt 2.x underneath) carries the control plane; the data path (inference requests
and replies) uses ``data_link``: the lean client on the ``mqtt5`` codec (``edgefleet.mqtt.lean``) where
that package is installed (Python >= 3.11), else ``MqttLink``.
"""

from __future__ import annotations

from typing import Any, Protocol

from edgefleet.mqtt.link import Handler, Inbound, MqttLink, MqttSettings, Outgoing, Will

DATA_LINKS = ("auto", "lean", "paho")


class DataLink(Protocol):
    """What the data path needs of a connection (``MqttLink`` and ``LeanLink`` both offer it)."""

    connects: int
    handler_errors: int

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, *, final: tuple[str, bytes, bool] | None = None, timeout: float = 2.0) -> None: ...

    def wait_connected(self, timeout: float | None = None) -> bool: ...

    def subscribe(self, filter_: str, handler: Handler, qos: int = 1, *, wait_s: float = 0.0) -> bool: ...

    def unsubscribe(self, filter_: str, *, wait_s: float = 0.0, linger_s: float = 0.0) -> bool: ...

    def publish(self, topic: str, payload: bytes | bytearray, *, qos: int = 0, retain: bool = False,
                response_topic: str | None = None, correlation_data: bytes | None = None,
                content_type: str | None = None, expiry_s: int | None = None,
                user_properties: list[tuple[str, str]] | None = None) -> Any: ...


def lean_available() -> bool:
    """Whether the ``mqtt5`` codec imports here (it ships wheels for Python >= 3.11)."""
    try:
        import mqtt5  # noqa: F401
    except ImportError:
        return False
    return True


def publish_many(link: DataLink, messages: list[Outgoing]) -> None:
    """Publish ``messages`` with one write where the link can
    (the lean link), else one by one."""
    many = getattr(link, "publish_many", None)
    if many is not None:
        many(messages)
        return
    for m in messages:
        link.publish(m.topic, m.payload, qos=m.qos, correlation_data=m.correlation_data,
                     content_type=m.content_type, user_properties=list(m.user_properties or ()) or None,
                     response_topic=m.response_topic, expiry_s=m.expiry_s)


def data_link(settings: MqttSettings, client_id: str, kind: str = "auto", *, payload_views: bool = False,
              **kw: Any) -> DataLink:
    """A connection for requests and replies: ``lean`` (the mqtt5 codec), ``paho`` (``MqttLink``), or
    ``auto`` (lean where it is available). Both offer subscribe/unsubscribe/publish/start/stop/
    wait_connected with ``Inbound`` messages. ``payload_views``: the lean link hands a large message's
    payload to handlers as a memoryview of the buffer it was read into, not a copy (handlers must then
    take any bytes-like payload); paho always copies."""
    if kind not in DATA_LINKS:
        raise ValueError(f"data link must be one of {DATA_LINKS}, got {kind!r}")
    if kind == "lean" or (kind == "auto" and lean_available()):
        from edgefleet.mqtt.lean import LeanLink

        lean: DataLink = LeanLink(settings, client_id, payload_views=payload_views, **kw)
        return lean
    return MqttLink(settings, client_id, **kw)


__all__ = ["DATA_LINKS", "DataLink", "Inbound", "MqttLink", "MqttSettings", "Outgoing", "Will", "data_link", "lean_available", "publish_many"]

"""The lean data-path client (``edgefleet.mqtt.lean``) against a real broker, and its pure parts.

Through Mosquitto: a ``$share`` subscription, MQTT 5 properties (response topic, correlation data,
content type, user properties, message expiry) at QoS 0 and 1 both ways, large payloads, the in-flight
window, reconnect with resubscribe after the broker drops the connection, and the credentials and TLS
that ``edgefleet security init`` writes. Pure: topic matching and the fixed header's length.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid

import pytest

pytest.importorskip("mqtt5")

from edgefleet.broker import PrivateBroker
from edgefleet.config import mqtt_settings
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings, data_link
from edgefleet.mqtt.lean import LeanLink, remaining_length, topic_matches
from tests.fleetkit import wait_for
from tests.test_security import WAIT_S, Fleet, fleet  # noqa: F401


@pytest.mark.parametrize(
    ("filter_", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),  # + is one level
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),  # # also matches the parent level (MQTT 5, 4.7.1.2)
        ("+/b", "$SYS/b", False),  # $ topics only by a literal first level
        ("ef/tenants/x/infer", "ef/tenants/y/infer", False),
    ],
)
def test_topic_matches(filter_: str, topic: str, matches: bool) -> None:
    assert topic_matches(filter_, topic) is matches


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x30\x05", (2, 5)),  # one length byte
        (b"\x30\x80\x01", (3, 128)),  # 0x80: 0 + continuation; 0x01 -> 1 * 128
        (b"\x30\xff\x7f", (3, 16383)),  # 127 + 127 * 128
        (b"\x30\x80", None),  # incomplete: wait for more bytes
        (b"\x30", None),
    ],
)
def test_remaining_length(data: bytes, expected: tuple[int, int] | None) -> None:
    assert remaining_length(data, 0) == expected


def test_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(ValueError):
        remaining_length(b"\x30\x80\x80\x80\x80\x01", 0)


class _Echo:
    """A responder on a lean link: replies to the response topic with the correlation data."""

    def __init__(self, link: LeanLink, filter_: str) -> None:
        self.link = link
        self.seen: list[Inbound] = []
        link.subscribe(filter_, self._on, qos=1)

    def _on(self, msg: Inbound) -> None:
        self.seen.append(msg)
        if msg.response_topic:
            self.link.publish(msg.response_topic, msg.payload, qos=msg.qos, correlation_data=msg.correlation_data,
                              content_type="application/test", user_properties=[("ef-status", "ok")])


def _caller(settings: MqttSettings, inbox: str, client_id: str) -> tuple[MqttLink, dict[bytes, Inbound], threading.Condition]:
    got: dict[bytes, Inbound] = {}
    cond = threading.Condition()

    def on(msg: Inbound) -> None:
        with cond:
            got[msg.correlation_data or b""] = msg
            cond.notify_all()

    link = MqttLink(settings, client_id)
    link.subscribe(inbox, on, qos=1)
    link.start()
    assert link.wait_connected(10)
    return link, got, cond


@pytest.mark.broker
@pytest.mark.parametrize("qos", [0, 1])
def test_share_properties_large_payloads_and_reconnect(broker: PrivateBroker, mqtt_settings: MqttSettings,
                                                       qos: int) -> None:
    root = f"lean{uuid.uuid4().hex[:8]}"
    topic = f"{root}/tenants/t/infer"
    # QoS 1 also with large payloads handed over as views of the buffer they were read into
    link = data_link(mqtt_settings, f"lean-{uuid.uuid4().hex[:8]}", "lean", payload_views=bool(qos))
    assert isinstance(link, LeanLink)
    echo = _Echo(link, f"$share/ef-t/{topic}")
    link.start()
    inbox = f"{root}/clients/c/replies"
    caller, got, cond = _caller(mqtt_settings, inbox, f"c-{uuid.uuid4().hex[:8]}")
    try:
        assert link.wait_connected(10)
        payloads = {os.urandom(16): os.urandom(n) for n in (0, 10, 3000, 70_000, 1_000_000)}
        for corr, body in payloads.items():
            caller.publish(topic, body, qos=qos, response_topic=inbox, correlation_data=corr, expiry_s=30)
        with cond:
            assert cond.wait_for(lambda: len(got) == len(payloads), 20), len(got)
        for corr, body in payloads.items():
            reply = got[corr]
            assert reply.payload == body and reply.content_type == "application/test"
            assert ("ef-status", "ok") in reply.user_properties
        assert all(m.topic == topic and m.response_topic == inbox for m in echo.seen)
        large = [m for m in echo.seen if len(m.payload) >= 70_000]
        assert len(large) == 2 and all(isinstance(m.payload, memoryview) == bool(qos) for m in large)
        # many QoS 1 replies at once: the in-flight window fills and drains, nothing is lost
        burst = [os.urandom(16) for _ in range(500)]
        for corr in burst:
            caller.publish(topic, b"x", qos=qos, response_topic=inbox, correlation_data=corr)
        with cond:
            assert cond.wait_for(lambda: all(c in got for c in burst), 20)
        # the broker drops the connection: the link reconnects and resubscribes by itself
        sock = link._sock
        assert sock is not None
        sock.shutdown(2)
        wait_for(lambda: link.connects == 2 and link.connected, 15, "a reconnect")
        again = os.urandom(16)
        caller.publish(topic, b"again", qos=qos, response_topic=inbox, correlation_data=again)
        with cond:
            assert cond.wait_for(lambda: again in got, 10)
        assert link.handler_errors == 0
    finally:
        caller.stop()
        link.stop()
    assert not link.connected


@pytest.mark.broker
def test_replies_published_from_the_reader_thread_never_wait_for_their_own_pubacks(
        broker: PrivateBroker, mqtt_settings: MqttSettings) -> None:
    """A handler runs on the reader thread, and the agent answers errors (shed, bad requests) there. With
    the in-flight window full, waiting for room would wait for the PUBACKs only that thread reads: the
    publishes are parked and sent as PUBACKs come, so a burst far larger than the window is all answered
    without the link stalling for its keepalive."""
    root = f"lean{uuid.uuid4().hex[:8]}"
    topic = f"{root}/tenants/t/infer"
    link = data_link(dataclasses.replace(mqtt_settings, max_inflight=2, keepalive_s=60),
                     f"lean-{uuid.uuid4().hex[:8]}", "lean")
    assert isinstance(link, LeanLink)
    _Echo(link, f"$share/ef-t/{topic}")
    link.start()
    inbox = f"{root}/clients/c/replies"
    caller, got, cond = _caller(mqtt_settings, inbox, f"c-{uuid.uuid4().hex[:8]}")
    try:
        assert link.wait_connected(10)
        burst = [os.urandom(16) for _ in range(300)]  # 150 times the window of 2
        for corr in burst:
            caller.publish(topic, b"x", qos=1, response_topic=inbox, correlation_data=corr)
        with cond:  # well under the 60 s keepalive after which a stalled link would have given up
            assert cond.wait_for(lambda: all(c in got for c in burst), 20), sum(c in got for c in burst)
        assert link.handler_errors == 0 and link.dropped_publishes == 0 and link.disconnects == 0
    finally:
        caller.stop()
        link.stop()


@pytest.mark.broker
def test_lean_link_with_the_credentials_and_tls_security_init_writes(fleet: Fleet) -> None:  # noqa: F811
    """A device's lean link on the TLS listener (certificate and password from its generated settings)
    serves a request from an app on the password listener, through the ACL's ``$share`` grant."""
    device = data_link(mqtt_settings("edge-01.toml", {**fleet.mqtt("edge-01"), "host": "127.0.0.1"}),
                       f"ef-agent-edge-01-data-{uuid.uuid4().hex[:4]}", "lean", payload_views=True)
    assert device.settings.tls_ca is not None and device.settings.port == fleet.tls_port
    topic = f"{fleet.root}/tenants/cam-a/infer"
    _Echo(device, f"$share/ef-cam-a/{topic}")
    device.start()
    app_keys = {k: v for k, v in fleet.mqtt("shop").items() if k in ("username", "password")}
    inbox = f"{fleet.root}/clients/shop/replies"
    app, got, cond = _caller(mqtt_settings("shop.toml", {**app_keys, "port": fleet.port}), inbox, "shop")
    try:
        assert device.wait_connected(WAIT_S)
        app.publish(topic, b"frame", qos=1, response_topic=inbox, correlation_data=b"c1")
        with cond:
            assert cond.wait_for(lambda: b"c1" in got, WAIT_S)
        assert got[b"c1"].payload == b"frame"
        frame = os.urandom(700_000)  # a camera frame: read over TLS in several records into its own buffer
        app.publish(topic, frame, qos=1, response_topic=inbox, correlation_data=b"c2")
        with cond:
            assert cond.wait_for(lambda: b"c2" in got, WAIT_S)
        assert got[b"c2"].payload == frame and device.disconnects == 0
    finally:
        app.stop()
        device.stop()


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_a_publish_head_grown_by_the_payload_length_equals_the_codecs_packet(size: int) -> None:
    """The data path writes a PUBLISH's headers and its payload as two buffers; joined, they are
    exactly the packet the codec writes with the payload inside (lengths across varint sizes)."""
    import mqtt5

    from edgefleet.mqtt.lean import with_payload_length

    payload = bytes(size)
    kw = {"qos": mqtt5.QoS.AT_LEAST_ONCE, "packet_id": 7, "correlation_data": b"c", "response_topic": "r/x"}
    head = mqtt5.PublishPacket("a/b", b"", **kw).write()  # type: ignore[arg-type]
    assert with_payload_length(head, size) + payload == mqtt5.PublishPacket("a/b", payload, **kw).write()  # type: ignore[arg-type]


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("size", [0, 5, 70_000])
@pytest.mark.parametrize("props", [
    {},
    {"response_topic": "r/x", "correlation_data": b"c" * 16, "content_type": "application/vnd.edgefleet.tensors.v1",
     "message_expiry_interval": 2, "user_properties": [("ef-timeout-ms", "250"), ("k", "v" * 200)]},
])
def test_a_large_publish_split_from_its_payload_is_the_codecs_packet(qos: int, size: int, props: dict[str, object]) -> None:
    """A PUBLISH parsed without copying its payload: the same topic, packet id and properties as the
    codec's own parse of the whole packet, and the payload a view of the buffer."""
    import mqtt5

    from edgefleet.mqtt.lean import split_large_publish

    payload = os.urandom(size)
    kw = {"qos": mqtt5.QoS.AT_LEAST_ONCE, "packet_id": 300} if qos else {}
    buf = bytearray(mqtt5.PublishPacket("ef/v1/tenants/t/infer", payload, **kw, **props).write())  # type: ignore[arg-type]
    whole, _ = mqtt5.read(memoryview(bytes(buf)))
    split = split_large_publish(buf)
    assert split is not None
    head, view = split
    assert isinstance(view, memoryview) and view == payload and view.obj is buf
    for field in ("topic", "qos", "packet_id", "response_topic", "correlation_data", "content_type",
                  "message_expiry_interval", "user_properties", "retain"):
        assert getattr(head, field) == getattr(whole, field), field


def test_what_is_not_split_from_its_payload() -> None:
    """A packet that is no PUBLISH, or a PUBLISH whose payload the codec checks as UTF-8, is parsed
    whole; a truncated one raises."""
    import mqtt5

    from edgefleet.mqtt.lean import split_large_publish

    assert split_large_publish(bytearray(mqtt5.PingReqPacket().write())) is None
    utf8 = mqtt5.PublishPacket("a/b", b"text", payload_format_indicator=1).write()
    assert split_large_publish(bytearray(utf8)) is None
    whole = mqtt5.PublishPacket("a/b", bytes(100), response_topic="r").write()
    with pytest.raises(ValueError):
        split_large_publish(bytearray(whole[:-1]))

"""A client written from docs/protocol.md alone, in bash, talks to a Python responder through the broker.

examples/call_tenant.sh builds EFT1 frames with printf and speaks MQTT 5 through mosquitto_pub and
mosquitto_sub. If it and the wire code agree, the protocol document is enough for other languages;
if either drifts (frame layout, properties, reply handling), this fails.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.wire import (
    ErrorCode,
    RequestFrame,
    Topics,
    WireError,
    decode_frame,
    encode_error,
    encode_result,
)
from edgefleet.wire.tensors import CONTENT_TYPE

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
        reason="mosquitto_pub/mosquitto_sub not installed (Debian/Ubuntu: apt-get install mosquitto-clients)",
    ),
]

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "call_tenant.sh"


def word(x: float) -> str:
    """A float32 as the script's 8 hex digits, most significant byte first."""
    return struct.pack(">f", x).hex()


class DoublingResponder:
    """Answers tenant ``double`` with every input times 2, ``refuse`` with an overloaded error."""

    def __init__(self, settings: MqttSettings, topics: Topics) -> None:
        self.topics = topics
        self.requests: list[Inbound] = []
        self.frames: list[RequestFrame] = []
        self._probe = threading.Event()
        self.link = MqttLink(settings, client_id=f"ext-responder-{topics.prefix}")
        for tenant in ("double", "refuse"):
            self.link.subscribe(topics.infer_shared(tenant), self._on_request, qos=1)
        probe = topics.replies(f"probe-{topics.prefix}")
        self.link.subscribe(probe, lambda _m: self._probe.set(), qos=1)
        self.link.start()
        assert self.link.wait_connected(10)
        self.link.publish(probe, b"probe", qos=1)
        assert self._probe.wait(10), "responder subscriptions not live"

    def _on_request(self, msg: Inbound) -> None:
        self.requests.append(msg)
        tenant = self.topics.parse(msg.topic).name
        try:
            frame = decode_frame(msg.payload)
            assert isinstance(frame, RequestFrame)
        except (WireError, AssertionError) as exc:
            self._reply(msg, encode_error(ErrorCode.BAD_REQUEST, str(exc)), "error")
            return
        self.frames.append(frame)
        if tenant == "refuse":
            self._reply(msg, encode_error(ErrorCode.OVERLOADED, "queue full", {"device": "py-1"}), "error")
            return
        outs = {f"{name}_out": arr * 2 for name, arr in frame.tensors.items()}
        self._reply(msg, encode_result(outs, {"device": "py-1", "variant": "fp32", "batch": 1}), "ok")

    def _reply(self, msg: Inbound, payload: bytes, status: str) -> None:
        assert msg.response_topic
        self.link.publish(msg.response_topic, payload, qos=1, correlation_data=msg.correlation_data,
                          content_type=CONTENT_TYPE, user_properties=[("ef-status", status)])

    def close(self) -> None:
        self.link.stop()


@pytest.fixture()
def responder(mqtt_settings: MqttSettings, topics: Topics) -> Iterator[DoublingResponder]:
    r = DoublingResponder(mqtt_settings, topics)
    yield r
    r.close()


def run_script(
    settings: MqttSettings, prefix: str, *args: str, timeout_s: int = 3
) -> subprocess.CompletedProcess[str]:
    options = ["-h", settings.host, "-p", str(settings.port), "-P", prefix, "-w", str(timeout_s)]
    return subprocess.run(
        ["bash", str(SCRIPT), *options, *args],
        capture_output=True, text=True, timeout=timeout_s + 20, check=False,
    )


def parse_output(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, []).append(value)
    return out


def test_script_calls_a_tenant(mqtt_settings: MqttSettings, prefix: str, topics: Topics,
                               responder: DoublingResponder) -> None:
    values = [1.0, -2.5, 0.125, 3.0e6, -0.0, 7.75]
    proc = run_script(mqtt_settings, prefix, "double", "x", "2x3", *map(word, values))
    assert proc.returncode == 0, proc.stderr
    out = parse_output(proc.stdout)
    assert out["kind"] == ["result"]

    # What the bash client sent is a valid request, with the properties the protocol asks for.
    (msg,) = responder.requests
    assert msg.topic == topics.infer("double")
    assert msg.response_topic is not None and topics.parse(msg.response_topic).kind.value == "replies"
    assert msg.correlation_data and msg.content_type == CONTENT_TYPE and msg.qos == 1
    (frame,) = responder.frames
    assert frame.timeout_ms == 3000.0
    np.testing.assert_array_equal(frame.tensors["x"], np.array(values, np.float32).reshape(2, 3))

    # And it decoded the reply frame the Python side built.
    expected = np.array(values, np.float32).reshape(2, 3) * 2
    name, dtype, shape, hexbytes = out["tensor"][0].split(" ")
    assert (name, dtype, shape) == ("x_out", "float32", "[2,3]")
    got = np.frombuffer(bytes.fromhex(hexbytes), "<f4").reshape(2, 3)
    np.testing.assert_array_equal(got, expected)
    assert out["words"] == ["x_out " + " ".join(word(float(v)) for v in expected.ravel())]
    assert '"device":"py-1"' in out["header"][0]


def test_script_reports_error_replies(mqtt_settings: MqttSettings, prefix: str,
                                      responder: DoublingResponder) -> None:
    proc = run_script(mqtt_settings, prefix, "refuse", "x", "1", word(1.0))
    assert proc.returncode == 2, proc.stderr
    out = parse_output(proc.stdout)
    assert out["kind"] == ["error"]
    assert out["code"] == ["overloaded"] and out["message"] == ["queue full"]


def test_script_reports_no_reply(mqtt_settings: MqttSettings, prefix: str,
                                 responder: DoublingResponder) -> None:
    proc = run_script(mqtt_settings, prefix, "nobody", "x", "1", word(1.0), timeout_s=1)
    assert proc.returncode == 3
    assert "no device answered tenant nobody within 1 s; is it deployed?" in proc.stderr


def test_script_refuses_bad_arguments(mqtt_settings: MqttSettings, prefix: str) -> None:
    assert run_script(mqtt_settings, prefix, "Bad/Tenant", "x", "1", word(1.0)).returncode == 1
    assert run_script(mqtt_settings, prefix, "double", "x", "2", word(1.0)).returncode == 1
    assert run_script(mqtt_settings, prefix, "double", "x", "1", "xyz").returncode == 1

"""Conformance: docs/protocol.md's worked example and error table, driven through a real agent process by
a client that shares no code with the SDK.

The client is the Mosquitto command-line tools (``mosquitto_pub`` publishes with MQTT 5 properties,
``mosquitto_sub`` prints each reply's Correlation Data, user properties and payload); frames are the
document's own hex dump, or built and read here with ``struct`` and ``json`` from the document's section
3, never with edgefleet's codec. The agent is ``edgefleet-agent`` serving a tenant ``double`` (y = 2x,
input ``x`` float32 ``[N, 2]``, the model of the worked example) with ``answer_bad_names = true`` and a
4 KiB request limit. Every code of the document's error table is either driven here by one request or
named in ``NOT_DRIVABLE`` with the reason one request cannot cause it. The documented ``deploy`` and
``undeploy`` commands (section 5) are published from the shell too, and their acks read there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.broker import PrivateBroker
from edgefleet.mqtt import MqttSettings
from edgefleet.tomlio import dump_toml
from edgefleet.wire import Deploy, TenantSpec, Topics
from tests.fleetkit import Watcher, wait_for

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
        reason="mosquitto_pub/mosquitto_sub not installed (Debian/Ubuntu: apt-get install mosquitto-clients)",
    ),
]

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
CONTENT_TYPE = "application/vnd.edgefleet.tensors.v1"
MAX_PAYLOAD_BYTES = 4096

# Codes of the error table that no single request can cause, with why.
NOT_DRIVABLE = {
    "unknown_tenant": "a replica only receives requests of tenants it hosts: a race with an undeploy",
    "fidelity_unavailable": "needs a tenant running a lower-fidelity variant than asked (zoo int8), not this model",
    "deadline_exceeded": "a deadline passing in the queue: depends on load",
    "overloaded": "shedding at admission: depends on load",
    "not_ready": "a tenant being loaded, moved or stopped: depends on timing",
    "model_failed": "the runtime raising on valid inputs: needs a broken model",
    "internal": "a bug in edgefleet",
}


# -- the document, read as data ------------------------------------------------------------------
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def documented_request_frame() -> bytes:
    """The worked example's bytes, from the hex dump in section 3."""
    block = doc_text().split("and the whole 152-byte frame is", 1)[1].split("```", 2)[1]
    data = bytearray()
    for line in block.strip().splitlines():
        hex_part = line[6:54]  # "0000  " then 16 bytes as "xx " each
        data += bytes.fromhex(hex_part.replace(" ", ""))
    return bytes(data)


@dataclass(frozen=True)
class TableRow:
    code: str
    retryable: bool


def documented_error_table() -> dict[str, TableRow]:
    """Section 4's table: code -> its retry column."""
    section = doc_text().split("## 4. Error codes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for m in re.finditer(r"^\| `([a-z_]+)` \|.*\| (yes|no) \| `\w+` \|$", section, re.MULTILINE):
        rows[m.group(1)] = TableRow(m.group(1), m.group(2) == "yes")
    return rows


# -- an EFT1 writer and reader from section 3 --------------------------------------------------------
def eft1(header: dict[str, object], data: bytes = b"", magic: bytes = b"EFT1") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    out = magic + struct.pack("<I", len(head)) + head
    out += b"\0" * (-len(out) % 8)
    return out + data


def request(shape: list[int], values: bytes, *, dtype: str = "float32", meta: dict[str, object] | None = None,
            **header: object) -> bytes:
    spec = {"name": "x", "dtype": dtype, "shape": shape, "offset": 0, "nbytes": len(values)}
    return eft1({"v": 1, "kind": "request", "tensors": [spec], "meta": meta or {}, **header}, values)


def floats(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


@dataclass(frozen=True)
class Reply:
    correlation: str
    user_properties: str
    header: dict[str, object]
    tensors: dict[str, tuple[str, list[int], bytes]]

    @property
    def kind(self) -> object:
        return self.header["kind"]

    @property
    def meta(self) -> dict[str, object]:
        meta = self.header["meta"]
        assert isinstance(meta, dict)
        return meta


def read_eft1(payload: bytes, correlation: str, user_properties: str) -> Reply:
    assert payload[:4] == b"EFT1", payload[:16]
    (hlen,) = struct.unpack_from("<I", payload, 4)
    header = json.loads(payload[8 : 8 + hlen])
    start = 8 + hlen + (-(8 + hlen) % 8)
    tensors = {}
    for t in header["tensors"]:
        raw = payload[start + t["offset"] : start + t["offset"] + t["nbytes"]]
        tensors[t["name"]] = (t["dtype"], t["shape"], raw)
    return Reply(correlation, user_properties, header, tensors)


# -- the client: mosquitto_sub on a reply topic, mosquitto_pub per request -------------------------------
class ShellClient:
    def __init__(self, port: int, prefix: str, workdir: Path) -> None:
        self.port, self.prefix, self.workdir = port, prefix, workdir
        self.client = f"conf-{uuid.uuid4().hex[:8]}"
        self.reply_topic = f"{prefix}/v1/clients/{self.client}/replies"
        self.out = workdir / "replies.txt"
        self._sub = subprocess.Popen(
            ["mosquitto_sub", "-V", "mqttv5", "-p", str(port), "-q", "1", "-i", self.client,
             "-t", self.reply_topic, "-F", "%D|%P|%x"],
            stdout=self.out.open("w"), stderr=subprocess.DEVNULL)
        for _ in range(200):  # live once a probe sent to the reply topic comes back
            self.publish(self.reply_topic, b"probe", correlation="probe", response_topic=None)
            if "probe|" in self.out.read_text():
                return
            time.sleep(0.05)
        raise AssertionError("mosquitto_sub never subscribed")

    def publish(self, topic: str, payload: bytes, *, correlation: str | None, response_topic: str | None = "",
                expiry_s: int = 5) -> None:
        path = self.workdir / f"frame-{uuid.uuid4().hex[:8]}.bin"
        path.write_bytes(payload)
        cmd = ["mosquitto_pub", "-V", "mqttv5", "-p", str(self.port), "-q", "1", "-t", topic, "-f", str(path),
               "-D", "publish", "content-type", CONTENT_TYPE,
               "-D", "publish", "message-expiry-interval", str(expiry_s)]
        if response_topic is not None:
            cmd += ["-D", "publish", "response-topic", response_topic or self.reply_topic]
        if correlation is not None:
            cmd += ["-D", "publish", "correlation-data", correlation]
        subprocess.run(cmd, check=True, timeout=10)

    def call(self, tenant: str, payload: bytes, **kw: object) -> str:
        correlation = f"c-{uuid.uuid4().hex[:12]}"
        self.publish(f"{self.prefix}/v1/tenants/{tenant}/infer", payload, correlation=correlation, **kw)  # type: ignore[arg-type]
        return correlation

    def lines(self) -> list[tuple[str, str, bytes]]:
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2] and parts[0] != "probe":
                out.append((parts[0], parts[1], bytes.fromhex(parts[2])))
        return out

    def reply(self, correlation: str, timeout_s: float = 10.0) -> Reply:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for corr, props, payload in self.lines():
                if corr == correlation:
                    return read_eft1(payload, corr, props)
            time.sleep(0.02)
        raise AssertionError(f"no reply with correlation {correlation!r} within {timeout_s} s")

    def close(self) -> None:
        self._sub.terminate()
        self._sub.wait(5)


def build_double(path: Path) -> Path:
    """y = 2x, x float32 [N, 2]: the worked example's tenant."""
    import onnx
    from onnx import TensorProto, helper

    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass
class Fleet:
    client: ShellClient
    log: Path
    prefix: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    pytest.importorskip("onnx")
    work = tmp_path_factory.mktemp("conformance")
    model = build_double(work / "double.onnx")
    prefix = "c" + uuid.uuid4().hex[:8]
    with PrivateBroker() as broker:
        config = work / "agent.toml"
        config.write_text(dump_toml({
            "agent": {"device_id": "conf-a", "state_dir": work / "state", "prefix": prefix,
                      "max_payload_mib": MAX_PAYLOAD_BYTES / (1 << 20), "answer_bad_names": True, "workers": 1},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5},
        }))
        log = work / "agent.log"
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.agent.main", "--config", str(config), "--model", f"double={model}"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        settings = MqttSettings(port=broker.port, keepalive_s=5)
        watcher = Watcher(settings, Topics(prefix))
        client = ShellClient(broker.port, prefix, work)
        try:
            wait_for(lambda: "conf-a" in watcher.status, 30, "the agent's birth")
            ack = watcher.command(Deploy(command_id="c-1", device_id="conf-a",
                                         tenant=TenantSpec(name="double", model="double", slo_ms=100.0)))
            assert ack.ok, ack
            yield Fleet(client, log, prefix)
        finally:
            client.close()
            watcher.close()
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)


# -- the worked example and section 2's rules ----------------------------------------------------
def test_the_documented_request_frame_is_answered_as_documented(fleet: Fleet) -> None:
    frame = documented_request_frame()
    assert len(frame) == 152 and frame[:4] == b"EFT1"
    reply = fleet.client.reply(fleet.client.call("double", frame))
    assert reply.kind == "result" and reply.user_properties == "ef-status:ok"
    dtype, shape, raw = reply.tensors["y"]
    assert (dtype, shape) == ("float32", [1, 2]) and struct.unpack("<2f", raw) == (2.0, 4.0)
    # the result meta of section 2's table, with the tenant
    assert set(reply.meta) >= {"device", "tenant", "variant", "queue_ms", "service_ms", "batch"}
    assert reply.meta["device"] == "conf-a" and reply.meta["tenant"] == "double" and reply.meta["batch"] == 1


def test_one_request_may_carry_several_rows(fleet: Fleet) -> None:
    reply = fleet.client.reply(fleet.client.call("double", request([3, 2], floats(1, 2, 3, 4, 5, 6))))
    _, shape, raw = reply.tensors["y"]
    assert shape == [3, 2] and struct.unpack("<6f", raw) == (2, 4, 6, 8, 10, 12)


def test_timeout_ms_zero_means_the_device_default(fleet: Fleet) -> None:
    reply = fleet.client.reply(fleet.client.call("double", request([1, 2], floats(1, 1), meta={"timeout_ms": 0})))
    assert reply.kind == "result"


def test_content_type_is_optional(fleet: Fleet) -> None:
    correlation = "no-content-type"
    path = fleet.client.workdir / "plain.bin"
    path.write_bytes(request([1, 2], floats(3, 4)))
    subprocess.run(["mosquitto_pub", "-V", "mqttv5", "-p", str(fleet.client.port), "-q", "1",
                    "-t", f"{fleet.prefix}/v1/tenants/double/infer", "-f", str(path),
                    "-D", "publish", "response-topic", fleet.client.reply_topic,
                    "-D", "publish", "correlation-data", correlation], check=True, timeout=10)
    assert fleet.client.reply(correlation).kind == "result"


def test_a_request_without_correlation_data_is_answered_bad_request(fleet: Fleet) -> None:
    before = len(fleet.client.lines())
    fleet.client.publish(f"{fleet.prefix}/v1/tenants/double/infer", request([1, 2], floats(1, 2)), correlation=None)
    wait_for(lambda: len(fleet.client.lines()) > before, 10, "the reply without correlation data")
    corr, props, payload = fleet.client.lines()[-1]
    reply = read_eft1(payload, corr, props)
    assert corr == "" and reply.meta["code"] == "bad_request" and "Correlation Data" in str(reply.meta["message"])


def test_a_wildcard_response_topic_is_dropped_cleanly(fleet: Fleet) -> None:
    fleet.client.call("double", request([1, 2], floats(1, 2)), response_topic=f"{fleet.prefix}/v1/clients/x/#")
    # the agent is still serving, and said why once, without a traceback
    assert fleet.client.reply(fleet.client.call("double", request([1, 2], floats(1, 2)))).kind == "result"
    wait_for(lambda: "cannot be published to" in fleet.log.read_text(), 5, "the agent's warning")
    assert "Traceback" not in fleet.log.read_text()


# -- section 4's table -------------------------------------------------------------------------------
def _too_large() -> bytes:
    return request([600, 2], floats(*([1.0] * 1200)))  # 4800 bytes of data > 4096


def _bad_version() -> bytes:
    return request([1, 2], floats(1, 2), v=2)


DRIVEN: dict[str, list[tuple[str, str, bytes]]] = {  # code -> (case, tenant, payload)
    "bad_request": [("not a frame", "double", b"hello"),
                    ("a tenant name that breaks the rule", "Doc-Angle", request([1, 2], floats(1, 2))),
                    ("overlapping tensors", "double",
                     eft1({"v": 1, "kind": "request", "meta": {}, "tensors": [
                         {"name": "x", "dtype": "float32", "shape": [1, 2], "offset": 0, "nbytes": 8},
                         {"name": "z", "dtype": "float32", "shape": [1], "offset": 4, "nbytes": 4}]},
                         floats(1, 2)))],
    "bad_shape": [("shape [1, 3] for [N, 2]", "double", request([1, 3], floats(1, 2, 3))),
                  ("nbytes does not match the shape", "double",
                   eft1({"v": 1, "kind": "request", "meta": {}, "tensors": [
                       {"name": "x", "dtype": "float32", "shape": [1, 2], "offset": 0, "nbytes": 4}]}, floats(1, 2))),
                  ("nine dimensions", "double", request([1] * 9, floats(1)))],
    "bad_dtype": [("int32 for float32", "double", request([1, 2], struct.pack("<2i", 1, 2), dtype="int32")),
                  ("a dtype not on the list", "double", request([1, 2], floats(1, 2), dtype="complex64"))],
    "payload_too_large": [("4800 bytes over a 4096-byte limit", "double", _too_large())],
    "unsupported_version": [("magic EFT2", "double", eft1({"v": 1, "kind": "request", "tensors": []}, magic=b"EFT2")),
                            ("header v 2", "double", _bad_version())],
    "budget_expired": [("a budget of a nanosecond", "double",
                        request([1, 2], floats(1, 2), meta={"timeout_ms": 0.000001}))],
}


def test_every_code_of_the_table_is_driven_or_says_why_not() -> None:
    table = documented_error_table()
    assert set(table) == set(DRIVEN) | set(NOT_DRIVABLE)
    assert not set(DRIVEN) & set(NOT_DRIVABLE)
    assert table["budget_expired"].retryable is False and table["overloaded"].retryable is True


@pytest.mark.parametrize(("code", "case", "tenant", "payload"),
                         [(code, case, tenant, payload) for code, cases in DRIVEN.items()
                          for case, tenant, payload in cases],
                         ids=[f"{code}: {case}" for code, cases in DRIVEN.items() for case, _, _ in cases])
def test_the_error_table(fleet: Fleet, code: str, case: str, tenant: str, payload: bytes) -> None:
    reply = fleet.client.reply(fleet.client.call(tenant, payload))
    assert reply.kind == "error" and reply.user_properties == "ef-status:error"
    assert reply.tensors == {}
    assert reply.meta["code"] == code, reply.meta
    assert isinstance(reply.meta["message"], str) and reply.meta["message"]
    if tenant == "Doc-Angle":  # the message states the documented rule
        assert "1-63 characters" in str(reply.meta["message"])


# -- section 5: the documented deploy and undeploy commands, from the shell --------------------------
def documented_json(after_heading: str) -> list[str]:
    section = doc_text().split(after_heading, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```json\n(.+?)\n```", section)


def test_the_documented_deploy_and_undeploy_are_applied_and_acknowledged(fleet: Fleet) -> None:
    from edgefleet.zoo.paths import data_dir, local_catalog_path

    if not local_catalog_path(data_dir()).is_file():
        pytest.skip("the model zoo is not fetched (make zoo): the documented deploy names ocr-cls")
    deploy, undeploy = documented_json("### `deploy` and `undeploy`")
    device_topic = f"{fleet.prefix}/v1/devices/conf-a"
    out = fleet.client.workdir / "device.txt"
    sub = subprocess.Popen(["mosquitto_sub", "-V", "mqttv5", "-p", str(fleet.client.port), "-q", "1",
                            "-t", f"{device_topic}/#", "-F", "%t %p"], stdout=out.open("w"), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (fleet.client.publish(f"{device_topic}/probe", b"probe", correlation=None,
                                               response_topic=None) or "probe" in out.read_text()), 10, "subscribed")
        suffix = uuid.uuid4().hex[:6]

        def command(text: str) -> dict[str, object]:
            cmd = json.loads(text.replace('"box-1"', '"conf-a"').replace('"c-000', f'"c-{suffix}-'))
            fleet.client.publish(f"{device_topic}/commands", json.dumps(cmd).encode(), correlation=None,
                                 response_topic=None)
            return cmd

        def ack(command_id: object, n: int = 1) -> dict[str, object]:
            def found() -> list[dict[str, object]]:
                acks = [json.loads(line.split(" ", 1)[1]) for line in out.read_text().splitlines()
                        if line.startswith(f"{device_topic}/acks ")]
                return [a for a in acks if a["command_id"] == command_id]
            wait_for(lambda: len(found()) >= n, 60, f"ack of {command_id}")
            return found()[n - 1]

        sent = command(deploy)
        first = ack(sent["command_id"])
        assert first["ok"] is True and first["result"] == "applied", first
        assert command(deploy)["command_id"] == sent["command_id"]  # the same id again: applied at most once
        assert ack(sent["command_id"], 2)["result"] == "duplicate"
        gone = ack(command(undeploy)["command_id"])
        assert gone["ok"] is True and gone["result"] == "applied", gone
    finally:
        sub.terminate()
        sub.wait(5)

"""``edgefleet security``: the ACL generator as tables, the password and certificate formats, the files
``security init`` writes, and what a real Mosquitto enforces with them (password and TLS listeners)."""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import os
import re
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgefleet.broker import PrivateBroker, free_port
from edgefleet.cli.main import main as cli_main
from edgefleet.cli.opsclient import call_ops
from edgefleet.config import mqtt_settings, read_toml
from edgefleet.coordinator import Coordinator, CoordinatorConfig
from edgefleet.mqtt import Inbound, MqttLink
from edgefleet.security import (
    Access,
    AclRule,
    AppGrant,
    PlanError,
    SecurityPlan,
    acl_rules,
    hash_password,
    new_password,
    permits,
    render_acl,
    render_password_file,
    verify_password,
)
from edgefleet.security.acl import topic_matches
from edgefleet.security.bundle import BundleExists, BundleOptions, TlsOptions, build_bundle, write_bundle
from edgefleet.wire import (
    Birth,
    Capabilities,
    DeviceWindow,
    OpStatus,
    Telemetry,
    TelemetryAck,
    Topics,
    encode,
)

R, W = Access.READ, Access.WRITE
NOT_AUTHORIZED = 135
BAD_CREDENTIALS = (134, 135)  # bad user name or password / not authorized: Mosquitto 2.0 answers 135

PLAN = SecurityPlan(
    prefix="ef",
    devices=("edge-01", "edge-02"),
    apps=(AppGrant("shop", ("cam-a", "cam-b")), AppGrant("other", ("cam-b",))),
)


def test_security_imports_no_role_and_no_transport() -> None:
    forbidden = ("edgefleet.agent", "edgefleet.coordinator", "edgefleet.bench", "paho", "edgefleet.cli", "edgefleet.mqtt", "edgefleet.sdk",
                 "edgefleet.runtime", "edgefleet.broker")
    root = Path(__file__).resolve().parents[1] / "edgefleet" / "security"
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path} has no docstring"
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert not bad


# -- the plan ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "$sys"}, "invalid topic prefix"),
        ({"prefix": "a/+/b"}, "invalid topic prefix"),
        ({"devices": ("Edge-01",)}, "invalid device id 'Edge-01'"),
        ({"devices": ("edge 01",)}, "invalid device id"),
        ({"devices": ("",)}, "invalid device id ''"),
        ({"devices": "edge-01"}, "not one string"),
        ({"coordinator": "co:ord"}, "invalid coordinator name"),
        ({"operator": "op/x"}, "invalid operator name"),
        ({"apps": (AppGrant("Shop", ("cam",)),)}, "invalid app name 'Shop'"),
        ({"apps": (AppGrant("shop", ()),)}, "granted no tenant"),
        ({"apps": (AppGrant("shop", ("cam", "cam")),)}, "lists a tenant twice"),
        ({"apps": (AppGrant("shop", ("cam/#",)),)}, "invalid tenant name 'cam/#'"),
        ({"devices": ("edge-01", "edge-01")}, "'edge-01' is used twice (device and device)"),
        ({"devices": ("coordinator",)}, "'coordinator' is used twice (coordinator and device)"),
        ({"devices": ("shop",), "apps": (AppGrant("shop", ("cam",)),)}, "used twice (device and app)"),
    ],
)
def test_plan_rejects_bad_names(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as err:
        SecurityPlan(**kwargs)
    assert message in str(err.value)


def test_app_tenants_given_as_one_string_are_refused() -> None:
    with pytest.raises(PlanError, match="not one string"):
        AppGrant("shop", "cam-a")  # type: ignore[arg-type]


def test_principals_in_order_without_operator() -> None:
    plan = SecurityPlan(operator=None, devices=["d1"], apps=[AppGrant("a1", ["t1"])])  # type: ignore[arg-type]
    assert [(p.name, p.role.value, p.tenants) for p in plan.principals()] == [
        ("coordinator", "coordinator", ()), ("d1", "device", ()), ("a1", "app", ("t1",)),
    ]


# -- the ACL ------------------------------------------------------------------------------------------------
RULES = acl_rules(PLAN)
T = Topics("ef")

ACL_TABLE = [
    # device: its own status, telemetry and acks; its own commands; every tenant's requests; replies
    ("edge-01", W, T.status("edge-01"), True),
    ("edge-01", W, T.telemetry("edge-01"), True),
    ("edge-01", W, T.acks("edge-01"), True),
    ("edge-01", R, T.commands("edge-01"), True),
    ("edge-01", R, T.infer("cam-a"), True),
    ("edge-01", R, T.infer("not-granted-to-anyone"), True),
    ("edge-01", W, T.replies("shop"), True),
    ("edge-01", W, T.replies("any-client.id"), True),
    ("edge-01", W, T.status("edge-02"), False),
    ("edge-01", W, T.telemetry("edge-02"), False),
    ("edge-01", W, T.acks("edge-02"), False),
    ("edge-01", W, T.commands("edge-01"), False),
    ("edge-01", W, T.commands("edge-02"), False),
    ("edge-01", R, T.commands("edge-02"), False),
    ("edge-01", R, T.telemetry("edge-02"), False),
    ("edge-01", R, T.status("edge-02"), False),
    ("edge-01", W, T.infer("cam-a"), False),
    ("edge-01", W, T.ops(), False),
    ("edge-01", R, T.ops(), False),
    ("edge-01", R, T.replies("shop"), False),
    # coordinator: all status, telemetry, acks; commands to any device; ops requests; replies
    ("coordinator", R, T.status("edge-02"), True),
    ("coordinator", R, T.telemetry("edge-01"), True),
    ("coordinator", R, T.acks("edge-01"), True),
    ("coordinator", W, T.commands("edge-02"), True),
    ("coordinator", R, T.ops(), True),
    ("coordinator", W, T.replies("efops-0123"), True),
    ("coordinator", W, T.status("edge-01"), False),
    ("coordinator", W, T.telemetry("edge-01"), False),
    ("coordinator", R, T.commands("edge-01"), False),
    ("coordinator", R, T.infer("cam-a"), False),
    ("coordinator", W, T.infer("cam-a"), False),
    ("coordinator", W, T.ops(), False),
    ("coordinator", W, T.model(), True),  # its retained model report
    ("coordinator", R, T.model(), False),
    # operator: the ops topic and the reply topics its random client ids use
    ("operator", W, T.ops(), True),
    ("operator", R, T.replies("efops-0123"), True),
    ("operator", R, T.ops(), False),
    ("operator", W, T.commands("edge-01"), False),
    ("operator", W, T.infer("cam-a"), False),
    ("operator", R, T.telemetry("edge-01"), False),
    ("operator", R, T.model(), True),  # the model report names every tenant's device: the operator only
    ("operator", W, T.model(), False),
    ("edge-01", W, T.model(), False),
    ("edge-01", R, T.model(), False),
    ("shop", R, T.model(), False),
    # apps: granted tenants only, own reply topic only
    ("shop", W, T.infer("cam-a"), True),
    ("shop", W, T.infer("cam-b"), True),
    ("shop", R, T.replies("shop"), True),
    ("other", W, T.infer("cam-b"), True),
    ("other", W, T.infer("cam-a"), False),
    ("other", R, T.replies("shop"), False),
    ("shop", R, T.replies("other"), False),
    ("shop", W, T.replies("other"), False),
    ("shop", R, T.infer("cam-a"), False),
    ("shop", W, T.commands("edge-01"), False),
    ("shop", W, T.telemetry("edge-01"), False),
    ("shop", W, T.ops(), False),
    # nobody outside the plan, nothing outside the prefix
    ("stranger", R, T.infer("cam-a"), False),
    ("coordinator", R, "ef2/v1/devices/edge-01/status", False),
    ("edge-01", W, "other/v1/devices/edge-01/status", False),
    ("edge-01", R, "$SYS/broker/clients/connected", False),
]


@pytest.mark.parametrize(("user", "access", "topic", "allowed"), ACL_TABLE)
def test_acl_table(user: str, access: Access, topic: str, allowed: bool) -> None:
    assert permits(RULES, user, access, topic) is allowed


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.user}-{r.access.value}-{r.topic}")
def test_every_rule_names_a_topic_of_the_wire_layout(rule: AclRule) -> None:
    concrete = rule.topic.replace("+", "x-1")
    assert "#" not in rule.topic
    assert T.parse(concrete).kind  # raises for a topic the fleet does not use


def test_acl_file_text() -> None:
    plan = SecurityPlan(prefix="p", operator=None, devices=("d1",), apps=(AppGrant("a1", ("t1",)),))
    body = [ln for ln in render_acl(plan).splitlines() if ln and not ln.startswith("#")]
    assert body == [
        "user coordinator",
        "topic read p/v1/devices/+/status",
        "topic read p/v1/devices/+/telemetry",
        "topic read p/v1/devices/+/acks",
        "topic write p/v1/devices/+/commands",
        "topic read p/v1/coordinator/ops",
        "topic write p/v1/clients/+/replies",
        "topic write p/v1/coordinator/model",
        "user d1",
        "topic read p/v1/devices/d1/commands",
        "topic write p/v1/devices/d1/status",
        "topic write p/v1/devices/d1/telemetry",
        "topic write p/v1/devices/d1/acks",
        "topic read p/v1/tenants/+/infer",
        "topic write p/v1/clients/+/replies",
        "user a1",
        "topic write p/v1/tenants/t1/infer",
        "topic read p/v1/clients/a1/replies",
    ]


def test_acl_file_has_one_user_block_per_principal_and_no_patterns() -> None:
    text = render_acl(PLAN)
    assert "pattern" not in text and "%u" not in text and "%c" not in text
    assert re.findall(r"^user (\S+)$", text, re.M) == ["coordinator", "operator", "edge-01", "edge-02", "shop", "other"]
    assert len([ln for ln in text.splitlines() if ln.startswith("topic ")]) == len(RULES)


@pytest.mark.parametrize(
    ("filter_", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_matches(filter_: str, topic: str, matches: bool) -> None:
    assert topic_matches(filter_, topic) is matches


# -- passwords --------------------------------------------------------------------------------------------
# Written by Mosquitto 2.0.11's own `mosquitto_passwd -b passwd alice secret`.
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$HE9HH7H7cSjrRF+l$9JDRGi9PhyQd4L30hLMw6HRyomut1ULFHyCoe79GhQGymP8jqAT91jQGiQY6sloNUU1UUokxJu"
    "SbJtKZrJ4DBQ=="
)


def test_hash_matches_mosquitto_passwd() -> None:
    encoded = MOSQUITTO_PASSWD_LINE.split(":", 1)[1]
    assert verify_password("secret", encoded)
    assert not verify_password("Secret", encoded)
    salt = base64.b64decode(encoded.split("$")[3])
    assert hash_password("secret", salt=salt) == encoded


@pytest.mark.parametrize("bad", ["", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!$AAAA", "$7$101$AAAA"])
def test_verify_refuses_malformed_hashes(bad: str) -> None:
    assert not verify_password("secret", bad)


def test_hash_format_and_fresh_salt() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", a)


def test_password_file_lines_and_refusals() -> None:
    text = render_password_file({"edge-01": "p1", "shop": "p2"})
    users = [line.split(":", 1)[0] for line in text.splitlines()]
    assert users == ["edge-01", "shop"]
    assert verify_password("p2", text.splitlines()[1].split(":", 1)[1])
    with pytest.raises(ValueError):
        render_password_file({"a:b": "p"})
    with pytest.raises(ValueError):
        render_password_file({"a": "p\nb:x"})


def test_new_passwords_are_long_and_plain() -> None:
    pws = {new_password() for _ in range(50)}
    assert len(pws) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", p) for p in pws)
    with pytest.raises(ValueError):
        new_password(8)


# -- the bundle -------------------------------------------------------------------------------------------
def _bundle(tmp_path: Path, tls: TlsOptions | None = None) -> Any:
    return build_bundle(PLAN, BundleOptions(tmp_path, tls), password_for=lambda name: f"pw-of-{name}-0123456789")


def test_bundle_files_and_which_are_secret(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    secret = {f.path for f in bundle.files if f.secret}
    public = {f.path for f in bundle.files if not f.secret}
    names = [p.name for p in PLAN.principals()]
    assert public == {"acl", "mosquitto.conf"}
    assert secret == {"passwd"} | {f"clients/{n}.toml" for n in names}
    conf = bundle.file("mosquitto.conf").content.decode()
    assert f"password_file {tmp_path}/passwd" in conf and f"acl_file {tmp_path}/acl" in conf
    assert "allow_anonymous false" in conf
    assert not any(line.startswith("listener") for line in conf.splitlines())


def test_client_settings_load_as_mqtt_config(tmp_path: Path) -> None:
    tls = TlsOptions(port=18883, hosts=("broker.example", "10.0.0.5"))
    bundle = _bundle(tmp_path, tls)
    written = write_bundle(bundle, tmp_path / "out")
    assert {str(p.relative_to(tmp_path / "out")) for p in written} == {f.path for f in bundle.files}
    data = read_toml(tmp_path / "out" / "clients" / "edge-01.toml")
    settings = mqtt_settings("edge-01.toml", data["mqtt"])
    assert (settings.username, settings.password, settings.port) == ("edge-01", "pw-of-edge-01-0123456789", 18883)
    assert settings.tls_ca == f"{tmp_path}/tls/ca.crt"
    assert settings.tls_cert == f"{tmp_path}/clients/edge-01.crt"
    assert settings.tls_key == f"{tmp_path}/clients/edge-01.key"
    conf = bundle.file("mosquitto.conf").content.decode()
    assert "listener 18883\n" in conf and "use_identity_as_username true" in conf


def test_certificates_chain_to_the_ca_with_the_principal_as_name(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    bundle = _bundle(tmp_path, TlsOptions(hosts=("broker.example", "10.0.0.5")))
    ca = x509.load_pem_x509_certificate(bundle.file("tls/ca.crt").content)
    server = x509.load_pem_x509_certificate(bundle.file("tls/server.crt").content)
    client = x509.load_pem_x509_certificate(bundle.file("clients/shop.crt").content)
    for cert in (server, client):
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "shop"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert {f.path for f in bundle.files if f.secret and f.path.endswith(".key")} == (
        {"tls/ca.key", "tls/server.key"} | {f"clients/{p.name}.key" for p in PLAN.principals()}
    )


def test_write_refuses_to_overwrite_and_sets_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_bundle(_bundle(tmp_path), out)
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "clients" / "shop.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "acl").stat().st_mode) == 0o644
    before = (out / "passwd").read_bytes()
    again = build_bundle(PLAN, BundleOptions(tmp_path))
    with pytest.raises(BundleExists, match="--force"):
        write_bundle(again, out)
    assert (out / "passwd").read_bytes() == before
    write_bundle(again, out, force=True)
    assert (out / "passwd").read_bytes() != before
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


# -- the command ------------------------------------------------------------------------------------------
def test_cli_init_writes_files_and_never_prints_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sec"
    rc = cli_main(["security", "init", "--out", str(out), "--prefix", "f1", "--devices", "edge-01,edge-02",
                   "--devices", "edge-03", "--app", "shop=cam-a,cam-b", "--app", "other=cam-b"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "acl").read_text().count("\nuser ") == 7
    assert "topic write f1/v1/tenants/cam-b/infer" in (out / "acl").read_text()
    for name in ("coordinator", "operator", "edge-01", "edge-02", "edge-03", "shop", "other"):
        password = read_toml(out / "clients" / f"{name}.toml")["mqtt"]["password"]
        assert password not in printed
        assert f"{out}/clients/{name}.toml" in printed
    assert 'client_id="shop"' in printed and 'device_id = "edge-03"' in printed

    assert cli_main(["security", "init", "--out", str(out), "--devices", "edge-01"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli_main(["security", "init", "--out", str(out), "--devices", "edge-01", "--force"]) == 0
    assert "edge-03" not in (out / "acl").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "Edge-01"], "invalid device id 'Edge-01'"),
        (["--app", "shop"], "--app expects NAME=TENANT"),
        (["--app", "shop=Cam"], "invalid tenant name 'Cam'"),
        (["--app", "shop=cam", "--app", "shop=cam2"], "'shop' is used twice"),
        (["--prefix", "#"], "invalid topic prefix"),
        (["--tls-port", "8884"], "--tls-port: needs --tls"),
        (["--tls", "--tls-port", "0"], "TLS port must be in 1..65535"),
        (["--install-dir", "relative/dir"], "install_dir must be absolute"),
    ],
)
def test_cli_init_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                               message: str) -> None:
    assert cli_main(["security", "init", "--out", str(tmp_path / "sec"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sec").exists()


# -- a real Mosquitto with the generated files ------------------------------------------------------------
WAIT_S = 10.0


class Probe:
    """A raw MQTT 5 client that keeps what the broker answers: CONNACK, PUBACK reason codes, messages."""

    def __init__(self, port: int, username: str | None, password: str | None, *, client_id: str,
                 tls: tuple[str, str | None, str | None] | None = None) -> None:
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.closed = False
        self.pubacks: dict[int, int] = {}
        self.subacks: set[int] = set()
        self.messages: list[tuple[str, bytes]] = []
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                        reconnect_on_failure=False)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2], cert_reqs=ssl.CERT_REQUIRED,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = lambda _c, _u, mid, rc, _p=None: self._note(lambda: self.pubacks.__setitem__(mid, rc.value))
        c.on_subscribe = lambda _c, _u, mid, _rcs, _p=None: self._note(lambda: self.subacks.add(mid))
        c.on_message = lambda _c, _u, m: self._note(lambda: self.messages.append((m.topic, bytes(m.payload))))
        self.client = c
        try:
            c.connect("127.0.0.1", port)
        except (OSError, ssl.SSLError):
            self.closed = True
        c.loop_start()

    def _note(self, change: Callable[[], None]) -> None:
        with self.cond:
            change()
            self.cond.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None) -> None:
        self._note(lambda: setattr(self, "connack", rc))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        self._note(lambda: setattr(self, "closed", True))

    def _wait(self, pred: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, WAIT_S), f"no {what}"

    def outcome(self) -> ReasonCode | None:
        """The CONNACK reason code, or None when the connection ended without one."""
        self._wait(lambda: self.connack is not None or self.closed, "CONNACK or disconnect")
        return self.connack

    def subscribe(self, filter_: str) -> None:
        _, mid = self.client.subscribe(filter_, qos=1)
        self._wait(lambda: mid in self.subacks, f"SUBACK for {filter_}")

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 or 16: accepted; 135: not authorized)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        self._wait(lambda: mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[mid]

    def wait_payload(self, payload: bytes) -> None:
        self._wait(lambda: self.received(payload), f"message {payload!r}")

    def received(self, payload: bytes) -> bool:
        with self.cond:
            return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Fleet:
    dir: Path
    prefix: str
    port: int
    tls_port: int
    plan: SecurityPlan

    @property
    def root(self) -> str:
        return f"{self.prefix}/v1"

    def mqtt(self, name: str) -> dict[str, Any]:
        mqtt: dict[str, Any] = read_toml(self.dir / "clients" / f"{name}.toml")["mqtt"]
        return mqtt

    def probe(self, name: str, *, password: str | None = None, client_id: str | None = None) -> Probe:
        return Probe(self.port, name, self.mqtt(name)["password"] if password is None else password,
                     client_id=client_id or f"{name}-{uuid.uuid4().hex[:8]}")

    def tls_probe(self, cert: str | None, username: str | None = None, password: str | None = None) -> Probe:
        files = (str(self.dir / "clients" / f"{cert}.crt"), str(self.dir / "clients" / f"{cert}.key")) if cert else (None, None)
        return Probe(self.tls_port, username, password, client_id=f"tls-{uuid.uuid4().hex[:8]}",
                     tls=(str(self.dir / "tls" / "ca.crt"), *files))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    out = tmp_path_factory.mktemp("security") / "bundle"
    prefix = "s" + uuid.uuid4().hex[:10]
    tls_port = free_port()
    rc = cli_main(["security", "init", "--out", str(out), "--prefix", prefix, "--devices", "edge-01,edge-02",
                   "--app", "shop=cam-a,cam-b", "--app", "other=cam-b", "--tls", "--tls-port", str(tls_port),
                   "--tls-bind", "127.0.0.1", "--tls-host", "127.0.0.1"])
    assert rc == 0
    conf = (out / "mosquitto.conf").read_text()
    # Run as root, Mosquitto drops to the user 'mosquitto', which may not read 0600 files of root in a
    # private temporary directory. A deployment makes the files readable to that user instead.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    with PrivateBroker(extra_config=run_as + conf) as broker:
        plan = SecurityPlan(prefix=prefix, devices=("edge-01", "edge-02"),
                            apps=(AppGrant("shop", ("cam-a", "cam-b")), AppGrant("other", ("cam-b",))))
        yield Fleet(out, prefix, broker.port, tls_port, plan)


@pytest.fixture()
def clients(fleet: Fleet) -> Iterator[Callable[[str], Probe]]:
    """One connected probe per principal and test; apps connect with their username as client id."""
    made: dict[str, Probe] = {}

    def get(name: str) -> Probe:
        if name not in made:
            probe = fleet.probe(name, client_id=name if name in ("shop", "other") else None)
            rc = probe.outcome()
            assert rc is not None and not rc.is_failure, f"{name} could not connect: {rc}"
            made[name] = probe
        return made[name]

    yield get
    for probe in made.values():
        probe.close()


@dataclass(frozen=True)
class Case:
    """``publisher`` publishes on ``topic`` (``may_publish``: PUBACK success, else 135); ``reader``,
    subscribed to ``filter_``, gets it or not (``delivered``). A fence message from ``fence`` on
    ``fence_topic``, sent after the broker has answered the first publish, proves the reader would have
    received the first one by then: Mosquitto queues each subscriber's messages in order."""

    id: str
    publisher: str
    topic: str
    may_publish: bool
    reader: str
    filter_: str
    delivered: bool
    fence: str
    fence_topic: str


BROKER_CASES = [
    # granted paths
    Case("device-own-telemetry-reaches-coordinator", "edge-01", "devices/edge-01/telemetry", True,
         "coordinator", "devices/+/telemetry", True, "edge-02", "devices/edge-02/telemetry"),
    Case("coordinator-commands-device", "coordinator", "devices/edge-02/commands", True,
         "edge-02", "devices/edge-02/commands", True, "coordinator", "devices/edge-02/commands"),
    Case("app-calls-granted-tenant-via-share", "shop", "tenants/cam-a/infer", True,
         "edge-01", "$share/ef-cam-a/{r}/tenants/cam-a/infer", True, "shop", "tenants/cam-a/infer"),
    Case("device-replies-to-app", "edge-01", "clients/shop/replies", True,
         "shop", "clients/shop/replies", True, "edge-02", "clients/shop/replies"),
    Case("operator-calls-ops", "operator", "coordinator/ops", True,
         "coordinator", "coordinator/ops", True, "operator", "coordinator/ops"),
    Case("coordinator-answers-operator", "coordinator", "clients/efops-1234/replies", True,
         "operator", "clients/+/replies", True, "edge-01", "clients/efops-1234/replies"),
    Case("coordinator-reports-model-to-operator", "coordinator", "coordinator/model", True,
         "operator", "coordinator/model", True, "coordinator", "coordinator/model"),
    # a device publishing as another device, or as the coordinator
    Case("device-forges-telemetry", "edge-01", "devices/edge-02/telemetry", False,
         "coordinator", "devices/+/telemetry", False, "edge-01", "devices/edge-01/telemetry"),
    Case("device-forges-status", "edge-01", "devices/edge-02/status", False,
         "coordinator", "devices/+/status", False, "edge-01", "devices/edge-01/status"),
    Case("device-forges-acks", "edge-01", "devices/edge-02/acks", False,
         "coordinator", "devices/+/acks", False, "edge-01", "devices/edge-01/acks"),
    Case("device-commands-another-device", "edge-01", "devices/edge-02/commands", False,
         "edge-02", "devices/edge-02/commands", False, "coordinator", "devices/edge-02/commands"),
    Case("device-commands-itself", "edge-01", "devices/edge-01/commands", False,
         "edge-01", "devices/edge-01/commands", False, "coordinator", "devices/edge-01/commands"),
    Case("device-calls-ops", "edge-01", "coordinator/ops", False,
         "coordinator", "coordinator/ops", False, "operator", "coordinator/ops"),
    Case("device-forges-model-report", "edge-01", "coordinator/model", False,
         "operator", "coordinator/model", False, "coordinator", "coordinator/model"),
    # an app beyond its grant
    Case("app-calls-tenant-not-granted", "other", "tenants/cam-a/infer", False,
         "edge-01", "$share/ef-cam-a/{r}/tenants/cam-a/infer", False, "shop", "tenants/cam-a/infer"),
    Case("app-commands-device", "shop", "devices/edge-01/commands", False,
         "edge-01", "devices/edge-01/commands", False, "coordinator", "devices/edge-01/commands"),
    Case("app-calls-ops", "shop", "coordinator/ops", False,
         "coordinator", "coordinator/ops", False, "operator", "coordinator/ops"),
    Case("app-forges-reply", "shop", "clients/other/replies", False,
         "other", "clients/other/replies", False, "edge-01", "clients/other/replies"),
    Case("app-forges-telemetry", "shop", "devices/edge-01/telemetry", False,
         "coordinator", "devices/+/telemetry", False, "edge-01", "devices/edge-01/telemetry"),
    # readers beyond their grant: the subscription is accepted, the messages never arrive
    Case("app-reads-another-apps-replies", "edge-01", "clients/shop/replies", True,
         "other", "clients/+/replies", False, "edge-01", "clients/other/replies"),
    Case("app-reads-inference-requests", "other", "tenants/cam-b/infer", True,
         "shop", "tenants/+/infer", False, "edge-01", "clients/shop/replies"),
    Case("device-reads-another-devices-commands", "coordinator", "devices/edge-01/commands", True,
         "edge-02", "devices/+/commands", False, "coordinator", "devices/edge-02/commands"),
    Case("device-reads-telemetry-with-hash", "edge-01", "devices/edge-01/telemetry", True,
         "edge-02", "{r}/#", False, "coordinator", "devices/edge-02/commands"),
    Case("coordinator-reads-inference-requests", "shop", "tenants/cam-a/infer", True,
         "coordinator", "tenants/+/infer", False, "edge-01", "devices/edge-01/telemetry"),
    Case("app-reads-model-report", "coordinator", "coordinator/model", True,
         "shop", "coordinator/model", False, "edge-01", "clients/shop/replies"),
]


def _full(fleet: Fleet, topic: str) -> str:
    return topic.format(r=fleet.root) if "{r}" in topic else f"{fleet.root}/{topic}"


def _strip_share(filter_: str) -> str:
    return filter_.split("/", 2)[2] if filter_.startswith("$share/") else filter_


@pytest.mark.broker
@pytest.mark.parametrize("case", BROKER_CASES, ids=lambda c: c.id)
def test_broker_enforces_the_acl(fleet: Fleet, clients: Callable[[str], Probe], case: Case) -> None:
    topic, fence_topic = _full(fleet, case.topic), _full(fleet, case.fence_topic)
    filter_ = _full(fleet, case.filter_)
    assert permits(acl_rules(fleet.plan), case.publisher, W, topic) is case.may_publish  # model agrees
    reader = clients(case.reader)
    reader.subscribe(filter_)
    if not topic_matches(_strip_share(filter_), fence_topic):
        reader.subscribe(fence_topic)
    token, fence = f"msg-{uuid.uuid4().hex}".encode(), f"fence-{uuid.uuid4().hex}".encode()

    rc = clients(case.publisher).publish(topic, token)
    assert (rc < 128) is case.may_publish, f"PUBACK reason code {rc}"
    if not case.may_publish:
        assert rc == NOT_AUTHORIZED
    assert clients(case.fence).publish(fence_topic, fence) < 128
    reader.wait_payload(fence)
    assert reader.received(token) is case.delivered


@pytest.mark.broker
@pytest.mark.parametrize(
    ("username", "password"),
    [("edge-01", "wrong-password"), ("edge-01", None), ("nobody", "anything"), (None, None)],
    ids=["wrong-password", "password-of-another-principal", "unknown-user", "anonymous"],
)
def test_bad_credentials_are_refused_at_connect(fleet: Fleet, username: str | None, password: str | None) -> None:
    if username == "edge-01" and password is None:
        password = fleet.mqtt("edge-02")["password"]
    probe = Probe(fleet.port, username, password, client_id=f"bad-{uuid.uuid4().hex[:8]}")
    try:
        rc = probe.outcome()
        assert rc is not None and rc.is_failure
        assert rc.value in BAD_CREDENTIALS, rc.value
    finally:
        probe.close()


@pytest.mark.broker
def test_generated_settings_work_with_mqtt_link_over_password_and_tls(fleet: Fleet) -> None:
    """The coordinator on the password listener and a device on the TLS listener, each with the
    settings ``security init`` wrote for it, exchange telemetry."""
    coord_keys = {k: v for k, v in fleet.mqtt("coordinator").items() if k in ("username", "password")}
    coord = MqttLink(mqtt_settings("coordinator.toml", {**coord_keys, "port": fleet.port}), "coordinator")
    device = MqttLink(mqtt_settings("edge-01.toml", {**fleet.mqtt("edge-01"), "host": "127.0.0.1"}), "ef-agent-edge-01")
    assert device.settings.tls_ca is not None and device.settings.port == fleet.tls_port
    got: list[Inbound] = []
    ready = threading.Event()
    coord.subscribe(f"{fleet.root}/devices/+/telemetry", lambda m: (got.append(m), ready.set()), qos=1)
    try:
        coord.start()
        device.start()
        assert coord.wait_connected(WAIT_S) and device.wait_connected(WAIT_S)
        device.publish(f"{fleet.root}/devices/edge-01/telemetry", b"window", qos=1)
        assert ready.wait(WAIT_S)
        assert [(m.topic, m.payload) for m in got] == [(f"{fleet.root}/devices/edge-01/telemetry", b"window")]
    finally:
        device.stop()
        coord.stop()


@pytest.mark.broker
def test_tls_identity_comes_from_the_certificate(fleet: Fleet) -> None:
    """On the TLS listener the certificate's name is the username: claiming to be the coordinator with
    its password does not give a device's certificate the right to send commands."""
    coordinator_password = fleet.mqtt("coordinator")["password"]
    probe = fleet.tls_probe("edge-01", "coordinator", coordinator_password)
    try:
        rc = probe.outcome()
        assert rc is not None and not rc.is_failure
        assert probe.publish(f"{fleet.root}/devices/edge-02/commands", b"x") == NOT_AUTHORIZED
        assert probe.publish(f"{fleet.root}/devices/edge-01/telemetry", b"x") < 128
    finally:
        probe.close()


@pytest.mark.broker
def test_tls_without_client_certificate_is_refused(fleet: Fleet) -> None:
    password = fleet.mqtt("edge-01")["password"]
    probe = fleet.tls_probe(None, "edge-01", password)
    try:
        rc = probe.outcome()
        assert rc is None or rc.is_failure
    finally:
        probe.close()


@pytest.mark.broker
def test_coordinator_and_operator_work_under_the_acl(fleet: Fleet, tmp_path: Path) -> None:
    """The real coordinator with its generated credentials sees a device's birth, and the operator's
    status call (random client id, over TLS with the operator's certificate) gets its answer."""
    keys = fleet.mqtt("coordinator")
    settings = mqtt_settings("coordinator.toml", {"username": keys["username"], "password": keys["password"],
                                                  "port": fleet.port})
    coordinator = Coordinator(CoordinatorConfig(db_path=tmp_path / "c.db", mqtt=settings, prefix=fleet.prefix))
    device = fleet.probe("edge-01")
    caps = Capabilities(device_kind="fake", runtimes=["onnxruntime"], accelerators=["cpu"], cpu_count=2,
                        memory_total_bytes=1 << 30, memory_budget_bytes=1 << 28, max_payload_bytes=1 << 20,
                        cached_models=[])
    birth = Birth(device_id="edge-01", boot_id="b1", capabilities=caps, tenants=[], agent_version="test",
                  ts=time.time())
    operator = mqtt_settings("operator.toml", {**fleet.mqtt("operator"), "host": "127.0.0.1"})
    try:
        coordinator.start()
        assert device.outcome() is not None
        assert device.publish(f"{fleet.root}/devices/edge-01/status", encode(birth)) < 128
        deadline = time.monotonic() + WAIT_S
        while True:
            reply = call_ops(operator, Topics(fleet.prefix), OpStatus(), timeout=WAIT_S)
            assert reply.ok and reply.status is not None
            if [d.device_id for d in reply.status.devices] == ["edge-01"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [d.device_id for d in reply.status.devices] == ["edge-01"]
        # A telemetry window reaches the coordinator's ingest connection (same credentials, its own client
        # id) and its confirmation comes back on the device's command topic, under the same ACL.
        device.subscribe(f"{fleet.root}/devices/edge-01/commands")
        window = Telemetry(device_id="edge-01", boot_id="b1", seq=0, window_start=0.0, window_end=5.0,
                           device=DeviceWindow(cpu_percent=1.0, memory_used_bytes=1, memory_budget_bytes=1 << 28,
                                               model_memory_bytes=0), tenants=[])
        assert device.publish(f"{fleet.root}/devices/edge-01/telemetry", encode(window)) < 128
        device.wait_payload(encode(TelemetryAck(device_id="edge-01", boot_id="b1", seqs=[0])))
        # The operator commands read the same generated file: TLS, username and password, no flags.
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cli_main(["status", "--mqtt-config", str(fleet.dir / "clients" / "operator.toml"),
                           "--host", "127.0.0.1", "--prefix", fleet.prefix])
        assert rc == 0 and "edge-01" in out.getvalue(), out.getvalue()
        # Without credentials the broker refuses the connection and the command says so.
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cli_main(["status", "--port", str(fleet.port), "--prefix", fleet.prefix, "--timeout", "2"])
        assert rc == 1 and "cannot reach the MQTT broker" in out.getvalue(), out.getvalue()
    finally:
        device.close()
        coordinator.stop()

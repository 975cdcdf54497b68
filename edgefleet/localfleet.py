"""A whole fleet on one machine: a private Mosquitto, a coordinator and agents as child processes.

The demo, the end-to-end tests and the benchmarks need the real thing — separate processes talking
MQTT 5 through a real broker — without touching anything else on the machine. ``LocalFleet`` writes
each process's TOML config (tables of keys, written by a TOML library; callers merge their own tables in)
into its own work folder, starts the processes in their own sessions (so a Ctrl-C in the terminal
reaches only the parent, which then stops its children in order), and keeps the ``Popen`` handles: it
stops and kills only what it started. Roles are started as
``python -m edgefleet.agent.main`` / ``python -m edgefleet.coordinator.main``, so this module imports neither.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edgefleet.broker import PrivateBroker
from edgefleet.mqtt import MqttSettings
from edgefleet.tomlio import dump_toml, merge_tables
from edgefleet.wire import (
    FleetStatus,
    OpDeploy,
    OpMigrate,
    OpPlan,
    OpReply,
    OpStatus,
    OpUndeploy,
    TenantSpec,
    Topics,
)

if TYPE_CHECKING:
    from edgefleet.cli.opsclient import OpsClient

class FleetError(RuntimeError):
    """A process of the local fleet did not start or did not come online; the message says which."""


@dataclass(frozen=True)
class AgentPlan:
    """One agent to start. ``budget_mib`` is its model-memory budget in MiB (2^20 bytes)."""

    device_id: str
    budget_mib: int = 256
    telemetry_period_s: float = 1.0
    workers: int = 0  # 0: the agent chooses from the cores it has
    # tables merged into the agent's config, e.g. {"agent": {"memory_policy": "lru"}}
    extra_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _credentials(username: str, password: str | None) -> dict[str, str]:
    if not password:
        return {}
    return {"username": username, "password": password}


def agent_config(plan: AgentPlan, port: int, state_dir: Path, *, prefix: str, data_dir: str | None,
                 password: str | None = None) -> dict[str, Any]:
    """The agent's config as tables of keys, ``plan.extra_config`` merged in."""
    agent: dict[str, Any] = {
        "device_id": plan.device_id,
        "state_dir": str(state_dir),
        "prefix": prefix,
        "memory_budget_mib": plan.budget_mib,
        "telemetry_period_s": plan.telemetry_period_s,
        "workers": plan.workers,
    }
    if data_dir:
        agent["data_dir"] = data_dir
    mqtt = {"host": "127.0.0.1", "port": port, "keepalive_s": 5, **_credentials(plan.device_id, password)}
    return merge_tables({"agent": agent, "mqtt": mqtt}, plan.extra_config)


def agent_toml(plan: AgentPlan, port: int, state_dir: Path, *, prefix: str, data_dir: str | None,
               password: str | None = None) -> str:
    return dump_toml(agent_config(plan, port, state_dir, prefix=prefix, data_dir=data_dir, password=password))


def coordinator_config(port: int, db: Path, *, prefix: str, device_timeout_s: float, op_timeout_s: float,
                       password: str | None = None, placement: str = "most-free-memory", grants: str = "none",
                       extra_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The coordinator's config as tables of keys, ``extra_config`` merged in."""
    config: dict[str, Any] = {
        "prefix": prefix,
        "coordinator": {
            "id": "coordinator",
            "db": str(db),
            "device_timeout_s": device_timeout_s,
            "op_timeout_s": op_timeout_s,
            "placement": placement,
        },
        "commands": {"ack_timeout_s": 5.0, "backoff_s": 0.5, "backoff_max_s": 5.0, "max_attempts": 6},
        "security": {"grants": grants},
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 5, **_credentials("coordinator", password)},
    }
    return merge_tables(config, extra_config or {})


def coordinator_toml(port: int, db: Path, *, prefix: str, device_timeout_s: float, op_timeout_s: float,
                     password: str | None = None, placement: str = "most-free-memory",
                     grants: str = "none", extra_config: Mapping[str, Any] | None = None) -> str:
    return dump_toml(coordinator_config(port, db, prefix=prefix, device_timeout_s=device_timeout_s,
                                        op_timeout_s=op_timeout_s, password=password, placement=placement,
                                        grants=grants, extra_config=extra_config))


@dataclass
class Child:
    """A process this fleet started; ``log_path`` holds its stdout and stderr."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """SIGTERM (or SIGKILL) this child only, then reap it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalFleet:
    """Use as ``with LocalFleet(agents=[AgentPlan("edge-a")]) as fleet:``; ``fleet.ops`` deploys tenants."""

    agents: Sequence[AgentPlan]
    prefix: str = "ef"
    workdir: Path | None = None
    data_dir: str | None = None  # zoo data folder handed to the agents (default: EDGEFLEET_DATA_DIR)
    device_timeout_s: float = 15.0
    op_timeout_s: float = 30.0
    log_level: str = "INFO"
    keep_workdir: bool = False
    placement: str = "most-free-memory"  # the coordinator's policy: or "predicted-latency"
    secure: bool = False  # passwords and ACLs from `edgefleet security init`: every process its own account
    # secure: "dynamic" (Mosquitto's dynamic security plugin; the coordinator grants each device the
    # tenants placed on it) or "static" (a password file and an ACL file: every device reads every tenant)
    security_mode: str = "dynamic"
    apps: Mapping[str, Sequence[str]] = field(default_factory=dict)  # secure: app name -> tenants granted
    broker: PrivateBroker | None = field(default=None, init=False)
    coordinator: Child | None = field(default=None, init=False)
    children: dict[str, Child] = field(default_factory=dict, init=False)
    _own_workdir: bool = field(default=False, init=False)
    _passwords: dict[str, str] = field(default_factory=dict, init=False)
    _ops: OpsClient | None = field(default=None, init=False)
    _ops_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        """Start broker, coordinator and agents; return when the coordinator sees every agent online."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="edgefleet-fleet-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topics = Topics(self.prefix)
        try:
            self.broker = PrivateBroker(workdir=self.workdir / "broker", extra_config=self._security())
            self.broker.start()
            self.settings = self.client_settings("operator")
            self._start_coordinator()
            for plan in self.agents:
                self.start_agent(plan)
            self.wait_online([p.device_id for p in self.agents], timeout_s)
        except BaseException:
            self.stop()
            raise

    def _security(self) -> str:
        """In secure mode: write the credentials and ACL, return the broker's configuration lines."""
        if not self.secure:
            return ""
        from edgefleet.security import AppGrant, SecurityPlan
        from edgefleet.security.bundle.build import build_bundle
        from edgefleet.security.bundle.layout import BROKER_CONF
        from edgefleet.security.bundle.options import BundleOptions
        from edgefleet.security.bundle.write import write_bundle

        assert self.workdir is not None
        folder = (self.workdir / "security").resolve()
        plan = SecurityPlan(prefix=self.prefix, devices=tuple(p.device_id for p in self.agents),
                            apps=tuple(AppGrant(name, tuple(ts)) for name, ts in self.apps.items()))
        if self.security_mode not in ("dynamic", "static"):
            raise FleetError(f"security_mode must be 'dynamic' or 'static', got {self.security_mode!r}")
        bundle = build_bundle(plan, BundleOptions(install_dir=folder, dynamic=self.security_mode == "dynamic"))
        write_bundle(bundle, folder)
        self._passwords = dict(bundle.passwords)
        # Started as root, Mosquitto would drop to the 'mosquitto' user, who may not read our 0600 files.
        run_as = "user root\n" if os.geteuid() == 0 else ""
        return run_as + bundle.file(BROKER_CONF).content.decode()

    @property
    def _grants(self) -> str:
        return "mosquitto-dynsec" if self.secure and self.security_mode == "dynamic" else "none"

    def client_settings(self, username: str) -> MqttSettings:
        """Broker settings for ``username`` (an app, "operator", ...); plain ones when not secure."""
        assert self.broker is not None
        password = self._passwords.get(username) if self.secure else None
        if self.secure and password is None:
            raise FleetError(f"no account {username!r} in this fleet (apps: {sorted(self.apps)})")
        return MqttSettings(host="127.0.0.1", port=self.broker.port,
                            username=username if self.secure else None, password=password)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        data_dir = self.data_dir or env.get("EDGEFLEET_DATA_DIR")
        if data_dir:
            env["EDGEFLEET_DATA_DIR"] = data_dir
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start_coordinator(self) -> None:
        assert self.workdir is not None and self.broker is not None
        folder = self.workdir / "coordinator"
        folder.mkdir(exist_ok=True)
        cfg = folder / "coordinator.toml"
        cfg.write_text(coordinator_toml(self.broker.port, folder / "coordinator.db", prefix=self.prefix,
                                        device_timeout_s=self.device_timeout_s, op_timeout_s=self.op_timeout_s,
                                        password=self._passwords.get("coordinator"), placement=self.placement,
                                        grants=self._grants))
        cfg.chmod(0o600)  # it may hold a password
        child = Child("coordinator", [sys.executable, "-m", "edgefleet.coordinator.main", "--config", str(cfg),
                                      "--log-level", self.log_level], folder / "coordinator.log")
        child.start(self._env())
        self.coordinator = child
        self._wait(lambda: self._status_or_none() is not None, 30.0, "the coordinator did not answer", child)

    def start_agent(self, plan: AgentPlan) -> Child:
        """Start (or restart, keeping its SQLite state) the agent ``plan.device_id``."""
        assert self.workdir is not None and self.broker is not None
        folder = self.workdir / plan.device_id
        folder.mkdir(exist_ok=True)
        cfg = folder / "agent.toml"
        cfg.write_text(agent_toml(plan, self.broker.port, folder, prefix=self.prefix,
                                  data_dir=self.data_dir or os.environ.get("EDGEFLEET_DATA_DIR"),
                                  password=self._passwords.get(plan.device_id)))
        cfg.chmod(0o600)  # it may hold a password
        old = self.children.get(plan.device_id)
        if old is not None:
            old.stop()
        child = Child(plan.device_id, [sys.executable, "-m", "edgefleet.agent.main", "--config", str(cfg),
                                       "--log-level", self.log_level], folder / "agent.log")
        child.start(self._env())
        self.children[plan.device_id] = child
        return child

    def restart_coordinator(self, *, kill: bool = True) -> None:
        """Stop the coordinator (SIGKILL by default: no goodbye) and start it again on the same database."""
        if self.coordinator is not None:
            self.coordinator.stop(kill=kill)
        self._start_coordinator()

    def restart_broker(self, *, kill: bool = True, down_s: float = 0.0) -> None:
        """Stop the broker (SIGKILL by default: what it held in memory is lost), wait, start it again on
        the same port; every client reconnects by itself."""
        assert self.broker is not None
        self.broker.stop(kill=kill)
        time.sleep(down_s)
        self.broker.start()

    def kill_agent(self, device_id: str) -> None:
        """SIGKILL one agent: no goodbye, the broker publishes its last will."""
        self.children[device_id].stop(kill=True)

    def stop(self) -> None:
        """Stop agents, then the coordinator, then the broker; only processes this fleet started."""
        if self._ops is not None:
            self._ops.close()
            self._ops = None
        for child in self.children.values():
            child.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalFleet:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- operator calls ---------------------------------------------------------------------------
    def call(self, op: OpDeploy | OpUndeploy | OpStatus | OpMigrate | OpPlan, timeout_s: float | None = None) -> OpReply:
        """One operator call on the fleet's operator connection (opened at the first call, kept)."""
        from edgefleet.cli.opsclient import OpsClient

        with self._ops_lock:
            if self._ops is None:
                self._ops = OpsClient(self.settings, self.topics)
            ops = self._ops
        return ops.call(op, timeout_s or self.op_timeout_s + 5.0)

    def deploy(self, spec: TenantSpec, device_id: str | None = None) -> OpReply:
        """Deploy through the coordinator; FleetError when it is refused or fails."""
        reply = self.call(OpDeploy(tenant=spec, device_id=device_id))
        if not reply.ok:
            raise FleetError(f"deploy of {spec.name} failed [{reply.code}]: {reply.message}")
        return reply

    def undeploy(self, name: str) -> OpReply:
        return self.call(OpUndeploy(tenant=name))

    def migrate(self, name: str, device_id: str | None = None) -> OpReply:
        """Make-before-break move through the coordinator; the reply says where it runs now."""
        return self.call(OpMigrate(tenant=name, device_id=device_id))

    def status(self) -> FleetStatus:
        reply = self.call(OpStatus(), timeout_s=10.0)
        if not reply.ok or reply.status is None:
            raise FleetError(f"status failed [{reply.code}]: {reply.message}")
        return reply.status

    def _status_or_none(self) -> FleetStatus | None:
        try:
            return self.status()
        except Exception:
            return None

    def wait_online(self, device_ids: Sequence[str], timeout_s: float = 60.0) -> None:
        def online() -> bool:
            status = self._status_or_none()
            seen = {d.device_id for d in status.devices if d.online} if status else set()
            return set(device_ids) <= seen

        self._wait(online, timeout_s, f"agents {sorted(device_ids)} did not come online",
                   *[self.children[d] for d in device_ids if d in self.children])

    def _wait(self, cond: Callable[[], bool], timeout_s: float, what: str, *watch: Child) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return
            for child in watch:
                if not child.alive:
                    raise FleetError(f"{what}: {child.name} exited; its log ends with:\n{child.log_tail()}")
            time.sleep(0.2)
        tails = "\n".join(f"--- {c.name} ---\n{c.log_tail()}" for c in watch)
        raise FleetError(f"{what} within {timeout_s:g} s\n{tails}")

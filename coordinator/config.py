"""The coordinator's configuration: small typed classes loaded from TOML, validated at start.

A wrong value stops the coordinator with a message naming the file, table and field
(``coordinator.toml: [commands] ack_timeout_s must be > 0, got -1``). Units are in the field names:
``_s`` seconds; ``[rebalance]`` ``ratio`` and ``margin`` are fractions of a tenant's SLO (and of the
placement's utilisation headroom), ``windows`` counts telemetry windows, ``max_batch`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.config import ConfigError, Section, mqtt_settings, read_toml
from edgefleet.coordinator.rebalance import RebalancePolicy
from edgefleet.mqtt import DATA_LINKS, MqttSettings, lean_available
from edgefleet.paths import default_state_dir
from edgefleet.wire import Topics, WireError
from edgefleet.wire.names import CLIENT_RE

__all__ = ["CommandPolicy", "ConfigError", "CoordinatorConfig", "config_from_dict", "load_config"]


@dataclass(frozen=True)
class CommandPolicy:
    """How commands to agents are retried. All durations in seconds."""

    ack_timeout_s: float = 5.0  # wait this long for an Ack before resending the same command id
    max_attempts: int = 5  # sends of one command before it is declared failed
    backoff_s: float = 1.0  # extra wait after the first unacknowledged send; doubles per send
    backoff_max_s: float = 30.0  # cap of that extra wait

    def __post_init__(self) -> None:
        if self.ack_timeout_s <= 0:
            raise ValueError(f"ack_timeout_s must be > 0, got {self.ack_timeout_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_s must be >= 0 and backoff_max_s >= backoff_s")

    def retry_delay_s(self, attempts: int) -> float:
        """Seconds from the ``attempts``-th send (1-based) until the next one, if no Ack came."""
        backoff = self.backoff_s * (2.0 ** max(0, attempts - 1))
        return self.ack_timeout_s + min(backoff, self.backoff_max_s)


@dataclass(frozen=True)
class CoordinatorConfig:
    db_path: Path  # SQLite file holding devices, tenants, telemetry and the command outbox
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    prefix: str = "ef"  # topic prefix of the fleet
    coordinator_id: str = "coordinator"  # MQTT client id; one coordinator per fleet
    device_timeout_s: float = 30.0  # a device silent (no status, no telemetry) this long is treated as dead
    op_timeout_s: float = 8.0  # an operator call gets an answer at the latest after this long
    telemetry_retention_s: float = 86_400.0  # telemetry windows older than this are pruned
    commands: CommandPolicy = field(default_factory=CommandPolicy)
    metrics_port: int = 0  # Prometheus endpoint (GET /metrics) on this TCP port; 0: off
    placement: str = "most-free-memory"  # or "predicted-latency": the performance model, learnt online
    rebalance: RebalancePolicy = field(default_factory=RebalancePolicy)
    # [model] report_period_s: the model's error report (predicted-latency placement) is published on
    # {prefix}/v1/coordinator/model, retained, at most once per this many seconds and only when it changed; 0: off
    model_report_period_s: float = 10.0
    # [security] grants: "none" (a static ACL, or no security: nothing changes at run time) or
    # "mosquitto-dynsec" (Mosquitto's dynamic security plugin: a device gets a tenant's topics only while
    # the tenant is placed on it; see edgefleet.coordinator.grants)
    grants: str = "none"
    # [coordinator] ingest_link: the connection that carries telemetry in and its TelemetryAcks out, apart
    # from the control link (births, wills, command acks, operator calls, commands): "auto" (the lean
    # client on the mqtt5 codec where it installs, Python >= 3.11), "lean", or "paho"
    ingest_link: str = "auto"

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


_COORDINATOR_FIELDS = {
    "id",
    "db",
    "prefix",
    "device_timeout_s",
    "op_timeout_s",
    "telemetry_retention_s",
    "metrics_port",
    "placement",
    "ingest_link",
}
_COMMAND_FIELDS = {"ack_timeout_s", "max_attempts", "backoff_s", "backoff_max_s"}
_TABLES = {"prefix", "coordinator", "commands", "mqtt", "rebalance", "model", "security"}
_SECURITY_FIELDS = {"grants"}
GRANTS = ("none", "mosquitto-dynsec")
_MODEL_FIELDS = {"report_period_s"}
_REBALANCE_FIELDS = {"enabled", "windows", "ratio", "cooldown_s", "predict", "margin", "max_actions", "max_batch"}


PLACEMENTS = ("most-free-memory", "predicted-latency")


def _ingest_link(source: str, value: str) -> str:
    if value not in DATA_LINKS:
        raise ConfigError(f"{source}: [coordinator] ingest_link must be one of {', '.join(DATA_LINKS)}, got {value!r}")
    if value == "lean" and not lean_available():
        raise ConfigError(f"{source}: [coordinator] ingest_link = \"lean\" needs the mqtt5 package (Python >= 3.11);"
                          " use \"auto\" or \"paho\"")
    return value


def _placement(source: str, value: str) -> str:
    if value not in PLACEMENTS:
        raise ConfigError(f"{source}: [coordinator] placement must be one of {', '.join(PLACEMENTS)}, got {value!r}")
    return value


def config_from_dict(data: dict[str, Any], source: str = "coordinator config") -> CoordinatorConfig:
    """Validate a parsed TOML document; raise ConfigError naming ``source``, table and field."""
    unknown = set(data) - _TABLES
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) or key(s): {', '.join(sorted(unknown))}")
    c = Section(source, "coordinator", data.get("coordinator"), _COORDINATOR_FIELDS)
    prefix = c.str("prefix", "ef")
    if "prefix" in data:  # also accepted at the top of the file, before any table
        prefix = data["prefix"]
        if "prefix" in c.data and c.data["prefix"] != prefix:
            raise ConfigError(f"{source}: prefix is given twice with different values")
    if not isinstance(prefix, str):
        raise ConfigError(f"{source}: prefix must be a non-empty string, got {prefix!r}")
    try:
        Topics(prefix)
    except WireError as exc:
        raise ConfigError(f"{source}: prefix: {exc.message}") from None
    coordinator_id = c.str("id", "coordinator")
    if not CLIENT_RE.match(coordinator_id):
        raise ConfigError(f"{source}: [coordinator] id must match {CLIENT_RE.pattern}, got {coordinator_id!r}")
    db = c.str("db") if "db" in c.data else None
    db_path = Path(db).expanduser() if db else default_state_dir("coordinator") / "coordinator.db"
    if not db_path.is_absolute() and source.endswith(".toml"):
        db_path = Path(source).parent / db_path  # relative to the config file, not the working directory
    k = Section(source, "commands", data.get("commands"), _COMMAND_FIELDS)
    r = Section(source, "rebalance", data.get("rebalance"), _REBALANCE_FIELDS)
    m = Section(source, "model", data.get("model"), _MODEL_FIELDS)
    sec = Section(source, "security", data.get("security"), _SECURITY_FIELDS)
    grants = sec.str("grants", "none")
    if grants not in GRANTS:
        raise ConfigError(f"{source}: [security] grants must be one of {', '.join(GRANTS)}, got {grants!r}")
    ack_timeout_s = k.num("ack_timeout_s", 5.0, lo=0, lo_open=True, hi=3600.0)
    max_attempts = k.int("max_attempts", 5, lo=1, hi=1000)
    backoff_s = k.num("backoff_s", 1.0, lo=0, hi=3600.0)
    backoff_max_s = k.num("backoff_max_s", max(30.0, backoff_s), lo=backoff_s, hi=86_400.0)
    return CoordinatorConfig(
        db_path=db_path,
        mqtt=mqtt_settings(source, data.get("mqtt")),
        prefix=prefix,
        coordinator_id=coordinator_id,
        device_timeout_s=c.num("device_timeout_s", 30.0, lo=0, lo_open=True, hi=86_400.0),
        op_timeout_s=c.num("op_timeout_s", 8.0, lo=0, lo_open=True, hi=3600.0),
        telemetry_retention_s=c.num("telemetry_retention_s", 86_400.0, lo=60.0),
        metrics_port=c.int("metrics_port", 0, lo=0, hi=65535),
        placement=_placement(source, c.str("placement", "most-free-memory")),
        commands=CommandPolicy(
            ack_timeout_s=ack_timeout_s,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
        ),
        rebalance=RebalancePolicy(
            enabled=r.bool("enabled", True),
            windows=r.int("windows", 3, lo=1, hi=1000),
            ratio=r.num("ratio", 1.0, lo=0, lo_open=True, hi=100.0),
            cooldown_s=r.num("cooldown_s", 60.0, lo=0, hi=86_400.0),
            predict=r.bool("predict", True),
            margin=r.num("margin", 0.1, lo=0, hi=0.9),
            max_actions=r.int("max_actions", 2, lo=1, hi=3),
            max_batch=r.int("max_batch", 32, lo=1, hi=1024),
        ),
        model_report_period_s=m.num("report_period_s", 10.0, lo=0, hi=86_400.0),
        grants=grants,
        ingest_link=_ingest_link(source, c.str("ingest_link", "auto")),
    )


def load_config(path: str | Path) -> CoordinatorConfig:
    """Read and validate the TOML file at ``path``."""
    p = Path(path)
    return config_from_dict(read_toml(p), str(p))

"""The agent's configuration: small typed classes loaded from TOML, validated at start.

Units are in the field names: ``_s`` seconds, ``_ms`` milliseconds, ``_mib`` mebibytes (2^20 bytes). The
keys of earlier releases that held MiB under an ``_mb`` name (``memory_budget_mb``, ``max_payload_mb``,
``outbox_max_mb``) are still read, with a deprecation warning.
"""

from __future__ import annotations

import logging
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.agent.batching import BatchPolicy
from edgefleet.config import ConfigError, Section, mqtt_settings, read_toml
from edgefleet.mqtt import DATA_LINKS, MqttSettings
from edgefleet.paths import default_state_dir
from edgefleet.wire import Topics, WireError, validate_device_id

MIB = 1 << 20
DEPRECATED_KEYS = {  # old key -> new key, same unit (MiB)
    "memory_budget_mb": "memory_budget_mib",
    "max_payload_mb": "max_payload_mib",
    "outbox_max_mb": "outbox_max_mib",
}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    state_dir: Path  # SQLite state and outbox live here (systemd: StateDirectory=)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    prefix: str = "ef"  # topic prefix of the fleet
    device_kind: str = ""  # empty: detected ("x86_64-cpu", "aarch64-cpu", ...)
    data_dir: Path | None = None  # model zoo; None: edgefleet.zoo.paths.data_dir() (EDGEFLEET_DATA_DIR, ...)
    memory_budget_bytes: int = 512 * MIB  # bytes resident model sessions may take
    max_payload_bytes: int = 8 * MIB  # larger inference requests are refused with payload_too_large
    telemetry_period_s: float = 5.0
    workers: int = 0  # inference threads; 0: one per core, at most 4
    session_threads: int = 0  # intra-op threads per model session; 0: cores // workers
    max_queue: int = 1024  # requests queued per tenant before shedding
    default_timeout_ms: float = 0.0  # deadline for requests that carry none; 0: 4x the tenant's SLO
    outbox_max_bytes: int = 64 * MIB  # telemetry outbox bound; oldest telemetry dropped first
    telemetry_resend_s: float = 15.0  # a window the coordinator has not confirmed this long is sent again
    metrics_port: int = 0  # Prometheus endpoint (GET /metrics) on this TCP port; 0: off
    memory_policy: str = "predictive"  # predictive | lru | static (see edgefleet.agent.memory.manager)
    batch_policy: str = "adaptive"  # adaptive | fixed:N | delay:MS | dynamic:B:MS | preferred:P,Q:MS | aimd
    data_link: str = "auto"  # requests' connection: auto | lean | paho (see edgefleet.mqtt.data_link)
    # Simulation only: serve every model from fake-runtime descriptions <dir>/<model>/<variant>.json
    # (service times in seconds, sizes in bytes; see edgefleet.agent.fakes) instead of the zoo; None: off.
    fake_models_dir: Path | None = None
    # Answer requests whose tenant name breaks the naming rule (no replica subscribes to such a topic, so
    # they would go unanswered) with bad_request. Costs one more copy of every request to one agent of
    # the fleet (a fleet-wide shared subscription), so it is off by default.
    answer_bad_names: bool = False
    # Runtimes this device must offer ("onnxruntime", "litert", "edgetpu"): checked by --check-config and
    # at start (exit status 2 when one is missing); empty: whatever is installed.
    runtimes: tuple[str, ...] = ()

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, min(4, os.cpu_count() or 1))

    @property
    def threads_per_session(self) -> int:
        return self.session_threads or max(1, (os.cpu_count() or 1) // self.worker_count)

    @property
    def kind(self) -> str:
        return self.device_kind or f"{platform.machine() or 'unknown'}-cpu"


_AGENT_FIELDS = {
    "device_id",
    "state_dir",
    "prefix",
    "device_kind",
    "data_dir",
    "memory_budget_mib",
    "max_payload_mib",
    "telemetry_period_s",
    "workers",
    "session_threads",
    "max_queue",
    "default_timeout_ms",
    "outbox_max_mib",
    "telemetry_resend_s",
    "memory_policy",
    "batch_policy",
    "metrics_port",
    "fake_models_dir",
    "data_link",
    "answer_bad_names",
    "runtimes",
}


def config_from_dict(data: dict[str, Any], source: str = "agent config") -> AgentConfig:
    unknown = set(data) - {"agent", "mqtt"}
    if unknown:
        raise ConfigError(f"{source}: unknown table(s): {', '.join(sorted(unknown))}")
    s = Section(source, "agent", _renamed(source, data.get("agent")), _AGENT_FIELDS)
    device_id = s.str("device_id")
    try:
        validate_device_id(device_id)
        prefix = s.str("prefix", "ef")
        Topics(prefix)
    except WireError as exc:
        raise ConfigError(f"{source}: [agent] {exc.message}") from None
    data_dir = s.opt_str("data_dir")
    # default: the unit's StateDirectory=, else the user's state folder
    state_dir = s.str("state_dir") if "state_dir" in s.data else None
    fake_dir = s.opt_str("fake_models_dir")
    if fake_dir and not Path(fake_dir).is_dir():
        raise ConfigError(f"{source}: [agent] fake_models_dir {fake_dir!r} is not a folder")
    return AgentConfig(
        device_id=device_id,
        state_dir=Path(state_dir).expanduser() if state_dir else default_state_dir(f"agent-{device_id}"),
        mqtt=mqtt_settings(source, data.get("mqtt")),
        prefix=prefix,
        device_kind=s.opt_str("device_kind") or "",
        data_dir=Path(data_dir) if data_dir else None,
        memory_budget_bytes=int(s.num("memory_budget_mib", 512, lo=0, lo_open=True) * MIB),
        max_payload_bytes=int(s.num("max_payload_mib", 8, lo=0, lo_open=True, hi=256) * MIB),
        telemetry_period_s=s.num("telemetry_period_s", 5.0, lo=0.05, hi=3600),
        workers=s.int("workers", 0, lo=0, hi=64),
        session_threads=s.int("session_threads", 0, lo=0, hi=64),
        max_queue=s.int("max_queue", 1024, lo=1, hi=1_000_000),
        default_timeout_ms=s.num("default_timeout_ms", 0.0, lo=0, hi=3.6e6),
        outbox_max_bytes=int(s.num("outbox_max_mib", 64, lo=0, lo_open=True) * MIB),
        telemetry_resend_s=s.num("telemetry_resend_s", 15.0, lo=0.1, hi=86_400),
        memory_policy=_policy(s),
        batch_policy=_batch_policy(s),
        metrics_port=s.int("metrics_port", 0, lo=0, hi=65535),
        fake_models_dir=Path(fake_dir) if fake_dir else None,
        data_link=_data_link(s),
        answer_bad_names=s.bool("answer_bad_names", False),
        runtimes=_runtimes(s),
    )


def _data_link(s: Section) -> str:
    value = s.str("data_link", "auto")
    if value not in DATA_LINKS:
        raise ConfigError(f"{s.source}: [agent] data_link must be one of {', '.join(DATA_LINKS)}, got {value!r}")
    return value


def _renamed(source: str, table: Any) -> Any:
    """The [agent] table with deprecated ``_mb`` keys moved to their ``_mib`` names (a warning each);
    both spellings of one setting at once is an error."""
    if not isinstance(table, dict):
        return table
    out = dict(table)
    for old, new in DEPRECATED_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"{source}: [agent] {old} and {new} are the same setting; keep only {new}")
        message = f"{source}: [agent] {old} is deprecated (it holds MiB): write {new} = {out[old]!r}"
        warnings.warn(message, DeprecationWarning, stacklevel=3)
        log.warning("%s", message)
        out[new] = out.pop(old)
    return out


def _runtimes(s: Section) -> tuple[str, ...]:
    from edgefleet.runtime.registry import RUNTIME_NAMES

    value = s.data.get("runtimes", [])
    known = [r for r in RUNTIME_NAMES if r != "fake"]
    if not isinstance(value, list) or not all(isinstance(r, str) and r in known for r in value):
        raise ConfigError(f"{s.source}: [agent] runtimes must be a list of {', '.join(known)}, got {value!r}")
    return tuple(value)


def _policy(s: Section) -> str:
    value = s.str("memory_policy", "predictive")
    if value not in ("predictive", "lru", "static"):
        raise ConfigError(
            f"{s.source}: [agent] memory_policy must be predictive, lru or static, got {value!r}"
        )
    return value


def _batch_policy(s: Section) -> str:
    value = s.str("batch_policy", "adaptive")
    try:
        BatchPolicy.parse(value)
    except ValueError:
        raise ConfigError(
            f"{s.source}: [agent] batch_policy must be adaptive, fixed:N (a whole N >= 1), delay:MS "
            f"(MS >= 0 milliseconds, e.g. delay:5), dynamic:B:MS (max batch B), preferred:P,Q,...:MS "
            f"(preferred batch sizes) or aimd, got {value!r}"
        ) from None
    return value


def load_config(path: str | Path, *, device_id: str | None = None) -> AgentConfig:
    """The config at ``path``; ``device_id`` replaces the file's (its state folder default follows it)."""
    data = read_toml(path)
    if device_id is not None:
        table = data.get("agent")
        data["agent"] = {**(table if isinstance(table, dict) else {}), "device_id": device_id}
    return config_from_dict(data, str(path))

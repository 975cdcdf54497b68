"""Helpers shared by the agent's and coordinator's TOML config loaders: typed, validated, field-named.
(Configs edgefleet writes itself go through ``edgefleet.tomlio``.)

A config error names the file, the table and the field (``agent.toml: [agent] memory_budget_mib must be
> 0, got -5``), so an operator can fix it without reading code.
"""

from __future__ import annotations

import builtins
import os
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edgefleet.mqtt import MqttSettings
from edgefleet.paths import MQTT_URL_ENV, client_config_path


class ConfigError(ValueError):
    """The config file is missing, unreadable or has a field with a wrong value."""


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


class Section:
    """Typed access to one table of a config file, with errors that name the field."""

    def __init__(self, source: str, name: str, data: Mapping[str, Any] | None, known: set[str]) -> None:
        self.source, self.name, self.data = source, name, dict(data or {})
        unknown = set(self.data) - known
        if unknown:
            raise ConfigError(f"{source}: [{name}] unknown field(s): {', '.join(sorted(unknown))}")

    def _err(self, field: builtins.str, what: builtins.str, value: object) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {field} {what}, got {value!r}")

    def str(self, field: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self.data.get(field, default)
        if not isinstance(value, str) or not value:
            raise self._err(field, "must be a non-empty string", value)
        return value

    def opt_str(self, field: builtins.str) -> builtins.str | None:
        value = self.data.get(field)
        if value is not None and not isinstance(value, str):
            raise self._err(field, "must be a string", value)
        return value

    def num(self, field: builtins.str, default: float, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
        value = self.data.get(field, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._err(field, "must be a number", value)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise self._err(field, f"must be {'>' if lo_open else '>='} {lo}", value)
        if hi is not None and value > hi:
            raise self._err(field, f"must be <= {hi}", value)
        return float(value)

    def bool(self, field: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.data.get(field, default)
        if not isinstance(value, builtins.bool):
            raise self._err(field, "must be true or false", value)
        return value

    def int(self, field: builtins.str, default: builtins.int, *, lo: builtins.int | None = None,
            hi: builtins.int | None = None) -> builtins.int:
        value = self.data.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._err(field, "must be an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._err(field, f"must be in [{lo}, {hi}]", value)
        return value


MQTT_FIELDS = {"host", "port", "keepalive_s", "username", "password", "tls_ca", "tls_cert", "tls_key"}


def parse_mqtt_url(url: str, source: str = MQTT_URL_ENV) -> dict[str, Any]:
    """``mqtt://[user[:password]@]host[:port]`` as ``[mqtt]`` table keys (port 1883 when left out). TLS
    needs CA and key files, which a URL cannot carry: use a config file's [mqtt] table for it."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme != "mqtt":
        why = "TLS needs files: give them in an [mqtt] table (--mqtt-config)" if parsed.scheme == "mqtts" else \
            "expected mqtt://[user[:password]@]host[:port]"
        raise ConfigError(f"{source}: {url!r}: {why}")
    try:
        port = parsed.port or 1883
    except ValueError:
        raise ConfigError(f"{source}: {url!r}: the port must be a number in 1..65535") from None
    if not parsed.hostname or parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ConfigError(f"{source}: {url!r}: expected mqtt://[user[:password]@]host[:port]")
    out: dict[str, Any] = {"host": parsed.hostname, "port": port}
    if parsed.username:
        out["username"] = urllib.parse.unquote(parsed.username)
    if parsed.password is not None:
        out["password"] = urllib.parse.unquote(parsed.password)
    return out


def ambient_mqtt() -> tuple[str, dict[str, Any]]:
    """The broker settings of this shell or user: ``$EDGEFLEET_MQTT_URL`` over the ``[mqtt]`` table of the
    client config file (edgefleet.paths); returns (where they came from, the keys)."""
    sources: list[str] = []
    table: dict[str, Any] = {}
    client_file = client_config_path()
    if client_file.is_file():
        file_table = read_toml(client_file).get("mqtt") or {}
        if not isinstance(file_table, dict):
            raise ConfigError(f"{client_file}: [mqtt] must be a table")
        table.update(file_table)
        sources.append(str(client_file))
    url = os.environ.get(MQTT_URL_ENV)
    if url:
        table.update(parse_mqtt_url(url))
        sources.append(f"${MQTT_URL_ENV}")
    return " and ".join(sources) or "defaults", table


def mqtt_settings(source: str, data: Mapping[str, Any] | None, *, ambient: bool = True) -> MqttSettings:
    """MqttSettings from an ``[mqtt]`` table; with ``ambient``, keys it leaves out come from
    ``$EDGEFLEET_MQTT_URL`` and the client config file (``ambient_mqtt``)."""
    if ambient:
        where, table = ambient_mqtt()
        if table:
            merged = {**table, **dict(data or {})}
            source = f"{source} (with {where})" if data else where
            data = merged
    s = Section(source, "mqtt", data, MQTT_FIELDS)
    try:
        return MqttSettings(
            host=s.str("host", "127.0.0.1"),
            port=s.int("port", 1883, lo=1, hi=65535),
            keepalive_s=s.int("keepalive_s", 10, lo=2, hi=3600),
            username=s.opt_str("username"),
            password=s.opt_str("password"),
            tls_ca=s.opt_str("tls_ca"),
            tls_cert=s.opt_str("tls_cert"),
            tls_key=s.opt_str("tls_key"),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def client_settings() -> MqttSettings:
    """The broker an app or tool on this machine should use: ``$EDGEFLEET_MQTT_URL``, else the client config
    file, else 127.0.0.1:1883 (what every ``edgefleet`` command uses without options)."""
    return mqtt_settings("defaults", None)

"""Coordinator config: defaults, the example file, and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgefleet.coordinator.config import CommandPolicy, ConfigError, config_from_dict, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "coordinator.example.toml"


def test_example_file_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.prefix == "ef"
    assert cfg.commands == CommandPolicy(ack_timeout_s=5.0, max_attempts=5, backoff_s=1.0, backoff_max_s=30.0)
    assert cfg.topics.ops() == "ef/v1/coordinator/ops"
    assert cfg.model_report_period_s == 10.0


def test_model_report_period() -> None:
    assert config_from_dict({}).model_report_period_s == 10.0  # the default
    assert config_from_dict({"model": {"report_period_s": 0}}).model_report_period_s == 0.0  # off
    assert config_from_dict({"model": {"report_period_s": 2.5}}).model_report_period_s == 2.5


def test_defaults_and_relative_db(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text('[coordinator]\ndb = "state/c.db"\n[mqtt]\nport = 1884\n')
    cfg = load_config(path)
    assert cfg.db_path == tmp_path / "state" / "c.db"  # relative to the config file
    assert cfg.mqtt.port == 1884
    assert (cfg.commands.ack_timeout_s, cfg.commands.max_attempts) == (5.0, 5)
    assert cfg.coordinator_id == "coordinator" and cfg.prefix == "ef"


def test_prefix_in_either_place() -> None:
    assert config_from_dict({"prefix": "lab"}).prefix == "lab"
    assert config_from_dict({"coordinator": {"prefix": "lab"}}).prefix == "lab"
    with pytest.raises(ConfigError, match="prefix is given twice"):
        config_from_dict({"prefix": "a", "coordinator": {"prefix": "b"}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"commands": {"ack_timeout_s": -1}}, "c.toml: [commands] ack_timeout_s must be > 0, got -1"),
        ({"commands": {"max_attempts": 0}}, "[commands] max_attempts must be in [1, 1000], got 0"),
        ({"commands": {"backoff_s": "fast"}}, "[commands] backoff_s must be a number, got 'fast'"),
        ({"commands": {"backoff_s": 10, "backoff_max_s": 5}}, "[commands] backoff_max_s must be >= 10"),
        ({"coordinator": {"device_timeout_s": 0}}, "[coordinator] device_timeout_s must be > 0, got 0"),
        ({"coordinator": {"db": ""}}, "[coordinator] db must be a non-empty string"),
        ({"coordinator": {"id": "a/b"}}, "[coordinator] id must match"),
        ({"coordinator": {"colour": "red"}}, "[coordinator] unknown field(s): colour"),
        ({"mqtt": {"port": 70000}}, "[mqtt] port must be in [1, 65535], got 70000"),
        ({"mqtt": {"tls_cert": "c.pem"}}, "tls_cert and mqtt.tls_key must be given together"),
        ({"prefix": "a/+/b"}, "prefix: invalid topic prefix"),
        ({"prefix": 3}, "prefix must be a non-empty string, got 3"),
        ({"agent": {}}, "unknown table(s) or key(s): agent"),
        ({"model": {"report_period_s": -1}}, "[model] report_period_s must be >= 0, got -1"),
        ({"model": {"report_period_s": "often"}}, "[model] report_period_s must be a number"),
        ({"model": {"period_s": 5}}, "[model] unknown field(s): period_s"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("c.toml: ")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[commands\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_retry_delays_double_and_cap() -> None:
    p = CommandPolicy(ack_timeout_s=5.0, backoff_s=1.0, backoff_max_s=3.0)
    # after send 1: 5 + 1; send 2: 5 + 2; send 3: 5 + min(4, 3); send 4: 5 + min(8, 3)
    assert [p.retry_delay_s(n) for n in (1, 2, 3, 4)] == [6.0, 7.0, 8.0, 8.0]
    with pytest.raises(ValueError, match="ack_timeout_s"):
        CommandPolicy(ack_timeout_s=0)


def test_rebalance_table_is_validated_with_its_units() -> None:
    cfg = config_from_dict({"rebalance": {"windows": 2, "margin": 0.2, "max_actions": 1, "max_batch": 16,
                                          "predict": False}})
    r = cfg.rebalance
    assert (r.windows, r.margin, r.max_actions, r.max_batch, r.predict) == (2, 0.2, 1, 16, False)
    assert r.settle == pytest.approx(0.8)  # a plan must predict every p95 at or under 0.8 x SLO
    for bad in ({"margin": 0.95}, {"max_actions": 4}, {"max_batch": 0}, {"nope": 1}):
        with pytest.raises(ConfigError, match="rebalance"):
            config_from_dict({"rebalance": bad})

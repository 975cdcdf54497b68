"""Agent config: ``batch_policy`` is read from the TOML, validated, and reaches the batching policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.batching import BatchPolicy
from edgefleet.agent.config import config_from_dict, load_config
from edgefleet.config import ConfigError
from edgefleet.tomlio import dump_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "agent.example.toml"


def _agent(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"agent": {"device_id": "d", "state_dir": str(tmp_path), **fields}}


def test_batch_policy_defaults_to_adaptive(tmp_path: Path) -> None:
    assert config_from_dict(_agent(tmp_path)).batch_policy == "adaptive"
    assert load_config(EXAMPLE).batch_policy == "adaptive"  # the example leaves it commented out


@pytest.mark.parametrize(("text", "policy"), [
    ("adaptive", BatchPolicy()),
    ("fixed:1", BatchPolicy("fixed", 1, 0.0)),  # batch 1 never waits
    ("fixed:8", BatchPolicy("fixed", 8, 0.010)),  # waits at most 10 ms for the eighth request
    ("delay:2", BatchPolicy("delay", 0, 0.002)),  # 2 ms
    ("delay:2.5ms", BatchPolicy("delay", 0, 0.0025)),
    ("delay:0", BatchPolicy("delay", 0, 0.0)),
])
def test_batch_policy_is_read_from_the_toml(tmp_path: Path, text: str, policy: BatchPolicy) -> None:
    cfg = config_from_dict(_agent(tmp_path, batch_policy=text))
    assert cfg.batch_policy == text
    assert BatchPolicy.parse(cfg.batch_policy) == policy  # what the agent's scheduler is given


def test_batch_policy_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(dump_toml({"agent": {"device_id": "d", "state_dir": tmp_path, "batch_policy": "fixed:4"}}))
    assert load_config(path).batch_policy == "fixed:4"


@pytest.mark.parametrize("value", [
    "fifo", "Adaptive", "adaptive:4", "fixed", "fixed:0", "fixed:-2", "fixed:1.5", "fixed:x",
    "delay", "delay:-1", "delay:nan", "delay:inf", "delay:5s",
])
def test_an_unknown_batch_policy_names_the_accepted_ones(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(_agent(tmp_path, batch_policy=value))
    message = str(err.value)
    assert "[agent] batch_policy must be adaptive, fixed:N" in message and "delay:MS" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", [8, "", True])
def test_a_batch_policy_that_is_not_a_string_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="batch_policy"):
        config_from_dict(_agent(tmp_path, batch_policy=value))


# Sizes are MiB and named so: memory_budget_mib = 512 is 512 x 2^20 = 536_870_912 bytes.
@pytest.mark.parametrize(("old", "new", "attr", "value", "bytes_"), [
    ("memory_budget_mb", "memory_budget_mib", "memory_budget_bytes", 512, 536_870_912),
    ("max_payload_mb", "max_payload_mib", "max_payload_bytes", 8, 8_388_608),
    ("outbox_max_mb", "outbox_max_mib", "outbox_max_bytes", 64, 67_108_864),
])
def test_mib_keys_and_their_deprecated_mb_spelling(tmp_path: Path, old: str, new: str, attr: str, value: int,
                                                   bytes_: int) -> None:
    assert getattr(config_from_dict(_agent(tmp_path, **{new: value})), attr) == bytes_
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .* write {new} = {value}"):
        assert getattr(config_from_dict(_agent(tmp_path, **{old: value})), attr) == bytes_
    with pytest.raises(ConfigError, match=f"{old} and {new} are the same setting"):
        config_from_dict(_agent(tmp_path, **{old: value, new: value}))


def test_the_example_config_uses_the_mib_names() -> None:
    text = EXAMPLE.read_text()
    assert "memory_budget_mib = 512" in text and "_mb " not in text and "_mb=" not in text
    assert load_config(EXAMPLE).memory_budget_bytes == 512 << 20

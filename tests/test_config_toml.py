"""The TOML edgefleet writes itself (the local fleet's agent and coordinator configs, the security bundle's
client files) goes through one writer, ``edgefleet.config.dump_toml`` (tomli-w): what is written reads back
unchanged, whatever the strings hold, and callers' tables merge into the config instead of being pasted
in as text."""

from __future__ import annotations

import ast
import sys
from pathlib import Path, PureWindowsPath
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from edgefleet.agent.config import load_config as load_agent
from edgefleet.config import read_toml
from edgefleet.coordinator.config import load_config as load_coordinator
from edgefleet.localfleet import AgentPlan, agent_toml, coordinator_toml
from edgefleet.security import Principal, Role, SecurityPlan
from edgefleet.security.bundle import BundleOptions
from edgefleet.security.bundle.client_conf import render_client_toml
from edgefleet.tomlio import dump_toml, merge_tables

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Strings a hand-written f-string TOML got wrong: each broke the file or changed the value it held.
AWKWARD = [
    'say "hi"',  # a double quote ends a basic string
    "back\\slash",  # a backslash starts an escape
    str(PureWindowsPath(r"C:\Users\edge\new\table")),  # \U, \n and \t are escapes in a basic string
    r"\\server\share\models",  # a UNC path: two leading backslashes
    "Zürich-設備-🚀",  # non-ASCII survives as itself
    "line one\nline two\ttab",  # control characters must be escaped
    "it's 'single' quoted",
    "ends with a backslash\\",
    "#not a comment = [table]",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_an_awkward_string_reads_back_as_written(text: str) -> None:
    assert tomllib.loads(dump_toml({"t": {"value": text}})) == {"t": {"value": text}}


@given(st.dictionaries(st.text(min_size=1), st.text() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
                       | st.booleans() | st.lists(st.text(), max_size=3), max_size=5))
def test_any_table_of_text_numbers_and_lists_round_trips(table: dict[str, Any]) -> None:
    assert tomllib.loads(dump_toml({"table": table})) == {"table": table}


def test_paths_are_written_as_strings(tmp_path: Path) -> None:
    assert tomllib.loads(dump_toml({"a": {"dir": tmp_path, "dirs": [tmp_path / "x"]}})) == {
        "a": {"dir": str(tmp_path), "dirs": [str(tmp_path / "x")]}}


@pytest.mark.parametrize(("base", "extra", "merged"), [
    ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),  # a table merges key by key
    ({"a": {"x": 1}}, {"b": {"z": 1}}, {"a": {"x": 1}, "b": {"z": 1}}),  # a new table is added
    ({"a": {"x": {"deep": 1, "keep": 2}}}, {"a": {"x": {"deep": 9}}}, {"a": {"x": {"deep": 9, "keep": 2}}}),
    ({"a": {"x": [1, 2]}}, {"a": {"x": [3]}}, {"a": {"x": [3]}}),  # a list replaces, it does not append
    ({"p": "ef"}, {"p": "other"}, {"p": "other"}),  # a top-level key replaces
    ({"a": {"x": 1}}, {}, {"a": {"x": 1}}),
])
def test_merge_tables(base: dict[str, Any], extra: dict[str, Any], merged: dict[str, Any]) -> None:
    before = repr(base)
    assert merge_tables(base, extra) == merged
    assert repr(base) == before  # the base is not changed


@pytest.mark.parametrize("awkward", AWKWARD)
def test_the_local_fleets_agent_config_reads_back_with_its_extra_tables(tmp_path: Path, awkward: str) -> None:
    state_dir = tmp_path / awkward.replace("/", "_").replace("\n", "_")
    plan = AgentPlan("edge-a", budget_mib=48, telemetry_period_s=0.5, workers=2,
                     extra_config={"agent": {"memory_policy": "lru", "device_kind": awkward},
                                   "mqtt": {"keepalive_s": 30}})
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(plan, 1884, state_dir, prefix="ef", data_dir=awkward, password=awkward),
                    encoding="utf-8")
    cfg = load_agent(path)
    assert cfg.state_dir == state_dir and cfg.data_dir == Path(awkward) and cfg.kind == awkward
    assert cfg.memory_policy == "lru" and cfg.memory_budget_bytes == 48 << 20 and cfg.worker_count == 2
    assert cfg.telemetry_period_s == 0.5
    # the merged [mqtt] keeps the keys the extra table does not name
    assert (cfg.mqtt.port, cfg.mqtt.keepalive_s) == (1884, 30)
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("edge-a", awkward)


def test_an_agent_plan_without_a_password_writes_no_credentials(tmp_path: Path) -> None:
    data = tomllib.loads(agent_toml(AgentPlan("edge-a"), 1883, tmp_path, prefix="ef", data_dir=None))
    assert data["mqtt"] == {"host": "127.0.0.1", "port": 1883, "keepalive_s": 5}
    assert "data_dir" not in data["agent"]


@pytest.mark.parametrize("awkward", AWKWARD)
def test_the_local_fleets_coordinator_config_reads_back(tmp_path: Path, awkward: str) -> None:
    db = tmp_path / awkward.replace("/", "_").replace("\n", "_") / "coordinator.db"
    path = tmp_path / "coordinator.toml"
    path.write_text(coordinator_toml(1885, db, prefix="ef", device_timeout_s=7.5, op_timeout_s=12.0,
                                     password=awkward, placement="predicted-latency",
                                     extra_config={"coordinator": {"telemetry_retention_s": 60.0}}),
                    encoding="utf-8")
    cfg = load_coordinator(path)
    assert cfg.db_path == db and cfg.device_timeout_s == 7.5 and cfg.op_timeout_s == 12.0
    assert cfg.placement == "predicted-latency" and cfg.telemetry_retention_s == 60.0
    assert (cfg.mqtt.port, cfg.mqtt.username, cfg.mqtt.password) == (1885, "coordinator", awkward)
    assert cfg.commands.max_attempts == 6  # the written [commands] table, not the defaults


@pytest.mark.parametrize("awkward", AWKWARD)
def test_a_client_file_of_the_security_bundle_reads_back(tmp_path: Path, awkward: str) -> None:
    plan = SecurityPlan(prefix="ef", devices=("edge-01",))
    path = tmp_path / "edge-01.toml"
    # the password is the awkward string (the install folder is refused early when it holds quotes or
    # backslashes: it is written into Mosquitto's configuration too)
    text = render_client_toml(plan, Principal("edge-01", Role.DEVICE), awkward, BundleOptions(install_dir=tmp_path))
    path.write_text(text, encoding="utf-8")
    assert text.startswith("# MQTT credentials of device 'edge-01'")
    assert read_toml(path) == {"mqtt": {"username": "edge-01", "password": awkward}}


def test_the_writer_imports_nothing_of_edgefleet() -> None:
    """The security bundle writes through it; it must not pull in a transport (or anything else) with it."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / "edgefleet" / "tomlio.py").read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "edgefleet"], imported

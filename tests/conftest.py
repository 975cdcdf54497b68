"""Shared fixtures: one private Mosquitto per test session, unique topic prefixes per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from edgefleet.broker import PrivateBroker
from edgefleet.mqtt import MqttSettings
from edgefleet.wire import Topics


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


@pytest.fixture()
def mqtt_settings(broker: PrivateBroker) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=broker.port, keepalive_s=5)


@pytest.fixture()
def prefix() -> str:
    """A topic prefix no other test uses, so tests sharing the broker never see each other."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture()
def topics(prefix: str) -> Topics:
    return Topics(prefix)

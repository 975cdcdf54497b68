"""Broker-side grants: which device may receive which tenant's requests and answer its apps.

The seam between placement and a broker's authorization API. The coordinator calls it at three
points and nowhere else: ``allow`` just before a Deploy is published (the outbox), ``reconcile`` on
every tick of the worker with the grants the placement wants now (which revokes what a completed
undeploy or hand-over left behind, and restores what a restart or a broker change lost), and
``start``/``stop`` with the process. Placement never sees it.

``NullGrants`` is for brokers whose ACL is static (or absent): nothing changes at run time.
``edgefleet.coordinator.grants.mosquitto.MosquittoGrants`` drives Mosquitto's dynamic security plugin. Another
broker (EMQX's or HiveMQ's authorization API) would be one more class with these methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Protocol

from edgefleet.coordinator.grants.wanted import Grant, wanted_grants
from edgefleet.wire import TenantSpec

__all__ = ["Grant", "GrantRefused", "Granted", "Grants", "NullGrants", "Settling", "make_grants", "wanted_grants"]

GRANT_KINDS = ("none", "mosquitto-dynsec")


@dataclass(frozen=True)
class Granted:
    """The device holds the tenant's grant: the Deploy may go."""


@dataclass(frozen=True)
class Settling:
    """The grant is in place but the broker is still applying it (Mosquitto disconnects the client to
    enforce a change of its roles): ask again after ``retry_after_s``; no attempt is spent."""

    retry_after_s: float


@dataclass(frozen=True)
class GrantRefused:
    """The broker did not grant; the Deploy is not sent, and this attempt counts."""

    reason: str


GrantOutcome = Granted | Settling | GrantRefused


class Grants(Protocol):
    @property
    def active(self) -> bool:
        """False when nothing is ever granted (the coordinator then skips computing what is wanted)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def allow(self, device: str, spec: TenantSpec) -> GrantOutcome:
        """Give ``device`` what hosting ``spec`` needs (its topics depend on its kind). Idempotent."""
        ...

    def reconcile(self, wanted: Mapping[Grant, TenantSpec], keep: Set[Grant]) -> list[str]:
        """Make the broker hold exactly the grants in ``wanted`` (each with its tenant's spec), except
        that grants in ``keep`` are not taken away (their device still serves the tenant until its
        Undeploy completes) and none is added for them. Returns the problems met (empty: in line); what
        failed is tried again at the next call."""
        ...


class NullGrants:
    """Static ACL or none: every device may already do what hosting any tenant needs."""

    active = False

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def allow(self, device: str, spec: TenantSpec) -> GrantOutcome:
        return Granted()

    def reconcile(self, wanted: Mapping[Grant, TenantSpec], keep: Set[Grant]) -> list[str]:
        return []


def make_grants(kind: str, settings: object, prefix: str, client_id: str) -> Grants:
    """The implementation named in the coordinator's ``[security] grants``."""
    if kind == "none":
        return NullGrants()
    if kind == "mosquitto-dynsec":
        from edgefleet.coordinator.grants.mosquitto import MosquittoGrants
        from edgefleet.mqtt import MqttSettings

        assert isinstance(settings, MqttSettings)
        return MosquittoGrants(settings, prefix, client_id)
    raise ValueError(f"unknown grants {kind!r}: one of {', '.join(GRANT_KINDS)}")

"""The topic tree. Inference goes to tenant topics, never device topics; control goes to device topics.

::

    {prefix}/v1/tenants/{tenant}/infer        app -> agents hosting the tenant (shared subscription)
    {prefix}/v1/tenants/{tenant}/results      stream tenant's device -> apps (latest retained)
    {prefix}/v1/tenants/{tenant}/events       stream tenant's device -> apps, QoS 1
    {prefix}/v1/tenants/{tenant}/handover     stream tenant's devices among themselves, QoS 1
    {prefix}/v1/devices/{device}/status       agent -> all, retained: birth, or death (last will)
    {prefix}/v1/devices/{device}/telemetry    agent -> coordinator
    {prefix}/v1/devices/{device}/commands     coordinator -> agent, QoS 1
    {prefix}/v1/devices/{device}/acks         agent -> coordinator, QoS 1
    {prefix}/v1/coordinator/ops               operator tools -> coordinator (MQTT 5 request/response)
    {prefix}/v1/coordinator/model             coordinator -> operators, retained: the model's error report
    {prefix}/v1/clients/{client}/replies      where an SDK client asks for its results

Replicas of a tenant subscribe through ``$share/ef-{tenant}/...`` so the broker load-balances between
them, and moving a tenant is make-before-break: the new replica subscribes before the old one leaves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgefleet.wire.errors import ErrorCode, WireError
from edgefleet.wire.names import validate_client_id, validate_device_id, validate_tenant_name

API = "v1"


class TopicKind(str, enum.Enum):
    INFER = "infer"
    STATUS = "status"
    TELEMETRY = "telemetry"
    COMMANDS = "commands"
    ACKS = "acks"
    OPS = "ops"
    MODEL = "model"
    REPLIES = "replies"
    RESULTS = "results"
    EVENTS = "events"
    HANDOVER = "handover"


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    name: str  # tenant for tenant topics (INFER, RESULTS, EVENTS, HANDOVER), device for device topics, client for REPLIES, "" for OPS and MODEL


_TENANT_KINDS = {
    "infer": TopicKind.INFER,
    "results": TopicKind.RESULTS,
    "events": TopicKind.EVENTS,
    "handover": TopicKind.HANDOVER,
}

_DEVICE_KINDS = {
    "status": TopicKind.STATUS,
    "telemetry": TopicKind.TELEMETRY,
    "commands": TopicKind.COMMANDS,
    "acks": TopicKind.ACKS,
}


@dataclass(frozen=True)
class Topics:
    """Builds and parses the topics of one fleet. ``prefix`` separates fleets sharing a broker."""

    prefix: str = "ef"

    def __post_init__(self) -> None:
        parts = self.prefix.split("/")
        if (
            not self.prefix
            or self.prefix.startswith("$")
            or any(not p or "+" in p or "#" in p for p in parts)
            or "\x00" in self.prefix
        ):
            raise WireError(ErrorCode.BAD_REQUEST, f"invalid topic prefix {self.prefix!r}")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{API}"

    # -- builders ---------------------------------------------------------------------------------
    def infer(self, tenant: str) -> str:
        return f"{self.root}/tenants/{validate_tenant_name(tenant)}/infer"

    def infer_shared(self, tenant: str) -> str:
        """The filter replicas subscribe to; the group name is derived from the tenant."""
        return f"$share/ef-{validate_tenant_name(tenant)}/{self.infer(tenant)}"

    def results(self, tenant: str) -> str:
        """A stream tenant's results (the latest retained)."""
        return f"{self.root}/tenants/{validate_tenant_name(tenant)}/results"

    def events(self, tenant: str) -> str:
        """A stream tenant's events."""
        return f"{self.root}/tenants/{validate_tenant_name(tenant)}/events"

    def handover(self, tenant: str) -> str:
        """Where devices taking up a stream tenant announce it (``StreamHandover``)."""
        return f"{self.root}/tenants/{validate_tenant_name(tenant)}/handover"

    def status(self, device: str) -> str:
        return f"{self.root}/devices/{validate_device_id(device)}/status"

    def telemetry(self, device: str) -> str:
        return f"{self.root}/devices/{validate_device_id(device)}/telemetry"

    def commands(self, device: str) -> str:
        return f"{self.root}/devices/{validate_device_id(device)}/commands"

    def acks(self, device: str) -> str:
        return f"{self.root}/devices/{validate_device_id(device)}/acks"

    def ops(self) -> str:
        return f"{self.root}/coordinator/ops"

    def model(self) -> str:
        """Where the coordinator keeps its retained ``ModelReport``."""
        return f"{self.root}/coordinator/model"

    def replies(self, client_id: str) -> str:
        return f"{self.root}/clients/{validate_client_id(client_id)}/replies"

    # -- filters for subscribers ---------------------------------------------------------------
    @property
    def infer_any_shared(self) -> str:
        """Every inference topic, in one shared group whose name no tenant's group can take (tenant
        names are lower case): an agent that joins it gets one copy of each request, once in the
        fleet, and answers those whose tenant name breaks the rules, which no replica ever receives."""
        return f"$share/EF-any/{self.root}/tenants/+/infer"

    @property
    def all_status(self) -> str:
        return f"{self.root}/devices/+/status"

    @property
    def all_telemetry(self) -> str:
        return f"{self.root}/devices/+/telemetry"

    @property
    def all_acks(self) -> str:
        return f"{self.root}/devices/+/acks"

    # -- parsing --------------------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic:
        """Classify a concrete topic of this fleet; raise WireError for anything else."""
        root = self.root + "/"
        if not isinstance(topic, str) or not topic.startswith(root):
            raise WireError(ErrorCode.BAD_REQUEST, f"topic {topic!r} is not under {self.root!r}")
        rest = topic[len(root) :].split("/")
        if len(rest) == 3 and rest[0] == "tenants" and rest[2] in _TENANT_KINDS:
            return ParsedTopic(_TENANT_KINDS[rest[2]], validate_tenant_name(rest[1]))
        if len(rest) == 3 and rest[0] == "devices" and rest[2] in _DEVICE_KINDS:
            return ParsedTopic(_DEVICE_KINDS[rest[2]], validate_device_id(rest[1]))
        if rest == ["coordinator", "ops"]:
            return ParsedTopic(TopicKind.OPS, "")
        if rest == ["coordinator", "model"]:
            return ParsedTopic(TopicKind.MODEL, "")
        if len(rest) == 3 and rest[0] == "clients" and rest[2] == "replies":
            return ParsedTopic(TopicKind.REPLIES, validate_client_id(rest[1]))
        raise WireError(ErrorCode.BAD_REQUEST, f"unknown topic {topic!r}")

"""What each role of the dynamic mode holds, as plugin ACLs.

Every default of the plugin is set to deny (``config``), so a role lists all a principal may do:
``publishClientSend`` to publish, ``publishClientReceive`` to be delivered a message, and
``subscribePattern`` / ``subscribeLiteral`` to subscribe (the plugin checks a ``$share/GROUP/...``
subscription against its whole text, so the agent's shared form is granted literally).

Coordinator, operator and apps hold what they hold in the static ACL. A device's role has its own
device topics only. Each tenant has a role of its own, held by no device until the coordinator
places the tenant: read on its request topic, subscribe on the shared form agents use, and publish on
the reply topics of the apps allowed to call it. Granting a tenant to a device is adding that role to
the device's client, so two tenants that answer the same app never share an ACL entry that removing
one of them could take from the other.

``TenantAccess`` is the shape of any tenant's grant (what a host reads, subscribes to and publishes):
``inference_access`` for request/reply tenants, ``stream_access`` for stream tenants (their sources in,
results and events out, and the hand-over topic both ways); ``tenant_access`` picks by the spec.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from edgefleet.security.acl.rules import Access, own_grants
from edgefleet.security.dynsec.names import RoleNames
from edgefleet.security.plan import Role, SecurityPlan
from edgefleet.wire.messages import TenantSpec
from edgefleet.wire.topics import Topics


class AclType(str, enum.Enum):
    PUBLISH_SEND = "publishClientSend"  # the client may publish to matching topics
    PUBLISH_RECEIVE = "publishClientReceive"  # the broker may deliver matching messages to the client
    SUBSCRIBE_PATTERN = "subscribePattern"  # the client may subscribe to filters the topic covers
    SUBSCRIBE_LITERAL = "subscribeLiteral"  # the client may subscribe to exactly this filter


@dataclass(frozen=True)
class DynAcl:
    acltype: AclType
    topic: str
    allow: bool = True

    def to_json(self) -> dict[str, object]:
        return {"acltype": self.acltype.value, "topic": self.topic, "priority": 0, "allow": self.allow}


@dataclass(frozen=True)
class TenantAccess:
    """What a device hosting a tenant needs: messages it is delivered (``reads``), filters it subscribes
    with (``subscribes``, exact text) and topics it publishes to (``writes``)."""

    reads: tuple[str, ...]
    subscribes: tuple[str, ...]
    writes: tuple[str, ...]

    def acls(self) -> tuple[DynAcl, ...]:
        return (*(DynAcl(AclType.PUBLISH_RECEIVE, t) for t in self.reads),
                *(DynAcl(AclType.SUBSCRIBE_LITERAL, t) for t in self.subscribes),
                *(DynAcl(AclType.PUBLISH_SEND, t) for t in self.writes))


def inference_access(topics: Topics, tenant: str, callers: Iterable[str]) -> TenantAccess:
    """A request/reply tenant: its requests (through the replicas' shared subscription) and the reply
    topics of the apps allowed to call it, in name order."""
    return TenantAccess(
        reads=(topics.infer(tenant),),
        subscribes=(topics.infer_shared(tenant),),
        writes=tuple(topics.replies(app) for app in sorted(set(callers))),
    )


def stream_access(topics: Topics, tenant: str, sources: Iterable[str]) -> TenantAccess:
    """A stream tenant (``edgefleet.wire.streams``): the frames of its sources (filters the sensors
    chose, granted as written), its results and events out, and the hand-over topic the devices taking
    it up announce themselves on and listen to."""
    sources = tuple(sources)
    return TenantAccess(
        reads=(*sources, topics.handover(tenant)),
        subscribes=(*sources, topics.handover(tenant)),
        writes=(topics.results(tenant), topics.events(tenant), topics.handover(tenant)),
    )


def tenant_access(topics: Topics, spec: TenantSpec, callers: Iterable[str] = ()) -> TenantAccess:
    """What hosting ``spec`` needs, by its kind."""
    if spec.stream is not None:
        return stream_access(topics, spec.name, spec.stream.sources)
    return inference_access(topics, spec.name, callers)


def tenant_acls(topics: Topics, tenant: str, callers: Iterable[str]) -> tuple[DynAcl, ...]:
    return inference_access(topics, tenant, callers).acls()


def _from_static(grants: Iterable[tuple[Access, str]]) -> tuple[DynAcl, ...]:
    out: list[DynAcl] = []
    for access, topic in grants:
        if access is Access.WRITE:
            out.append(DynAcl(AclType.PUBLISH_SEND, topic))
        else:
            out += [DynAcl(AclType.PUBLISH_RECEIVE, topic), DynAcl(AclType.SUBSCRIBE_PATTERN, topic)]
    return tuple(out)


CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"


def admin_acls() -> tuple[DynAcl, ...]:
    everything = "$CONTROL/dynamic-security/#"
    return (DynAcl(AclType.PUBLISH_SEND, everything), DynAcl(AclType.PUBLISH_RECEIVE, everything),
            DynAcl(AclType.SUBSCRIBE_PATTERN, everything))


@dataclass(frozen=True)
class PlannedRoles:
    """Roles (name -> ACLs) and each client's roles (username -> role names), in plan order."""

    roles: dict[str, tuple[DynAcl, ...]]
    clients: dict[str, tuple[str, ...]]


def plan_roles(plan: SecurityPlan) -> PlannedRoles:
    """Everything the plugin holds for ``plan`` before any tenant is placed: one role per principal,
    the coordinator's admin role, and one role per tenant some app may call, held by no device."""
    names, topics = RoleNames(plan.prefix), plan.topics
    roles: dict[str, tuple[DynAcl, ...]] = {names.admin: admin_acls()}
    clients: dict[str, tuple[str, ...]] = {}
    for p in plan.principals():
        if p.role is Role.COORDINATOR:
            role = names.coordinator
        elif p.role is Role.OPERATOR:
            role = names.operator
        elif p.role is Role.DEVICE:
            role = names.device(p.name)
        else:
            role = names.app(p.name)
        roles[role] = _from_static(own_grants(p, topics))
        clients[p.name] = (role, names.admin) if p.role is Role.COORDINATOR else (role,)
    callers: dict[str, list[str]] = {}
    for app in plan.apps:
        for tenant in app.tenants:
            callers.setdefault(tenant, []).append(app.name)
    for tenant in sorted(callers):
        roles[names.tenant(tenant)] = tenant_acls(topics, tenant, callers[tenant])
    return PlannedRoles(roles, clients)

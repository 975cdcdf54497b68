"""What each role may read and write, derived from the topic layout of ``edgefleet.wire.topics``.

Least privilege per role, with one deliberate exception for devices in this, the static mode: which
device hosts which tenant is decided by the coordinator at run time and changes as tenants move, while
the ACL is static. So every device may read every tenant's inference requests
(``{root}/tenants/+/infer``) and publish replies to any client reply topic (``{root}/clients/+/replies``).
A compromised device can therefore see other tenants' requests and send forged replies; it still cannot
command devices, impersonate other devices, or reach the coordinator's ops topic. The dynamic mode
(``edgefleet.security.dynsec``) closes that gap: devices get only ``own_grants`` up front.

Apps get their reply topic by name: an app must connect with its username as MQTT client id, because
the SDK's reply topic is ``clients/{client_id}/replies``. The operator tool's client id is random per
run, so the operator may read every reply topic; it is the fleet's administrator already.

The coordinator's model report (``coordinator/model``) names every tenant's device and latency, so only
the operator may read it; apps see their own tenants' latencies in their replies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgefleet.security.plan import Principal, Role, SecurityPlan
from edgefleet.wire.topics import Topics


class Access(str, enum.Enum):
    READ = "read"  # receive messages published on matching topics
    WRITE = "write"  # publish to matching topics


@dataclass(frozen=True)
class AclRule:
    """``user`` may ``access`` topics matching ``topic`` (an MQTT filter: '+' and '#' allowed)."""

    user: str
    access: Access
    topic: str


def _grants(p: Principal, t: Topics) -> list[tuple[Access, str]]:
    read, write = Access.READ, Access.WRITE
    every_reply = f"{t.root}/clients/+/replies"
    if p.role is Role.COORDINATOR:
        return [(read, t.all_status), (read, t.all_telemetry), (read, t.all_acks),
                (write, f"{t.root}/devices/+/commands"), (read, t.ops()), (write, every_reply), (write, t.model())]
    if p.role is Role.OPERATOR:
        return [(write, t.ops()), (read, every_reply), (read, t.model())]
    if p.role is Role.DEVICE:
        return [*own_grants(p, t), (read, f"{t.root}/tenants/+/infer"), (write, every_reply)]
    return own_grants(p, t)


def own_grants(p: Principal, t: Topics) -> list[tuple[Access, str]]:
    """What ``p`` may do whichever tenants run where: for a device only its own device topics, for the
    others the same as in the static ACL. Dynamic security (``edgefleet.security.dynsec``) starts from
    these and adds each tenant's topics to the devices that host it, while it is there."""
    read, write = Access.READ, Access.WRITE
    if p.role is Role.DEVICE:
        return [(read, t.commands(p.name)), (write, t.status(p.name)), (write, t.telemetry(p.name)),
                (write, t.acks(p.name))]
    if p.role is Role.APP:
        return [*((write, t.infer(tenant)) for tenant in p.tenants), (read, t.replies(p.name))]
    return _grants(p, t)


def acl_rules(plan: SecurityPlan) -> tuple[AclRule, ...]:
    """Every grant of the plan, principal by principal in ``plan.principals()`` order. Anything not
    granted here is denied: with an ACL file, Mosquitto refuses whatever the file does not grant."""
    t = plan.topics
    return tuple(AclRule(p.name, access, topic) for p in plan.principals() for access, topic in _grants(p, t))

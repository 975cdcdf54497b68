"""Who may connect to the fleet's Mosquitto broker, and which topics each of them may use.

The topic tree (``edgefleet.wire.topics``) says who talks to whom; without broker-side checks any
client that can reach the broker could command devices, impersonate an agent's status or telemetry, or
call any tenant. This package turns a ``SecurityPlan`` (the fleet's prefix, its coordinator, operator,
devices and apps with their granted tenants) into what Mosquitto enforces: a password file, an ACL file,
a configuration snippet and, optionally, a small certificate authority for TLS with client
certificates. Generation is pure where it can be; only ``bundle.write`` touches the filesystem.

``edgefleet.security.tls`` needs the ``cryptography`` package and is imported only when asked for.
"""

from __future__ import annotations

from edgefleet.security.acl import Access, AclRule, acl_rules, permits, render_acl
from edgefleet.security.passwords import hash_password, new_password, render_password_file, verify_password
from edgefleet.security.plan import AppGrant, PlanError, Principal, Role, SecurityPlan

__all__ = [
    "Access",
    "AclRule",
    "AppGrant",
    "PlanError",
    "Principal",
    "Role",
    "SecurityPlan",
    "acl_rules",
    "hash_password",
    "new_password",
    "permits",
    "render_acl",
    "render_password_file",
    "verify_password",
]

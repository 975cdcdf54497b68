"""Mosquitto's dynamic security plugin for a fleet: who may use which topics, changed at run time.

The static ACL (``edgefleet.security.acl``) has to let every device read every tenant's requests,
because placement changes while the file does not. With the dynamic security plugin
(``mosquitto_dynamic_security.so``, administered over MQTT on ``$CONTROL/dynamic-security/v1``) each
device starts with its own device topics only, and the coordinator adds a tenant's role to a device
before it deploys the tenant there and removes it once the device has let go of it.

Pure parts only: role names (``names``), what each role holds (``roles``), the plugin's initial JSON
file (``config``) and the control commands with their answers (``control``). The coordinator's side,
which sends those commands, is ``edgefleet.coordinator.grants``.
"""

from __future__ import annotations

from edgefleet.security.dynsec.config import dynsec_password, render_dynsec_config
from edgefleet.security.dynsec.control import ControlError, ControlReply, command, parse_replies
from edgefleet.security.dynsec.names import RoleNames
from edgefleet.security.dynsec.roles import (
    AclType,
    DynAcl,
    TenantAccess,
    inference_access,
    plan_roles,
    stream_access,
    tenant_access,
    tenant_acls,
)

__all__ = [
    "AclType",
    "ControlError",
    "ControlReply",
    "DynAcl",
    "RoleNames",
    "TenantAccess",
    "command",
    "dynsec_password",
    "inference_access",
    "parse_replies",
    "plan_roles",
    "render_dynsec_config",
    "stream_access",
    "tenant_access",
    "tenant_acls",
]

"""The plugin's JSON file (``plugin_opt_config_file``) for a plan: clients, roles, default access.

Mosquitto reads it at start and rewrites it after every change made over ``$CONTROL``, so the broker
must be able to write the file and its directory. Passwords are stored as the plugin stores them:
PBKDF2-HMAC-SHA512 over the password with a 12-byte salt, hash and salt in base64 (checked against
``mosquitto_ctrl dynsec init``). Every default access is deny: nothing is allowed that a role does not
list, including delivery of messages (the plugin's own default lets any subscription receive).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping

from edgefleet.security.dynsec.roles import plan_roles
from edgefleet.security.passwords.hashing import ITERATIONS, SALT_BYTES
from edgefleet.security.plan import SecurityPlan

DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}


def dynsec_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> dict[str, object]:
    """The ``password``, ``salt`` and ``iterations`` fields of a plugin client."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def render_dynsec_config(plan: SecurityPlan, passwords: Mapping[str, str]) -> str:
    """The file's text; ``passwords`` maps every principal's username to its password."""
    planned = plan_roles(plan)
    clients = []
    for p in plan.principals():
        clients.append({
            "username": p.name,
            "textName": f"{p.role.value} {p.name}",
            **dynsec_password(passwords[p.name]),
            "roles": [{"rolename": r} for r in planned.clients[p.name]],
        })
    roles = [{"rolename": name, "acls": [a.to_json() for a in acls]} for name, acls in planned.roles.items()]
    doc = {"defaultACLAccess": DEFAULT_ACL_ACCESS, "clients": clients, "groups": [], "roles": roles}
    return json.dumps(doc, indent=2) + "\n"

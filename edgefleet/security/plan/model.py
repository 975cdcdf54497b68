"""``SecurityPlan``: the input of every generator in ``edgefleet.security``, validated once.

A principal is one MQTT username (and, with TLS, one certificate common name). Its role fixes what it
may do; apps additionally carry the tenants they are granted. Which device serves which tenant is the
coordinator's decision at run time, so the plan cannot know it and does not try to.

Names become topic segments, ACL lines, password-file keys and file names, so they follow the same rule
as device ids (``edgefleet.wire.names``), and one name belongs to one principal only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from edgefleet.wire.errors import WireError
from edgefleet.wire.names import NAME_RE, validate_device_id, validate_tenant_name
from edgefleet.wire.topics import Topics


class PlanError(ValueError):
    """The plan is not usable; the message names the offending value."""


class Role(str, enum.Enum):
    COORDINATOR = "coordinator"  # reads all device traffic, sends commands, answers operator calls
    OPERATOR = "operator"  # calls the coordinator's ops topic (edgefleet deploy / status)
    DEVICE = "device"  # an agent: its own device topics, tenants' inference requests, replies
    APP = "app"  # calls the tenants it is granted, reads its own reply topic


@dataclass(frozen=True)
class Principal:
    name: str  # MQTT username, certificate common name, file name
    role: Role
    tenants: tuple[str, ...] = ()  # apps only: the tenants it may call


@dataclass(frozen=True)
class AppGrant:
    """An app and the tenants it may call. Its reply topic is ``clients/{name}/replies``."""

    name: str
    tenants: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.tenants, str):
            raise PlanError(f"app {self.name!r}: tenants must be a sequence of names, not one string")
        object.__setattr__(self, "tenants", tuple(self.tenants))


def _username(kind: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise PlanError(f"invalid {kind} name {value!r}: must match {NAME_RE.pattern}")
    return value


def _checked(validate: Callable[[object], str], value: object) -> str:
    try:
        return validate(value)
    except WireError as exc:
        raise PlanError(exc.message) from None


@dataclass(frozen=True)
class SecurityPlan:
    """Everything the generators need. Sequences are stored as tuples; order is kept, duplicates are
    errors (a duplicate is almost always a typo)."""

    prefix: str = "ef"
    coordinator: str = "coordinator"
    operator: str | None = "operator"  # None: no operator account
    devices: tuple[str, ...] = ()
    apps: tuple[AppGrant, ...] = ()

    def __post_init__(self) -> None:
        try:
            Topics(self.prefix)
        except WireError as exc:
            raise PlanError(exc.message) from None
        if isinstance(self.devices, str):
            raise PlanError("devices must be a sequence of names, not one string")
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "apps", tuple(self.apps))
        _username("coordinator", self.coordinator)
        if self.operator is not None:
            _username("operator", self.operator)
        for device in self.devices:
            _checked(validate_device_id, device)
        for app in self.apps:
            _username("app", app.name)
            if not app.tenants:
                raise PlanError(f"app {app.name!r} is granted no tenant")
            for tenant in app.tenants:
                _checked(validate_tenant_name, tenant)
            if len(set(app.tenants)) != len(app.tenants):
                raise PlanError(f"app {app.name!r} lists a tenant twice: {', '.join(app.tenants)}")
        seen: dict[str, Role] = {}
        for p in self.principals():
            if p.name in seen:
                raise PlanError(f"name {p.name!r} is used twice ({seen[p.name].value} and {p.role.value})")
            seen[p.name] = p.role

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    def principals(self) -> tuple[Principal, ...]:
        """Coordinator, operator, devices, apps, in that order."""
        out = [Principal(self.coordinator, Role.COORDINATOR)]
        if self.operator is not None:
            out.append(Principal(self.operator, Role.OPERATOR))
        out += [Principal(d, Role.DEVICE) for d in self.devices]
        out += [Principal(a.name, Role.APP, tuple(a.tenants)) for a in self.apps]
        return tuple(out)

"""Role names in the plugin: one namespace per fleet, so two fleets can share a broker.

``{prefix}:device:{name}``, ``{prefix}:app:{name}``, ``{prefix}:tenant:{name}``, ``{prefix}:coordinator``,
``{prefix}:operator`` and ``{prefix}:dynsec-admin``. Principal and tenant names never contain ':'
(``edgefleet.wire.names``), so a tenant role's name is parsed back from its right end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleNames:
    prefix: str = "ef"

    @property
    def coordinator(self) -> str:
        return f"{self.prefix}:coordinator"

    @property
    def operator(self) -> str:
        return f"{self.prefix}:operator"

    @property
    def admin(self) -> str:
        """May send the plugin's control commands (held by the coordinator)."""
        return f"{self.prefix}:dynsec-admin"

    def device(self, name: str) -> str:
        return f"{self.prefix}:device:{name}"

    def app(self, name: str) -> str:
        return f"{self.prefix}:app:{name}"

    def tenant(self, name: str) -> str:
        return f"{self.prefix}:tenant:{name}"

    def tenant_of(self, role: str) -> str | None:
        """The tenant whose role ``role`` is, or None for any other role (another fleet's included)."""
        head, sep, name = role.rpartition(":tenant:")
        return name if sep and head == self.prefix and name and ":" not in name else None

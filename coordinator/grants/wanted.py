"""Which (device, tenant) grants the placement wants now, and which must stay a while longer.

A pure function of the tenants' rows and the outstanding Undeploys. A device is wanted to hold a
tenant's grant while the tenant is assigned to it in any state that has it serve or about to serve
(``deploying``, ``running``, ``moving`` as the target, ``removing`` until its Undeploy is acked), and
the source of a move keeps its grant while the move is under way. After the hand-over the source's
Undeploy is outstanding: its grant is *kept* (never added on that ground alone, so a device that
claims a tenant it was never given gets nothing) until the device acks, which it does once it has
unsubscribed and answered what it had. Revoking earlier would lose requests: Mosquitto drops a message
it routed to a shared-subscription member that may not read it, instead of giving it to another.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefleet.coordinator.store import CommandRow, TenantRow
from edgefleet.wire import TenantSpec

Grant = tuple[str, str]  # (device, tenant)

SERVING_STATES = ("deploying", "running", "moving", "removing")


def wanted_grants(tenants: Iterable[TenantRow]) -> dict[Grant, TenantSpec]:
    """Each wanted grant with the spec of its tenant (which says what the grant holds)."""
    out: dict[Grant, TenantSpec] = {}
    for t in tenants:
        if t.device_id is not None and t.state in SERVING_STATES:
            out[(t.device_id, t.spec.name)] = t.spec
        if t.state == "moving" and t.moving_from is not None:
            out[(t.moving_from, t.spec.name)] = t.spec
    return out


def kept_grants(outstanding: Iterable[CommandRow]) -> frozenset[Grant]:
    """Grants not to revoke yet: devices with an Undeploy of the tenant not yet acked."""
    return frozenset((c.device_id, c.tenant) for c in outstanding if c.kind == "undeploy")


class WantedIndex:
    """``wanted_grants`` kept current one tenant at a time, so that checking the grants after a few
    tenants were written costs what those writes changed, not a pass over the fleet. ``update`` each
    tenant written (its row now, None when deleted); ``rebuild`` from every row when the writes cannot
    be listed (a start, a rolled-back transaction). ``wanted`` always equals ``wanted_grants`` of the
    rows given."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, dict[Grant, TenantSpec]] = {}  # tenant -> the grants its row wants
        self.wanted: dict[Grant, TenantSpec] = {}

    def rebuild(self, tenants: Iterable[TenantRow]) -> None:
        self._by_tenant = {}
        for t in tenants:
            mine = wanted_grants((t,))
            if mine:
                self._by_tenant[t.name] = mine
        self.wanted = {g: spec for mine in self._by_tenant.values() for g, spec in mine.items()}

    def update(self, name: str, row: TenantRow | None) -> bool:
        """Take tenant ``name``'s row as it is now; True when what is wanted changed."""
        mine = wanted_grants((row,)) if row is not None else {}
        old = self._by_tenant.get(name, {})
        if mine == old:
            return False
        for g in old:
            self.wanted.pop(g, None)
        self.wanted.update(mine)
        if mine:
            self._by_tenant[name] = mine
        else:
            self._by_tenant.pop(name, None)
        return True

"""Grants through Mosquitto's dynamic security plugin (``$CONTROL/dynamic-security/v1``).

A tenant's grant is its role (``{prefix}:tenant:{name}``, see ``edgefleet.security.dynsec.roles``):
allowing a device adds the role to the device's client (its MQTT username, the device id), revoking
removes it. Roles are per username, not per client id, so every connection an agent opens with its
credentials holds the same grants. A tenant that no app was granted at ``security init`` gets its role
created on first use, with its request topics and no reply topic; a stream tenant's role gets its
sources, results, events and hand-over topics (``edgefleet.security.dynsec.roles.tenant_access``). A
role that exists is read once per process and given what its tenant's kind needs and it lacks.

The coordinator's worker thread calls in and waits for the plugin's answer (one round trip, about a
millisecond on a local broker); answers arrive on this link's own network thread. What the broker
holds is mirrored here, loaded from the broker (``listClients``, ``listRoles``) at the first use and
after every reconnect, and updated with each change it acknowledges: ``reconcile`` compares the
placement with that mirror, so after a coordinator restart it is the broker's own state that is fixed.

Mosquitto 2.0 enforces a change of a client's roles by disconnecting that client (``Administrative
action``; no last will). The agent reconnects by itself and publishes its birth again; until that
birth is seen here, ``allow`` answers ``Settling`` so the Deploy is not published into the gap, where a
clean session would lose it. The disconnection also costs the device's other tenants their requests
of that moment when they have no other replica: docs/security.md measures it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Set

from edgefleet.coordinator.grants import Grant, Granted, GrantOutcome, GrantRefused, Settling
from edgefleet.mqtt import Inbound, MqttLink, MqttSettings
from edgefleet.security.dynsec import ControlError, ControlReply, RoleNames, parse_replies, tenant_access
from edgefleet.security.dynsec.control import REQUEST_TOPIC, RESPONSE_TOPIC, command, encode_request
from edgefleet.wire import TenantSpec, Topics

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 5.0  # the plugin answers in about a millisecond; past this the broker is in trouble
SETTLE_MAX_S = 5.0  # wait at most this long for a disconnected device's new birth, then send anyway
SETTLE_POLL_S = 0.05  # how often the outbox asks again while a device reconnects
RETRY_AFTER_S = 5.0  # a failed load or reconcile step is not tried again sooner (each may wait for a timeout)


class _Waiter:
    def __init__(self, n: int) -> None:
        self.done = threading.Event()
        self.replies: list[ControlReply] = []
        self.n = n


class MosquittoGrants:
    active = True

    def __init__(self, settings: MqttSettings, prefix: str, client_id: str, *,
                 clock: Callable[[], float] = time.monotonic, answer_timeout_s: float = ANSWER_TIMEOUT_S,
                 settle_max_s: float = SETTLE_MAX_S) -> None:
        self.topics = Topics(prefix)
        self.names = RoleNames(prefix)
        self.clock = clock
        self.answer_timeout_s = answer_timeout_s
        self.settle_max_s = settle_max_s
        self._lock = threading.Lock()
        self._waiters: dict[str, _Waiter] = {}
        self._held: dict[str, set[str]] | None = None  # device -> tenants, as the broker holds them
        self._roles: set[str] = set()
        self._changed_at: dict[str, float] = {}  # device -> when its roles last changed (it was disconnected)
        self._status_at: dict[str, float] = {}  # device -> when its last status message arrived
        self._load_failed_at = float("-inf")
        self._failed_at: dict[Grant, float] = {}  # reconcile steps that failed, by grant
        self._checked: set[str] = set()  # tenant roles whose ACLs were compared with their spec's needs
        self.requests = 0  # control round trips, for tests and the benchmark
        self.malformed = 0
        self.link = MqttLink(settings, client_id=f"{client_id}-grants", on_connect=self._connected)
        self.link.subscribe(RESPONSE_TOPIC, self._on_response, qos=1)
        self.link.subscribe(self.topics.all_status, self._on_status, qos=1)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    def _connected(self, _link: MqttLink) -> None:
        with self._lock:
            self._held = None  # the broker may have changed while we were away: load it again

    # -- network thread -----------------------------------------------------------------------------
    def _on_response(self, msg: Inbound) -> None:
        try:
            replies = parse_replies(msg.payload)
        except ControlError as exc:
            self.malformed += 1
            log.warning("ignoring a malformed dynamic security answer: %s", exc)
            return
        with self._lock:
            for r in replies:
                request = (r.correlation or "").partition(":")[0]
                waiter = self._waiters.get(request)
                if waiter is not None:
                    waiter.replies.append(r)
                    if len(waiter.replies) >= waiter.n:
                        waiter.done.set()

    def _on_status(self, msg: Inbound) -> None:
        try:
            device = self.topics.parse(msg.topic).name
        except Exception:
            return
        with self._lock:
            self._status_at[device] = self.clock()

    # -- requests (worker thread) ------------------------------------------------------------------------
    def _request(self, commands: list[tuple[str, dict[str, object]]]) -> list[ControlReply] | str:
        """Send ``commands`` (name, fields) in one message; their answers in order, or why none came."""
        if not self.link.connected:
            return "not connected to the broker"
        rid = uuid.uuid4().hex[:16]
        waiter = _Waiter(len(commands))
        with self._lock:
            self._waiters[rid] = waiter
        try:
            body = [command(name, f"{rid}:{i}", **fields) for i, (name, fields) in enumerate(commands)]
            self.link.publish(REQUEST_TOPIC, encode_request(body), qos=1)
            self.requests += 1
            if not waiter.done.wait(self.answer_timeout_s):
                return f"no answer from the dynamic security plugin within {self.answer_timeout_s:.0f} s"
        finally:
            with self._lock:
                self._waiters.pop(rid, None)
        order = {f"{rid}:{i}": i for i in range(len(commands))}
        return sorted(waiter.replies, key=lambda r: order.get(r.correlation or "", 0))

    def _load(self) -> str | None:
        """Read what the broker holds; None when loaded, else why not."""
        answer = self._request([("listClients", {"verbose": True, "count": -1, "offset": 0}),
                                ("listRoles", {"verbose": False, "count": -1, "offset": 0})])
        if isinstance(answer, str):
            return answer
        clients, roles = answer
        if not clients.ok or not roles.ok:
            return f"listing the plugin's clients and roles failed: {clients.error or roles.error}"
        held: dict[str, set[str]] = {}
        for c in clients.data.get("clients", []):
            if not isinstance(c, dict) or not isinstance(c.get("username"), str):
                continue
            for r in c.get("roles", []):
                tenant = self.names.tenant_of(r.get("rolename", "")) if isinstance(r, dict) else None
                if tenant is not None:
                    held.setdefault(c["username"], set()).add(tenant)
        with self._lock:
            self._held = held
            self._roles = {r for r in roles.data.get("roles", []) if isinstance(r, str)}
        return None

    def _mirror(self) -> dict[str, set[str]] | str:
        with self._lock:
            held = self._held
        if held is None:
            if self.clock() - self._load_failed_at < RETRY_AFTER_S:
                return "the last attempt to read them failed; retrying shortly"
            problem = self._load()
            if problem is not None:
                self._load_failed_at = self.clock()
                return problem
            with self._lock:
                assert self._held is not None
                held = self._held
        return held

    def held(self) -> set[Grant] | str:
        """What the broker holds (as mirrored), or why it is unknown."""
        mirror = self._mirror()
        if isinstance(mirror, str):
            return mirror
        return {(d, t) for d, ts in mirror.items() for t in ts}

    # -- the seam -------------------------------------------------------------------------------------
    def allow(self, device: str, spec: TenantSpec) -> GrantOutcome:
        mirror = self._mirror()
        if isinstance(mirror, str):
            return GrantRefused(f"grants unknown: {mirror}")
        if spec.name not in mirror.get(device, set()):
            problem = self._add(device, spec)
            if problem is not None:
                return GrantRefused(problem)
        return self._settled(device)

    def _settled(self, device: str) -> GrantOutcome:
        with self._lock:
            changed, seen = self._changed_at.get(device), self._status_at.get(device, float("-inf"))
        if changed is None or seen > changed or self.clock() - changed > self.settle_max_s:
            return Granted()
        return Settling(SETTLE_POLL_S)

    def _role_commands(self, spec: TenantSpec) -> list[tuple[str, dict[str, object]]] | str:
        """What makes the tenant's role hold what ``spec`` needs: create it, or add the ACLs it lacks
        (read once per process; adding ACLs to a role disconnects its holders, so only what is missing)."""
        role = self.names.tenant(spec.name)
        needed = tenant_access(self.topics, spec).acls()
        if role not in self._roles:
            return [("createRole", {"rolename": role, "textname": f"tenant {spec.name}",
                                    "acls": [a.to_json() for a in needed]})]
        if spec.name in self._checked:
            return []
        answer = self._request([("getRole", {"rolename": role})])
        if isinstance(answer, str):
            return answer
        if not answer[0].ok:
            return f"reading role {role} failed: {answer[0].error}"
        present = answer[0].data.get("role", {}).get("acls", [])
        have = {(a.get("acltype"), a.get("topic")) for a in present if isinstance(a, dict)}
        self._checked.add(spec.name)
        return [("addRoleACL", {"rolename": role, **a.to_json()}) for a in needed
                if (a.acltype.value, a.topic) not in have]

    def _add(self, device: str, spec: TenantSpec) -> str | None:
        tenant, role = spec.name, self.names.tenant(spec.name)
        commands = self._role_commands(spec)
        if isinstance(commands, str):
            return commands
        commands.append(("addClientRole", {"username": device, "rolename": role}))
        answer = self._request(commands)
        if isinstance(answer, str):
            return answer
        *prepared, added = answer
        for r in prepared:
            if r.ok or r.error in ("Role already exists", "ACL with this topic already exists"):
                self._roles.add(role)
            else:
                return f"preparing role {role} ({r.command}) failed: {r.error}"
        if not added.ok:
            if added.error == "Client not found":
                return f"device {device} has no client in the dynamic security plugin (see edgefleet security init)"
            with self._lock:
                self._held = None  # e.g. held already (the plugin answers "Internal error"): read it again
            return f"adding role {role} to {device} failed: {added.error}"
        self._changed(device, tenant, add=True)
        log.info("granted %s to %s", tenant, device)
        return None

    def revoke(self, device: str, tenant: str) -> str | None:
        """Take ``tenant``'s role from ``device``; None when done (or not held), else why not."""
        mirror = self._mirror()
        if isinstance(mirror, str):
            return mirror
        if tenant not in mirror.get(device, set()):
            return None
        answer = self._request([("removeClientRole", {"username": device, "rolename": self.names.tenant(tenant)})])
        if isinstance(answer, str):
            return answer
        r = answer[0]
        if not r.ok and r.error not in ("Client not found", "Role not found"):
            return f"removing {tenant} from {device} failed: {r.error}"
        self._changed(device, tenant, add=False)
        log.info("revoked %s from %s", tenant, device)
        return None

    def _changed(self, device: str, tenant: str, *, add: bool) -> None:
        with self._lock:
            if self._held is not None:
                tenants = self._held.setdefault(device, set())
                if add:
                    tenants.add(tenant)
                else:
                    tenants.discard(tenant)
            self._changed_at[device] = self.clock()

    def reconcile(self, wanted: Mapping[Grant, TenantSpec], keep: Set[Grant]) -> list[str]:
        held = self.held()
        if isinstance(held, str):
            return [f"grants unknown: {held}"]
        problems = []
        now = self.clock()
        steps = [(g, False) for g in sorted(set(held) - set(wanted) - set(keep))]
        steps += [(g, True) for g in sorted(set(wanted) - set(held) - set(keep))]
        for grant, add in steps:
            if now - self._failed_at.get(grant, float("-inf")) < RETRY_AFTER_S:
                continue
            problem = self._add(grant[0], wanted[grant]) if add else self.revoke(*grant)
            if problem is None:
                self._failed_at.pop(grant, None)
            else:
                self._failed_at[grant] = now
                problems.append(problem)
        return problems

"""Applies the coordinator's commands at most once and acknowledges each with its result.

Commands arrive on the device's command topic (QoS 1, so possibly more than once). The command id is
looked up in SQLite first: a repeat is answered "duplicate" with the first result and changes nothing.
Runs on its own thread (``ef-commands``) because loading a model takes long enough to stall MQTT.
``Deploy`` hosts a tenant, ``Undeploy`` removes it, ``Configure`` changes a hosted one in place; the
Ack of an applied Deploy or Configure that loaded a model carries the service profile its warm-up
measured (``edgefleet.agent.profiling``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable

from edgefleet.agent.host import DeployError
from edgefleet.agent.state import AgentState, AppliedCommand
from edgefleet.wire import (
    Ack,
    Command,
    Configure,
    Deploy,
    ServiceProfile,
    TenantSpec,
    Undeploy,
    WireError,
    decode_command,
)

log = logging.getLogger(__name__)
MAX_ID_CHARS = 128  # longest command id echoed back in a rejection


class CommandRunner:
    def __init__(
        self,
        *,
        device_id: str,
        state: AgentState,
        deploy: Callable[[TenantSpec], None],
        undeploy: Callable[[str], None],
        send_ack: Callable[[Ack], None],
        configure: Callable[[TenantSpec], str] | None = None,
        profile: Callable[[str], ServiceProfile | None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.state = state
        self._deploy = deploy
        self._undeploy = undeploy
        self._configure = configure
        self._profile = profile  # an applied Deploy/Configure's Ack carries what its load measured
        self._send_ack = send_ack
        self._queue: queue.Queue[tuple[bytes, Command | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ef-commands", daemon=True)
        self.malformed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def submit(self, payload: bytes, decoded: Command | None = None) -> None:
        """Called on the MQTT thread: only enqueue (with the command when the caller decoded it)."""
        self._queue.put((payload, decoded))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.handle(*item)
            except Exception:
                log.exception("command handling failed")

    def handle(self, payload: bytes, decoded: Command | None = None) -> Ack | None:
        if decoded is not None:
            cmd = decoded
        else:
            try:
                cmd = decode_command(payload)
            except WireError as exc:
                self.malformed += 1
                log.warning("refusing malformed command: %s", exc.message)
                return self._reject_unreadable(payload, exc)
        if cmd.device_id != self.device_id:
            ack = Ack(
                command_id=cmd.command_id,
                device_id=self.device_id,
                ok=False,
                result="rejected",
                code="wrong_device",
                message=f"command addressed to {cmd.device_id!r}",
                ts=time.time(),
            )
            self._send_ack(ack)
            return ack
        done = self.state.applied(cmd.command_id)
        if done is not None:
            ack = Ack(
                command_id=cmd.command_id,
                device_id=self.device_id,
                ok=done.ok,
                result="duplicate",
                code=done.code,
                message=done.message,
                ts=time.time(),
            )
            self._send_ack(ack)
            return ack
        ok, code, message = self._apply(cmd)
        self.state.record_command(
            AppliedCommand(cmd.command_id, ok, "applied" if ok else "failed", code, message)
        )
        profile = None
        if ok and isinstance(cmd, Deploy | Configure) and self._profile is not None:
            profile = self._profile(cmd.tenant.name)
        ack = Ack(
            command_id=cmd.command_id,
            device_id=self.device_id,
            ok=ok,
            result="applied" if ok else "failed",
            code=code,
            message=message,
            ts=time.time(),
            profile=profile,
        )
        self._send_ack(ack)
        return ack

    def _reject_unreadable(self, payload: bytes, exc: WireError) -> Ack | None:
        """A command that does not decode is answered "rejected" when its id and device can still be read
        (so its sender stops resending it and learns why); otherwise nobody can be answered. Nothing is
        recorded: the same id sent again, corrected, is applied."""
        try:
            raw = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(raw, dict):
            return None
        cid, device = raw.get("command_id"), raw.get("device_id")
        if not (isinstance(cid, str) and 0 < len(cid) <= MAX_ID_CHARS and device == self.device_id):
            return None
        try:
            ack = Ack(command_id=cid, device_id=self.device_id, ok=False, result="rejected", code=exc.code.value,
                      message=exc.message[:MAX_ID_CHARS * 4], ts=time.time())
        except (ValueError, TypeError):
            return None
        self._send_ack(ack)
        return ack

    def _apply(self, cmd: Command) -> tuple[bool, str, str]:
        try:
            if isinstance(cmd, Deploy):
                self._deploy(cmd.tenant)
                log.info("deployed %s (%s:%s, SLO %g ms)", cmd.tenant.name, cmd.tenant.model,
                         cmd.tenant.variant, cmd.tenant.slo_ms)
                return True, "", f"{cmd.tenant.name} serving {cmd.tenant.model}:{cmd.tenant.variant}"
            if isinstance(cmd, Undeploy):
                self._undeploy(cmd.tenant)
                log.info("undeployed %s", cmd.tenant)
                return True, "", f"{cmd.tenant} removed"
            if isinstance(cmd, Configure) and self._configure is not None:
                return True, "", self._configure(cmd.tenant)
        except DeployError as exc:
            return False, exc.code, exc.message
        except Exception as exc:
            log.exception("command %s failed", cmd.command_id)
            return False, "internal", f"{type(exc).__name__}: {exc}"
        return False, "unsupported", f"unsupported command {type(cmd).__name__}"

"""The agent's side of systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace)
and, with ``WatchdogSec=``, ``WATCHDOG_USEC``: the agent must then send ``WATCHDOG=1`` more often than
that, and pings at half of it. Outside systemd every call here does nothing and returns False; a failing
send is logged, never raised, because the agent must keep serving even if systemd's socket misbehaves.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | None:
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notify datagram (``KEY=VALUE`` lines); False when not under systemd or the send failed."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify %r to %r failed: %s", message.split("\n", 1)[0], address, exc)
        return False
    return True


def ready(status: str = "", env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``), with an optional status line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status ``systemctl status`` shows."""
    return notify(f"STATUS={text}", env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Keep the service watchdog from firing (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", env)


def stopping(status: str = "", env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a clean stop has begun (``STOPPING=1``)."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""), env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``; None without a watchdog, or when
    ``WATCHDOG_PID`` names another process."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = int(env.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2e6


def keep_alive(done: threading.Event, env: Mapping[str, str] | None = None) -> int:
    """Ping the watchdog every :func:`watchdog_interval` until ``done`` is set; returns the pings sent.

    Without a watchdog it just waits for ``done``.
    """
    interval = watchdog_interval(env)
    sent = 0
    while not done.wait(interval or 1.0):  # bounded waits keep signal handlers prompt
        if interval is not None:
            sent += watchdog(env)
    return sent

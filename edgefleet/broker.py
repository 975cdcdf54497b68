"""A Mosquitto broker of edgefleet's own, for ``edgefleet broker``, the demo, the benchmarks and the tests.

It writes its own config (never the system's) with the settings of the shipped config/mosquitto.conf
(a test keeps the two equal): no-delay, and queue limits set deliberately, because Mosquitto 2.0's
defaults (20 in flight, 1000 queued per client) silently drop QoS 1 messages for a slow subscriber.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "sudo apt-get install -y mosquitto   # Debian/Ubuntu: provides /usr/sbin/mosquitto (2.x)"


class BrokerUnavailable(RuntimeError):
    """No usable mosquitto binary, or it would not start. The message says what to run."""


def find_mosquitto() -> str:
    for cand in (os.environ.get("EDGEFLEET_MOSQUITTO"), shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BrokerUnavailable(f"mosquitto not found; install it with:\n  {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BrokerLimits:
    max_inflight_messages: int = 100  # per client, QoS 1/2 in flight towards it
    max_queued_messages: int = 100_000  # per client, beyond in-flight; past this QoS 1 is dropped
    max_packet_size: int = 16 * 1024 * 1024  # bytes, whole MQTT packet


def _authenticates(extra_config: str) -> bool:
    """Whether ``extra_config`` brings its own authentication (a password file or a security plugin)."""
    return any(line.split()[:1] in (["password_file"], ["plugin"]) for line in extra_config.splitlines())


class PrivateBroker:
    """Start with ``with PrivateBroker() as b:``; ``b.port`` is the port. ``restart()`` keeps the port."""

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        limits: BrokerLimits = BrokerLimits(),
        extra_config: str = "",
        persistence: bool = False,
        bind: str = "127.0.0.1",
    ) -> None:
        self.binary = find_mosquitto()
        self.bind = bind
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgefleet-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {bind}",
            "allow_anonymous false" if _authenticates(extra_config) else "allow_anonymous true",
            f"max_inflight_messages {limits.max_inflight_messages}",
            f"max_queued_messages {limits.max_queued_messages}",
            f"max_packet_size {limits.max_packet_size}",
            "set_tcp_nodelay true",  # request/response latency: no Nagle delay on small messages
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 60",
            "log_dest stderr",
            "log_type error",
            "log_type information",
            "log_type warning",
            "log_type notice",
            extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for measuring it), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` as ``$EDGEFLEET_MQTT_URL`` takes it (loopback when bound to all addresses)."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
        return f"mqtt://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed by the OS
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailable(
                    f"mosquitto exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            probe = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
            with contextlib.suppress(OSError), socket.create_connection((probe, self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

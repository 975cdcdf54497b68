"""Store-and-forward: telemetry and acks are written to SQLite first, then published in order.

The publisher thread (``ef-outbox``) sends the oldest rows with QoS 1 while the broker is reachable. An
ack row is deleted after its PUBACK. A telemetry row is kept until the coordinator confirms that its
database holds the window (``TelemetryAck`` on the command topic): a PUBACK only says the broker has it,
and a broker that dies before delivering would lose it. Unconfirmed telemetry is sent again after
``resend_after_s``, so delivery is at least once; the coordinator stores by (device, boot, seq) and
commands by id, which makes both once in effect. The outbox is bounded in bytes: past the bound the
oldest telemetry is dropped (and counted), acks never.
"""

from __future__ import annotations

import logging
import threading
import time

from edgefleet.agent.state import AgentState
from edgefleet.mqtt import MqttLink

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, state: AgentState, link: MqttLink, *, max_bytes: int, batch: int = 50,
                 resend_after_s: float = 15.0) -> None:
        self.state = state
        self.resend_after_s = resend_after_s  # telemetry not confirmed this long after its PUBACK goes again
        self.confirmed = 0
        self.link = link
        self.max_bytes = max_bytes
        self.batch = batch
        self.dropped = 0
        self.sent = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ef-outbox", daemon=True)

    def put(self, topic: str, payload: bytes, *, kind: str, boot_id: str | None = None,
            seq: int | None = None) -> None:
        self.state.enqueue(topic, payload, qos=1, retain=False, kind=kind, boot_id=boot_id, seq=seq)
        if kind == "telemetry":
            self.dropped += self.state.trim_outbox(self.max_bytes)
        self._wake.set()

    def confirm(self, boot_id: str, seqs: list[int]) -> None:
        """The coordinator stored these windows (called on the MQTT thread; one small SQLite delete)."""
        self.confirmed += self.state.confirmed(boot_id, seqs)

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_s: float = 2.0) -> None:
        if flush_s > 0 and self.link.connected:
            self._flush_once(timeout=flush_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.link.connected and self._flush_once(timeout=5.0):
                    pass
            except Exception:
                log.exception("outbox flush failed; will retry")

    def _flush_once(self, timeout: float) -> bool:
        """Publish one batch; True if a full batch went out (more may be waiting)."""
        rows = self.state.pending(self.batch, resend_before=time.time() - self.resend_after_s)
        if not rows:
            return False
        infos = [(r.id, self.link.publish(r.topic, r.payload, qos=r.qos, retain=r.retain)) for r in rows]
        done: list[int] = []
        for row_id, info in infos:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                break  # connection dropped: keep the rest for the next round
            if not info.is_published():
                break
            done.append(row_id)
        self.state.delivered(done)
        self.sent += len(done)
        return len(done) == len(rows) == self.batch

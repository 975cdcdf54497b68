"""Store-and-forward: telemetry and acks are written to SQLite first, then published in order.

The publisher thread (``ef-outbox``) sends the oldest rows with QoS 1 while the broker is reachable and
deletes each row only after its PUBACK. A row whose PUBACK never came is sent again later, so delivery
is at least once; receivers store by (device, boot, seq) and command id, which makes it once in effect.
The outbox is bounded in bytes: past the bound the oldest telemetry is dropped (and counted), acks never.
"""

from __future__ import annotations

import logging
import threading

from agent.state import AgentState
from edgefleet.mqtt import MqttLink

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, state: AgentState, link: MqttLink, *, max_bytes: int, batch: int = 50) -> None:
        self.state = state
        self.link = link
        self.max_bytes = max_bytes
        self.batch = batch
        self.dropped = 0
        self.sent = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ef-outbox", daemon=True)

    def put(self, topic: str, payload: bytes, *, kind: str) -> None:
        self.state.enqueue(topic, payload, qos=1, retain=False, kind=kind)
        if kind == "telemetry":
            self.dropped += self.state.trim_outbox(self.max_bytes)
        self._wake.set()

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
        rows = self.state.pending(self.batch)
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

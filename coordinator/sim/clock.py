"""The virtual clock: a heap of (time, sequence, action), popped in order; time jumps to each event.

A sequence number breaks ties so that events at the same instant run in the order they were scheduled,
which (with seeded randomness everywhere else) makes a whole simulation deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Action = Callable[[], None]


class EventQueue:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = 0
        self.processed = 0

    def clock(self) -> float:
        """The virtual time, in seconds: what the coordinator is given as its clock."""
        return self.now

    def at(self, when: float, action: Action) -> None:
        """Run ``action`` at virtual time ``when`` (never before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, action))

    def after(self, delay_s: float, action: Action) -> None:
        self.at(self.now + delay_s, action)

    def every(self, period_s: float, action: Action, *, first: float | None = None,
              until: Callable[[], bool] | None = None) -> None:
        """Run ``action`` every ``period_s`` from ``first`` (default: one period from now) while ``until``
        is not true."""

        def tick() -> None:
            if until is not None and until():
                return
            action()
            self.after(period_s, tick)

        self.at(self.now + period_s if first is None else first, tick)

    def run_until(self, end: float) -> None:
        """Process every event up to and including ``end``; the clock then reads ``end``."""
        while self._heap and self._heap[0][0] <= end:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
            self.processed += 1
        self.now = max(self.now, end)

    def __len__(self) -> int:
        return len(self._heap)

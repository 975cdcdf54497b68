"""Event rules of stream tenants, evaluated on each result's values: pure state machines, no I/O.

``Above`` (hysteresis between two levels) and ``TopChange`` (a new class that holds for some frames) turn
a flickering per-frame value into few, meaningful events. ``result_values`` says which values a result
has: ``{output}.max`` and ``{output}.argmax`` of every output tensor, and the numeric top-level fields
of the model's decoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.wire import Above, TopChange


def result_values(outputs: Mapping[str, np.ndarray], decoded: Mapping[str, Any]) -> dict[str, float]:
    """The values event rules read. Example: outputs {"scores": [[0.1, 0.7, 0.2]]} gives
    {"scores.max": 0.7, "scores.argmax": 1.0}; decoded {"faces": 2, "face_score_max": 0.93, "boxes": [..]}
    adds faces 2.0 and face_score_max 0.93 (lists are not values)."""
    values: dict[str, float] = {}
    for name, arr in outputs.items():
        flat = np.asarray(arr).reshape(-1)
        if flat.size == 0 or not np.issubdtype(flat.dtype, np.number):
            continue
        i = int(np.argmax(flat))
        top = float(flat[i])
        if math.isfinite(top):
            values[f"{name}.max"] = top
            values[f"{name}.argmax"] = float(i)
    for key, val in decoded.items():
        if isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val):
            values[key] = float(val)
    return values


@dataclass(frozen=True)
class Fired:
    """An event to publish: the rule, its new state, the value, and (TopChange) the class before."""

    rule: str
    state: str  # "on" | "off" | "change"
    value: float
    previous: float | None = None


class _AboveState:
    def __init__(self, rule: Above) -> None:
        self.rule = rule
        self.on = False

    def observe(self, values: Mapping[str, float]) -> Fired | None:
        # Example: on 0.7, off 0.5. Values 0.6, 0.72, 0.65, 0.55, 0.48 -> "on" at 0.72 (rose to 0.7),
        # nothing at 0.65 and 0.55 (still >= 0.5), "off" at 0.48.
        value = values.get(self.rule.value)
        if value is None:
            return None
        if not self.on and value >= self.rule.on:
            self.on = True
            return Fired(self.rule.name, "on", value)
        if self.on and value < self.rule.off_level:
            self.on = False
            return Fired(self.rule.name, "off", value)
        return None


class _TopChangeState:
    def __init__(self, rule: TopChange) -> None:
        self.rule = rule
        self.current: float | None = None  # the settled class (None: none yet)
        self.candidate: float | None = None
        self.count = 0

    def observe(self, values: Mapping[str, float]) -> Fired | None:
        # Example: hold 2. Classes 3, 3, 5, 3, 5, 5 -> "change" to 3 at the 2nd frame (from none), the
        # lone 5 is ignored, "change" 3 -> 5 at the 6th frame.
        value = values.get(self.rule.value)
        if value is None:
            return None
        if self.rule.score is not None and values.get(self.rule.score, -math.inf) < self.rule.min_score:
            self.candidate, self.count = None, 0
            return None
        if value == self.current:
            self.candidate, self.count = None, 0
            return None
        if value == self.candidate:
            self.count += 1
        else:
            self.candidate, self.count = value, 1
        if self.count >= self.rule.hold_frames:
            previous, self.current = self.current, value
            self.candidate, self.count = None, 0
            return Fired(self.rule.name, "change", value, previous)
        return None


class EventRules:
    """The rules of one stream tenant with their states; ``observe`` each result's values in order."""

    def __init__(self, rules: list[Above | TopChange]) -> None:
        self._states = [_AboveState(r) if isinstance(r, Above) else _TopChangeState(r) for r in rules]

    def __bool__(self) -> bool:
        return bool(self._states)

    def observe(self, values: Mapping[str, float]) -> list[Fired]:
        out = []
        for state in self._states:
            fired = state.observe(values)
            if fired is not None:
                out.append(fired)
        return out

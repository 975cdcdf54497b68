"""A deterministic stand-in runtime for tests and simulations of edge boxes without real models.

A fake model is a :class:`FakeModel`: input and output specs, a pure numpy function and a service
time (a fixed part plus a part per batch row, spent in ``time.sleep``, which releases the GIL: a
sleeping session holds no core and blocks no other thread). Models are given to :class:`FakeRuntime`
in its constructor, keyed by the path that ``open`` will be asked for, or described in a small JSON
file that ``open`` reads::

    {"inputs":  [{"name": "x", "dtype": "float32", "shape": [null, 4]}],
     "outputs": [{"name": "y", "dtype": "float32", "shape": [null, 1]}],
     "function": "sum", "service_time_s": 0.005, "per_row_s": 0.001, "memory_bytes": 1048576,
     "processor": "tpu", "servers": 1, "switch_s": 0.003}

Built-in functions: ``identity`` (each output is the input of the same position, cast), ``sum`` (the
per-row sum of the first input, broadcast into every output) and ``zeros``.

``processor`` (optional) names a simulated processor shared by every session of this process that
names it: at most ``servers`` runs occupy it at once (the others wait inside ``run``, as they would
for a busy accelerator), and a run whose predecessor on it was another model file first pays
``switch_s`` (an Edge TPU reloading parameters). ``runtime`` (optional) names the real runtime the fake
plays: its sessions then declare that runtime's capabilities (a LiteRT stand-in is not re-entrant and
does not batch), so everything around the session behaves as it would for the real one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.runtime.base import (
    DEFAULT_OPTIONS,
    FAKE_CAPABILITIES,
    Capabilities,
    Feeds,
    Outputs,
    SessionOptions,
    TensorSpec,
    capabilities_of,
    check_feeds,
)
from edgefleet.runtime.errors import ModelLoadError, SessionClosed

NAME = "fake"

FakeFunction = Callable[[Feeds, tuple[TensorSpec, ...]], Outputs]


def _out_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return tuple(
        batch if (i == 0 and d is None) else (d if d is not None else 1) for i, d in enumerate(spec.shape)
    )


def _batch(feeds: Feeds) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def identity(feeds: Feeds, outputs: tuple[TensorSpec, ...]) -> Outputs:
    values = list(feeds.values())
    return {
        spec.name: values[i % len(values)].astype(spec.dtype, copy=True) for i, spec in enumerate(outputs)
    }


def row_sum(feeds: Feeds, outputs: tuple[TensorSpec, ...]) -> Outputs:
    first = next(iter(feeds.values()))
    batch = _batch(feeds)
    sums = first.reshape(batch, -1).astype(np.float64).sum(axis=1)
    result: Outputs = {}
    for spec in outputs:
        shape = _out_shape(spec, batch)
        result[spec.name] = np.broadcast_to(sums.reshape((batch,) + (1,) * (len(shape) - 1)), shape).astype(
            spec.dtype
        )
    return result


def zeros(feeds: Feeds, outputs: tuple[TensorSpec, ...]) -> Outputs:
    batch = _batch(feeds)
    return {spec.name: np.zeros(_out_shape(spec, batch), dtype=spec.dtype) for spec in outputs}


FUNCTIONS: dict[str, FakeFunction] = {"identity": identity, "sum": row_sum, "zeros": zeros}


def _sleep(seconds: float) -> None:
    """Spend a service time; ``time.sleep`` releases the GIL, so other threads run meanwhile."""
    if seconds > 0:
        time.sleep(seconds)


@dataclass(frozen=True)
class FakeModel:
    """What a fake session serves: specs, a pure function of the feeds and a service time."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    function: FakeFunction = field(default=row_sum)
    service_time_s: float = 0.0
    per_row_s: float = 0.0
    memory_bytes: int = 1 << 20
    processor: str = ""  # simulated processor shared by the sessions that name it; "" none
    servers: int = 1  # runs the processor takes at once
    switch_s: float = 0.0  # paid by a run whose predecessor on the processor was another model
    plays: str = ""  # the real runtime this fake stands in for ("" none: the fake's own capabilities)

    @property
    def capabilities(self) -> Capabilities:
        return capabilities_of(self.plays) if self.plays else FAKE_CAPABILITIES

    def __post_init__(self) -> None:
        if min(self.service_time_s, self.per_row_s, self.switch_s) < 0.0 or self.servers < 1:
            raise ValueError("fake model times must be >= 0 s and servers >= 1")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FakeModel:
        """Build a model from the JSON description documented in this module."""

        def specs(key: str) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(
                    str(s["name"]), str(s["dtype"]), tuple(None if d is None else int(d) for d in s["shape"])
                )
                for s in data[key]
            )

        name = str(data.get("function", "sum"))
        if name not in FUNCTIONS:
            raise ValueError(f"unknown fake function {name!r}; choose from {sorted(FUNCTIONS)}")
        return cls(
            inputs=specs("inputs"),
            outputs=specs("outputs"),
            function=FUNCTIONS[name],
            service_time_s=float(data.get("service_time_s", 0.0)),
            per_row_s=float(data.get("per_row_s", 0.0)),
            memory_bytes=int(data.get("memory_bytes", 1 << 20)),
            processor=str(data.get("processor", "")),
            servers=int(data.get("servers", 1)),
            switch_s=float(data.get("switch_s", 0.0)),
            plays=str(data.get("runtime", "")),
        )


class _Processor:
    """A simulated processor: ``servers`` runs at once, and which model file ran on it last."""

    def __init__(self, servers: int) -> None:
        self.slots = threading.BoundedSemaphore(servers)
        self.lock = threading.Lock()
        self.last: Path | None = None


_PROCESSORS: dict[str, _Processor] = {}
_PROCESSORS_LOCK = threading.Lock()


def _processor(name: str, servers: int) -> _Processor:
    """The process-wide processor ``name``; the first session that names it sets its servers."""
    with _PROCESSORS_LOCK:
        proc = _PROCESSORS.get(name)
        if proc is None:
            proc = _PROCESSORS[name] = _Processor(servers)
        return proc


class FakeSession:
    """A loaded fake model; validates feeds exactly like the real runtimes do."""

    runtime = NAME

    def __init__(self, model: FakeModel, path: Path) -> None:
        self.model = model
        self.path = path
        self.inputs = model.inputs
        self.outputs = model.outputs
        self.memory_bytes = model.memory_bytes
        self.capabilities = model.capabilities
        self.calls = 0
        self._lock = threading.Lock()
        self._closed = False
        self._proc = _processor(model.processor, model.servers) if model.processor else None

    def run(self, feeds: Feeds) -> Outputs:
        if self._closed:
            raise SessionClosed(f"session for {self.path} is closed")
        batch = check_feeds(self.inputs, feeds, loose_batch=self.capabilities.loose_batch_axis)
        with self._lock:
            self.calls += 1
        delay = self.model.service_time_s + self.model.per_row_s * batch
        if self._proc is None:
            _sleep(delay)
        else:
            with self._proc.slots:  # wait for the processor as for a busy accelerator
                with self._proc.lock:
                    switched = self._proc.last is not None and self._proc.last != self.path
                    self._proc.last = self.path
                _sleep(delay + (self.model.switch_s if switched else 0.0))
        return self.model.function(feeds, self.outputs)

    def close(self) -> None:
        self._closed = True


class FakeRuntime:
    """Opens fake models given in the constructor (keyed by path) or described by a JSON file."""

    name = NAME

    def __init__(self, models: Mapping[str | Path, FakeModel] | None = None) -> None:
        self._models = {str(k): v for k, v in (models or {}).items()}
        self.opened: list[Path] = []

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> FakeSession:
        path = Path(path)
        model = self._models.get(str(path))
        if model is None:
            try:
                model = FakeModel.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelLoadError(f"fake runtime could not load {path}: {exc}") from exc
        self.opened.append(path)
        return FakeSession(model, path)


def describe(model: FakeModel, function: str = "sum") -> dict[str, Any]:
    """The JSON description of ``model`` (with ``function`` named), the inverse of ``from_json``."""

    def specs(items: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in items]

    return {
        "inputs": specs(model.inputs),
        "outputs": specs(model.outputs),
        "function": function,
        "service_time_s": model.service_time_s,
        "per_row_s": model.per_row_s,
        "memory_bytes": model.memory_bytes,
        "processor": model.processor,
        "servers": model.servers,
        "switch_s": model.switch_s,
        **({"runtime": model.plays} if model.plays else {}),
    }

"""Types of the runtime seam: what a loaded model looks like to the rest of edgefleet.

A runtime is one method wide (``open``) and a session two (``run``, ``close``), in the spirit of an
HTTP client's transport: ONNX Runtime, LiteRT and a fake implement the same protocol so that the agent,
benchmarks and tests never import a vendor package directly. Feed validation lives here too, so every
runtime rejects bad requests the same way and before any vendor code runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from edgefleet.runtime.errors import InputError

Array = npt.NDArray[np.generic]
Feeds = Mapping[str, Array]
Outputs = dict[str, Array]

CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: numpy dtype name and shape, ``None`` for a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclass(frozen=True)
class SessionOptions:
    """How to open one session: intra-op threads, and ONNX Runtime execution providers in order."""

    threads: int = 1
    providers: tuple[str, ...] = field(default=(CPU_PROVIDER,))

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


DEFAULT_OPTIONS = SessionOptions()


@dataclass(frozen=True)
class Capabilities:
    """What a session can do, declared by its runtime, read by every policy instead of runtime names.

    ``reentrant``: several threads may run it at once (ONNX Runtime); LiteRT and Edge TPU interpreters
    are not, so a second worker on the same tenant would only wait for the first.
    ``batches``: requests may be stacked into one run along a learnt batch axis (shapes are dynamic);
    LiteRT and Edge TPU models here have fixed shapes and are never batched.
    ``loose_batch_axis``: a fixed leading dimension of 1 accepts any number of rows, which the session
    runs one by one (``check_feeds(loose_batch=True)``).
    """

    reentrant: bool
    batches: bool
    loose_batch_axis: bool


ONNX_CAPABILITIES = Capabilities(reentrant=True, batches=True, loose_batch_axis=False)
TFLITE_CAPABILITIES = Capabilities(reentrant=False, batches=False, loose_batch_axis=True)
FAKE_CAPABILITIES = Capabilities(reentrant=True, batches=True, loose_batch_axis=False)
# by runtime name, for those that know a tenant only by its runtime (the coordinator's rebalancer)
RUNTIME_CAPABILITIES: dict[str, Capabilities] = {
    "onnxruntime": ONNX_CAPABILITIES,
    "litert": TFLITE_CAPABILITIES,
    "edgetpu": TFLITE_CAPABILITIES,
    "fake": FAKE_CAPABILITIES,
}
UNKNOWN_CAPABILITIES = Capabilities(reentrant=False, batches=False, loose_batch_axis=False)


def capabilities_of(runtime: str) -> Capabilities:
    """The capabilities sessions of ``runtime`` declare; the most cautious ones for an unknown name."""
    return RUNTIME_CAPABILITIES.get(runtime, UNKNOWN_CAPABILITIES)


@runtime_checkable
class Session(Protocol):
    """One loaded model."""

    runtime: str
    capabilities: Capabilities
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    memory_bytes: int

    def run(self, feeds: Feeds) -> Outputs: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """Something that turns a model file into a :class:`Session`."""

    name: str

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> Session: ...


@functools.cache
def _dtype(name: str) -> np.dtype[Any] | None:
    """The numpy dtype named ``name`` (compared as objects: faster than comparing names); None when
    numpy has no such dtype."""
    try:
        return np.dtype(name)
    except TypeError:
        return None


def check_feeds(specs: tuple[TensorSpec, ...], feeds: Feeds, *, loose_batch: bool = False) -> int:
    """Validate ``feeds`` against ``specs`` and return the batch size (first dimension, 1 for scalars).

    With ``loose_batch`` a fixed first dimension of 1 accepts any batch >= 1 (runtimes that loop rows).
    Raises :class:`InputError` with code bad_input, bad_dtype or bad_shape naming the input.
    """
    expected = {s.name for s in specs}
    got = set(feeds)
    missing = sorted(expected - got)
    extra = sorted(got - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unexpected input(s) {extra}")
        raise InputError(f"{'; '.join(parts)}; the model expects {sorted(expected)}", code="bad_input")
    batches: set[int] = set()
    for spec in specs:
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise InputError(
                f"input {spec.name!r}: expected a numpy array of {spec.describe()}, "
                f"got {type(value).__name__}",
                code="bad_input",
            )
        if value.dtype != _dtype(spec.dtype) and value.dtype.name != spec.dtype:
            raise InputError(
                f"input {spec.name!r}: expected dtype {spec.dtype}, got {value.dtype.name}", code="bad_dtype"
            )
        if value.ndim != len(spec.shape):
            raise _shape_error(spec, value)
        for axis, (want, have) in enumerate(zip(spec.shape, value.shape, strict=True)):
            if want is None or want == have:
                continue
            if axis == 0 and loose_batch and want == 1 and have >= 1:
                continue
            raise _shape_error(spec, value)
        if loose_batch and value.ndim > 0 and spec.shape[0] == 1:
            batches.add(int(value.shape[0]))
    if len(batches) > 1:
        raise InputError(f"inputs disagree on batch size: {sorted(batches)}", code="bad_shape")
    if batches:
        return batches.pop()
    leading = [int(feeds[s.name].shape[0]) for s in specs if feeds[s.name].ndim > 0]
    return leading[0] if leading else 1


def _shape_error(spec: TensorSpec, value: Array) -> InputError:
    return InputError(
        f"input {spec.name!r}: expected shape {spec.describe()}, got {list(value.shape)}", code="bad_shape"
    )


T = TypeVar("T")


def measure_load(path: Path, load: Callable[[], T]) -> tuple[T, int]:
    """Call ``load`` and return its result with the bytes it made this process hold.

    The figure is the growth of resident memory around the call, never less than the model file's size
    (allocator reuse can hide a load entirely).
    """
    import psutil

    floor = os.path.getsize(path)
    proc = psutil.Process()
    before = int(proc.memory_info().rss)
    result = load()
    after = int(proc.memory_info().rss)
    return result, max(after - before, floor)

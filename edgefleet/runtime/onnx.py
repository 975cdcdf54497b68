"""ONNX Runtime behind the runtime seam.

Sessions run single-stream by default (one intra-op thread, no inter-op parallelism, no spinning) because
an edge box shares its cores between many tenants' models; the scheduler decides parallelism, not ORT.
``onnxruntime`` is imported only when a session is opened, so that machines without it still import
edgefleet.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from edgefleet.runtime.base import (
    CPU_PROVIDER,
    DEFAULT_OPTIONS,
    ONNX_CAPABILITIES,
    Feeds,
    Outputs,
    SessionOptions,
    TensorSpec,
    check_feeds,
    measure_load,
)
from edgefleet.runtime.errors import InferenceFailed, ModelLoadError, RuntimeMissing, SessionClosed
from edgefleet.runtime.providers import probe_providers, provider_entries

NAME = "onnxruntime"

# ONNX Runtime's type strings mapped to numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime or raise :class:`RuntimeMissing` naming the pip extra."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissing(NAME, "onnx") from exc
    return cast(ModuleType, onnxruntime)


def vendor_errors(ort: ModuleType) -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises from ``run``: its pybind11 errors plus the builtins it uses."""
    found: list[type[BaseException]] = [RuntimeError, ValueError]
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - layout of very old releases
        return tuple(found)
    for value in vars(state).values():
        if isinstance(value, type) and issubclass(value, Exception):
            found.append(value)
    return tuple(found)


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_DTYPES.get(str(arg.type), str(arg.type))
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(name=str(arg.name), dtype=dtype, shape=shape)


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Keep the requested providers this build offers, in order, with the CPU provider always last."""
    chosen = [p for p in requested if p in available and p != CPU_PROVIDER]
    return [*dict.fromkeys(chosen), CPU_PROVIDER]


class OnnxSession:
    """One model loaded in an ``onnxruntime.InferenceSession``."""

    runtime = NAME
    capabilities = ONNX_CAPABILITIES

    def __init__(self, path: Path, options: SessionOptions) -> None:
        ort = import_onnxruntime()
        self._errors = vendor_errors(ort)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = options.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 4  # failures reach callers as exceptions; keep stderr for the agent
        # only providers proven by a real run here; ``self.providers`` below is what the session uses
        providers = provider_entries(probe_providers(options.providers, ort=ort))
        if not Path(path).is_file():
            raise ModelLoadError(f"cannot load {path}: no such file")
        try:
            self._session, self.memory_bytes = measure_load(
                path, lambda: ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            )
        except self._errors as exc:
            raise ModelLoadError(f"onnxruntime could not load {path.name}: {exc}") from exc
        self.path = path
        self.label = f"{path.parent.name}/{path.name}"
        self.providers = tuple(self._session.get_providers())
        self.inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self._closed = threading.Event()

    def run(self, feeds: Feeds) -> Outputs:
        if self._closed.is_set():
            raise SessionClosed(f"session for {self.path.name} is closed")
        check_feeds(self.inputs, feeds)
        try:
            values = self._session.run(self._output_names, dict(feeds))
        except self._errors as exc:
            raise InferenceFailed(f"onnxruntime failed running {self.label}: {exc}") from exc
        return {name: np.asarray(v) for name, v in zip(self._output_names, values, strict=True)}

    def close(self) -> None:
        self._closed.set()
        self._session = None


class OnnxRuntime:
    """Opens ``.onnx`` files with ONNX Runtime."""

    name = NAME

    def __init__(self) -> None:
        import_onnxruntime()

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> OnnxSession:
        return OnnxSession(Path(path), options)

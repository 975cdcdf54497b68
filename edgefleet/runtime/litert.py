"""LiteRT (TensorFlow Lite) behind the runtime seam.

LiteRT interpreters have fixed shapes, usually a batch of one, and are not re-entrant. This session
serialises ``run`` with a lock and, when a caller sends a batch larger than the model's batch of one,
runs the rows one by one and stacks the outputs, so that the scheduler can batch every model the same
way. ``ai_edge_litert`` is preferred; ``tflite_runtime`` is used only where it is absent.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.runtime.base import (
    DEFAULT_OPTIONS,
    Feeds,
    Outputs,
    SessionOptions,
    TensorSpec,
    check_feeds,
    measure_load,
)
from edgefleet.runtime.errors import InferenceFailed, ModelLoadError, RuntimeMissing, SessionClosed

NAME = "litert"


def interpreter_class() -> Any:
    """The LiteRT ``Interpreter`` class, or :class:`RuntimeMissing` naming the pip extra."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeMissing(NAME, "litert") from exc
    return Interpreter


def _spec(detail: dict[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(int(d) if int(d) >= 0 else None for d in dims)
    return TensorSpec(name=str(detail["name"]), dtype=np.dtype(detail["dtype"]).name, shape=shape)


class LiteRTSession:
    """One model loaded in a LiteRT interpreter."""

    runtime = NAME

    def __init__(self, path: Path, options: SessionOptions) -> None:
        interpreter = interpreter_class()
        if not path.is_file():
            raise ModelLoadError(f"cannot load {path}: no such file")

        def load() -> Any:
            it = interpreter(model_path=str(path), num_threads=options.threads)
            it.allocate_tensors()
            return it

        try:
            self._interp, self.memory_bytes = measure_load(path, load)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"LiteRT could not load {path.name}: {exc}") from exc
        self.path = path
        in_details = self._interp.get_input_details()
        out_details = self._interp.get_output_details()
        self.inputs = tuple(_spec(d) for d in in_details)
        self.outputs = tuple(_spec(d) for d in out_details)
        self._in_index = {str(d["name"]): int(d["index"]) for d in in_details}
        self._out_index = [(str(d["name"]), int(d["index"])) for d in out_details]
        self._lock = threading.Lock()
        self._closed = False

    def _invoke(self, feeds: Feeds) -> Outputs:
        for name, value in feeds.items():
            self._interp.set_tensor(self._in_index[name], np.ascontiguousarray(value))
        self._interp.invoke()
        return {name: np.array(self._interp.get_tensor(index)) for name, index in self._out_index}

    def run(self, feeds: Feeds) -> Outputs:
        batch = check_feeds(self.inputs, feeds, loose_batch=True)
        batched = {s.name for s in self.inputs if s.shape[:1] == (1,)}
        with self._lock:
            if self._closed:
                raise SessionClosed(f"session for {self.path.name} is closed")
            try:
                if batch == 1:
                    return self._invoke(feeds)
                rows = [
                    self._invoke({k: (v[i : i + 1] if k in batched else v) for k, v in feeds.items()})
                    for i in range(batch)
                ]
            except (ValueError, RuntimeError) as exc:
                raise InferenceFailed(f"LiteRT failed running {self.path.name}: {exc}") from exc
        return {name: np.concatenate([r[name] for r in rows], axis=0) for name, _ in self._out_index}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._interp = None


class LiteRTRuntime:
    """Opens ``.tflite`` files with LiteRT."""

    name = NAME

    def __init__(self) -> None:
        interpreter_class()

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> LiteRTSession:
        return LiteRTSession(Path(path), options)

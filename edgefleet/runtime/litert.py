"""LiteRT (TensorFlow Lite) behind the runtime seam.

LiteRT interpreters have fixed shapes, usually a batch of one, and are not re-entrant; the run loop
(a lock, rows one by one) is ``edgefleet.runtime.tflite.TFLiteSession``, shared with the Edge TPU. ``ai_edge_litert`` is preferred; ``tflite_runtime`` is used only where it is absent.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from edgefleet.runtime.base import DEFAULT_OPTIONS, SessionOptions, measure_load
from edgefleet.runtime.errors import ModelLoadError, RuntimeMissing
from edgefleet.runtime.tflite import TFLiteSession

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


class LiteRTSession(TFLiteSession):
    """One model loaded in a LiteRT interpreter (the run loop is ``TFLiteSession``'s)."""

    runtime = NAME
    failure = "LiteRT"

    def __init__(self, path: Path, options: SessionOptions) -> None:
        interpreter = interpreter_class()
        if not path.is_file():
            raise ModelLoadError(f"cannot load {path}: no such file")

        def load() -> Any:
            it = interpreter(model_path=str(path), num_threads=options.threads)
            it.allocate_tensors()
            return it

        try:
            interp, self.memory_bytes = measure_load(path, load)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"LiteRT could not load {path.name}: {exc}") from exc
        self.path = path
        self._attach(interp, threading.Lock())


class LiteRTRuntime:
    """Opens ``.tflite`` files with LiteRT."""

    name = NAME

    def __init__(self) -> None:
        interpreter_class()

    def open(self, path: Path, options: SessionOptions = DEFAULT_OPTIONS) -> LiteRTSession:
        return LiteRTSession(Path(path), options)

"""Which runtimes this machine has, and the one to use for a name or a model file.

Probing imports the vendor package once per process; the result is cached because agents ask often
(every capability report) and imports never change during a process's life.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from edgefleet.runtime.base import Runtime
from edgefleet.runtime.errors import RuntimeMissing, UnknownRuntime

RUNTIME_NAMES = ("onnxruntime", "litert", "edgetpu", "fake")
_SUFFIXES = {".onnx": "onnxruntime", ".tflite": "litert", ".json": "fake"}
_EDGETPU_SUFFIX = "_edgetpu.tflite"  # compiled for the Edge TPU; the plain .tflite rule must not catch it


def _factory(name: str) -> Callable[[], Runtime]:
    if name == "onnxruntime":
        from edgefleet.runtime.onnx import OnnxRuntime

        return OnnxRuntime
    if name == "litert":
        from edgefleet.runtime.litert import LiteRTRuntime

        return LiteRTRuntime
    if name == "edgetpu":
        from edgefleet.runtime.edgetpu import EdgeTpuRuntime

        return EdgeTpuRuntime
    if name == "fake":
        from edgefleet.runtime.fake import FakeRuntime

        return FakeRuntime
    raise UnknownRuntime(f"unknown runtime {name!r}; known runtimes are {', '.join(RUNTIME_NAMES)}")


@functools.cache
def _importable(name: str) -> bool:
    try:
        _factory(name)()
    except RuntimeMissing:
        return False
    return True


def available_runtimes() -> list[str]:
    """Names of the runtimes whose packages import on this machine, ``fake`` always included."""
    return [name for name in RUNTIME_NAMES if _importable(name)]


def get_runtime(name: str) -> Runtime:
    """A runtime by name; :class:`UnknownRuntime` for a name edgefleet does not know and
    :class:`RuntimeMissing` (naming the pip extra) when its package is not installed."""
    return _factory(name)()


def runtime_for_file(path: str | Path) -> str:
    """The runtime that opens a model file, from its suffix (``.onnx``, ``.tflite``, ``_edgetpu.tflite``,
    ``.json`` for fake)."""
    if Path(path).name.lower().endswith(_EDGETPU_SUFFIX):
        return "edgetpu"
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise UnknownRuntime(
            f"no runtime opens {Path(path).name!r}: expected one of {', '.join(sorted(_SUFFIXES))}"
        ) from None

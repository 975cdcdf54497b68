"""The runtime seam: one narrow interface over ONNX Runtime, LiteRT and a fake.

Everything else in edgefleet loads and runs models through :func:`get_runtime` and the
:class:`Session` protocol, never through a vendor package, so that vendor errors, threading rules and
input validation are handled once, here.
"""

from edgefleet.runtime.base import (
    Capabilities,
    Runtime,
    Session,
    SessionOptions,
    TensorSpec,
    capabilities_of,
    check_feeds,
)
from edgefleet.runtime.errors import (
    EdgeRuntimeError,
    InferenceFailed,
    InputError,
    ModelLoadError,
    RuntimeMissing,
    SessionClosed,
    UnknownRuntime,
)
from edgefleet.runtime.fake import FakeModel, FakeRuntime
from edgefleet.runtime.registry import available_runtimes, get_runtime, runtime_for_file

__all__ = [
    "Capabilities",
    "EdgeRuntimeError",
    "FakeModel",
    "FakeRuntime",
    "InferenceFailed",
    "InputError",
    "ModelLoadError",
    "Runtime",
    "RuntimeMissing",
    "Session",
    "SessionClosed",
    "SessionOptions",
    "TensorSpec",
    "UnknownRuntime",
    "available_runtimes",
    "capabilities_of",
    "check_feeds",
    "get_runtime",
    "runtime_for_file",
]

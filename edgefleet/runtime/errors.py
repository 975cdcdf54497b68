"""Errors raised by the runtime seam, so callers never see a vendor's exception types.

Every error carries a short machine-readable ``code`` that the agent puts on the wire; the message is
for people. Vendor exceptions are translated at the boundary of each runtime module.
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base of every error the runtime seam raises."""

    code: str = "runtime_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(EdgeRuntimeError, ValueError):
    """A feed does not match the model's input specs; ``code`` is bad_shape, bad_dtype or bad_input."""

    code = "bad_input"


class InferenceFailed(EdgeRuntimeError):
    """The vendor runtime raised while running a model on valid-looking feeds."""

    code = "model_failed"


class ModelLoadError(EdgeRuntimeError):
    """The vendor runtime could not load a model file."""

    code = "model_load_failed"


class SessionClosed(EdgeRuntimeError):
    """``run`` was called on a session after ``close``."""

    code = "session_closed"


class UnknownRuntime(EdgeRuntimeError, ValueError):
    """A runtime name that edgefleet does not know."""

    code = "unknown_runtime"


class RuntimeMissing(EdgeRuntimeError, ImportError):
    """The Python package behind a runtime is not installed; the message names the pip extra."""

    code = "runtime_missing"

    def __init__(self, runtime: str, extra: str) -> None:
        super().__init__(
            f"the {runtime} runtime is not installed on this machine: pip install 'edgefleet[{extra}]'"
        )
        self.runtime = runtime
        self.extra = extra

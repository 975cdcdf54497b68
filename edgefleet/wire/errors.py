"""Error codes that cross the wire, and the one exception type the codec raises.

Every failure that reaches a requester carries one of these codes and a human message. The codes are
part of the contract (docs/protocol.md lists them); callers branch on the code, never on the text.
"""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """What went wrong, from the point of view of what the caller can do about it."""

    # The request itself is wrong: fix it, do not retry as is.
    BAD_REQUEST = "bad_request"  # malformed frame, header or JSON
    BAD_SHAPE = "bad_shape"  # tensor shape does not match the model's input
    BAD_DTYPE = "bad_dtype"  # tensor dtype does not match the model's input
    PAYLOAD_TOO_LARGE = "payload_too_large"  # over the device's max_payload_bytes
    UNSUPPORTED_VERSION = "unsupported_version"  # frame or message version this peer does not speak
    UNKNOWN_TENANT = "unknown_tenant"  # no such tenant on the device that received the request
    FIDELITY_UNAVAILABLE = "fidelity_unavailable"  # no resident variant meets the requested fidelity
    BUDGET_EXPIRED = "budget_expired"  # the request's timeout_ms was spent before it could be queued
    # The system could not serve it in time: retry later or elsewhere.
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the request's deadline passed before a result existed
    OVERLOADED = "overloaded"  # shed at admission: the queue could not meet the deadline
    NOT_READY = "not_ready"  # tenant is being loaded or moved
    # The model or the device failed.
    MODEL_FAILED = "model_failed"  # the runtime raised while running the model
    INTERNAL = "internal"  # a bug in edgefleet; the message says where

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (or on another replica)."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorCode.DEADLINE_EXCEEDED, ErrorCode.OVERLOADED, ErrorCode.NOT_READY})


class WireError(ValueError):
    """A payload or topic that does not follow the contract. ``code`` says which rule it broke."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"WireError({self.code.value!r}, {self.message!r})"

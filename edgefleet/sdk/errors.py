"""Typed exceptions for callers of a tenant, one class per thing the caller can do about a failure.

A device answers a failed request with an EFT1 error frame whose ``code`` is an ErrorCode. Apps branch
on exception classes (``except Overloaded: back off``) rather than on codes or message text, so every
code maps to exactly one class here, and ``.retryable`` says whether the same request may succeed later.
Failures the client sees by itself (no answer in time, no broker) have their own classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from edgefleet.wire import ErrorCode, ErrorFrame, WireError


class InferenceError(Exception):
    """A call to a tenant failed. ``code`` says why; ``message`` is the human explanation."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        tenant: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.tenant = tenant
        self.meta: dict[str, Any] = dict(meta or {})
        device = self.meta.get("device")
        self.device: str | None = device if isinstance(device, str) else None
        where = f"tenant {tenant!r}" if tenant else "request"
        if self.device:
            where += f" on device {self.device!r}"
        super().__init__(f"{where}: {code.value}: {message}")

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later or on another replica."""
        return self.code.retryable


class BadRequest(InferenceError, ValueError):
    """The request is wrong (frame, shape, dtype, size, version, tenant name, a budget too short to even
    queue it): fix it, do not retry."""


class UnknownTenant(InferenceError):
    """The device that received the request does not host this tenant."""


class FidelityUnavailable(InferenceError):
    """No variant resident on the device meets the requested ``min_fidelity``."""


class DeadlineExceeded(InferenceError):
    """The device could not produce a result before the request's deadline. Retryable."""


class Overloaded(InferenceError):
    """The device shed the request at admission: its queue could not meet the deadline. Back off."""


class NotReady(InferenceError):
    """The tenant is being loaded or moved. Retry shortly."""


class ModelFailed(InferenceError):
    """The runtime raised while running the model on these inputs."""


class InternalError(InferenceError):
    """A bug in edgefleet, on the device or in a reply this client could not understand."""


class NoReply(InferenceError):
    """No device answered within the caller's timeout (nothing deployed, device gone, or too slow)."""

    def __init__(self, tenant: str, timeout_s: float) -> None:
        super().__init__(
            ErrorCode.DEADLINE_EXCEEDED,
            f"no device answered tenant {tenant!r} within {timeout_s:g} s; is it deployed?",
            tenant=tenant,
        )
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return self.message


class BrokerUnavailable(ConnectionError):
    """The MQTT broker could not be reached (or the connection was lost) within the connect timeout."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(f"MQTT broker {host}:{port} unavailable: {detail}")
        self.host = host
        self.port = port


class ClientClosed(RuntimeError):
    """The client was used before it was opened or after it was closed."""


_CLASSES: dict[ErrorCode, type[InferenceError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.BAD_SHAPE: BadRequest,
    ErrorCode.BAD_DTYPE: BadRequest,
    ErrorCode.PAYLOAD_TOO_LARGE: BadRequest,
    ErrorCode.UNSUPPORTED_VERSION: BadRequest,
    ErrorCode.BUDGET_EXPIRED: BadRequest,
    ErrorCode.UNKNOWN_TENANT: UnknownTenant,
    ErrorCode.FIDELITY_UNAVAILABLE: FidelityUnavailable,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorCode.OVERLOADED: Overloaded,
    ErrorCode.NOT_READY: NotReady,
    ErrorCode.MODEL_FAILED: ModelFailed,
    ErrorCode.INTERNAL: InternalError,
}


def exception_class(code: ErrorCode) -> type[InferenceError]:
    """The exception class a caller sees for ``code``."""
    return _CLASSES.get(code, InternalError)


def error_for(
    code: ErrorCode, message: str, *, tenant: str | None = None, meta: Mapping[str, Any] | None = None
) -> InferenceError:
    """Build the exception for ``code`` (without raising it)."""
    return exception_class(code)(code, message, tenant=tenant, meta=meta)


def from_wire_error(exc: WireError, *, tenant: str | None = None) -> InferenceError:
    """The exception for a WireError raised while validating or decoding on the client side."""
    return error_for(exc.code, exc.message, tenant=tenant)


def raise_for(frame: ErrorFrame, *, tenant: str | None = None) -> NoReturn:
    """Raise the exception that ``frame`` (an EFT1 error frame from a device) stands for."""
    raise error_for(frame.code, frame.message, tenant=tenant, meta=frame.meta)

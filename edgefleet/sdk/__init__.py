"""The SDK apps use to call a tenant's model by name, without knowing which edge box answers.

``InferenceClient`` blocks, ``AsyncInferenceClient`` awaits; both speak the protocol in
docs/protocol.md (EFT1 frames over MQTT 5 request/response) and raise the typed errors below.
"""

from edgefleet.sdk._core import Result
from edgefleet.sdk.aio import AsyncInferenceClient
from edgefleet.sdk.client import InferenceClient
from edgefleet.sdk.errors import (
    BadRequest,
    BrokerUnavailable,
    ClientClosed,
    DeadlineExceeded,
    FidelityUnavailable,
    InferenceError,
    InternalError,
    ModelFailed,
    NoReply,
    NotReady,
    Overloaded,
    UnknownTenant,
    error_for,
    exception_class,
    raise_for,
)

__all__ = [
    "AsyncInferenceClient",
    "BadRequest",
    "BrokerUnavailable",
    "ClientClosed",
    "DeadlineExceeded",
    "FidelityUnavailable",
    "InferenceClient",
    "InferenceError",
    "InternalError",
    "ModelFailed",
    "NoReply",
    "NotReady",
    "Overloaded",
    "Result",
    "UnknownTenant",
    "error_for",
    "exception_class",
    "raise_for",
]

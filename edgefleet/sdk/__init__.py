"""The SDK apps use to call a tenant's model by name, without knowing which edge box answers.

``InferenceClient`` blocks, ``AsyncInferenceClient`` awaits; both speak the protocol in
docs/protocol.md (EFT1 frames over MQTT 5 request/response) and raise the typed errors below. Both
``subscribe`` to stream tenants' results and events (``Subscription``, ``AsyncSubscription``).
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
from edgefleet.sdk.stream import AsyncSubscription, StreamUpdate, Subscription

__all__ = [
    "AsyncInferenceClient",
    "AsyncSubscription",
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
    "StreamUpdate",
    "Subscription",
    "UnknownTenant",
    "error_for",
    "exception_class",
    "raise_for",
]

"""The wire contract: topic tree, typed versioned messages, the tensor frame and the codec.

Agent, coordinator, SDK and operator tools all import this package; it imports none of them and no
transport (no paho), so it can be read, tested and ported on its own. docs/protocol.md describes the
same contract for people who write apps in other languages.
"""

from edgefleet.wire.codec import (
    WIRE_VERSION,
    decode,
    decode_command,
    decode_op,
    decode_status,
    decode_to_device,
    encode,
)
from edgefleet.wire.errors import ErrorCode, WireError
from edgefleet.wire.messages import (
    Ack,
    Birth,
    Capabilities,
    Command,
    Configure,
    Death,
    Deploy,
    DeviceView,
    DeviceWindow,
    FleetStatus,
    OpDeploy,
    OpMigrate,
    OpPlan,
    OpReply,
    OpStatus,
    OpUndeploy,
    Telemetry,
    TelemetryAck,
    TenantSpec,
    TenantView,
    TenantWindow,
    Undeploy,
)
from edgefleet.wire.names import validate_device_id, validate_tenant_name
from edgefleet.wire.tensors import (
    ErrorFrame,
    RequestFrame,
    ResultFrame,
    decode_frame,
    encode_error,
    encode_request,
    encode_result,
)
from edgefleet.wire.topics import ParsedTopic, TopicKind, Topics

__all__ = [
    "WIRE_VERSION",
    "Ack",
    "Birth",
    "Capabilities",
    "Command",
    "Configure",
    "Death",
    "Deploy",
    "DeviceView",
    "DeviceWindow",
    "ErrorCode",
    "ErrorFrame",
    "FleetStatus",
    "OpDeploy",
    "OpMigrate",
    "OpPlan",
    "OpReply",
    "OpStatus",
    "OpUndeploy",
    "ParsedTopic",
    "RequestFrame",
    "ResultFrame",
    "Telemetry",
    "TelemetryAck",
    "TenantSpec",
    "TenantView",
    "TenantWindow",
    "TopicKind",
    "Topics",
    "Undeploy",
    "WireError",
    "decode",
    "decode_command",
    "decode_frame",
    "decode_op",
    "decode_status",
    "decode_to_device",
    "encode",
    "encode_error",
    "encode_request",
    "encode_result",
    "validate_device_id",
    "validate_tenant_name",
]

"""Encoding and decoding of control messages, with one error type for every way a payload is wrong.

Handlers call ``decode_*`` on untrusted bytes and get either a typed message or a WireError whose
message says what and where (``Expected `int`, got `str` - at `$.seq```). Nothing else escapes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from edgefleet.wire.errors import ErrorCode, WireError
from edgefleet.wire.messages import Ack, Command, ModelReport, Op, OpReply, Status, Telemetry, ToDevice
from edgefleet.wire.streams import StreamEvent, StreamHandover, StreamResult

StreamMessage = StreamResult | StreamEvent | StreamHandover

WIRE_VERSION = 1
MAX_CONTROL_BYTES = 1 << 20  # 1 MiB: larger control messages are refused before parsing

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | bytearray | memoryview, type_: type[T] | Any) -> T:
    """Decode ``data`` as ``type_`` (a message class or a union); raise WireError on any problem."""
    if len(data) > MAX_CONTROL_BYTES:
        raise WireError(ErrorCode.PAYLOAD_TOO_LARGE, f"control message of {len(data)} bytes is too large")
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        msg = dec.decode(data)
    except msgspec.ValidationError as exc:
        raise WireError(ErrorCode.BAD_REQUEST, f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(ErrorCode.BAD_REQUEST, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise WireError(ErrorCode.BAD_REQUEST, "malformed JSON: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise WireError(ErrorCode.BAD_REQUEST, f"malformed JSON: invalid UTF-8 ({exc.reason})") from None
    version = getattr(msg, "v", WIRE_VERSION)
    if version != WIRE_VERSION:
        raise WireError(ErrorCode.UNSUPPORTED_VERSION, f"message version {version}; this peer speaks 1")
    return msg  # type: ignore[no-any-return]


def decode_status(data: bytes) -> Status:
    return decode(data, Status)  # type: ignore[no-any-return]


def decode_telemetry(data: bytes) -> Telemetry:
    return decode(data, Telemetry)


def decode_command(data: bytes) -> Command:
    return decode(data, Command)  # type: ignore[no-any-return]


def decode_to_device(data: bytes) -> ToDevice:
    """Anything on a device's command topic: a command, or the coordinator's telemetry confirmation."""
    return decode(data, ToDevice)  # type: ignore[no-any-return]


def decode_ack(data: bytes) -> Ack:
    return decode(data, Ack)


def decode_op(data: bytes) -> Op:
    return decode(data, Op)  # type: ignore[no-any-return]


def decode_reply(data: bytes) -> OpReply:
    return decode(data, OpReply)


def decode_model_report(data: bytes) -> ModelReport:
    return decode(data, ModelReport)


def decode_stream_message(data: bytes) -> StreamMessage:
    """A stream tenant's result, event or hand-over (JSON; EFT1 results are read with decode_frame)."""
    return decode(data, StreamMessage)  # type: ignore[no-any-return]

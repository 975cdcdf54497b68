"""The binary tensor frame used for inference requests, results and errors.

Tensors travel as raw little-endian bytes described by a small JSON header, never as JSON lists of
floats. Layout (all integers little-endian)::

    bytes 0..3   magic  b"EFT1"
    bytes 4..7   uint32 H, the length of the header
    bytes 8..8+H UTF-8 JSON header
    padding      zero bytes up to the next multiple of 8 (so arrays can be viewed without copying)
    data         the tensors' bytes, at the offsets the header gives (relative to the data start)

Header: ``{"v": 1, "kind": "request"|"result"|"error", "tensors": [{"name", "dtype", "shape",
"offset", "nbytes"}], "meta": {...}}``. A request's meta may hold ``timeout_ms`` (the caller's budget,
counted from when the device receives the request) and ``min_fidelity``; a result's meta says which
device and variant served it and how long it queued and ran; an error's meta holds ``code`` and
``message`` and it has no tensors.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.wire.errors import ErrorCode, WireError

MAGIC = b"EFT1"
FRAME_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS = 32
MAX_RANK = 8
MAX_DIM = 2**31 - 1  # largest size of one dimension
SMALL_FRAME_BYTES = 1 << 16  # tensors' bytes below which a frame is packed by joining copies
MAX_ERROR_MESSAGE_CHARS = 2048  # an error's message may quote what the requester sent: longer ones are cut
CONTENT_TYPE = "application/vnd.edgefleet.tensors.v1"
# dtype names on the wire -> numpy dtypes (always little-endian on the wire).
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "bool",
    )
}
_NATIVE = {name: dtype.newbyteorder("=") for name, dtype in DTYPES.items()}  # what decoded arrays use
_WIRE_OF = {np.dtype(name): (dtype, name) for name, dtype in DTYPES.items()}  # a native dtype -> its wire dtype
_PREFIX = struct.Struct("<4sI")


@dataclass(frozen=True)
class RequestFrame:
    tensors: dict[str, np.ndarray]
    timeout_ms: float | None = None
    min_fidelity: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # the header's bytes when they were small enough to remember (``HEADER_MEMO_BYTES``): two frames
    # with equal signatures carry tensors of the same names, dtypes and shapes, and the same meta, so
    # a receiver may key what it derived from one frame's header (checks, batch layout) by it
    signature: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ResultFrame:
    tensors: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorFrame:
    code: ErrorCode
    message: str
    meta: dict[str, Any] = field(default_factory=dict)


Frame = RequestFrame | ResultFrame | ErrorFrame


@functools.lru_cache(maxsize=1024)
def _spec_json(name: str, dtype: str, shape: tuple[int, ...], offset: int, nbytes: int) -> str:
    return json.dumps({"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes},
                      separators=(",", ":"))


def _pack(kind: str, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any], meta_json: str | None = None,
          *, copy: bool = True) -> bytes | bytearray:
    """``meta_json``: the meta already written as compact JSON (what ``json.dumps`` of ``meta`` with
    ``separators=(",", ":")`` writes); ``copy=False`` returns a large frame as the bytearray it was built
    in instead of copying it into bytes."""
    if len(tensors) > MAX_TENSORS:
        raise WireError(ErrorCode.BAD_REQUEST, f"at most {MAX_TENSORS} tensors per frame")
    specs: list[str] = []
    arrays: list[tuple[int, np.ndarray]] = []
    offset = 0
    for name, value in tensors.items():
        arr = np.asarray(value)
        known = _WIRE_OF.get(arr.dtype)
        if known is None:  # a byte-swapped array (dtype names ignore the byte order)
            wire_name = arr.dtype.name
            wire_dtype = DTYPES.get(wire_name)
            if wire_dtype is None:
                raise WireError(ErrorCode.BAD_DTYPE, f"tensor {name!r}: dtype {arr.dtype} cannot be sent")
        else:
            wire_dtype, wire_name = known
        nbytes = arr.size * wire_dtype.itemsize
        specs.append(_spec_json(name, wire_name, arr.shape, offset, nbytes))
        arrays.append((offset, arr.astype(wire_dtype, copy=False)))
        offset += nbytes + (-nbytes) % 8
    # what json.dumps of {"v", "kind", "tensors", "meta"} writes, with each tensor's entry written once
    # per distinct (name, dtype, shape, offset): replies of one batch share them
    header = (
        f'{{"v":{FRAME_VERSION},"kind":"{kind}","tensors":[{",".join(specs)}],"meta":'
        f'{meta_json if meta_json is not None else json.dumps(dict(meta), separators=(",", ":"), allow_nan=False)}}}'
    ).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise WireError(ErrorCode.BAD_REQUEST, "frame header too large")
    start = _PREFIX.size + len(header)
    start += (-start) % 8
    head = _PREFIX.pack(MAGIC, len(header)) + header + b"\x00" * (start - _PREFIX.size - len(header))
    if offset < SMALL_FRAME_BYTES:  # small: joining the bytes is cheaper than views into one buffer
        parts = [head]
        for _, arr in arrays:
            data = arr.tobytes()
            parts.append(data)
            if len(data) % 8:
                parts.append(b"\x00" * (-len(data) % 8))
        return b"".join(parts)
    # one buffer, each tensor's bytes copied into it once (padding stays zero)
    out = bytearray(start + offset)
    out[:start] = head
    for at, arr in arrays:
        if arr.size:
            dest = np.frombuffer(out, dtype=arr.dtype, count=arr.size, offset=start + at).reshape(arr.shape)
            np.copyto(dest, arr)
    return bytes(out) if copy else out


def encode_request(
    tensors: Mapping[str, np.ndarray],
    *,
    timeout_ms: float | None = None,
    min_fidelity: float | None = None,
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    m: dict[str, Any] = dict(meta or {})
    if timeout_ms is not None:
        m["timeout_ms"] = float(timeout_ms)
    if min_fidelity is not None:
        m["min_fidelity"] = float(min_fidelity)
    meta_json = None
    if not meta and all(math.isfinite(v) for v in m.values()):  # what json.dumps writes, without it
        meta_json = "{" + ",".join(f'"{k}":{v!r}' for k, v in m.items()) + "}"
    return bytes(_pack("request", tensors, m, meta_json))


def encode_result(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    return bytes(_pack("result", tensors, meta or {}))


def encode_reply(tensors: Mapping[str, np.ndarray], meta_json: str) -> bytes | bytearray:
    """A result frame for a device's reply, with its meta already written as compact JSON (a batch's
    replies share all of it but ``queue_ms``: the caller writes it once per batch). A large frame is
    returned as the buffer it was built in (one copy of the tensors, not two); the bytes are those
    ``encode_result`` writes for ``json.loads(meta_json)``."""
    return _pack("result", tensors, {}, meta_json, copy=False)


def encode_error(code: ErrorCode, message: str, meta: Mapping[str, Any] | None = None) -> bytes:
    m = dict(meta or {})
    m["code"] = code.value
    if len(message) > MAX_ERROR_MESSAGE_CHARS:  # so that the header always fits MAX_HEADER_BYTES
        message = f"{message[:MAX_ERROR_MESSAGE_CHARS]}... ({len(message)} characters)"
    m["message"] = message
    return bytes(_pack("error", {}, m))


def _bad(message: str) -> WireError:
    return WireError(ErrorCode.BAD_REQUEST, message)


def _parse_specs(
    header: Mapping[str, Any], data: memoryview, spans: list[_TensorAt] | None = None
) -> dict[str, np.ndarray]:
    """The tensors a header describes, as views of ``data``; ``spans`` (when given) receives where
    each one lies, for ``_Layout``."""
    specs = header.get("tensors", [])
    if not isinstance(specs, list) or len(specs) > MAX_TENSORS:
        raise _bad(f"'tensors' must be a list of at most {MAX_TENSORS} entries")
    out: dict[str, np.ndarray] = {}
    end_prev = 0
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise _bad(f"tensors[{i}] must be an object")
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        offset, nbytes = spec.get("offset"), spec.get("nbytes")
        if not isinstance(name, str) or not name or len(name) > 256 or name in out:
            raise _bad(f"tensors[{i}].name must be a unique non-empty string of at most 256 characters")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise WireError(ErrorCode.BAD_DTYPE, f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > MAX_RANK or not _dims_ok(shape):
            raise WireError(
                ErrorCode.BAD_SHAPE, f"tensor {name!r}: shape must be a list of at most {MAX_RANK} integers, each in [0, {MAX_DIM}]"
            )
        for key, val in (("offset", offset), ("nbytes", nbytes)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise _bad(f"tensor {name!r}: {key} must be an int >= 0")
        assert isinstance(offset, int) and isinstance(nbytes, int)
        wire_dtype = DTYPES[dtype]
        expected = math.prod(shape) * wire_dtype.itemsize
        if nbytes != expected:
            raise WireError(
                ErrorCode.BAD_SHAPE,
                f"tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes, header says {nbytes}",
            )
        if offset < end_prev or offset + nbytes > len(data):
            raise _bad(f"tensor {name!r}: bytes {offset}..{offset + nbytes} overlap or run past the frame")
        end_prev = offset + nbytes
        arr = np.frombuffer(data, dtype=wire_dtype, count=expected // wire_dtype.itemsize if nbytes else 0,
                            offset=offset).reshape(shape)
        native = _NATIVE[dtype]
        out[name] = arr if native == wire_dtype else arr.astype(native, copy=False)
        if spans is not None:
            spans.append(_TensorAt(name, wire_dtype, native if native != wire_dtype else None, tuple(shape),
                                    offset, expected // wire_dtype.itemsize if nbytes else 0))
    return out


@dataclass(frozen=True, slots=True)
class _TensorAt:
    name: str
    wire: np.dtype[Any]
    native: np.dtype[Any] | None  # None: the wire dtype is native already
    shape: tuple[int, ...]
    offset: int
    count: int  # elements


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a header's tensors lie in the frame's data, parsed and checked once."""

    tensors: tuple[_TensorAt, ...]
    data_bytes: int  # the data the tensors need (the frame must hold this much after the header)

    @classmethod
    def of(cls, spans: list[_TensorAt]) -> _Layout:
        return cls(tuple(spans), max((t.offset + t.count * t.wire.itemsize for t in spans), default=0))

    def arrays(self, data: memoryview) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = {}
        for t in self.tensors:
            arr: np.ndarray = np.ndarray(t.shape, t.wire, data, t.offset)  # a view, as np.frombuffer makes
            tensors[t.name] = arr if t.native is None else arr.astype(t.native, copy=False)
        return tensors


@dataclass(frozen=True, slots=True)
class _RequestHeader:
    """A request header parsed and validated once: its tensors' layout and what its meta says."""

    layout: _Layout
    timeout_ms: float | None
    min_fidelity: float | None
    meta: dict[str, Any]

    def frame(self, data: memoryview, signature: bytes) -> RequestFrame:
        # each frame gets its own meta dict: a receiver that edits one cannot change the next
        return RequestFrame(self.layout.arrays(data), self.timeout_ms, self.min_fidelity, dict(self.meta), signature)


def _remember(memo: dict[bytes, Any], key: bytes, value: Any) -> None:
    if len(memo) >= HEADER_MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


# Request headers seen recently, parsed: a client sends the same header (names, dtypes, shapes, budget)
# with every request, so the JSON is parsed and checked once, and then only the frame's length is.
HEADER_MEMO_BYTES = 1024  # headers up to this size are remembered
HEADER_MEMO_ENTRIES = 512  # the memo is emptied when it holds this many
_request_headers: dict[bytes, _RequestHeader] = {}
# Result headers differ in their meta alone (a reply's queue_ms): the part before it is remembered, by its
# bytes, once a full parse has shown that the header is exactly {"v", "kind", "tensors", "meta"} in that
# order; a header that starts with a remembered part then needs only its meta parsed.
_RESULT_START = b'{"v":1,"kind":"result","tensors":['
_META_KEY = b'],"meta":'
_result_layouts: dict[bytes, _Layout] = {}


def _dims_ok(shape: list[Any]) -> bool:
    return all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)  # exactly int: bool is not a dimension


def decode_frame(payload: bytes | bytearray | memoryview) -> Frame:
    """Parse a frame. Raises WireError with a code and a message that says what is wrong."""
    buf = memoryview(payload).cast("B") if not isinstance(payload, bytes) else memoryview(payload)
    if len(buf) < _PREFIX.size:
        raise _bad(f"frame too short ({len(buf)} bytes); expected magic {MAGIC!r} and a header length")
    magic, hlen = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        if magic[:3] == MAGIC[:3]:
            raise WireError(ErrorCode.UNSUPPORTED_VERSION, f"frame magic {magic!r}: this peer speaks EFT1")
        raise _bad(f"not a tensor frame: magic {magic!r}, expected {MAGIC!r}")
    if hlen > MAX_HEADER_BYTES or _PREFIX.size + hlen > len(buf):
        raise _bad(f"header length {hlen} runs past the frame or the {MAX_HEADER_BYTES}-byte limit")
    start = _PREFIX.size + hlen
    start += (-start) % 8  # the tensors' data begins at the next multiple of 8
    signature = bytes(buf[_PREFIX.size : _PREFIX.size + hlen]) if hlen <= HEADER_MEMO_BYTES else None
    if signature is not None:
        known = _request_headers.get(signature)
        if known is not None:
            if start + known.layout.data_bytes <= len(buf):
                return known.frame(buf[start:], signature)
            # too short for its tensors: the full parse below says which one runs past the frame
        elif (split := _split_result(signature)) is not None and (remembered := _result_layouts.get(split[0])):
            try:
                meta = json.loads(split[1])
            except (ValueError, RecursionError):
                meta = None  # the full parse below says what is wrong
            if isinstance(meta, dict) and start + remembered.data_bytes <= len(buf):
                return ResultFrame(remembered.arrays(buf[start:]), meta)
    try:
        header = json.loads(str(buf[_PREFIX.size : _PREFIX.size + hlen], "utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"frame header is not JSON: {exc}") from None
    except RecursionError:
        raise _bad("frame header is not JSON: nested too deeply") from None
    if not isinstance(header, dict):
        raise _bad("frame header must be a JSON object")
    version = header.get("v")
    if isinstance(version, bool) or version != FRAME_VERSION:
        raise WireError(ErrorCode.UNSUPPORTED_VERSION, f"frame version {version!r}; this peer speaks 1")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise _bad("'meta' must be an object")
    data = buf[start:] if start <= len(buf) else memoryview(b"")
    kind = header.get("kind")
    spans: list[_TensorAt] = []  # where the tensors lie, for the memos
    if kind == "request":
        tensors = _parse_specs(header, data, spans)
        frame = RequestFrame(
            tensors=tensors,
            timeout_ms=_opt_number(meta, "timeout_ms", lo=0.0, hi=3.6e6),
            min_fidelity=_opt_number(meta, "min_fidelity", lo=0.0, hi=1.0),
            meta=meta,
            signature=signature,
        )
        if signature is not None:
            _remember(_request_headers, signature,
                      _RequestHeader(_Layout.of(spans), frame.timeout_ms, frame.min_fidelity, dict(meta)))
        return frame
    if kind == "result":
        result = ResultFrame(tensors=_parse_specs(header, data, spans), meta=meta)
        if signature is not None:
            _remember_result(signature, header, spans)
        return result
    if kind == "error":
        raw_code = meta.get("code")
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            code = ErrorCode.INTERNAL
        message = meta.get("message")
        return ErrorFrame(
            code=code, message=str(message) if message is not None else str(raw_code), meta=meta
        )
    raise _bad(f"frame kind {kind!r}: expected request, result or error")


def _split_result(header: bytes) -> tuple[bytes, bytes] | None:
    """A result header written as edgefleet writes it, cut into its part before the meta (through the
    tensors' closing bracket) and its meta's bytes; None for any other header."""
    if not header.startswith(_RESULT_START) or not header.endswith(b"}"):
        return None
    cut = header.find(_META_KEY)
    if cut < 0:
        return None
    return header[: cut + 1], header[cut + len(_META_KEY) : -1]


def _remember_result(header_bytes: bytes, header: Mapping[str, Any], spans: list[_TensorAt]) -> None:
    """Remember a fully parsed result header's tensors by its part before the meta, once that part is
    shown to be exactly the header's v, kind and tensors and the rest exactly its meta."""
    split = _split_result(header_bytes)
    if split is None or list(header) != ["v", "kind", "tensors", "meta"]:
        return
    prefix, meta_bytes = split
    try:
        if json.loads(prefix + b"}") != {"v": FRAME_VERSION, "kind": "result", "tensors": header["tensors"]}:
            return
        if json.loads(meta_bytes) != header["meta"]:
            return
    except (ValueError, RecursionError):
        return
    _remember(_result_layouts, prefix, _Layout.of(spans))


def _opt_number(meta: Mapping[str, Any], key: str, *, lo: float, hi: float) -> float | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise _bad(f"meta.{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)

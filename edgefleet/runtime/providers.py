"""Which ONNX Runtime execution providers really work on this machine, proven by running a model.

``onnxruntime.get_available_providers()`` is the list the wheel was compiled with, not what the machine
can run: a Jetson wheel lists TensorRT and CUDA even when the CUDA libraries or the GPU are missing, and
a session then quietly falls back to the CPU. So each requested provider other than the CPU is proven
once per process by opening a tiny built-in model (``y = x + x``) on that provider alone and checking
the answer; only proven providers are handed to sessions, in the requested order, with the CPU last.

TensorRT gets its options here too: fp16 kernels and an engine cache on disk, because building engines
takes seconds to minutes on a Jetson and must survive agent restarts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from edgefleet.runtime.base import CPU_PROVIDER
from edgefleet.runtime.errors import RuntimeMissing

log = logging.getLogger(__name__)

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_ORDER = (TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER)  # the order to request on NVIDIA machines
ENGINE_CACHE_ENV = "EDGEFLEET_TRT_CACHE_DIR"
NOT_COMPILED = "not compiled into this onnxruntime build"

ProviderEntry = str | tuple[str, dict[str, str]]


def _import_ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissing("onnxruntime", "onnx") from exc
    return cast(ModuleType, onnxruntime)


# -- TensorRT options ---------------------------------------------------------------------------------
def engine_cache_dir() -> Path:
    """Where TensorRT engines are cached: ``$EDGEFLEET_TRT_CACHE_DIR``, else ``trt-engines`` in the
    edgefleet data directory (``/var/cache/edgefleet`` under the systemd unit)."""
    explicit = os.environ.get(ENGINE_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from edgefleet.zoo.paths import data_dir

    return data_dir() / "trt-engines"


def tensorrt_options(cache_dir: Path | None = None, *, fp16: bool = True) -> dict[str, str]:
    """TensorRT provider options: fp16 kernels and engines cached on disk (the directory is created)."""
    path = cache_dir if cache_dir is not None else engine_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(path),
    }


def provider_entries(
    providers: Sequence[str], *, cache_dir: Path | None = None, fp16: bool = True
) -> list[ProviderEntry]:
    """``providers`` as ``InferenceSession(providers=...)`` takes them, TensorRT with its options."""
    return [(p, tensorrt_options(cache_dir, fp16=fp16)) if p == TENSORRT_PROVIDER else p for p in providers]


# -- the probe model ------------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    raw = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


PROBE_SHAPE = (1, 8)


def probe_model() -> bytes:
    """A serialized ONNX model computing ``y = x + x`` on float32[1, 8] (IR 7, opset 13).

    Built here byte by byte so that proving a provider needs neither the ``onnx`` package nor a file.
    """
    dims = b"".join(_field(1, _field(1, d)) for d in PROBE_SHAPE)  # TensorShapeProto.dim.dim_value
    tensor_type = _field(1, _field(1, 1) + _field(2, dims))  # TypeProto.tensor_type: FLOAT, shape
    value_info = {name: _field(1, name) + _field(2, tensor_type) for name in ("x", "y")}
    node = _field(1, "x") + _field(1, "x") + _field(2, "y") + _field(3, "probe_add") + _field(4, "Add")
    graph = (
        _field(1, node)
        + _field(2, "edgefleet_probe")
        + _field(11, value_info["x"])
        + _field(12, value_info["y"])
    )
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 7) + _field(2, "edgefleet") + _field(7, graph) + _field(8, opset)


# -- proving ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProviderProbe:
    """The outcome of proving one provider: ``ok``, why not, and how long the proof took."""

    provider: str
    ok: bool
    reason: str = ""
    seconds: float = 0.0


def prove_provider(
    provider: str, *, ort: ModuleType | None = None, cache_dir: Path | None = None, fp16: bool = True
) -> ProviderProbe:
    """Open the probe model on ``provider`` alone, run it once and check the answer."""
    ort = ort if ort is not None else _import_ort()
    t0 = time.perf_counter()

    def result(ok: bool, reason: str = "") -> ProviderProbe:
        return ProviderProbe(provider, ok, reason, time.perf_counter() - t0)

    if provider not in ort.get_available_providers():
        return result(False, NOT_COMPILED)
    x = (np.arange(int(np.prod(PROBE_SHAPE)), dtype=np.float32) - 3.5).reshape(PROBE_SHAPE)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session: Any = ort.InferenceSession(
            probe_model(),
            sess_options=opts,
            providers=provider_entries([provider], cache_dir=cache_dir, fp16=fp16),
        )
        in_use = list(session.get_providers())
        if provider not in in_use:
            return result(False, f"the session fell back to {in_use}")
        if hasattr(session, "disable_fallback"):
            session.disable_fallback()  # a failing run must raise, not re-create the session on the CPU
        (y,) = session.run(["y"], {"x": x})
        if provider not in list(session.get_providers()):
            return result(False, "the run fell back to another provider")
    except Exception as exc:  # any vendor failure means: not usable here
        return result(False, f"{type(exc).__name__}: {exc}")
    if not np.allclose(np.asarray(y, dtype=np.float32), x + x, rtol=1e-2, atol=1e-2):
        return result(False, "the probe model gave a wrong answer")
    return result(True)


_lock = threading.Lock()
_proven: dict[tuple[int, str, str, bool], ProviderProbe] = {}


def probe_providers(
    requested: Sequence[str],
    *,
    ort: ModuleType | None = None,
    cache_dir: Path | None = None,
    fp16: bool = True,
) -> list[str]:
    """The requested providers proven to work here, in the requested order, with the CPU provider last.

    Each provider is proven once per process (and per onnxruntime module, TensorRT cache dir and fp16
    setting); a request for the CPU alone proves nothing and costs nothing.
    """
    wanted = [p for p in dict.fromkeys(requested) if p != CPU_PROVIDER]
    if not wanted:
        return [CPU_PROVIDER]
    ort = ort if ort is not None else _import_ort()
    chosen: list[str] = []
    with _lock:
        for provider in wanted:
            key = (id(ort), provider, str(cache_dir), fp16)
            probe = _proven.get(key)
            if probe is None:
                probe = _proven[key] = prove_provider(provider, ort=ort, cache_dir=cache_dir, fp16=fp16)
                if probe.ok:
                    log.info("execution provider %s works here (proved in %.2f s)", provider, probe.seconds)
                else:
                    level = logging.INFO if probe.reason == NOT_COMPILED else logging.WARNING
                    log.log(level, "execution provider %s is not usable here: %s", provider, probe.reason)
            if probe.ok:
                chosen.append(provider)
    return [*chosen, CPU_PROVIDER]


def proven() -> list[ProviderProbe]:
    """Every probe made so far in this process (for diagnostics and capability reports)."""
    with _lock:
        return list(_proven.values())


def forget_probes() -> None:
    """Drop the probe results so that the next request proves providers again."""
    with _lock:
        _proven.clear()

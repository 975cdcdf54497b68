"""Derive int8 and fp16 variants of ONNX models and measure how close they stay to fp32.

int8 uses ONNX Runtime's dynamic quantization (weights int8, activations quantized per call), after ORT's
pre-processing when the graph keeps weights in Constant nodes (PP-OCR exports do). Dynamic quantization
of convolutions hurts some models badly, so a few recipes are tried and the most faithful one is kept
(its name is recorded in the catalog). fp16 converts weights
and compute to half precision with fp32 inputs and outputs kept, so requests look the same for every
variant. A variant that cannot be built or does not run on ONNX Runtime's CPU provider is reported as
unavailable with the reason; it never stops a fetch.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.runtime.base import SessionOptions
from edgefleet.runtime.onnx import OnnxRuntime
from edgefleet.zoo.inputs import Feeds

FIDELITY_METRIC = (
    "mean over outputs and real samples of 1 - min(1, ||y - y_fp32||_2 / ||y_fp32||_2), "
    "on ONNX Runtime CPU, 1 thread"
)
TOP1_MODELS = frozenset({"ocr-cls"})


@dataclass(frozen=True)
class Fidelity:
    value: float
    top1_agreement: float | None = None


def relative_fidelity(reference: np.ndarray[Any, Any], other: np.ndarray[Any, Any]) -> float:
    """``1 - min(1, ||other - reference|| / ||reference||)``; exact agreement with a zero reference is 1."""
    ref = reference.astype(np.float64).ravel()
    diff = other.astype(np.float64).ravel() - ref
    denom = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(diff))
    if denom == 0.0:
        return 1.0 if err == 0.0 else 0.0
    if not np.isfinite(err):
        return 0.0
    return 1.0 - min(1.0, err / denom)


def run_all(path: Path, samples: Sequence[Feeds]) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Outputs of the model at ``path`` for every sample, on ONNX Runtime CPU with one thread."""
    session = OnnxRuntime().open(path, SessionOptions(threads=1))
    try:
        return [session.run(feeds) for feeds in samples]
    finally:
        session.close()


def measure(
    reference: Sequence[dict[str, np.ndarray[Any, Any]]],
    other: Sequence[dict[str, np.ndarray[Any, Any]]],
    top1: bool = False,
) -> Fidelity:
    """Fidelity of ``other`` against the fp32 ``reference`` outputs, sample by sample."""
    scores = [
        relative_fidelity(ref[k], out[k]) for ref, out in zip(reference, other, strict=True) for k in ref
    ]
    agreement = None
    if top1:
        hits = [
            float(np.array_equal(ref[k].argmax(axis=-1), out[k].argmax(axis=-1)))
            for ref, out in zip(reference, other, strict=True)
            for k in ref
        ]
        agreement = round(float(np.mean(hits)), 4)
    return Fidelity(round(float(np.mean(scores)), 4), agreement)


def _quiet() -> None:
    for name in ("onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


INT8_RECIPES: dict[str, dict[str, Any]] = {
    "qint8-per-channel": {"weight_type": "QInt8", "per_channel": True},
    "quint8-per-tensor": {"weight_type": "QUInt8", "per_channel": False},
    "qint8-matmul-only": {
        "weight_type": "QInt8",
        "per_channel": True,
        "op_types_to_quantize": ["MatMul", "Gemm"],
    },
}


_INTEGER_OPS = frozenset(
    {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv"}
)


def count_integer_ops(path: Path) -> int:
    """Quantized compute nodes in the model at ``path``, subgraphs (If/Loop bodies) included."""
    import onnx

    def walk(graph: Any) -> int:
        total = 0
        for node in graph.node:
            total += node.op_type in _INTEGER_OPS
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += walk(attr.g)
                total += sum(walk(g) for g in attr.graphs)
        return total

    return walk(onnx.load(str(path)).graph)


def build_int8(src: Path, dest: Path, recipe: str = "qint8-per-channel") -> None:
    """Dynamic int8 quantization of ``src`` into ``dest`` with one of :data:`INT8_RECIPES`.

    ORT's pre-processing runs first so that weights held in Constant nodes (PP-OCR exports) become
    initializers; a recipe that quantizes no operator is an error, not an "int8" copy of fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _quiet()
    options = dict(INT8_RECIPES[recipe])
    options["weight_type"] = getattr(QuantType, options["weight_type"])
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        try:
            quant_pre_process(str(src), str(folded), skip_symbolic_shape=True)
        except Exception:
            folded = src  # graphs ORT cannot pre-process are quantized as shipped
        quantize_dynamic(folded, dest, **options)
    if count_integer_ops(dest) == 0:
        raise ValueError(f"recipe {recipe} quantized no operator of this model")


def build_fp16(src: Path, dest: Path) -> None:
    """Half-precision weights and compute, fp32 inputs and outputs kept."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dest))


def recipes(variant: str) -> tuple[str, ...]:
    """The recipes tried for ``variant``; the one with the best fidelity on the samples is kept."""
    return tuple(INT8_RECIPES) if variant == "int8" else ("fp16-keep-io",)


def build(variant: str, recipe: str, src: Path, dest: Path) -> None:
    if variant == "int8":
        build_int8(src, dest, recipe)
    elif variant == "fp16":
        build_fp16(src, dest)
    else:
        raise ValueError(f"no builder for variant {variant!r}")

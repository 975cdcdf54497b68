"""Encoded images (JPEG, PNG) as model inputs: decoded, resized and scaled the way the model's catalog
entry declares (``ImageInput``), so a camera can publish the frames it already encodes.

One function for every path that takes images (stream tenants' frames; requests that carry an image),
so that the preparation a model was trained with is written once. Pillow does the decoding
(``pip install 'edgefleet[zoo]'``); a device without it refuses encoded frames with a clear error.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.zoo.catalog import ImageInput
from edgefleet.zoo.paths import COMMITTED_CATALOG

MAX_IMAGE_PIXELS = 8192 * 8192  # a larger image is refused before it is decoded (decompression bombs)
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """The payload is not an image this device can prepare for the model (the message says why)."""


def image_kind(payload: bytes | bytearray | memoryview) -> str | None:
    """``"jpeg"`` or ``"png"`` by the payload's magic bytes; None for anything else."""
    head = bytes(payload[:8])
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_MAGIC):
        return "png"
    return None


@functools.cache
def image_input(model: str) -> ImageInput | None:
    """What the committed catalog declares about ``model``'s image input (None: it takes no images)."""
    from edgefleet.zoo.catalog import read_catalog

    entry = read_catalog(COMMITTED_CATALOG).find(model)
    return entry.image if entry is not None else None


@functools.cache
def decoder_name(model: str) -> str | None:
    """The output decoder the committed catalog declares for ``model`` (None: none)."""
    from edgefleet.zoo.catalog import read_catalog

    entry = read_catalog(COMMITTED_CATALOG).find(model)
    return entry.decoder if entry is not None else None


def prepare(payload: bytes | bytearray | memoryview, spec: ImageInput) -> dict[str, npt.NDArray[np.float32]]:
    """Decode a JPEG/PNG ``payload`` into the model's input feeds. Raises ImageError."""
    try:
        from PIL import Image
    except ImportError:
        raise ImageError("this device cannot decode images: Pillow is not installed") from None
    try:
        with Image.open(io.BytesIO(bytes(payload))) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ImageError(f"image format {img.format} is not accepted (JPEG or PNG)")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageError(f"image of {img.width}x{img.height} pixels is larger than {MAX_IMAGE_PIXELS}")
            rgb = img.convert("RGB")
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds for corrupt data
        raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    sized = _letterbox(rgb, spec.width, spec.height) if spec.letterbox else rgb.resize(
        (spec.width, spec.height), Image.Resampling.BILINEAR)
    arr = np.asarray(sized, dtype=np.float32) * np.float32((spec.high - spec.low) / 255.0) + np.float32(spec.low)
    if spec.layout == "nchw":
        arr = arr.transpose(2, 0, 1)
    return {spec.input: np.ascontiguousarray(arr[None], dtype=np.float32)}


def _letterbox(img: Any, width: int, height: int) -> Any:
    from PIL import Image

    scale = min(width / img.width, height / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(img.resize(size, Image.Resampling.BILINEAR), ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas

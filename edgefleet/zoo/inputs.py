"""Realistic, deterministic inputs for every zoo model, made from the small samples in ``models/samples``.

The same requests serve three purposes: measuring the fidelity of int8/fp16 variants against fp32,
benchmarks, and the demo. Samples are decoded once per process and preprocessed the way each model's
own pipeline does (PP-OCR normalisation, MediaPipe value ranges, Silero's 64-sample context), so the
arrays are cheap to ask for repeatedly. Pillow is needed (``pip install 'edgefleet[zoo]'``).
"""

from __future__ import annotations

import functools
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.zoo.errors import ModelNotFound
from edgefleet.zoo.paths import SAMPLES_DIR

F32 = npt.NDArray[np.float32]
Feeds = dict[str, npt.NDArray[Any]]

FACE_IMAGE = "grace_hopper_256.jpg"
TEXT_IMAGE = "printed_text.png"
SPEECH_WAV = "speech_en_16k.wav"

VAD_RATE = 16000
VAD_CHUNK = 512
VAD_CONTEXT = 64

# What each model's inputs hold and how to make them (what ``edgefleet models show`` prints): the shapes
# with their fixed sizes (N is the batch axis; the catalog records only what the model file declares), and
# the preprocessing the models' own pipelines apply, which the sample inputs below follow.
INPUT_SHAPES: dict[str, dict[str, str]] = {
    "ocr-det": {"x": "[N, 3, H, W] (H and W multiples of 32; the sample is 192 x 480)"},
    "ocr-rec": {"x": "[N, 3, 48, W] (W up to 320; the samples are 320)"},
    "ocr-cls": {"x": "[N, 3, 48, 192]"},
    "vad": {"input": f"[N, {VAD_CONTEXT + VAD_CHUNK}]", "state": "[2, N, 128]", "sr": "[] (int64)"},
    "face-detect": {"input": "[1, 128, 128, 3]"},
    "selfie-seg": {"input_1": "[1, 256, 256, 3]"},
    "hand-landmark": {"input_1": "[1, 224, 224, 3]"},
    "pose-landmark": {"input_1": "[1, 256, 256, 3]"},
}
_PPOCR = "RGB scaled to [0, 1], then (x - 0.5) / 0.5; channels first (NCHW)"
_MEDIAPIPE = "RGB letterboxed to {0}x{0} (aspect kept, black padding), values scaled to {1}; channels last (NHWC)"
PREPROCESSING: dict[str, str] = {
    "ocr-det": f"the whole image, {_PPOCR}",
    "ocr-rec": f"one text line cropped, resized to height 48 keeping its aspect (width up to 320, zero padding "
               f"on the right), {_PPOCR}",
    "ocr-cls": f"one text line cropped, resized to height 48 keeping its aspect (width up to 192, zero padding "
               f"on the right), {_PPOCR}",
    "vad": f"16 kHz mono audio as float32 in [-1, 1]: each request is the previous request's last {VAD_CONTEXT} "
           f"samples followed by {VAD_CHUNK} new ones; state is zeros at the start of a stream, then the "
           f"previous reply's state; sr = {VAD_RATE}",
    "face-detect": _MEDIAPIPE.format(128, "[-1, 1]"),
    "selfie-seg": _MEDIAPIPE.format(256, "[0, 1]"),
    "hand-landmark": _MEDIAPIPE.format(224, "[0, 1]") + "; a crop around one hand",
    "pose-landmark": _MEDIAPIPE.format(256, "[0, 1]") + "; a crop around one person",
}

# Axis along which each input grows with the batch (None: shared by the whole batch).
_BATCH_AXES: dict[str, dict[str, int | None]] = {"vad": {"input": 0, "state": 1, "sr": None}}


def _image(name: str) -> Any:
    from PIL import Image

    with Image.open(Path(SAMPLES_DIR) / name) as img:
        return img.convert("RGB")


def _letterbox(img: Any, width: int, height: int, fill: tuple[int, int, int] = (0, 0, 0)) -> Any:
    """Resize keeping the aspect ratio and pad to ``width`` x ``height`` (as MediaPipe does)."""
    from PIL import Image

    scale = min(width / img.width, height / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(
        img.resize(size, Image.Resampling.BILINEAR), ((width - size[0]) // 2, (height - size[1]) // 2)
    )
    return canvas


def _nhwc(img: Any, low: float, high: float) -> F32:
    arr: F32 = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    scaled: F32 = (arr * np.float32(high - low) + np.float32(low))[None]
    return scaled


def _nchw_ppocr(img: Any) -> F32:
    arr: F32 = (np.asarray(img, dtype=np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    chw: F32 = arr.transpose(2, 0, 1)[None]
    return chw


def _text_lines() -> list[Any]:
    """Crops of each printed line, found by the horizontal ink profile of the text image."""
    img = _image(TEXT_IMAGE)
    gray: npt.NDArray[np.uint8] = np.asarray(img.convert("L"))
    ink: npt.NDArray[np.bool_] = np.asarray((gray < 128).any(axis=1))
    rows: list[bool] = [bool(v) for v in ink]
    lines: list[Any] = []
    start: int | None = None
    for y, inked in enumerate([*rows, False]):
        if inked and start is None:
            start = y
        elif not inked and start is not None:
            cols = np.nonzero((gray[start:y] < 128).any(axis=0))[0]
            pad = 4
            box = (
                max(0, int(cols[0]) - pad),
                max(0, start - pad),
                min(img.width, int(cols[-1]) + pad),
                y + pad,
            )
            lines.append(img.crop(box))
            start = None
    return lines


def _pad_right(img: Any, width: int, height: int) -> F32:
    """PP-OCR crop preprocessing: height fixed, width by aspect up to ``width``, zero padding right."""
    from PIL import Image

    w = min(width, max(1, round(img.width * height / img.height)))
    arr = _nchw_ppocr(img.resize((w, height), Image.Resampling.BILINEAR))
    out = np.zeros((1, 3, height, width), dtype=np.float32)
    out[:, :, :, :w] = arr
    return out


def _speech() -> F32:
    with wave.open(str(Path(SAMPLES_DIR) / SPEECH_WAV), "rb") as wav:
        if wav.getframerate() != VAD_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{SPEECH_WAV} must be 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def _ocr_det() -> list[Feeds]:
    text = _image(TEXT_IMAGE)  # 480x192, both multiples of 32
    small = _letterbox(text, 320, 128, fill=(255, 255, 255))
    return [{"x": _nchw_ppocr(text)}, {"x": _nchw_ppocr(small)}]


def _ocr_rec() -> list[Feeds]:
    return [{"x": _pad_right(line, 320, 48)} for line in _text_lines()]


def _ocr_cls() -> list[Feeds]:
    upright = [_pad_right(line, 192, 48) for line in _text_lines()]
    flipped = [_pad_right(line.rotate(180), 192, 48) for line in _text_lines()]
    return [{"x": x} for x in upright + flipped]


def _vad() -> list[Feeds]:
    audio = np.concatenate([np.zeros(VAD_CONTEXT, np.float32), _speech()])
    count = (audio.size - VAD_CONTEXT) // VAD_CHUNK
    chunks = [audio[k * VAD_CHUNK : k * VAD_CHUNK + VAD_CONTEXT + VAD_CHUNK] for k in range(count)]
    loudest = sorted(range(count), key=lambda k: -float(np.square(chunks[k]).mean()))
    picks = [loudest[0], *[k for k in range(0, count, max(1, count // 8)) if k != loudest[0]]]
    return [
        {
            "input": chunks[k][None].astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(VAD_RATE, dtype=np.int64),
        }
        for k in picks
    ]


def _image_model(name: str, size: int, low: float, high: float) -> Callable[[], list[Feeds]]:
    def make() -> list[Feeds]:
        from PIL import ImageOps

        img = _letterbox(_image(FACE_IMAGE), size, size)
        return [{name: _nhwc(img, low, high)}, {name: _nhwc(ImageOps.mirror(img), low, high)}]

    return make


# How each image model's input is made from a picture: input name, side, value range (MediaPipe's).
IMAGE_INPUTS: dict[str, tuple[str, int, float, float]] = {
    "face-detect": ("input", 128, -1.0, 1.0),
    "selfie-seg": ("input_1", 256, 0.0, 1.0),
    "hand-landmark": ("input_1", 224, 0.0, 1.0),
    "pose-landmark": ("input_1", 256, 0.0, 1.0),
}


def camera_frame(width: int = 640, height: int = 480) -> npt.NDArray[np.uint8]:
    """A real photograph (the face sample) letterboxed into a ``width`` x ``height`` RGB frame, uint8
    HWC: what a camera hands an app."""
    return np.asarray(_letterbox(_image(FACE_IMAGE), width, height), dtype=np.uint8)


def image_feeds(model: str, frame: npt.NDArray[np.uint8]) -> Feeds:
    """``model``'s request made from an RGB frame (uint8 HWC) the way its pipeline does: letterboxed to
    its square input and scaled to its value range."""
    from PIL import Image

    name, size, low, high = IMAGE_INPUTS[model]
    return {name: _nhwc(_letterbox(Image.fromarray(frame, "RGB"), size, size), low, high)}


_MAKERS: dict[str, Callable[[], list[Feeds]]] = {
    "ocr-det": _ocr_det,
    "ocr-rec": _ocr_rec,
    "ocr-cls": _ocr_cls,
    "vad": _vad,
    **{model: _image_model(*spec) for model, spec in IMAGE_INPUTS.items()},
}

SAMPLE_MODELS = tuple(_MAKERS)


@functools.cache
def _cached(name: str) -> tuple[Feeds, ...]:
    maker = _MAKERS.get(name)
    if maker is None:
        raise ModelNotFound(f"no sample inputs for model {name!r}; known: {', '.join(_MAKERS)}")
    samples = tuple(maker())
    for feeds in samples:
        for array in feeds.values():
            array.setflags(write=False)
    return samples


def sample_set(name: str) -> list[Feeds]:
    """Every sample request for ``name`` (fresh arrays), each with a batch of one."""
    return [{k: v.copy() for k, v in feeds.items()} for feeds in _cached(name)]


def sample_inputs(name: str, batch: int = 1) -> Feeds:
    """One realistic request for model ``name``, repeated ``batch`` times along its batch axis."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    first = _cached(name)[0]
    axes = _BATCH_AXES.get(name, {})
    out: Feeds = {}
    for key, value in first.items():
        axis = axes.get(key, 0)
        out[key] = value.copy() if axis is None or batch == 1 else np.repeat(value, batch, axis=axis)
    return out

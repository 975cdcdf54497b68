"""Output decoders: what a model's raw tensors mean, as small JSON-able fields.

A catalog entry names its decoder (``ModelEntry.decoder``); stream tenants publish the decoded fields in
their results and their event rules read them (``face_score_max`` > 0.7: "someone at the door"). Each
decoder is a pure function from the output tensors to a dict of fields, with the model's own
post-processing (anchors, thresholds, non-maximum suppression) written out once here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Outputs = Mapping[str, npt.NDArray[Any]]
Decoder = Callable[[Outputs], dict[str, Any]]

# BlazeFace short range (MediaPipe face_detection_short_range): 128x128 input, SSD anchors on a 16x16 grid
# (stride 8, 2 anchors per cell) and an 8x8 grid (stride 16, 6 per cell): 16*16*2 + 8*8*6 = 896 anchors.
BLAZEFACE_SIZE = 128.0
BLAZEFACE_MIN_SCORE = 0.5  # MediaPipe's min_score_thresh for this model
BLAZEFACE_IOU = 0.3  # MediaPipe's min_suppression_threshold
BLAZEFACE_MAX_FACES = 16  # fields published per result, highest scores first


@functools.cache
def blazeface_anchors() -> npt.NDArray[np.float32]:
    """Anchor centres (x, y) in [0, 1], in the model's output order."""
    centres: list[tuple[float, float]] = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                centres.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell)
    return np.asarray(centres, dtype=np.float32)


def _iou(box: npt.NDArray[np.float32], others: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    out: npt.NDArray[np.float32] = inter / np.maximum(area + areas - inter, 1e-9)
    return out


def blazeface(outputs: Outputs) -> dict[str, Any]:
    """Faces found by BlazeFace: ``faces`` (how many), ``face_score_max`` (0 when none) and ``boxes``:
    each ``{"score", "box": [x0, y0, x1, y1], "keypoints": [[x, y] x 6]}`` in [0, 1] of the model's
    (letterboxed) input, highest score first, after non-maximum suppression."""
    regressors = np.asarray(outputs["regressors"], dtype=np.float32).reshape(-1, 16)
    logits = np.asarray(outputs["classificators"], dtype=np.float32).reshape(-1)
    anchors = blazeface_anchors()
    if regressors.shape[0] != anchors.shape[0] or logits.shape[0] != anchors.shape[0]:
        raise ValueError(f"blazeface expects {anchors.shape[0]} anchors, got {regressors.shape[0]}")
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
    keep = np.nonzero(scores >= BLAZEFACE_MIN_SCORE)[0]
    faces: list[dict[str, Any]] = []
    if keep.size:
        raw = regressors[keep] / BLAZEFACE_SIZE
        centre = raw[:, 0:2] + anchors[keep]
        half = raw[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[keep][:, None, :]
        order = np.argsort(-scores[keep], kind="stable")
        alive = np.ones(order.size, dtype=bool)
        for i, idx in enumerate(order):
            if not alive[i]:
                continue
            faces.append({
                "score": round(float(scores[keep][idx]), 4),
                "box": [round(float(v), 4) for v in boxes[idx]],
                "keypoints": [[round(float(x), 4), round(float(y), 4)] for x, y in points[idx]],
            })
            if len(faces) >= BLAZEFACE_MAX_FACES:
                break
            rest = order[i + 1 :]
            alive[i + 1 :] &= _iou(boxes[idx], boxes[rest]) < BLAZEFACE_IOU
    return {
        "faces": len(faces),
        "face_score_max": faces[0]["score"] if faces else 0.0,
        "boxes": faces,
    }


DECODERS: dict[str, Decoder] = {"blazeface": blazeface}


def get_decoder(name: str | None) -> Decoder | None:
    """The decoder called ``name`` (None for None); KeyError for a name the catalog should not hold."""
    if name is None:
        return None
    return DECODERS[name]

"""Face detection: dlib's HOG detector by default, dlib's CNN (mmod) detector on request.

Both of dlib's detectors find faces of about 80 px and larger. Detection therefore works on a
resized copy of the image whose scale is chosen from the image size: small photos are enlarged so
that faces of about ``MIN_FACE_PX`` are found, large photos are reduced (never enlarged) so that a
face must be a fixed fraction of the photo, and the detection image stays under a pixel budget.
Boxes are mapped back to the original pixels.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from PIL import Image

from ..errors import InvalidInput
from . import runtime
from .faces import Box

DETECTORS = ("hog", "cnn")
WINDOW_PX = 80.0  # the size of face both dlib detectors are trained on
MIN_FACE_PX = 40.0  # smallest face looked for in a small photo
MIN_FACE_FRACTION = 1 / 30  # in a large photo, smallest face as a fraction of its longer side
MAX_DETECT_PIXELS = {"hog": 4_500_000, "cnn": 1_500_000}


class CnnRunner(Protocol):
    """Runs dlib's mmod CNN face detector (on dlib or on ONNX Runtime) on an RGB image."""

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]: ...


def detection_scale(width: int, height: int, detector: str = "hog") -> float:
    """The factor by which the image is resized before detection (>1 enlarges)."""
    longer = max(width, height)
    min_face = max(MIN_FACE_PX, longer * MIN_FACE_FRACTION)
    scale = WINDOW_PX / min_face
    budget = MAX_DETECT_PIXELS[detector]
    if width * height * scale * scale > budget:
        scale = math.sqrt(budget / (width * height))
    return scale


def detect(image: np.ndarray, detector: str = "hog", cnn: CnnRunner | None = None) -> list[tuple[Box, float]]:
    """Boxes (in the image's pixels) and raw detector scores, strongest first."""
    if detector not in DETECTORS:
        raise InvalidInput(f"Unknown detector {detector!r}; choose one of: {', '.join(DETECTORS)}.")
    h, w = image.shape[:2]
    if min(h, w) < 8:
        return []
    scale = detection_scale(w, h, detector)
    work = _resize(image, scale)
    if detector == "hog":
        with runtime.hog_detectors.borrow() as hog:
            rects, scores, _ = hog.run(work, 0, 0.0)
        found = [
            (Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)
        ]
    else:
        found = (cnn or DlibCnn()).detect(work)
    found = [(b.scaled(1.0 / scale), s) for b, s in found]
    found.sort(key=lambda bs: -bs[1])
    return found


def confidence(score: float, detector: str = "hog") -> float:
    """Map a detector's raw score to Rekognition's 0-100 Confidence (monotonic, 50 at the margin)."""
    z = 4.0 * score + 1.0 if detector == "hog" else 6.0 * score - 1.0
    return float(100.0 / (1.0 + math.exp(-z)))


class DlibCnn:
    """dlib's own mmod CNN runner (slow on the BLAS-less dlib-bin build; ONNX replaces it)."""

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]:
        with runtime.cnn_detectors.borrow() as cnn:
            dets = cnn(image, 0)
        return [
            (Box(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
            for d in dets
        ]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-3:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize(size, resample))

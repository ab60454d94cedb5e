"""dlib's face detectors, registered as ``hog`` (the HOG + linear SVM detector built into dlib) and
``cnn`` (dlib's mmod CNN, on ONNX Runtime where available: ``onnx_mmod.py``).

Both find faces of about 80 px and larger. Detection therefore works on a resized copy of the
image whose scale is chosen from the image size: small photos are enlarged so that faces of
:data:`~.detectors.MIN_FACE_PX` are found, large photos are reduced (never enlarged) so that a face
must be a fixed fraction of the photo, and the detection image stays under a pixel budget. Boxes
are mapped back to the original pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import Settings
from . import detectors, dlib_runtime
from .detectors import Detection, DetectorSpec
from .faces import Box

WINDOW_PX = 80.0  # the size of face both dlib detectors are trained on
MAX_DETECT_PIXELS = {"hog": 4_500_000, "cnn": 1_500_000}


def detection_scale(width: int, height: int, detector: str = "hog") -> float:
    """The factor by which the image is resized before detection (>1 enlarges)."""
    scale = WINDOW_PX / detectors.smallest_face(width, height)
    budget = MAX_DETECT_PIXELS[detector]
    if width * height * scale * scale > budget:
        scale = math.sqrt(budget / (width * height))
    return scale


def confidence(score: float, detector: str = "hog") -> float:
    """Map a detector's raw score to Rekognition's 0-100 Confidence (monotonic, 50 at the margin)."""
    z = 4.0 * score + 1.0 if detector == "hog" else 6.0 * score - 1.0
    return float(100.0 / (1.0 + math.exp(-z)))


class _Scaled:
    """Runs ``_raw`` on the image resized by :func:`detection_scale` and maps boxes back."""

    name = "hog"

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        if min(h, w) < 8:
            return []
        work, sx, sy = detectors.resize(image, detection_scale(w, h, self.name))
        found = self._raw(work)
        found.sort(key=lambda bs: -bs[1])
        return [Detection(b.scaled(1.0 / sx, 1.0 / sy), confidence(s, self.name)) for b, s in found]

    def _raw(self, image: np.ndarray) -> list[tuple[Box, float]]:
        raise NotImplementedError


class HogDetector(_Scaled):
    name = "hog"

    def _raw(self, image: np.ndarray) -> list[tuple[Box, float]]:
        with dlib_runtime.hog_detectors.borrow() as hog:
            rects, scores, _ = hog.run(image, 0, 0.0)
        return [
            (Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)
        ]


class DlibCnn:
    """dlib's own mmod CNN runner (slow on the BLAS-less dlib-bin build; ONNX replaces it)."""

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]:
        with dlib_runtime.cnn_detectors.borrow() as cnn:
            dets = cnn(image, 0)
        return [
            (Box(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
            for d in dets
        ]


class CnnDetector(_Scaled):
    name = "cnn"

    def __init__(self, settings: Settings) -> None:
        self.runner: object = DlibCnn()
        if settings.runtime in ("auto", "onnx"):
            try:
                from .onnx_mmod import OnnxCnnDetector

                self.runner = OnnxCnnDetector(
                    cache_dir=settings.model_cache_dir, threads=settings.onnx_threads
                )
            except ImportError:
                if settings.runtime == "onnx":
                    raise

    def _raw(self, image: np.ndarray) -> list[tuple[Box, float]]:
        return self.runner.detect(image)  # type: ignore[attr-defined, no-any-return]


_DLIB_LICENCE = "dlib (Davis E. King), Boost Software License 1.0"


def _parameters(name: str) -> dict[str, object]:
    return {
        "window_px": WINDOW_PX,
        "max_detect_pixels": MAX_DETECT_PIXELS[name],
        **detectors.smallest_face_parameters(),
    }


HOG = detectors.register(
    DetectorSpec(
        name="hog",
        version="dlib-hog-frontal-v1",
        runtime="dlib",
        licence=_DLIB_LICENCE,
        training_data="Labeled Faces in the Wild, faces boxed by Davis E. King (front, left, right and "
        "rotated views; 4,748 images for the front filter), per dlib's frontal_face_detector.h",
        factory=lambda settings: HogDetector(),
        description="dlib's HOG frontal-face detector (faces of ~80 px and larger, frontal only)",
        parameters=lambda: _parameters("hog"),
    )
)
CNN = detectors.register(
    DetectorSpec(
        name="cnn",
        version="dlib-mmod-human-face-v1",
        runtime="onnx",
        licence="mmod_human_face_detector.dat by Davis E. King, CC0 1.0",
        training_data="7,220 images from ImageNet, AFLW, Pascal VOC, VGG, WIDER and FaceScrub, faces boxed "
        "by Davis E. King (dlib-models)",
        factory=CnnDetector,
        description="dlib's mmod CNN face detector (more poses than HOG; on ONNX Runtime, else dlib)",
        parameters=lambda: _parameters("cnn"),
    )
)

"""The detector registry: every face detector has a name, a version, a licence, the runtime it
runs on and the data it was trained on, like the embedders of ``models.py``.

A detector finds faces in an RGB image and returns :class:`Detection` values: the box in the
image's pixels, a Confidence on Rekognition's 0-100 scale (50 at the detector's own decision
margin) and, where the detector predicts them, its own five landmarks. A spec also says what,
beyond its version, decides what it finds (``parameters``: thresholds, detection-time resolution),
so that anything keyed by the pipeline (the evaluation's template cache, a calibration table's
record) changes when they do. Adding a detector = one
module that registers a :class:`DetectorSpec` (see ``dlib_detectors.py`` and ``centerface.py``),
imported by the engine package; this module imports none of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..config import Settings
from ..errors import InvalidInput
from .faces import Box

#: The order of a detector's own landmarks: the eye on the image's left, the other eye, the nose
#: tip, the mouth corner on the image's left, the other mouth corner (the ArcFace template's order).
LANDMARK_ORDER = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


@dataclass(frozen=True)
class Detection:
    box: Box
    confidence: float
    #: ``(5, 2)`` image pixels in :data:`LANDMARK_ORDER`, in OpenCV's convention (pixel centres at
    #: whole coordinates, as dlib's points are), or None for detectors without landmarks. The engine
    #: aligns faces on dlib's 5-point model's points, not on these (see ``Engine.detect``).
    landmarks: np.ndarray | None = field(default=None, compare=False)


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an ``(h, w, 3)`` uint8 RGB image, strongest first."""
        ...


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    version: str
    runtime: str
    licence: str
    training_data: str
    #: Builds the detector from the settings (model cache directory, ONNX threads); once per engine.
    factory: Callable[[Settings], Detector] = field(compare=False, repr=False)
    description: str = ""
    #: The detector predicts five landmarks itself (:attr:`Detection.landmarks`).
    landmarks: bool = False
    #: What, beyond ``version``, decides the detector's output (thresholds, detection-time resolution,
    #: the model file's hash): JSON-able values, read when a pipeline is described.
    parameters: Callable[[], dict[str, Any]] = field(default=lambda: {}, compare=False, repr=False)


_registry: dict[str, DetectorSpec] = {}
_lock = threading.Lock()


def register(spec: DetectorSpec) -> DetectorSpec:
    with _lock:
        existing = _registry.get(spec.name)
        if existing is not None and existing != spec:
            raise InvalidInput(f"Detector {spec.name!r} is already registered with other settings.")
        _registry[spec.name] = spec
    return spec


def get(name: str) -> DetectorSpec:
    try:
        return _registry[name]
    except KeyError:
        raise InvalidInput(f"Unknown detector {name!r}. Known detectors: {', '.join(names())}.") from None


def names() -> list[str]:
    return sorted(_registry)


def all_detectors() -> list[DetectorSpec]:
    return [_registry[n] for n in names()]


# ---- detection-time resolution, shared by every detector -----------------------------------------
#: Smallest face looked for in a small photo (pixels of the photo).
MIN_FACE_PX = 40.0
#: In a large photo, the smallest face looked for as a fraction of its longer side.
MIN_FACE_FRACTION = 1 / 30


def smallest_face(width: int, height: int) -> float:
    """The smallest face worth finding in a photo of this size, in its pixels."""
    return max(MIN_FACE_PX, max(width, height) * MIN_FACE_FRACTION)


def smallest_face_parameters() -> dict[str, float]:
    return {"min_face_px": MIN_FACE_PX, "min_face_fraction": MIN_FACE_FRACTION}


def resize(image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """The image resized by about ``scale`` (bilinear up, box filter down; the image itself at 1),
    with the scales it was actually resized by along x and y: the size is rounded to whole pixels,
    so they differ from ``scale`` (by up to 4 px at the centre of a 4,000 px photo reduced 5x), and
    whatever is found in the copy maps back through them, exactly (pixel corners at whole
    coordinates, as the resampling maps them)."""
    h, w = image.shape[:2]
    if abs(scale - 1.0) < 1e-3:
        return image, 1.0, 1.0
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize(size, resample)), size[0] / w, size[1] / h

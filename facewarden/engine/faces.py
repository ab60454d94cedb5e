"""Face values in Rekognition's shapes: ratios of the image size, confidences 0-100."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the (orientation-corrected) image."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, s: float, sy: float | None = None) -> Box:
        """The box with x multiplied by ``s`` and y by ``sy`` (``s`` when None)."""
        sy = s if sy is None else sy
        return Box(self.left * s, self.top * sy, self.right * s, self.bottom * sy)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0.0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_rekognition(self, width: int, height: int) -> dict[str, float]:
        """``BoundingBox`` as ratios of the image size (may extend past 0..1, as Rekognition's do)."""
        return {
            "Width": self.width / width,
            "Height": self.height / height,
            "Left": self.left / width,
            "Top": self.top / height,
        }


@dataclass(frozen=True)
class Pose:
    roll: float
    yaw: float
    pitch: float

    def to_rekognition(self) -> dict[str, float]:
        return {"Roll": self.roll, "Yaw": self.yaw, "Pitch": self.pitch}


@dataclass(frozen=True)
class Quality:
    brightness: float
    sharpness: float

    def to_rekognition(self) -> dict[str, float]:
        return {"Brightness": self.brightness, "Sharpness": self.sharpness}


@dataclass
class DetectedFace:
    """One face found in an image: where, how sure, its landmarks, pose and quality.

    ``shape`` is the runtime's landmark object used for dlib's own alignment, and
    ``align_points`` the five points a template model aligns on (``(5, 2)`` pixels in the ArcFace
    template's order: eye centre on the image's left, the other eye centre, nose tip, mouth corner
    on the image's left, the other one), placed from dlib's 5-point model on the detector's box.
    Neither leaves the engine.
    """

    box: Box
    confidence: float
    landmarks: dict[str, tuple[float, float]]
    pose: Pose
    quality: Quality
    image_size: tuple[int, int]  # (width, height)
    shape: Any = field(default=None, repr=False, compare=False)
    align_points: np.ndarray | None = field(default=None, repr=False, compare=False)

    def face_detail(self, attributes: str = "DEFAULT") -> dict[str, Any]:
        """The Rekognition ``FaceDetail`` shape for this face."""
        w, h = self.image_size
        return {
            "BoundingBox": self.box.to_rekognition(w, h),
            "Landmarks": [{"Type": name, "X": x / w, "Y": y / h} for name, (x, y) in self.landmarks.items()],
            "Pose": self.pose.to_rekognition(),
            "Quality": self.quality.to_rekognition(),
            "Confidence": self.confidence,
        }


@dataclass
class FaceTemplate:
    """A detected face with its biometric template (L2-normalised) and the model version."""

    face: DetectedFace
    template: np.ndarray
    model_version: str


def template_to_bytes(template: np.ndarray) -> bytes:
    return np.asarray(template, dtype="<f4").tobytes()


def template_from_bytes(data: bytes, dim: int | None = None) -> np.ndarray:
    arr = np.frombuffer(data, dtype="<f4")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"template has {arr.shape[0]} values, expected {dim}")
    return arr.astype(np.float32)


def normalise(descriptors: np.ndarray) -> np.ndarray:
    """L2-normalise rows once, so that distance and inner product agree everywhere."""
    d = np.asarray(descriptors, dtype=np.float32)
    norms = np.linalg.norm(d, axis=-1, keepdims=True)
    return d / np.maximum(norms, 1e-12)

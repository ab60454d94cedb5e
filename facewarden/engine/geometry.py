"""Landmarks, head pose and five-point alignment.

dlib's 5-point model gives two corners of each eye and the base of the nose. Rekognition's default
landmarks also include the mouth corners: they are estimated by fitting a mean frontal face
template (the widely published 112x112 five-point alignment template) to the eyes and nose with
a similarity transform. Pose angles are geometric estimates from the same points (about +-10
degrees), good for rejecting extreme poses, not for measurement.

Models other than dlib's own take face chips warped with a similarity transform so that five
points of the face land on a template (:func:`align`; ``ARCFACE_112`` for SFace and most
ArcFace-style models).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .faces import Pose

#: The widely used five-point template of 112x112 ArcFace-style models (a mean frontal face): the
#: eye on the image's left, the other eye, the nose tip, the mouth corner on the left, the other one.
ARCFACE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
_TEMPLATE = np.array(ARCFACE_112)
# dlib's nose point is the base of the nose, a little below the template's nose tip.
_NOSE_BASE_OFFSET = 0.18  # in inter-ocular distances
_NOSE_DEPTH = 0.45  # nose protrusion over inter-ocular distance, for yaw
_NOSE_DROP = 0.75  # frontal drop of the nose base below the eye line, in inter-ocular distances


def five_points(parts: np.ndarray) -> dict[str, tuple[float, float]]:
    """dlib 5-point parts (2 corners per eye, nose base) -> Rekognition's five landmarks.

    ``eyeLeft``/``mouthLeft`` are the ones on the left of the image, as Rekognition reports them;
    ``nose`` is dlib's point, the base of the nose.
    """
    left, right, _, mouth_l, mouth_r = alignment_points(parts)
    nose = parts[4]
    return {
        "eyeLeft": (float(left[0]), float(left[1])),
        "eyeRight": (float(right[0]), float(right[1])),
        "nose": (float(nose[0]), float(nose[1])),
        "mouthLeft": (float(mouth_l[0]), float(mouth_l[1])),
        "mouthRight": (float(mouth_r[0]), float(mouth_r[1])),
    }


def alignment_points(parts: np.ndarray) -> np.ndarray:
    """dlib 5-point parts -> the five points of the ArcFace template, ``(5, 2)`` in image pixels.

    In the template's order: the eye centre on the left of the image, the other eye centre, the
    nose tip, the mouth corner on the left of the image, the other one. Eye centres are the means
    of dlib's eye corners; the nose tip is estimated above dlib's nose base; the mouth corners
    are not measured (dlib's 5-point model has none) but placed by fitting the template to the
    three points above, so they add nothing to an alignment: it rests on the eyes and nose.
    """
    eye_a = parts[0:2].mean(axis=0)
    eye_b = parts[2:4].mean(axis=0)
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    iod = float(np.linalg.norm(right - left)) or 1.0
    up = np.array([-(right - left)[1], (right - left)[0]]) / iod  # unit vector pointing down the face
    nose_tip = parts[4] - up * _NOSE_BASE_OFFSET * iod
    three = np.stack([left, right, nose_tip])
    mouth = _similarity_apply(_TEMPLATE[:3], three, _TEMPLATE[3:])
    return np.concatenate([three, mouth]).astype(np.float64)


def pose(landmarks: dict[str, tuple[float, float]]) -> Pose:
    left = np.array(landmarks["eyeLeft"])
    right = np.array(landmarks["eyeRight"])
    nose = np.array(landmarks["nose"])
    d = right - left
    iod = float(np.linalg.norm(d)) or 1.0
    roll = math.degrees(math.atan2(d[1], d[0]))
    # Express the nose in the de-rolled face frame, in inter-ocular distances.
    c, s = d / iod
    rel = nose - (left + right) / 2
    x = (rel[0] * c + rel[1] * s) / iod
    y = (-rel[0] * s + rel[1] * c) / iod
    yaw = math.degrees(math.atan2(x, _NOSE_DEPTH))
    pitch = math.degrees(math.atan2(_NOSE_DROP - y, _NOSE_DROP)) * 1.0
    return Pose(roll=_clamp(roll), yaw=_clamp(yaw, 90), pitch=_clamp(pitch, 90))


def _clamp(v: float, limit: float = 180.0) -> float:
    return float(max(-limit, min(limit, v)))


def _similarity_apply(src: np.ndarray, dst: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform src -> dst, applied to ``points``."""
    m = similarity_transform(src, dst)
    return points @ m[:, :2].T + m[:, 2]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity transform taking ``src`` points onto ``dst`` points (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    sign = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = u @ np.diag(sign) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align(image: np.ndarray, points: list[np.ndarray], template: tuple, size: int) -> np.ndarray:
    """Chips ``(n, size, size, 3)``: each face warped so that its five points (``(5, 2)`` pixels, in
    the template's order: eye on the image's left, other eye, nose tip, mouth corners) land on the
    template (least-squares similarity, bilinear). Points and template are in OpenCV's convention,
    pixel centres at whole coordinates, as the models were trained with ``cv2.warpAffine``."""
    dst = np.asarray(template, dtype=np.float64)
    pil = Image.fromarray(image)
    chips = []
    for pts in points:
        m = similarity_transform(dst, np.asarray(pts, dtype=np.float64).reshape(5, 2))  # chip -> image
        # PIL samples output pixel (x, y) at m @ (x + 0.5, y + 0.5) in corner coordinates (pixel
        # centres at +0.5); shift by half a pixel on both sides to get OpenCV's centre convention.
        (a, b, c), (d, e, f) = m
        coeffs = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
        chips.append(
            np.asarray(pil.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR))
        )
    return np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)

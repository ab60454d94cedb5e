"""Landmarks and head pose from dlib's 5-point shape.

dlib's 5-point model gives two corners of each eye and the base of the nose. Rekognition's default
landmarks also include the mouth corners: they are estimated by fitting a mean frontal face
template (the widely published 112x112 five-point alignment template) to the eyes and nose with
a similarity transform. Pose angles are geometric estimates from the same points (about +-10
degrees), good for rejecting extreme poses, not for measurement.
"""

from __future__ import annotations

import math

import numpy as np

from .faces import Pose

# Mean frontal face in a 112x112 frame: image-left eye, image-right eye, nose, mouth left, mouth right.
_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# dlib's nose point is the base of the nose, a little below the template's nose tip.
_NOSE_BASE_OFFSET = 0.18  # in inter-ocular distances
_NOSE_DEPTH = 0.45  # nose protrusion over inter-ocular distance, for yaw
_NOSE_DROP = 0.75  # frontal drop of the nose base below the eye line, in inter-ocular distances


def five_points(parts: np.ndarray) -> dict[str, tuple[float, float]]:
    """dlib 5-point parts (2 corners per eye, nose base) -> Rekognition's five landmarks.

    ``eyeLeft``/``mouthLeft`` are the ones on the left of the image, as Rekognition reports them.
    """
    eye_a = parts[0:2].mean(axis=0)
    eye_b = parts[2:4].mean(axis=0)
    left, right = (eye_a, eye_b) if eye_a[0] <= eye_b[0] else (eye_b, eye_a)
    nose = parts[4]
    iod = float(np.linalg.norm(right - left)) or 1.0
    # Template nose tip sits above dlib's nose base.
    up = np.array([-(right - left)[1], (right - left)[0]]) / iod  # unit vector pointing down the face
    nose_tip = nose - up * _NOSE_BASE_OFFSET * iod
    src = _TEMPLATE[:3]
    dst = np.stack([left, right, nose_tip])
    mouth = _similarity_apply(src, dst, _TEMPLATE[3:])
    return {
        "eyeLeft": (float(left[0]), float(left[1])),
        "eyeRight": (float(right[0]), float(right[1])),
        "nose": (float(nose[0]), float(nose[1])),
        "mouthLeft": (float(mouth[0, 0]), float(mouth[0, 1])),
        "mouthRight": (float(mouth[1, 0]), float(mouth[1, 1])),
    }


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
    """Least-squares similarity transform src -> dst (Umeyama), applied to ``points``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    return (scale * (rot @ (points - mu_s).T)).T + mu_d

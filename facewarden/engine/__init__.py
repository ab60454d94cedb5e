"""Pixels -> faces: detection, landmarks, pose, quality, alignment and templates.

:class:`Engine` is the one entry point. Detectors (``detectors.py``) and embedders (``models.py``)
are registered as specs by their own modules, imported here; models load lazily, once per process,
on their runtime's module (``dlib_runtime.py``, ``onnx_runtime.py``). The embedder runs on the
runtime chosen by settings (``auto``: ONNX Runtime when available, else dlib), and every template
carries its model version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import InvalidInput
from . import (
    centerface,
    detectors,
    dlib_detectors,
    dlib_resnet,
    dlib_runtime,
    geometry,
    models,
    quality,
    sface,
)
from .calibration import Calibration
from .detectors import Detector, DetectorSpec
from .faces import Box, DetectedFace, FaceTemplate, normalise
from .loading import compute_slots

log = logging.getLogger(__name__)

__all__ = ["Box", "Calibration", "DetectedFace", "Engine", "FaceTemplate"]

# The built-in detectors and models, registered by importing their modules.
BUILTIN = (centerface.SPEC, dlib_detectors.HOG, dlib_detectors.CNN, dlib_resnet.SPEC, sface.SPEC)

ATTRIBUTES = ("DEFAULT", "ALL")

#: Part of every :meth:`Engine.pipeline`: bump it when code that decides templates changes without a
#: detector's or model's version or parameters changing (e.g. how points are mapped or chips cut),
#: so that templates cached under the old pipeline are not served. 2: boxes and landmarks mapped
#: back through the exact per-axis scales of the detection copy. 3: template models align on dlib's
#: 5-point model's points on every detector's box, no longer on a detector's own landmarks.
PIPELINE_REVISION = 3

# 68-point (iBUG) indices -> Rekognition landmark names, for Attributes=ALL with the optional model.
_LANDMARKS_68: dict[str, tuple[int, ...]] = {
    "leftEyeBrowLeft": (17,), "leftEyeBrowUp": (19,), "leftEyeBrowRight": (21,),
    "rightEyeBrowLeft": (22,), "rightEyeBrowUp": (24,), "rightEyeBrowRight": (26,),
    "leftEyeLeft": (36,), "leftEyeRight": (39,), "leftEyeUp": (37, 38), "leftEyeDown": (40, 41),
    "rightEyeLeft": (42,), "rightEyeRight": (45,), "rightEyeUp": (43, 44), "rightEyeDown": (46, 47),
    "noseLeft": (31,), "noseRight": (35,), "mouthUp": (51,), "mouthDown": (57,),
    "leftPupil": (36, 37, 38, 39, 40, 41), "rightPupil": (42, 43, 44, 45, 46, 47),
    "upperJawlineLeft": (1,), "midJawlineLeft": (4,), "chinBottom": (8,),
    "midJawlineRight": (12,), "upperJawlineRight": (15,),
}  # fmt: skip


class Engine:
    """Detect faces and compute templates with one model version."""

    def __init__(self, settings: Settings | None = None, model: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        from . import onnx_user

        onnx_user.load_registry(self.settings.data_dir)
        self.spec = models.get(model or self.settings.model)
        self._embedder: models.Embedder | None = None
        self._detectors: dict[str, Detector] = {}
        #: At most ``engine_concurrency`` detections or embeddings at once in this process.
        self._compute = compute_slots(self.settings.engine_concurrency)
        self._runtime: str | None = None
        self._calibration: Calibration | None = None
        self._lock = threading.Lock()

    def queue_depth(self) -> tuple[int, int]:
        """(detections/embeddings running now, callers waiting for a compute slot) in this process."""
        return self._compute.depth()

    # ---- model pieces, loaded on first use ---------------------------------------------------
    @property
    def model_version(self) -> str:
        return self.spec.version

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            if self.spec.calibration_file is None or not self.spec.calibration_file.exists():
                raise InvalidInput(
                    f"Model {self.spec.version} is not calibrated, so its similarities would mean nothing: "
                    f"run `facewarden calibrate --model {self.spec.name} --images DIR` first."
                )
            self._calibration = Calibration.load(self.spec.calibration_file)
        return self._calibration

    @property
    def embedder(self) -> models.Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder, self._runtime = self._load_embedder()
        return self._embedder

    @property
    def runtime_name(self) -> str:
        self.embedder  # noqa: B018 - resolves the runtime
        return self._runtime or "?"

    def _load_embedder(self) -> tuple[models.Embedder, str]:
        wanted = self.settings.runtime
        candidates = self.spec.runtimes if wanted == "auto" else (wanted,)
        last: Exception | None = None
        for name in candidates:
            if name not in self.spec.runtimes:
                raise InvalidInput(
                    f"Model {self.spec.version} cannot run on {name!r}; it runs on {self.spec.runtimes}."
                )
            try:
                return self.spec.factory(name, self.settings), name
            except ImportError as exc:  # runtime not available here: try the next one
                last = exc
                log.info("runtime %s unavailable for %s: %s", name, self.spec.version, exc)
        raise InvalidInput(f"No runtime available for model {self.spec.version}: {last}")

    def detector(self, name: str | None = None) -> tuple[DetectorSpec, Detector]:
        """A registered detector (the settings' default when ``name`` is None), built on first use."""
        spec = detectors.get(name or self.settings.detector)
        det = self._detectors.get(spec.name)
        if det is None:
            with self._lock:
                det = self._detectors.get(spec.name)
                if det is None:
                    det = self._detectors[spec.name] = spec.factory(self.settings)
        return spec, det

    def pipeline(self, detector: str | None = None) -> dict[str, Any]:
        """What decides this engine's templates with ``detector`` (the settings' default when None):
        the detector's version and parameters, where the alignment points come from and how chips
        are cut, the model version and the runtime setting. Recorded with calibration tables and
        evaluation reports; :meth:`pipeline_key` keys cached templates by it."""
        det = detectors.get(detector or self.settings.detector)
        spec = self.spec
        if spec.align_template is None:
            alignment: dict[str, Any] = {
                "points": "dlib shape_predictor_5_face_landmarks on the detector's box",
                "chip": f"dlib.get_face_chip size {spec.chip_size} padding {spec.chip_padding}",
            }
        else:
            alignment = {
                "points": "placed from dlib shape_predictor_5_face_landmarks on the detector's box "
                "(eye centres from the corners, nose tip above the nose base)",
                "convention": "OpenCV pixel centres",
                "chip": f"similarity warp onto a five-point template, {spec.chip_size} px, bilinear",
                "template": [list(p) for p in spec.align_template],
            }
        return {
            "detector": det.name,
            "detector_version": det.version,
            "detector_parameters": det.parameters(),
            "alignment": alignment,
            "model_version": spec.version,
            "runtime": self.settings.runtime,
            "revision": PIPELINE_REVISION,
        }

    def pipeline_key(self, detector: str | None = None) -> str:
        """A short digest of :meth:`pipeline`: equal keys, equal templates for the same pixels."""
        text = json.dumps(self.pipeline(detector), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- operations --------------------------------------------------------------------------
    def detect(
        self, image: np.ndarray, detector: str | None = None, attributes: str = "DEFAULT"
    ) -> list[DetectedFace]:
        """Faces in an RGB image, largest-confidence first, with landmarks, pose and quality."""
        if attributes not in ATTRIBUTES:
            raise InvalidInput(f"Attributes must be DEFAULT or ALL, not {attributes!r}.")
        spec, det = self.detector(detector)
        h, w = image.shape[:2]
        with self._compute:
            found = det.detect(image)
        # dlib's 5-point shape predictor runs on every detector's own box: on CenterFace's boxes
        # (taller than dlib's) the verification figures on shared/faces/pairs.tsv came out equal to
        # or better than on dlib's HOG boxes, and better than on boxes mapped to dlib's convention
        # (from CenterFace's box or landmarks) -- see bench/bench_detectors.py and the README.
        sp5 = dlib_runtime.shape_predictor_5()
        use68 = attributes == "ALL" and self.settings.landmarks_68
        faces = []
        for d in found:
            rect = _dlib_rect(d.box)
            shape = sp5(image, rect)
            parts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            landmarks = geometry.five_points(parts)
            if use68:
                landmarks.update(_landmarks_68(image, rect))
            faces.append(
                DetectedFace(
                    box=d.box,
                    confidence=d.confidence,
                    landmarks=landmarks,
                    pose=geometry.pose(landmarks),
                    quality=quality.measure(image, d.box),
                    image_size=(w, h),
                    shape=shape,
                    # placed from dlib's 5-point model on every detector's box, not from a
                    # detector's own landmarks: SFace on CenterFace's boxes, shared/faces/pairs.tsv
                    # against the 4.5 million impostor pairs, EER 0.08% against 1.07%, FNMR at FMR
                    # 1e-4 3 against 8 of 236 (CenterFace's points stray on turned faces; see
                    # bench/bench_models.py --variants and the README)
                    align_points=geometry.alignment_points(parts),
                )
            )
        return faces

    def embed(self, image: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """L2-normalised templates, one row per face."""
        if not faces:
            return np.zeros((0, self.spec.dim), np.float32)
        return self.embed_chips(self.chips(image, faces))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """L2-normalised templates of aligned chips from :meth:`chips` (video keeps a track's best
        chips while it runs and embeds them once the track ends)."""
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        with self._compute:
            return normalise(self.embedder.embed(np.asarray(chips)))

    def chips(self, image: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """Aligned face chips, ``(n, size, size, 3)`` uint8: dlib's own 5-point alignment for dlib's
        model, a similarity warp of the face's five alignment points onto the model's template for
        the others."""
        if self.spec.align_template is not None:
            points = [_align_points(f) for f in faces]
            return geometry.align(image, points, self.spec.align_template, self.spec.chip_size)
        # One face at a time: dlib's batch extraction shares one image pyramid among all the faces
        # of an image, so a face's chip (and template) would depend on the other faces beside it.
        dlib = dlib_runtime.dlib_module()
        size, padding = self.spec.chip_size, self.spec.chip_padding
        return np.stack(
            [np.asarray(dlib.get_face_chip(image, f.shape, size=size, padding=padding)) for f in faces]
        )

    def analyse(
        self, image: np.ndarray, detector: str | None = None, attributes: str = "DEFAULT"
    ) -> list[FaceTemplate]:
        faces = self.detect(image, detector, attributes)
        templates = self.embed(image, faces)
        return [FaceTemplate(f, t, self.spec.version) for f, t in zip(faces, templates)]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self.calibration.similarity(float(np.linalg.norm(np.asarray(a) - np.asarray(b)))))

    def similarities(self, probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        if len(gallery) == 0:
            return np.zeros(0)
        d = np.linalg.norm(np.asarray(gallery, np.float32) - np.asarray(probe, np.float32), axis=1)
        return np.asarray(self.calibration.similarity(d))


def _dlib_rect(box: Box) -> Any:
    """A box in pixels -> dlib's rectangle (inclusive right and bottom)."""
    return dlib_runtime.dlib_module().rectangle(
        int(round(box.left)), int(round(box.top)), int(round(box.right)) - 1, int(round(box.bottom)) - 1
    )


def _align_points(face: DetectedFace) -> np.ndarray:
    if face.align_points is not None:
        return np.asarray(face.align_points, dtype=np.float64)
    if face.shape is not None:
        return geometry.alignment_points(np.array([(p.x, p.y) for p in face.shape.parts()], dtype=np.float64))
    raise InvalidInput("This face has no alignment landmarks; detect it again.")


def _landmarks_68(image: np.ndarray, rect: Any) -> dict[str, tuple[float, float]]:
    shape = dlib_runtime.shape_predictor_68()(image, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    out = {name: tuple(float(v) for v in pts[list(idx)].mean(axis=0)) for name, idx in _LANDMARKS_68.items()}
    out.update(nose=tuple(pts[30]), mouthLeft=tuple(pts[48]), mouthRight=tuple(pts[54]))
    return out  # type: ignore[return-value]

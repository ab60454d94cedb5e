"""The dlib runtime: the dlib module, the model files of ``face_recognition_models`` and dlib's
runtime objects, loaded lazily (:mod:`.loading`).

The shape predictors are safe for concurrent calls (their ``operator()`` is const) and are loaded
once per process. dlib's detectors and networks keep scratch buffers inside the object, and two
threads running one at once corrupt the heap: those are lent from a :class:`~.loading.Pool`, one
caller at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from .loading import Pool, load_once


def weights_path(name: str) -> Path:
    """Path of a weights file shipped by the ``face_recognition_models`` package."""
    try:
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError(
            "The face_recognition_models package is not installed (pip install facewarden)."
        ) from exc
    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise ModelError(f"Model file {path} is missing; reinstall face_recognition_models.")
    return path


@load_once
def dlib_module() -> Any:
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover
        raise ModelError("dlib is not installed (the dlib-bin package provides it).") from exc
    return dlib


hog_detectors: Pool[Any] = Pool(lambda: dlib_module().get_frontal_face_detector())
cnn_detectors: Pool[Any] = Pool(
    lambda: dlib_module().cnn_face_detection_model_v1(str(weights_path("mmod_human_face_detector.dat")))
)


@load_once
def shape_predictor_5() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_5_face_landmarks.dat")))


@load_once
def shape_predictor_68() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_68_face_landmarks.dat")))


dlib_resnets: Pool[Any] = Pool(
    lambda: dlib_module().face_recognition_model_v1(
        str(weights_path("dlib_face_recognition_resnet_model_v1.dat"))
    )
)

"""Lazy, thread-safe, load-once access to model files and runtime objects.

Loading dlib's models takes a second or more; a process loads each at most once, on first use,
and shares it between threads (dlib's objects are safe for concurrent calls).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import ModelError

T = TypeVar("T")


def load_once(fn: Callable[[], T]) -> Callable[[], T]:
    """Decorate a zero-argument loader so it runs once per process, under a lock."""
    cached: list[T] = []
    lock = threading.Lock()  # one per loader: loaders may call other loaders

    @functools.wraps(fn)
    def wrapper() -> T:
        if not cached:
            with lock:
                if not cached:
                    cached.append(fn())
        return cached[0]

    return wrapper


def weights_path(name: str) -> Path:
    """Path of a weights file shipped by the ``face_recognition_models`` package."""
    try:
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError("The face_recognition_models package is not installed (pip install facewarden).") from exc
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


@load_once
def hog_detector() -> Any:
    return dlib_module().get_frontal_face_detector()


@load_once
def cnn_detector() -> Any:
    return dlib_module().cnn_face_detection_model_v1(str(weights_path("mmod_human_face_detector.dat")))


@load_once
def shape_predictor_5() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_5_face_landmarks.dat")))


@load_once
def shape_predictor_68() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_68_face_landmarks.dat")))


@load_once
def dlib_resnet() -> Any:
    return dlib_module().face_recognition_model_v1(str(weights_path("dlib_face_recognition_resnet_model_v1.dat")))

"""Lazy, thread-safe access to model files and runtime objects.

Loading dlib's models takes a second or more, so each is loaded on first use. Objects that are
safe for concurrent calls (the shape predictors: their ``operator()`` is const) are loaded once
per process and shared; dlib's detectors and networks keep scratch buffers inside the object, and
two threads running one of them at once corrupt the heap, so those are loaded once per thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def per_thread(fn: Callable[[], T]) -> Callable[[], T]:
    """Decorate a zero-argument loader so each thread gets (and keeps) its own instance."""
    local = threading.local()

    @functools.wraps(fn)
    def wrapper() -> T:
        obj = getattr(local, "obj", None)
        if obj is None:
            obj = local.obj = fn()
        return obj

    return wrapper


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


@per_thread
def hog_detector() -> Any:
    return dlib_module().get_frontal_face_detector()


@per_thread
def cnn_detector() -> Any:
    return dlib_module().cnn_face_detection_model_v1(str(weights_path("mmod_human_face_detector.dat")))


@load_once
def shape_predictor_5() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_5_face_landmarks.dat")))


@load_once
def shape_predictor_68() -> Any:
    return dlib_module().shape_predictor(str(weights_path("shape_predictor_68_face_landmarks.dat")))


@per_thread
def dlib_resnet() -> Any:
    return dlib_module().face_recognition_model_v1(
        str(weights_path("dlib_face_recognition_resnet_model_v1.dat"))
    )

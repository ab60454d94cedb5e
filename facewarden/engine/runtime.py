"""Lazy, thread-safe access to model files and runtime objects.

Loading dlib's models takes time (the HOG detector alone 0.3 s), so each is loaded on first use.
Objects that are safe for concurrent calls (the shape predictors: their ``operator()`` is const)
are loaded once per process and shared. dlib's detectors and networks keep scratch buffers inside
the object, and two threads running one at once corrupt the heap: those are lent from a
:class:`Pool`, one caller at a time, with no more instances than can run at once (one per CPU).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

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


class Pool(Generic[T]):
    """Instances of a non-thread-safe object, created on demand up to ``size``, lent one at a time.

    Borrowing blocks while all ``size`` instances are busy, so the pool also bounds how many
    callers run the object at once (more than the CPUs only thrash).
    """

    def __init__(self, factory: Callable[[], T], size: int) -> None:
        self._factory = factory
        self._free: queue.LifoQueue[T] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def borrow(self) -> Iterator[T]:
        with self._slots:
            try:
                obj = self._free.get_nowait()
            except queue.Empty:
                obj = self._factory()
            try:
                yield obj
            finally:
                self._free.put(obj)


def concurrency() -> int:
    """How many detections or embeddings run at once in this process (FACEWARDEN_ENGINE_CONCURRENCY)."""
    return int(os.environ.get("FACEWARDEN_ENGINE_CONCURRENCY", 0)) or os.cpu_count() or 1


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


hog_detectors: Pool[Any] = Pool(lambda: dlib_module().get_frontal_face_detector(), concurrency())
cnn_detectors: Pool[Any] = Pool(
    lambda: dlib_module().cnn_face_detection_model_v1(str(weights_path("mmod_human_face_detector.dat"))),
    concurrency(),
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
    ),
    concurrency(),
)

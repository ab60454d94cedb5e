"""Lazy, thread-safe loading shared by the runtimes: load once per process, lend one at a time.

Loading a model takes time (dlib's HOG detector alone 0.3 s, an ONNX session 0.1-1 s), so each is
loaded on first use. Objects that are safe for concurrent calls are loaded once per process and
shared (:func:`load_once`); objects that keep scratch buffers inside them are lent from a
:class:`Pool`, one caller at a time.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .slots import ComputeSlots

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
    """Instances of a non-thread-safe object, created on demand, lent one caller at a time.

    The pool grows to the largest number of callers that borrowed at once; how many run at once is
    bounded by the engine's compute slots (:func:`compute_slots`), so it never outgrows the CPUs.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._free: queue.LifoQueue[T] = queue.LifoQueue()

    @contextmanager
    def borrow(self) -> Iterator[T]:
        try:
            obj = self._free.get_nowait()
        except queue.Empty:
            obj = self._factory()
        try:
            yield obj
        finally:
            self._free.put(obj)


_slots: dict[int, ComputeSlots] = {}
_slots_lock = threading.Lock()


def compute_slots(concurrency: int = 0) -> ComputeSlots:
    """The process-wide semaphore that lets at most ``concurrency`` detections or embeddings run at
    once (0 = one per CPU): a service answers many requests on many threads, and past the number of
    cores they only thrash. Engines built from the same settings share one. It counts who runs and
    who waits (:meth:`ComputeSlots.depth`: the engine queue that monitoring shows)."""
    n = concurrency if concurrency > 0 else (os.cpu_count() or 1)
    with _slots_lock:
        if n not in _slots:
            _slots[n] = ComputeSlots(n)
        return _slots[n]

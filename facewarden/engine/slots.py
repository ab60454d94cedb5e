"""Compute slots: at most N detections or embeddings at once in a process, and how many wait.

A service answers many requests on many threads; past the number of cores they only thrash, so
the engine lets a bounded number compute at once and the others queue. The queue's depth is what
monitoring wants to see (``facewarden_engine_queue_depth``): :meth:`ComputeSlots.depth`.
"""

from __future__ import annotations

import threading
from types import TracebackType


class ComputeSlots:
    """A bounded semaphore that counts its holders and its waiters."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._sem = threading.BoundedSemaphore(self.size)
        self._count = threading.Lock()
        self._busy = 0
        self._waiting = 0

    def __enter__(self) -> ComputeSlots:
        with self._count:
            self._waiting += 1
        try:
            self._sem.acquire()
        finally:
            with self._count:
                self._waiting -= 1
        with self._count:
            self._busy += 1
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._count:
            self._busy -= 1
        self._sem.release()

    def depth(self) -> tuple[int, int]:
        """(running now, waiting for a slot)."""
        with self._count:
            return self._busy, self._waiting

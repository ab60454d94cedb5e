"""When a process's periodic duties run (:func:`facewarden.service.registry.periodic`): lazily
before a call once their period has passed (any process, the CLI's included), on a background timer
in a serving process (which may see no call for hours), and on request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("facewarden.service")


class Periodic:
    """One duty of one service process: ``work(now)`` every ``every_s`` seconds."""

    def __init__(
        self,
        name: str,
        clock: Callable[[], float],
        every_s: float,
        work: Callable[[float], Mapping[str, int]],
    ) -> None:
        self.name = name
        self.clock = clock
        self.every_s = every_s
        self.work = work
        self.next_at = clock() + every_s
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def run(self, now: float | None = None) -> Mapping[str, int]:
        """Do the work now (``now``: the time it is done as of); the next lazy run is a period on."""
        now = self.clock() if now is None else float(now)
        self.next_at = now + self.every_s
        return self.work(now)

    def maybe_run(self) -> None:
        """Run if the period has passed since the last run (a failure is logged, not raised)."""
        if self.clock() < self.next_at:
            return
        try:
            self.run()
        except Exception:
            log.exception("periodic %s failed", self.name)

    def start(self, every_s: float | None = None) -> None:
        """Run every ``every_s`` seconds (default: the duty's period) on a background thread until
        :meth:`stop` (failures are logged and the timer goes on)."""
        if self._timer is not None:
            return
        period = float(every_s or self.every_s)
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    self.run()
                except Exception:
                    log.exception("scheduled %s failed", self.name)

        self._timer = threading.Thread(target=loop, name=f"facewarden-{self.name}", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        """Stop the background runs (waits for one in progress)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            self._stop.set()
            timer.join()

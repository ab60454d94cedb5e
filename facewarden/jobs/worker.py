"""Workers: a bounded pool of threads that claim jobs from the queue and run their handlers.

``serve`` runs a small pool beside the HTTP server; ``facewarden worker`` runs one on a dedicated
machine (any number of them can share a PostgreSQL queue). A handler is a function of a
:class:`JobRun`; it reads ``run.job.params``, stores results with :meth:`JobRun.put` (atomically
with a checkpoint, so a resumed job continues after it) and calls :meth:`JobRun.check` often (per
frame): that is where it learns that the job was cancelled, that its lease was lost, or that the
worker is shutting down. While it runs, a heartbeat thread renews the lease every third of it, so
a slow frame never lets the lease lapse.

Whatever a handler raises, the worker survives: a :class:`~facewarden.errors.FacewardenError` fails
the job with its message, anything else fails it with a generic message (the traceback goes to the
log, not to the client). A worker killed outright (SIGKILL, power loss) leaves its job RUNNING with
a lease that expires; another worker then claims it again (see :mod:`facewarden.jobs.queue`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FacewardenError
from .queue import DEFAULT_LEASE_S, Job, JobCancelled, JobQueue, LeaseLost, Result

log = logging.getLogger("facewarden.jobs")


class WorkerStopping(Exception):
    """The worker is shutting down: the job goes back to the queue unfinished."""


@dataclass
class Completion:
    """What a handler returns: the job's summary and its final results (stored with completion)."""

    summary: dict[str, Any] = field(default_factory=dict)
    results: Sequence[Result] = ()


Handler = Callable[["JobRun"], Completion | None]


class JobRun:
    """One claimed job in a handler's hands."""

    def __init__(self, queue: JobQueue, job: Job, worker_id: str, lease_s: float, stopping: threading.Event):
        self.queue = queue
        self.job = job
        self.worker_id = worker_id
        self.lease_s = lease_s
        self._stopping = stopping
        self._lost: LeaseLost | None = None
        self._progress: float | None = None
        self._lock = threading.Lock()

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint the last run of this job stored (None on a first run)."""
        return self.job.checkpoint

    def progress(self, fraction: float) -> None:
        """Record progress (0..1); sent with the next heartbeat."""
        self._progress = min(max(float(fraction), 0.0), 1.0)
        self.check()

    def check(self) -> None:
        """Raise if the job must stop: cancelled, lease lost, or worker shutting down."""
        if self._lost is not None:
            raise self._lost
        if self._stopping.is_set():
            raise WorkerStopping()

    def put(self, results: Sequence[Result], checkpoint: dict[str, Any] | None = None) -> None:
        """Store results with the checkpoint reached (idempotent per seq; only while holding the job)."""
        self.check()
        with self._lock:
            self.queue.put_results(
                self.job.job_id,
                self.worker_id,
                results,
                checkpoint=checkpoint,
                progress=self._progress,
                lease_s=self.lease_s,
            )

    def _beat(self) -> None:
        try:
            with self._lock:
                self.queue.heartbeat(
                    self.job.job_id, self.worker_id, lease_s=self.lease_s, progress=self._progress
                )
        except LeaseLost as exc:
            self._lost = exc
        except Exception:  # noqa: BLE001 - a database hiccup: the next beat tries again
            log.warning("heartbeat for job %s failed", self.job.job_id, exc_info=True)


class WorkerPool:
    """``size`` threads running jobs of the kinds in ``handlers``."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: dict[str, Handler],
        *,
        size: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.queue = queue
        self.handlers = dict(handlers)
        self.size = size
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        for i in range(self.size):
            t = threading.Thread(
                target=self._loop, args=(f"{self.name}:{i}",), name=f"job-worker-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running jobs stop at their next check and go back to the queue."""
        self._stopping.set()
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def wake(self) -> None:
        """A job was queued: idle workers look now instead of at their next poll."""
        with self._wake:
            self._wake.notify_all()

    def run_forever(self) -> None:
        """Run the pool in this thread's process until :meth:`stop` (e.g. from a signal handler)."""
        self.start()
        try:
            while not self._stopping.wait(1.0):
                pass
        finally:
            self.stop()

    # ---- work ----------------------------------------------------------------------------------
    def _loop(self, worker_id: str) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_one(worker_id)
            except Exception:  # noqa: BLE001 - e.g. the database is away: wait and retry
                log.exception("job worker %s: claiming failed", worker_id)
                ran = False
            if not ran and not self._stopping.is_set():
                with self._wake:
                    self._wake.wait(self.poll_s)

    def run_one(self, worker_id: str | None = None) -> bool:
        """Claim and run one job in this thread; False when none was waiting."""
        worker_id = worker_id or f"{self.name}:direct"
        job = self.queue.claim(worker_id, sorted(self.handlers), self.lease_s)
        if job is None:
            return False
        self._run(job, worker_id)
        return True

    def run_job(self, job_id: str) -> bool:
        """Claim and run one given job in this thread (the CLI runs its own job so); False when it
        is not runnable (finished, or held by another worker)."""
        worker_id = f"{self.name}:direct"
        job = self.queue.claim(worker_id, sorted(self.handlers), self.lease_s, job_id=job_id)
        if job is None:
            return False
        self._run(job, worker_id)
        return True

    def _run(self, job: Job, worker_id: str) -> None:
        run = JobRun(self.queue, job, worker_id, self.lease_s, self._stopping)
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.lease_s / 3):
                run._beat()

        beater = threading.Thread(target=beat, name=f"heartbeat-{job.job_id[:8]}", daemon=True)
        beater.start()
        try:
            completion = self.handlers[job.kind](run) or Completion()
            run.check()
            self.queue.complete(job.job_id, worker_id, completion.summary, completion.results)
            log.info("job %s (%s) succeeded", job.job_id, job.kind)
        except JobCancelled:
            self.queue.mark_cancelled(job.job_id, worker_id)
            log.info("job %s cancelled", job.job_id)
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; stopped", job.job_id)
        except WorkerStopping:
            self.queue.release(job.job_id, worker_id)
            log.info("job %s returned to the queue (worker stopping)", job.job_id)
        except FacewardenError as exc:
            self.queue.fail(job.job_id, worker_id, exc.message)
            log.info("job %s failed: %s", job.job_id, exc.message)
        except Exception:  # noqa: BLE001 - the worker must survive any handler
            log.exception("job %s failed with an internal error", job.job_id)
            self.queue.fail(
                job.job_id, worker_id, "Internal error while running the job; the operator's log has details."
            )
        finally:
            done.set()
            beater.join()

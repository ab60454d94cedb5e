"""Durable jobs in the database (video face detection and search, redaction): queue, claim with a
lease, heartbeat, resume after a crash, results paged from the database, cancel, expiry.

See :mod:`facewarden.jobs.queue` for the guarantees and :mod:`facewarden.jobs.worker` for the
workers that ``serve`` and ``facewarden worker`` run.
"""

from .queue import (
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobCancelled,
    JobQueue,
    LeaseLost,
    Page,
    Result,
)
from .worker import Completion, Handler, JobRun, WorkerPool, WorkerStopping

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "Completion",
    "Handler",
    "Job",
    "JobCancelled",
    "JobQueue",
    "JobRun",
    "LeaseLost",
    "Page",
    "Result",
    "WorkerPool",
    "WorkerStopping",
]

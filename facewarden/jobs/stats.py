"""The job queue's depth and age, for monitoring: counted by the database, nothing else read.

Before any job queue was opened in this database (the ``jobs`` table does not exist yet) the
queue is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..db import Database
from .queue import QUEUED, RUNNING


@dataclass(frozen=True)
class JobStats:
    #: (kind, status) -> jobs, for the unfinished statuses (QUEUED, RUNNING).
    depth: dict[tuple[str, str], int] = field(default_factory=dict)
    #: kind -> seconds the oldest queued job of that kind has waited.
    oldest_queued_s: dict[str, float] = field(default_factory=dict)


def job_stats(db: Database, now: float) -> JobStats:
    with db.read() as tx:
        if tx.one("SELECT 1 FROM schema_migrations WHERE component = 'jobs'") is None:
            return JobStats()
        rows = tx.all(
            "SELECT kind, status, COUNT(*), MIN(created_at) FROM jobs WHERE status IN (?, ?)"
            " GROUP BY kind, status",
            (QUEUED, RUNNING),
        )
    depth = {(str(k), str(s)): int(n) for k, s, n, _ in rows}
    oldest = {str(k): max(0.0, now - float(t)) for k, s, _, t in rows if s == QUEUED and t is not None}
    return JobStats(depth, oldest)

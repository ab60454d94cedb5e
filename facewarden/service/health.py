"""Readiness (can this process serve? the database, the face model, the audit log's head) and the
values monitoring reads at scrape time (engine queue, job queue, gallery sizes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..jobs.stats import JobStats, job_stats

if TYPE_CHECKING:  # pragma: no cover
    from .core import Service


def readiness(svc: Service) -> dict[str, str | None]:
    """``{"database": None | problem, "models": ..., "audit": ...}``: None where the check passed.

    The default detector and the face model (embedder and calibration) are loaded by the first call, so a process is not
    ready before it could answer a search without the wait.
    """
    checks: dict[str, str | None] = {}
    try:
        with svc.db.read() as tx:
            tx.scalar("SELECT 1")
        checks["database"] = None
    except Exception as exc:  # noqa: BLE001 - reported as the check's problem
        checks["database"] = f"{type(exc).__name__}: {exc}"
    try:
        svc.engine.detector()  # the default detector, built once
        svc.engine.embedder  # noqa: B018 - loads the model once
        svc.engine.calibration  # noqa: B018
        checks["models"] = None
    except Exception as exc:  # noqa: BLE001
        checks["models"] = f"{type(exc).__name__}: {exc}"
    try:
        svc.audit.head()
        checks["audit"] = None
    except Exception as exc:  # noqa: BLE001
        checks["audit"] = f"{type(exc).__name__}: {exc}"
    return checks


@dataclass(frozen=True)
class CollectionSize:
    collection_id: str
    faces: int


@dataclass(frozen=True)
class Snapshot:
    """Values read at scrape time."""

    #: Detections/embeddings running now and callers waiting for a compute slot, in this process.
    engine_busy: int
    engine_waiting: int
    jobs: JobStats
    #: Faces per collection (the ids are only shown when the operator enables it).
    collections: list[CollectionSize] = field(default_factory=list)
    #: Seconds the reads took (the scrape's own cost).
    seconds: float = 0.0


def snapshot(svc: Service) -> Snapshot:
    """The gauges of ``svc``: engine queue, job queue, gallery sizes."""
    t0 = time.perf_counter()
    busy, waiting = svc.engine.queue_depth()
    jobs = job_stats(svc.db, svc.clock())
    cols: list[CollectionSize] = []
    after = None
    while True:
        page = svc.store.list_collections(after=after, limit=1000)
        if not page:
            break
        cols.extend(CollectionSize(c.collection_id, int(c.face_count)) for c in page)
        after = page[-1].collection_id
    return Snapshot(busy, waiting, jobs, cols, time.perf_counter() - t0)

"""Retention: templates past their collection's retention period, and what expired consents
covered, are erased by a sweep at start-up, then every hour on a background timer in a serving
process and at most every hour lazily before a call in any process (a periodic duty:
:mod:`facewarden.service.periodic`), and on request (the ``RunRetentionSweep`` operation,
``facewarden retention sweep``). Until the sweep erases them such faces are already hidden from
every read (:mod:`facewarden.service.visible`): the sweep is about storage, not visibility."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..policy.kinds import Kind
from . import consent
from .core import Service
from .visible import retention_cutoff
from .registry import Context, Rest, operation, periodic
from .params import Empty

log = logging.getLogger("facewarden.service")

#: How often (seconds) a service process sweeps retention and expired consents.
SWEEP_INTERVAL_S = 3600.0


@periodic("retention", SWEEP_INTERVAL_S)
def sweep(svc: Service, now: float) -> dict[str, int]:
    """Purge templates past their collection's retention period and erase what expired consents
    covered, expire finished jobs and released copies. Returns the counts."""
    store = svc.store
    purged = 0
    for col in svc.collections():
        days = col.retention_days or svc.policy.default_retention_days
        with svc.db.transaction(lock=f"retention:{col.collection_id}") as tx:
            removed = store.purge_before(col.collection_id, retention_cutoff(svc, col, now), tx=tx)
            if removed:
                svc.audit_system(
                    "RetentionSweep",
                    counts={"faces_erased": len(removed)},
                    details={"retention_days": days},
                    org=col.owner_org,
                    collection=col.collection_id,
                    tx=tx,
                )
        if removed:
            purged += len(removed)
            consent.sync_index(svc, col.collection_id)
    expired = consent.expire(svc, now)
    jobs = svc.jobs.expire(now)  # finished jobs and their results, past their retention
    if jobs:
        svc.audit_system("JobExpiry", counts={"jobs_expired": jobs})
    copies = svc.releases.expired_copies()
    for path in copies:  # released copies past their expiry: deleted, never handed over
        (svc.settings.data_dir / path).unlink(missing_ok=True)
    if copies:
        svc.audit_system("ReleaseExpired", counts={"copies_deleted": len(copies)})
    return {
        "faces_purged": purged,
        **expired,
        "jobs_expired": jobs,
        "release_copies_deleted": len(copies),
    }


@dataclass(frozen=True)
class RetentionSweepResult:
    #: faces_purged, consents_expired, faces_erased
    sweep: dict[str, int]


@operation(
    "RunRetentionSweep", kind=Kind.ADMIN, rest=Rest("POST", "/v1/admin/retention-sweep", "administration")
)
def run_retention_sweep(svc: Service, ctx: Context, req: Empty) -> RetentionSweepResult:
    """Purge expired templates and consents now"""
    result = svc.sweep()
    ctx.counts.update(result)
    return RetentionSweepResult(result)

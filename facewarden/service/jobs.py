"""Jobs the service runs in its workers, and the operations every job kind shares (list, cancel).

A job kind's handler is declared once, beside the operation that starts it, with
:func:`job_handler`; :func:`worker_pool` gives ``serve`` and ``facewarden worker`` a pool that runs
every declared kind. Start operations are decided by policy like any other call; a handler decides
again, before it reads a byte of media, with the principal that started the job (a key revoked or
a policy tightened in between stops the job), and writes the job's own audit record when it ends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import AccessDenied, FacewardenError, ResourceNotFound
from ..jobs import Completion, Handler, Job, JobRun, WorkerPool
from ..jobs.queue import STATUSES
from ..policy.kinds import Kind
from .core import Service
from .params import NextToken, OneOf, Pattern, Range
from .registry import Context, Rest, kind_of, operation

JobHandler = Callable[[Service, JobRun], Completion | None]
JOB_HANDLERS: dict[str, JobHandler] = {}

JobId = Annotated[str, Pattern(r"[a-zA-Z0-9\-_]{1,64}", "a JobId as a Start... call returned it")]
JobTag = Annotated[str, Pattern(r"[a-zA-Z0-9_.\-:]{1,256}", "1-256 characters of a-z, A-Z, 0-9, _ . - :")]


def job_handler(kind: str) -> Callable[[JobHandler], JobHandler]:
    """Declare ``fn(svc, run)`` as the handler of jobs of ``kind``."""

    def deco(fn: JobHandler) -> JobHandler:
        JOB_HANDLERS[kind] = fn
        return fn

    return deco


def worker_pool(svc: Service, size: int | None = None, poll_s: float = 1.0) -> WorkerPool:
    """A pool of ``size`` workers (default: the settings' ``job_workers``) for every job kind."""
    handlers: dict[str, Handler] = {kind: functools.partial(fn, svc) for kind, fn in JOB_HANDLERS.items()}
    return WorkerPool(svc.jobs, handlers, size=max(1, size or svc.settings.job_workers), poll_s=poll_s)


def job_context(svc: Service, run: JobRun, operation_name: str) -> Context:
    """The context of a job's own work: its starter's principal, decided again by policy now
    (before any media is read); a refusal is audited and raised (the job then fails)."""
    job = run.job
    principal = svc.principal_for_key(job.key_id)
    kind = kind_of(operation_name)
    collection_id = job.params.get("CollectionId")
    ctx = Context(f"{job.kind}Job", kind, principal, collection_id=collection_id)
    ctx.details.update(job_id=job.job_id)
    if principal is None:
        svc._audit(ctx, "denied", "principal", "the key that started the job no longer exists")
        raise AccessDenied("The access key that started this job no longer exists.", "principal")
    decision = svc.policy.decide(
        principal,
        operation_name,
        kind,
        svc.collection_info(collection_id),
        collection_id=collection_id,
        now=svc.clock(),
    )
    ctx.decision = decision
    if not decision.allowed:
        svc._audit(ctx, "denied", decision.rule_id, decision.reason)
        raise AccessDenied(decision.reason, decision.rule_id)
    return ctx


def audited(run: JobRun, svc: Service, ctx: Context, body: Callable[[], Completion]) -> Completion:
    """Run a job's body; one audit record for how it ended (counts, never faces)."""
    try:
        completion = body()
    except FacewardenError as exc:
        if ctx.audit_record is None:
            rule = getattr(exc, "rule", None) or (ctx.decision.rule_id if ctx.decision else "job")
            svc._audit(ctx, "failed", rule, f"{exc.aws_code}: {exc.message}"[:500])
        raise
    except Exception as exc:
        if ctx.audit_record is None and not _stopping(exc):
            svc._audit(ctx, "failed", "job", f"InternalServerError ({type(exc).__name__})")
        raise
    svc._audit(ctx, "recorded", "job", f"job {run.job.job_id} succeeded")
    return completion


def _stopping(exc: Exception) -> bool:
    from ..jobs import LeaseLost, WorkerStopping

    return isinstance(exc, (LeaseLost, WorkerStopping))


def own_job(svc: Service, ctx: Context, job_id: str, kind: str | None = None) -> Job:
    """The caller's organisation's job (ResourceNotFound otherwise, also for another kind)."""
    job = svc.jobs.get(job_id, ctx.caller.org)
    if kind is not None and job.kind != kind:
        raise ResourceNotFound(f"No {kind} job {job_id!r}.")
    return job


def wire_status(job: Job) -> tuple[str, str | None]:
    """Rekognition's JobStatus (IN_PROGRESS | SUCCEEDED | FAILED) and StatusMessage of a job."""
    if job.status in ("QUEUED", "RUNNING"):
        return "IN_PROGRESS", None
    if job.status == "CANCELLED":
        return "FAILED", f"Cancelled: {job.status_message or 'on request'}"
    return job.status, job.status_message


# ---- list and cancel --------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSummary:
    job_id: str
    job_type: str
    job_status: str
    status: str
    status_message: str | None
    progress: float
    created_at: float
    finished_at: float | None
    job_tag: str | None
    video: dict[str, Any] | None
    collection_id: str | None


def summary(job: Job) -> JobSummary:
    return JobSummary(
        job.job_id,
        job.kind,
        wire_status(job)[0],
        job.status,
        job.status_message,
        round(job.progress, 4),
        job.created_at,
        job.finished_at,
        job.job_tag,
        job.params.get("Video"),
        job.params.get("CollectionId"),
    )


@dataclass(frozen=True)
class ListJobsRequest:
    status: Annotated[str, OneOf(STATUSES, upper=True)] | None = None
    job_type: Annotated[str, Pattern(r"[A-Za-z]{1,64}", "a job type such as FaceSearch")] | None = None
    max_results: Annotated[int, Range(1, 1000)] = 100
    next_token: NextToken | None = None


@dataclass(frozen=True)
class ListJobsResult:
    jobs: list[JobSummary]
    next_token: str | None = None


@operation("ListJobs", kind=Kind.MANAGE, rest=Rest("GET", "/v1/jobs", "jobs"))
def list_jobs(svc: Service, ctx: Context, req: ListJobsRequest) -> ListJobsResult:
    """List your organisation's jobs, newest first"""
    jobs, token = svc.jobs.list(
        ctx.caller.org, status=req.status, kind=req.job_type, limit=req.max_results, next_token=req.next_token
    )
    ctx.counts["jobs"] = len(jobs)
    return ListJobsResult([summary(j) for j in jobs], token)


@dataclass(frozen=True)
class CancelJobRequest:
    job_id: JobId


@operation("CancelJob", kind=Kind.MANAGE, rest=Rest("DELETE", "/v1/jobs/{JobId}", "jobs"))
def cancel_job(svc: Service, ctx: Context, req: CancelJobRequest) -> JobSummary:
    """Cancel a job: a queued one at once, a running one at its next frame; its results are deleted"""
    job = svc.jobs.cancel(req.job_id, ctx.caller.org, f"cancelled by key {ctx.caller.key_id}")
    ctx.details["job_id"] = job.job_id
    return summary(job)

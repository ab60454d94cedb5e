"""The job queue: jobs and their results as rows of the shared database (SQLite or PostgreSQL).

A job moves ``QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED``. Every transition is one
transaction, so any number of worker threads and processes (on one machine with SQLite, on many with
PostgreSQL) can share the queue:

* **enqueue** is idempotent per ``(organisation, kind, ClientRequestToken)``: the same token with
  the same parameters returns the same job; with other parameters it raises
  :class:`~facewarden.errors.IdempotentParameterMismatch`. A unique index decides races between
  processes.
* **claim** takes the oldest runnable job with a *lease* (``lease_s`` seconds, renewed by
  heartbeats). PostgreSQL picks it with ``SELECT ... FOR UPDATE SKIP LOCKED`` (concurrent claimers
  skip each other's rows instead of waiting); SQLite takes its write lock at ``BEGIN IMMEDIATE``.
  A running job whose lease expired (its worker was killed, or its machine lost) is runnable again;
  after ``max_attempts`` claims it is failed instead, so a file that kills its worker cannot kill
  every worker in turn.
* **results** are keyed by ``(job_id, seq)`` and inserted with ``ON CONFLICT DO NOTHING``, in the
  same transaction as the job's checkpoint and only while the writer still holds the lease: a
  resumed job continues after its last checkpoint, a rerun writes nothing twice, and a worker that
  lost its lease writes nothing at all.
* **expiry**: a finished job and its results are deleted at ``expires_at`` (set from the job's
  retention when it finishes); :meth:`JobQueue.expire` does it.

Times are the callers' clocks (epoch seconds): machines sharing a PostgreSQL queue need synchronised
clocks (NTP), as leases compare them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..db import Database, Tx
from ..errors import IdempotentParameterMismatch, InvalidInput, ResourceNotFound

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

DEFAULT_LEASE_S = 60.0
DEFAULT_MAX_ATTEMPTS = 3
#: How long a finished job's results are kept unless the job says otherwise (Rekognition: 7 days).
DEFAULT_RETENTION_S = 7 * 24 * 3600.0

MIGRATIONS = [
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner_org TEXT NOT NULL,
        key_id TEXT NOT NULL,
        client_token TEXT,
        params_hash TEXT NOT NULL,
        params TEXT NOT NULL,
        job_tag TEXT,
        status TEXT NOT NULL,
        status_message TEXT,
        progress DOUBLE PRECISION NOT NULL DEFAULT 0,
        checkpoint TEXT,
        summary TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        lease_owner TEXT,
        lease_expires DOUBLE PRECISION,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        retention_s DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        heartbeat_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        expires_at DOUBLE PRECISION
    );
    CREATE UNIQUE INDEX jobs_client_token ON jobs (owner_org, kind, client_token)
        WHERE client_token IS NOT NULL;
    CREATE INDEX jobs_runnable ON jobs (status, created_at);
    CREATE INDEX jobs_owner ON jobs (owner_org, created_at);
    CREATE INDEX jobs_expiry ON jobs (expires_at);
    CREATE TABLE job_results (
        job_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        sort_ts BIGINT NOT NULL DEFAULT 0,
        sort_index BIGINT NOT NULL DEFAULT 0,
        body TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    CREATE INDEX job_results_by_ts ON job_results (job_id, sort_ts, sort_index, seq);
    CREATE INDEX job_results_by_index ON job_results (job_id, sort_index, sort_ts, seq)
    """,
]

_COLUMNS = (
    "job_id, kind, owner_org, key_id, client_token, params, job_tag, status, status_message, progress, "
    "checkpoint, summary, attempts, max_attempts, lease_owner, lease_expires, cancel_requested, "
    "retention_s, created_at, started_at, heartbeat_at, finished_at, expires_at"
)


class LeaseLost(Exception):
    """The worker no longer holds the job (its lease expired and another worker took it, or it was
    cancelled): it must stop without writing anything more."""


class JobCancelled(LeaseLost):
    """The job was cancelled while it ran."""


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    owner_org: str
    key_id: str
    client_token: str | None
    params: dict[str, Any]
    job_tag: str | None
    status: str
    status_message: str | None
    progress: float
    checkpoint: dict[str, Any] | None
    summary: dict[str, Any] | None
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires: float | None
    cancel_requested: bool
    retention_s: float
    created_at: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    expires_at: float | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> Job:
        (job_id, kind, org, key, token, params, tag, status, message, progress, checkpoint, summary,
         attempts, max_attempts, lease_owner, lease_expires, cancel, retention, created, started,
         heartbeat, finished, expires) = row  # fmt: skip
        return cls(
            job_id=job_id,
            kind=kind,
            owner_org=org,
            key_id=key,
            client_token=token,
            params=json.loads(params),
            job_tag=tag,
            status=status,
            status_message=message,
            progress=float(progress or 0.0),
            checkpoint=json.loads(checkpoint) if checkpoint else None,
            summary=json.loads(summary) if summary else None,
            attempts=int(attempts),
            max_attempts=int(max_attempts),
            lease_owner=lease_owner,
            lease_expires=lease_expires,
            cancel_requested=bool(cancel),
            retention_s=float(retention),
            created_at=float(created),
            started_at=started,
            heartbeat_at=heartbeat,
            finished_at=finished,
            expires_at=expires,
        )


@dataclass(frozen=True)
class Result:
    """One result row to store: ``seq`` numbers a job's results from 0, once each."""

    seq: int
    body: dict[str, Any]
    sort_ts: int = 0
    sort_index: int = 0


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_token: str | None


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class JobQueue:
    """Jobs and results in one database; safe for many threads and processes."""

    def __init__(self, db: Database, clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.clock = clock or time.time
        db.migrate("jobs", MIGRATIONS)

    # ---- creating ------------------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        owner_org: str,
        key_id: str,
        client_token: str | None = None,
        job_tag: str | None = None,
        retention_s: float = DEFAULT_RETENTION_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[Job, bool]:
        """Queue a job; returns (job, created). With a ``client_token`` already used by this
        organisation for this kind of job, returns that job (created False) if the parameters are
        the same, and raises IdempotentParameterMismatch if not."""
        digest = params_hash(params)
        job_id = uuid.uuid4().hex
        now = self.clock()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO jobs (job_id, kind, owner_org, key_id, client_token, params_hash, params, job_tag,"
                " status, max_attempts, retention_s, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (job_id, kind, owner_org, key_id, client_token, digest, json.dumps(params, sort_keys=True),
                 job_tag, QUEUED, max_attempts, float(retention_s), now),
            )  # fmt: skip
            if client_token is None:
                return self._get(tx, job_id), True
            row = tx.one(
                "SELECT job_id, params_hash FROM jobs WHERE owner_org = ? AND kind = ? AND client_token = ?",
                (owner_org, kind, client_token),
            )
        assert row is not None
        if row[1] != digest:
            raise IdempotentParameterMismatch(
                f"ClientRequestToken {client_token!r} was used for another {kind} job with different "
                "parameters. Use a new token for a new job."
            )
        return self.get(row[0]), row[0] == job_id

    # ---- reading -------------------------------------------------------------------------------
    def get(self, job_id: str, owner_org: str | None = None) -> Job:
        """The job; with ``owner_org``, only if that organisation owns it (else not found)."""
        with self.db.read() as tx:
            return self._get(tx, job_id, owner_org)

    def _get(self, tx: Tx, job_id: str, owner_org: str | None = None) -> Job:
        row = tx.one(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        if row is None or (owner_org is not None and row[2] != owner_org):
            raise ResourceNotFound(
                f"No job {job_id!r}. Job ids come from the Start... call that created them."
            )
        return Job._from_row(row)

    def list(
        self,
        owner_org: str | None = None,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        next_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs newest first, paged; filtered by owner, status and kind."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"Unknown job status {status!r}; use one of {', '.join(STATUSES)}.")
        where, params = ["1 = 1"], []
        for col, val in (("owner_org", owner_org), ("status", status), ("kind", kind)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if next_token:
            created, job_id = _decode_token(next_token, "list")
            where.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
            params += [created, created, job_id]
        with self.db.read() as tx:
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, job_id DESC LIMIT ?",
                (*params, limit + 1),
            )
        jobs = [Job._from_row(r) for r in rows[:limit]]
        token = _encode_token("list", [jobs[-1].created_at, jobs[-1].job_id]) if len(rows) > limit else None
        return jobs, token

    def results(
        self, job_id: str, *, order: str = "seq", limit: int = 1000, next_token: str | None = None
    ) -> Page:
        """A page of a job's results, ordered by ``seq``, ``timestamp`` (then index) or ``index``
        (then timestamp); keyset-paged, so a page costs the same however deep it is."""
        if limit < 1:
            raise InvalidInput(f"A page holds at least one result, not {limit}.")
        keys = {
            "seq": ("seq",),
            "timestamp": ("sort_ts", "sort_index", "seq"),
            "index": ("sort_index", "sort_ts", "seq"),
        }.get(order)
        if keys is None:
            raise InvalidInput(f"Results are ordered by seq, timestamp or index, not {order!r}.")
        where, params = "job_id = ?", [job_id]
        if next_token:
            after = _decode_token(next_token, f"{job_id}:{order}")
            if len(after) != len(keys):
                raise InvalidInput("NextToken does not belong to this request; start again without it.")
            where += f" AND ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
            params += after
        with self.db.read() as tx:
            rows = tx.all(
                f"SELECT body, {', '.join(keys)} FROM job_results WHERE {where}"
                f" ORDER BY {', '.join(keys)} LIMIT ?",
                (*params, limit + 1),
            )
        items = [json.loads(r[0]) for r in rows[:limit]]
        token = _encode_token(f"{job_id}:{order}", list(rows[limit - 1][1:])) if len(rows) > limit else None
        return Page(items, token)

    def count_results(self, job_id: str) -> int:
        with self.db.read() as tx:
            return int(tx.scalar("SELECT COUNT(*) FROM job_results WHERE job_id = ?", (job_id,)) or 0)

    # ---- running -------------------------------------------------------------------------------
    def claim(
        self,
        worker_id: str,
        kinds: Sequence[str],
        lease_s: float = DEFAULT_LEASE_S,
        job_id: str | None = None,
    ) -> Job | None:
        """Take the oldest runnable job of these kinds (queued, or running with an expired lease),
        or, with ``job_id``, that job if it is runnable."""
        if not kinds:
            return None
        now = self.clock()
        marks = ", ".join("?" * len(kinds))
        only = " AND job_id = ?" if job_id is not None else ""
        pick = (
            f"SELECT job_id, attempts, max_attempts FROM jobs WHERE kind IN ({marks}){only}"
            " AND (status = ? OR (status = ? AND lease_expires < ?)) ORDER BY created_at, job_id LIMIT 1"
        )
        args = (*kinds, *([job_id] if job_id is not None else []), QUEUED, RUNNING, now)
        with self.db.transaction() as tx:
            while True:
                if tx.dialect == "postgresql":
                    row = tx.one(pick + " FOR UPDATE SKIP LOCKED", args)
                else:
                    row = tx.one(pick, args)
                if row is None:
                    return None
                found, attempts, max_attempts = row
                if int(attempts) >= int(max_attempts):
                    # its worker died every time it ran (a file that crashes the decoder?): give up
                    tx.execute("DELETE FROM job_results WHERE job_id = ?", (found,))
                    self._finish(
                        tx,
                        found,
                        FAILED,
                        f"The job stopped {attempts} times without finishing (its worker was killed or "
                        "crashed); it was not retried again.",
                        now,
                    )
                    continue
                tx.execute(
                    "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires = ?, attempts = attempts + 1,"
                    " started_at = COALESCE(started_at, ?), heartbeat_at = ? WHERE job_id = ?",
                    (RUNNING, worker_id, now + lease_s, now, now, found),
                )
                return self._get(tx, found)

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        progress: float | None = None,
    ) -> None:
        """Renew the lease (and record progress 0..1); raises LeaseLost or JobCancelled."""
        with self.db.transaction() as tx:
            self._renew(tx, job_id, worker_id, lease_s, progress)

    def put_results(
        self,
        job_id: str,
        worker_id: str,
        results: Sequence[Result],
        *,
        checkpoint: dict[str, Any] | None = None,
        progress: float | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """Store results and the checkpoint after which they were produced, atomically, only while
        holding the lease. A result already stored under its seq is left as it is."""
        with self.db.transaction() as tx:
            self._renew(tx, job_id, worker_id, lease_s, progress)
            tx.executemany(
                "INSERT INTO job_results (job_id, seq, sort_ts, sort_index, body) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id, seq) DO NOTHING",
                [
                    (
                        job_id,
                        r.seq,
                        int(r.sort_ts),
                        int(r.sort_index),
                        json.dumps(r.body, separators=(",", ":")),
                    )
                    for r in results
                ],
            )
            if checkpoint is not None:
                tx.execute(
                    "UPDATE jobs SET checkpoint = ? WHERE job_id = ?", (json.dumps(checkpoint), job_id)
                )

    def complete(
        self,
        job_id: str,
        worker_id: str,
        summary: dict[str, Any] | None = None,
        results: Sequence[Result] = (),
    ) -> Job:
        """Mark the job SUCCEEDED (with its last results), if this worker still holds it."""
        with self.db.transaction() as tx:
            self._renew(tx, job_id, worker_id, DEFAULT_LEASE_S, 1.0)
            if results:
                tx.executemany(
                    "INSERT INTO job_results (job_id, seq, sort_ts, sort_index, body) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (job_id, seq) DO NOTHING",
                    [(job_id, r.seq, int(r.sort_ts), int(r.sort_index), json.dumps(r.body)) for r in results],
                )
            self._finish(tx, job_id, SUCCEEDED, None, self.clock(), summary)
            return self._get(tx, job_id)

    def fail(
        self, job_id: str, worker_id: str | None, message: str, summary: dict[str, Any] | None = None
    ) -> Job | None:
        """Mark the job FAILED with a message (its partial results are deleted). With a worker id,
        only if that worker still holds it; returns None when it did not."""
        with self.db.transaction() as tx:
            if worker_id is not None:
                try:
                    self._renew(tx, job_id, worker_id, DEFAULT_LEASE_S, None, ignore_cancel=True)
                except LeaseLost:
                    return None
            tx.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
            self._finish(tx, job_id, FAILED, message, self.clock(), summary)
            return self._get(tx, job_id)

    def release(self, job_id: str, worker_id: str) -> None:
        """Give a claimed job back to the queue without counting the attempt (worker shutting down)."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires = NULL,"
                " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
                " WHERE job_id = ? AND status = ? AND lease_owner = ?",
                (QUEUED, job_id, RUNNING, worker_id),
            )

    def cancel(self, job_id: str, owner_org: str | None = None, reason: str = "Cancelled on request.") -> Job:
        """Cancel a job: a queued one at once, a running one at its worker's next heartbeat.
        Its results are deleted. Cancelling a finished job changes nothing."""
        with self.db.transaction() as tx:
            job = self._get(tx, job_id, owner_org)
            if job.status == QUEUED:
                tx.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
                self._finish(tx, job_id, CANCELLED, reason, self.clock())
            elif job.status == RUNNING:
                tx.execute(
                    "UPDATE jobs SET cancel_requested = 1, status_message = ? WHERE job_id = ?",
                    (reason, job_id),
                )
            return self._get(tx, job_id)

    def mark_cancelled(self, job_id: str, worker_id: str) -> None:
        """The worker's acknowledgement that it stopped a cancelled job."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
            row = tx.one(
                "SELECT status_message FROM jobs WHERE job_id = ? AND lease_owner = ?", (job_id, worker_id)
            )
            if row is not None:
                self._finish(tx, job_id, CANCELLED, row[0] or "Cancelled on request.", self.clock())

    def _renew(
        self,
        tx: Tx,
        job_id: str,
        worker_id: str,
        lease_s: float,
        progress: float | None,
        *,
        ignore_cancel: bool = False,
    ) -> None:
        now = self.clock()
        row = tx.one(
            "SELECT status, lease_owner, cancel_requested FROM jobs WHERE job_id = ?"
            + (" FOR UPDATE" if tx.dialect == "postgresql" else ""),
            (job_id,),
        )
        if row is None or row[0] != RUNNING or row[1] != worker_id:
            raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
        if row[2] and not ignore_cancel:
            raise JobCancelled(f"job {job_id} was cancelled")
        tx.execute(
            "UPDATE jobs SET lease_expires = ?, heartbeat_at = ?, progress = COALESCE(?, progress)"
            " WHERE job_id = ?",
            (now + lease_s, now, progress, job_id),
        )

    def _finish(
        self,
        tx: Tx,
        job_id: str,
        status: str,
        message: str | None,
        now: float,
        summary: dict[str, Any] | None = None,
    ) -> None:
        tx.execute(
            "UPDATE jobs SET status = ?, status_message = ?, finished_at = ?, expires_at = ? + retention_s,"
            " lease_owner = NULL, lease_expires = NULL, summary = COALESCE(?, summary),"
            " progress = CASE WHEN ? = 'SUCCEEDED' THEN 1 ELSE progress END WHERE job_id = ?",
            (status, message, now, now, json.dumps(summary) if summary is not None else None, status, job_id),
        )

    # ---- retention ------------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> int:
        """Delete finished jobs past their ``expires_at``, with their results; returns how many."""
        now = self.clock() if now is None else now
        with self.db.transaction() as tx:
            ids = [r[0] for r in tx.all("SELECT job_id FROM jobs WHERE expires_at < ?", (now,))]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                tx.execute(f"DELETE FROM job_results WHERE job_id IN ({marks})", chunk)
                tx.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", chunk)
        return len(ids)


def _encode_token(scope: str, values: list[Any]) -> str:
    raw = json.dumps({"s": scope, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, scope: str) -> list[Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] != scope or not isinstance(data["v"], list):
            raise ValueError
        return list(data["v"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("NextToken is not valid for this request; start again without it.") from None

"""Durable jobs: idempotent enqueue, leases, resume after SIGKILL, results paged, cancel, expiry,
on SQLite and on a real PostgreSQL, including two processes sharing one queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from facewarden.db import Database
from facewarden.errors import IdempotentParameterMismatch, InvalidInput, InvalidVideo, ResourceNotFound
from facewarden.jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Completion,
    JobCancelled,
    JobQueue,
    JobRun,
    LeaseLost,
    Result,
    WorkerPool,
)

from .conftest import fresh_pg_database

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "job_worker_proc.py"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return fresh_pg_database(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(db_url: str):
    database = Database(db_url)
    yield database
    database.close()


def _queue(db: Database, clock: Clock | None = None) -> JobQueue:
    return JobQueue(db, clock)


def _enqueue(q: JobQueue, kind: str = "count", org: str = "org-a", **kw):
    return q.enqueue(kind, kw.pop("params", {"n": 3, "delay": 0}), owner_org=org, key_id="AKIA1", **kw)


# ---- enqueue and idempotency -----------------------------------------------------------------------
def test_client_request_token_makes_start_idempotent(db: Database) -> None:
    q = _queue(db)
    a, created_a = _enqueue(q, client_token="tok-1", job_tag="tag")
    b, created_b = _enqueue(q, client_token="tok-1", job_tag="tag")
    assert created_a and not created_b
    assert a.job_id == b.job_id and b.status == QUEUED and b.job_tag == "tag"
    with pytest.raises(IdempotentParameterMismatch, match="tok-1"):
        _enqueue(q, client_token="tok-1", params={"n": 4, "delay": 0})
    # the token is the organisation's own, per kind of job; no token = a new job every time
    other_org, created = _enqueue(q, org="org-b", client_token="tok-1")
    assert created and other_org.job_id != a.job_id
    other_kind, created = _enqueue(q, kind="other", client_token="tok-1")
    assert created and other_kind.job_id != a.job_id
    assert _enqueue(q)[0].job_id != _enqueue(q)[0].job_id


def test_concurrent_starts_with_one_token_make_one_job(db: Database) -> None:
    q = _queue(db)
    ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ids.append(_enqueue(q, client_token="same")[0].job_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 8 and len(set(ids)) == 1
    assert len(q.list("org-a")[0]) == 1


def test_get_is_scoped_to_the_owner(db: Database) -> None:
    q = _queue(db)
    job, _ = _enqueue(q)
    assert q.get(job.job_id, "org-a").job_id == job.job_id
    with pytest.raises(ResourceNotFound):
        q.get(job.job_id, "org-b")
    with pytest.raises(ResourceNotFound):
        q.get("nope")


# ---- claiming and leases -------------------------------------------------------------------------------
def test_claim_takes_the_oldest_job_once_and_retakes_it_when_the_lease_expires(db: Database) -> None:
    clock = Clock()
    q = _queue(db, clock)
    first, _ = _enqueue(q)
    clock.t += 1
    second, _ = _enqueue(q)
    assert q.claim("w1", ["other"]) is None
    a = q.claim("w1", ["count"], lease_s=10)
    b = q.claim("w2", ["count"], lease_s=10)
    assert (a.job_id, b.job_id) == (first.job_id, second.job_id)
    assert a.status == RUNNING and a.attempts == 1 and a.lease_owner == "w1"
    assert q.claim("w3", ["count"], lease_s=10) is None
    clock.t += 5
    q.heartbeat(a.job_id, "w1", lease_s=10, progress=0.5)  # w1 is alive: its lease runs to t+15
    clock.t += 7
    again = q.claim("w3", ["count"], lease_s=10)  # only w2's lease (t+10) has expired
    assert again.job_id == second.job_id and again.attempts == 2 and again.lease_owner == "w3"
    with pytest.raises(LeaseLost):
        q.put_results(second.job_id, "w2", [Result(0, {"x": 1})])
    assert q.count_results(second.job_id) == 0
    assert q.get(a.job_id).progress == 0.5


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(db: Database) -> None:
    clock = Clock()
    q = _queue(db, clock)
    job, _ = q.enqueue("count", {}, owner_org="o", key_id="k", max_attempts=2)
    for _ in range(2):
        assert q.claim("w", ["count"], lease_s=1).job_id == job.job_id
        clock.t += 2  # the worker died: its lease lapses
    assert q.claim("w", ["count"], lease_s=1) is None
    failed = q.get(job.job_id)
    assert failed.status == FAILED and "stopped 2 times" in failed.status_message


def test_concurrent_claimers_never_share_a_job(db: Database) -> None:
    q = _queue(db)
    jobs = {_enqueue(q)[0].job_id for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := q.claim(name, ["count"], lease_s=60)) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(jobs)


# ---- results ----------------------------------------------------------------------------------------
def test_results_are_written_once_and_paged_in_each_order(db: Database) -> None:
    q = _queue(db)
    job, _ = _enqueue(q)
    q.claim("w", ["count"])
    rows = [Result(i, {"i": i}, sort_ts=(i % 4) * 100, sort_index=i // 4) for i in range(10)]
    q.put_results(job.job_id, "w", rows[:6], checkpoint={"next": 6})
    q.put_results(job.job_id, "w", rows[4:], checkpoint={"next": 10})  # 4 and 5 again: not duplicated
    q.put_results(job.job_id, "w", [Result(3, {"i": "changed"})])  # a stored seq keeps its first body
    assert q.count_results(job.job_id) == 10
    assert q.get(job.job_id).checkpoint == {"next": 10}

    def walk(order: str, size: int) -> list[int]:
        out, token = [], None
        while True:
            page = q.results(job.job_id, order=order, limit=size, next_token=token)
            assert len(page.items) <= size
            out += [r["i"] for r in page.items]
            if page.next_token is None:
                return out
            token = page.next_token

    assert walk("seq", 3) == list(range(10))
    by_ts = sorted(range(10), key=lambda i: ((i % 4) * 100, i // 4, i))
    assert walk("timestamp", 4) == by_ts == walk("timestamp", 1)
    assert walk("index", 3) == sorted(range(10), key=lambda i: (i // 4, (i % 4) * 100, i))
    assert q.results(job.job_id, limit=10).next_token is None
    token = q.results(job.job_id, order="timestamp", limit=2).next_token
    with pytest.raises(InvalidInput, match="NextToken"):
        q.results(job.job_id, order="index", next_token=token)  # a token of another ordering
    with pytest.raises(InvalidInput, match="NextToken"):
        q.results(job.job_id, next_token="not-a-token")
    with pytest.raises(InvalidInput):
        q.results(job.job_id, order="random")


def test_complete_fail_and_the_worker_that_lost_its_lease(db: Database) -> None:
    clock = Clock()
    q = _queue(db, clock)
    job, _ = _enqueue(q)
    q.claim("old", ["count"], lease_s=1)
    clock.t += 2
    q.claim("new", ["count"], lease_s=60)
    with pytest.raises(LeaseLost):
        q.complete(job.job_id, "old", {"x": 1})
    assert q.fail(job.job_id, "old", "too late") is None
    done = q.complete(job.job_id, "new", {"frames": 3}, [Result(0, {"a": 1})])
    assert done.status == SUCCEEDED and done.summary == {"frames": 3} and done.progress == 1.0
    assert done.expires_at == pytest.approx(clock.t + done.retention_s)
    other, _ = _enqueue(q)
    q.claim("w", ["count"])
    q.put_results(other.job_id, "w", [Result(0, {"a": 1})])
    failed = q.fail(other.job_id, "w", "The video is truncated.")
    assert failed.status == FAILED and failed.status_message == "The video is truncated."
    assert q.count_results(other.job_id) == 0  # a failed job keeps no partial results


# ---- cancel, list, expiry ------------------------------------------------------------------------------
def test_cancel_a_queued_and_a_running_job(db: Database) -> None:
    q = _queue(db)
    queued, _ = _enqueue(q)
    assert q.cancel(queued.job_id, "org-a").status == CANCELLED
    assert q.claim("w", ["count"]) is None
    with pytest.raises(ResourceNotFound):
        q.cancel(queued.job_id, "org-b")
    running, _ = _enqueue(q)
    q.claim("w", ["count"])
    q.put_results(running.job_id, "w", [Result(0, {"a": 1})])
    assert q.cancel(running.job_id).status == RUNNING  # stops at the worker's next heartbeat
    with pytest.raises(JobCancelled):
        q.heartbeat(running.job_id, "w")
    q.mark_cancelled(running.job_id, "w")
    job = q.get(running.job_id)
    assert job.status == CANCELLED and q.count_results(job.job_id) == 0
    assert q.cancel(job.job_id).status == CANCELLED  # finished: unchanged


def test_list_pages_newest_first_with_filters(db: Database) -> None:
    clock = Clock()
    q = _queue(db, clock)
    made = []
    for i in range(7):
        clock.t += 1
        made.append(_enqueue(q, kind="count" if i % 2 else "other", org="org-a" if i < 6 else "org-b")[0])
    q.claim("w", ["count"])  # the oldest count job (i = 1)
    seen, token = [], None
    while True:
        page, token = q.list("org-a", limit=4, next_token=token)
        seen += [j.job_id for j in page]
        if token is None:
            break
    assert seen == [j.job_id for j in reversed(made[:6])]
    assert [j.job_id for j in q.list("org-a", status=RUNNING)[0]] == [made[1].job_id]
    assert {j.kind for j in q.list(kind="other")[0]} == {"other"}
    with pytest.raises(InvalidInput):
        q.list(status="SLEEPING")


def test_finished_jobs_expire_with_their_retention(db: Database) -> None:
    clock = Clock()
    q = _queue(db, clock)
    short, _ = q.enqueue("count", {}, owner_org="o", key_id="k", retention_s=60)
    long, _ = q.enqueue("count", {"b": 1}, owner_org="o", key_id="k", retention_s=3600)
    waiting, _ = q.enqueue("other", {}, owner_org="o", key_id="k", retention_s=1)
    for _ in range(2):
        job = q.claim("w", ["count"])
        q.complete(job.job_id, "w", {}, [Result(0, {"a": 1})])
    clock.t += 120
    assert q.expire() == 1
    with pytest.raises(ResourceNotFound):
        q.get(short.job_id)
    assert q.count_results(short.job_id) == 0
    assert q.get(long.job_id).status == SUCCEEDED and q.count_results(long.job_id) == 1
    assert q.get(waiting.job_id).status == QUEUED  # unfinished jobs never expire


# ---- the worker pool -------------------------------------------------------------------------------------
def test_worker_pool_runs_handlers_and_survives_their_failures(db: Database) -> None:
    q = _queue(db)

    def ok(run: JobRun) -> Completion:
        run.put([Result(0, {"n": run.job.params["n"]})], checkpoint={"next": 1})
        return Completion({"done": True}, [Result(1, {"last": True})])

    def bad_file(run: JobRun) -> Completion:
        raise InvalidVideo("clip.mp4 is truncated: send the whole file.")

    def bug(run: JobRun) -> Completion:
        raise RuntimeError("secret internals")

    good, _ = q.enqueue("ok", {"n": 1}, owner_org="o", key_id="k")
    broken, _ = q.enqueue("bad", {}, owner_org="o", key_id="k")
    crashing, _ = q.enqueue("bug", {}, owner_org="o", key_id="k")
    after, _ = q.enqueue("ok", {"n": 2}, owner_org="o", key_id="k")
    pool = WorkerPool(q, {"ok": ok, "bad": bad_file, "bug": bug}, lease_s=30)
    while pool.run_one():
        pass
    assert q.get(good.job_id).status == SUCCEEDED and q.get(good.job_id).summary == {"done": True}
    assert [r for r in q.results(good.job_id).items] == [{"n": 1}, {"last": True}]
    assert q.get(broken.job_id).status == FAILED
    assert q.get(broken.job_id).status_message == "clip.mp4 is truncated: send the whole file."
    message = q.get(crashing.job_id).status_message
    assert q.get(crashing.job_id).status == FAILED and "Internal error" in message and "secret" not in message
    assert q.get(after.job_id).status == SUCCEEDED  # the worker went on after the failures


def test_pool_threads_cancel_and_stop(db: Database) -> None:
    q = _queue(db)
    started = threading.Event()

    def slow(run: JobRun) -> Completion:
        started.set()
        while True:
            run.check()
            time.sleep(0.02)

    job, _ = q.enqueue("slow", {}, owner_org="o", key_id="k")
    pool = WorkerPool(q, {"slow": slow}, lease_s=0.3, poll_s=0.05).start()
    try:
        assert started.wait(10)
        q.cancel(job.job_id)
        deadline = time.time() + 10
        while q.get(job.job_id).status != CANCELLED and time.time() < deadline:
            time.sleep(0.05)
        assert q.get(job.job_id).status == CANCELLED
        # a job still running when the pool stops goes back to the queue, its attempt not counted
        started.clear()
        second, _ = q.enqueue("slow", {}, owner_org="o", key_id="k")
        pool.wake()
        assert started.wait(10)
    finally:
        pool.stop()
    back = q.get(second.job_id)
    assert back.status == QUEUED and back.attempts == 0 and back.lease_owner is None


# ---- processes: SIGKILL mid-job, and two processes on one queue -----------------------------------------
def _spawn(url: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_a_job_killed_mid_run_resumes_with_no_result_lost_or_duplicated(db: Database, db_url: str) -> None:
    q = _queue(db)
    job, _ = q.enqueue("count", {"n": 40, "delay": 0.03}, owner_org="o", key_id="k")
    proc = _spawn(db_url, "count")
    try:
        deadline = time.time() + 60
        while q.count_results(job.job_id) < 8 and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    killed_at = q.count_results(job.job_id)
    assert 8 <= killed_at < 40 and q.get(job.job_id).status == RUNNING
    time.sleep(1.2)  # the dead worker's lease (1 s) lapses
    from tests.job_worker_proc import count

    pool = WorkerPool(q, {"count": count}, lease_s=5)
    assert pool.run_one()
    done = q.get(job.job_id)
    assert done.status == SUCCEEDED and done.attempts == 2
    assert done.summary["resumed_from"] >= killed_at - 1  # continued from its checkpoint
    items = []
    token = None
    while True:
        page = q.results(job.job_id, limit=7, next_token=token)
        items += page.items
        if (token := page.next_token) is None:
            break
    assert [r["i"] for r in items] == list(range(40))
    assert {r["pid"] for r in items} == {proc.pid, os.getpid()}


@pytest.mark.postgres
def test_two_processes_share_one_postgresql_queue_and_never_run_a_job_twice(pg_url: str) -> None:
    url = fresh_pg_database(pg_url)
    db = Database(url)
    q = _queue(db)
    with db.transaction() as tx:
        tx.execute("CREATE TABLE test_runs (job_id TEXT NOT NULL, pid INTEGER NOT NULL)")
    jobs = [q.enqueue("shared", {"i": i, "delay": 0.05}, owner_org="o", key_id="k")[0] for i in range(16)]
    procs = [_spawn(url, "shared") for _ in range(2)]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and any(not q.get(j.job_id).finished for j in jobs):
            time.sleep(0.1)
    finally:
        for p in procs:
            p.wait(60)
    with db.read() as tx:
        runs = tx.all("SELECT job_id, pid FROM test_runs")
    assert sorted(r[0] for r in runs) == sorted(j.job_id for j in jobs)  # each job ran exactly once
    assert {r[1] for r in runs} == {p.pid for p in procs}  # and both processes ran some
    assert all(q.get(j.job_id).status == SUCCEEDED and q.get(j.job_id).attempts == 1 for j in jobs)
    db.close()

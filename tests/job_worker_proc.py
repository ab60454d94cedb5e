"""A job worker in a process of its own, for the queue tests (SIGKILL mid-job, two processes).

    python tests/job_worker_proc.py DB_URL MODE

MODE ``count``: runs jobs of kind ``count`` (params: n, delay), each writing results 0..n-1 one at
a time with a checkpoint, until killed or no job is left. MODE ``shared``: runs jobs of kind
``shared``, logging each run in the table ``test_runs``; the first job waits until another process
also holds one, so that both processes demonstrably share the queue.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facewarden.db import Database  # noqa: E402
from facewarden.jobs import Completion, JobQueue, JobRun, Result, WorkerPool  # noqa: E402


def count(run: JobRun) -> Completion:
    n, delay = int(run.job.params["n"]), float(run.job.params["delay"])
    start = int((run.checkpoint or {}).get("next", 0))
    for i in range(start, n):
        time.sleep(delay)
        run.put([Result(i, {"i": i, "pid": os.getpid()}, sort_ts=i * 10)], checkpoint={"next": i + 1})
    return Completion({"resumed_from": start, "pid": os.getpid()})


def shared(run: JobRun) -> Completion:
    db = run.queue.db
    with db.transaction() as tx:
        tx.execute("INSERT INTO test_runs (job_id, pid) VALUES (?, ?)", (run.job.job_id, os.getpid()))
    deadline = time.time() + 60
    while time.time() < deadline:
        with db.read() as tx:
            owners = tx.all("SELECT DISTINCT pid FROM test_runs")
        if len(owners) >= 2:
            break
        time.sleep(0.05)
    time.sleep(float(run.job.params.get("delay", 0.05)))
    return Completion({"pid": os.getpid()}, [Result(0, {"pid": os.getpid()})])


def main() -> None:
    url, mode = sys.argv[1], sys.argv[2]
    queue = JobQueue(Database(url))
    pool = WorkerPool(queue, {mode: count if mode == "count" else shared}, lease_s=1.0, poll_s=0.05)
    idle = 0
    print("ready", flush=True)
    while idle < 20:
        idle = 0 if pool.run_one() else idle + 1
        if idle:
            time.sleep(0.05)


if __name__ == "__main__":
    main()

"""`facewarden video detect|search|jobs|cancel` and `facewarden worker`.

``video detect FILE`` and ``video search FILE --collection C`` start the same jobs as
StartFaceDetection / StartFaceSearch (same policy decision, quota and audit) on a local file and run
them in this process, with a progress bar on a terminal; ``--json`` prints the complete
GetFaceDetection / GetFaceSearch response, every page. ``worker`` runs job workers for a shared
database (a machine dedicated to video analysis).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidVideo
from ..service.jobs import (
    CancelJobRequest,
    ListJobsRequest,
    ListJobsResult,
    cancel_job,
    list_jobs,
    worker_pool,
)
from ..service.params import S3Object
from ..service.video import (
    GetFaceDetectionRequest,
    GetFaceSearchRequest,
    StartFaceDetectionRequest,
    StartFaceSearchRequest,
    Video,
    get_face_detection,
    get_face_search,
    start_face_detection,
    start_face_search,
)
from . import App, main, pass_app


@main.group()
def video() -> None:
    """Faces in video files: detection and collection search, as durable jobs."""


def _local(path: str) -> Video:
    p = Path(path)
    if not p.is_file():
        raise InvalidVideo(f"No such video file: {path}")
    return Video(S3Object("local-file", p.name))


def _run_here(app: App, job_id: str, label: str = "analysing") -> None:
    """Run the job in this process (a worker of our own), with a progress bar on a terminal."""
    svc = app.service
    pool = worker_pool(svc, 1)
    done: dict[str, bool] = {}

    def work() -> None:
        done["ran"] = pool.run_job(job_id)

    import threading

    t = threading.Thread(target=work, name="video-job", daemon=True)
    t.start()
    if sys.stderr.isatty() and not app.json:
        with click.progressbar(length=1000, label=label, file=sys.stderr) as bar:
            shown = 0
            while t.is_alive():
                t.join(0.2)
                now = int(svc.jobs.get(job_id).progress * 1000)
                bar.update(max(0, now - shown))
                shown = max(shown, now)
            bar.update(1000 - shown)
    else:
        t.join()
    if not done.get("ran") and not svc.jobs.get(job_id).finished:
        # another worker holds it (a shared database): wait for it
        while not svc.jobs.get(job_id).finished:
            time.sleep(0.5)


def _all_pages(app: App, op: Any, request_type: Any, job_id: str, **kw: Any) -> dict[str, Any]:
    from ..service.params import to_wire

    out: dict[str, Any] = {}
    token = None
    key = "Faces" if op is get_face_detection else "Persons"
    items: list[Any] = []
    while True:
        page = to_wire(app.run(op, request_type(job_id, 1000, token, **kw)))
        items += page.pop(key, [])
        token = page.pop("NextToken", None)
        out.update(page)
        if not token:
            break
    out[key] = items
    return out


@video.command("detect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--attributes", type=click.Choice(["DEFAULT", "ALL"], case_sensitive=False), default="DEFAULT")
@pass_app
def video_detect(app: App, file: str, attributes: str) -> None:
    """Find the faces in a video FILE, at the sampled frames (StartFaceDetection)."""
    job = app.run(
        start_face_detection, StartFaceDetectionRequest(_local(file), face_attributes=attributes, path=file)
    )
    _run_here(app, job.job_id)
    result = _all_pages(app, get_face_detection, GetFaceDetectionRequest, job.job_id)
    _finish(app, result, "Faces")


@video.command("search")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--collection", "collection_id", required=True, help="The collection to search.")
@click.option("--threshold", type=click.FloatRange(0, 100), default=None, help="Similarity threshold.")
@click.option(
    "--sort-by", type=click.Choice(["TIMESTAMP", "INDEX"], case_sensitive=False), default="TIMESTAMP"
)
@pass_app
def video_search(app: App, file: str, collection_id: str, threshold: float | None, sort_by: str) -> None:
    """Search COLLECTION for the people in a video FILE (StartFaceSearch: identification)."""
    request = StartFaceSearchRequest(_local(file), collection_id, face_match_threshold=threshold, path=file)
    job = app.run(start_face_search, request)
    _run_here(app, job.job_id)
    result = _all_pages(app, get_face_search, GetFaceSearchRequest, job.job_id, sort_by=sort_by.upper())
    _finish(app, result, "Persons")


def _finish(app: App, result: dict[str, Any], key: str) -> None:
    import json

    if app.json:
        click.echo(json.dumps(result))
    else:
        meta = result.get("VideoMetadata") or {}
        click.echo(
            f"{result['JobId']}: {result['JobStatus']}"
            + (f" ({result['StatusMessage']})" if result.get("StatusMessage") else "")
        )
        if meta:
            click.echo(
                f"  {meta['FrameWidth']}x{meta['FrameHeight']} {meta['Codec']} {meta['FrameRate']:g} fps, "
                f"{meta['DurationMillis'] / 1000:.1f} s"
            )
        if key == "Faces":
            stamps = sorted({f["Timestamp"] for f in result[key]})
            click.echo(f"  {len(result[key])} faces in {len(stamps)} frames")
        else:
            people: dict[int, dict[str, Any]] = {}
            for p in result[key]:
                entry = people.setdefault(p["Person"]["Index"], {"first": p["Timestamp"], "last": 0, "m": p})
                entry["last"] = max(entry["last"], p["Timestamp"])
            click.echo(f"  {len(people)} matching people")
            for index, e in sorted(people.items()):
                best = e["m"]["FaceMatches"][0]
                who = best["Face"].get("ExternalImageId") or best["Face"]["FaceId"]
                click.echo(
                    f"  person {index}: {who} (similarity {best['Similarity']:.1f}), "
                    f"seen {e['first'] / 1000:.1f}-{e['last'] / 1000:.1f} s"
                )
    if result["JobStatus"] == "FAILED":
        raise click.exceptions.Exit(3)


@video.command("jobs")
@click.option("--status", default=None, help="Only jobs in this state (QUEUED, RUNNING, SUCCEEDED, ...).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@pass_app
def video_jobs(app: App, status: str | None, limit: int) -> None:
    """List your organisation's jobs, newest first (ListJobs)."""
    result = app.run(list_jobs, ListJobsRequest(status.upper() if status else None, max_results=limit))
    app.emit(result, _print_jobs)


def _print_jobs(result: ListJobsResult) -> None:
    if not result.jobs:
        click.echo("no jobs")
    for j in result.jobs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(j.created_at))
        what = (j.video or {}).get("S3Object", {})
        click.echo(
            f"{j.job_id}  {j.job_type:<14} {j.status:<10} {j.progress * 100:5.1f}%  {when}Z  "
            f"{what.get('Bucket', '')}/{what.get('Name', '')}"
            + (f"  ({j.status_message})" if j.status_message else "")
        )


@video.command("cancel")
@click.argument("job_id")
@pass_app
def video_cancel(app: App, job_id: str) -> None:
    """Cancel a job (CancelJob); its results are deleted."""
    app.emit(app.run(cancel_job, CancelJobRequest(job_id)), lambda j: _print_jobs(ListJobsResult([j])))


@main.command()
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Jobs run at once (default: settings)."
)
@click.option("--once", is_flag=True, help="Run the jobs waiting now, then exit.")
@pass_app
def worker(app: App, workers: int | None, once: bool) -> None:
    """Run job workers (video analysis) for this data directory or shared database."""
    pool = worker_pool(app.service, workers)
    if once:
        while pool.run_one():
            pass
        return
    signal.signal(signal.SIGTERM, lambda *_: pool.stop(0))  # then run_forever returns
    click.echo(f"facewarden worker {pool.name}: {pool.size} worker(s); Ctrl-C stops", err=True)
    try:
        pool.run_forever()
    except KeyboardInterrupt:
        pool.stop()

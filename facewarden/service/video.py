"""Stored-video face detection and face search, as Rekognition Video does them: durable jobs.

``StartFaceDetection`` / ``StartFaceSearch`` are decided by policy like every call — face search
is identification: the moratorium, the surveillance rule, purposes, collection scope and the
identification quota apply here, before any frame is decoded — then queue a job and return its
``JobId``. A worker (``serve`` runs a pool; ``facewarden worker`` runs one elsewhere) decides again
with the starter's key, opens the video (:mod:`facewarden.media.video`: limits, clear errors),
samples ``video_sample_rate`` frames a second, detects faces on ``video_threads`` threads and:

* detection: stores each frame's faces as it goes, with a checkpoint, so a job killed mid-way
  resumes where it stopped (nothing lost, nothing twice);
* search: tracks faces across frames (:mod:`facewarden.engine.tracking`), keeps each person's best
  faces, then settles the quota — one identification per person (track) found, what searching
  them one by one would cost; if the key has not that many left, nothing is searched and the job
  fails — and searches each person with the same calibrated thresholds as a still image
  (purpose floor, gallery size). Only people who match appear in ``Persons``, at every moment
  they were seen, with one ``Person.Index`` each.

``GetFaceDetection`` / ``GetFaceSearch`` page the stored results (``MaxResults``/``NextToken``;
search results ``SortBy`` TIMESTAMP or INDEX). Corrupt, truncated, empty and non-video files, files
over the limits and codecs that cannot be decoded end the job FAILED with a ``StatusMessage``.
Every job ends with an audit record of counts (frames, faces, people, matches), never faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from ..engine.tracking import FaceTracks, Track
from ..errors import AccessDenied, InvalidInput, QuotaExceeded, ResourceNotFound
from ..gallery import Collection
from ..jobs import Completion, Job, JobRun, Result
from ..media import buckets, video
from ..policy.kinds import Kind
from . import visible
from .core import Service
from .gallery import collection, engine_of, similarities, touch
from .jobs import JobId, JobTag, audited, job_context, job_handler, own_job, wire_status
from .params import (
    INTERNAL,
    ClientRequestToken,
    CollectionId,
    NextToken,
    OneOf,
    Pattern,
    Range,
    S3Object,
    Similarity,
)
from .registry import Context, Rest, operation

DETECTION, SEARCH = "FaceDetection", "FaceSearch"
#: Results stored per transaction while a detection job runs (and its checkpoint).
BATCH_FRAMES = 25
#: Gallery faces looked at per template of a person.
SEARCH_K = 20
VIDEO_JOBS = "/v1/video"


@dataclass(frozen=True)
class Video:
    s3_object: S3Object


@dataclass(frozen=True)
class StartJobResult:
    job_id: str


@dataclass(frozen=True)
class StartFaceDetectionRequest:
    video: Video
    client_request_token: ClientRequestToken | None = None
    notification_channel: dict[str, Any] | None = None
    face_attributes: Annotated[str, OneOf(("DEFAULT", "ALL"), upper=True)] = "DEFAULT"
    job_tag: JobTag | None = None
    #: A local file instead of a bucket object (the CLI's; no wire dict can set it).
    path: Annotated[str | None, INTERNAL] = None


@dataclass(frozen=True)
class StartFaceSearchRequest:
    video: Video
    collection_id: CollectionId
    client_request_token: ClientRequestToken | None = None
    face_match_threshold: Similarity | None = None
    notification_channel: dict[str, Any] | None = None
    job_tag: JobTag | None = None
    path: Annotated[str | None, INTERNAL] = None


@operation("StartFaceDetection", kind=Kind.DETECT, rest=Rest("POST", f"{VIDEO_JOBS}/face-detection", "video"))
def start_face_detection(svc: Service, ctx: Context, req: StartFaceDetectionRequest) -> StartJobResult:
    """Start detecting the faces of a stored video"""
    params = {"Video": _video_wire(req.video), "FaceAttributes": req.face_attributes}
    return _start(svc, ctx, DETECTION, params, req.video, req.path, req.client_request_token, req.job_tag,
                  req.notification_channel)  # fmt: skip


@operation("StartFaceSearch", kind=Kind.IDENTIFY, rest=Rest("POST", f"{VIDEO_JOBS}/face-search", "video"))
def start_face_search(svc: Service, ctx: Context, req: StartFaceSearchRequest) -> StartJobResult:
    """Start searching a collection for the people in a stored video"""
    _, col = collection(svc, ctx, req.collection_id)
    engine_of(svc, col)  # the collection's model must be available: refused before the job starts
    params: dict[str, Any] = {"Video": _video_wire(req.video), "CollectionId": req.collection_id}
    if req.face_match_threshold is not None:
        params["FaceMatchThreshold"] = req.face_match_threshold
    days = min(
        svc.settings.job_retention_days, float(col.retention_days or svc.policy.default_retention_days)
    )
    return _start(svc, ctx, SEARCH, params, req.video, req.path, req.client_request_token, req.job_tag,
                  req.notification_channel, retention_days=days)  # fmt: skip


def _start(
    svc: Service,
    ctx: Context,
    kind: str,
    params: dict[str, Any],
    source: Video,
    path: str | None,
    token: str | None,
    tag: str | None,
    channel: dict[str, Any] | None,
    retention_days: float | None = None,
) -> StartJobResult:
    principal = ctx.caller
    if path is None:
        svc.s3_path(principal, source.s3_object)  # the object exists and the caller may read it
    else:
        params["Path"] = str(Path(path).resolve())
    if channel:
        params["NotificationChannel"] = channel  # recorded; clients poll Get...
    job, created = svc.jobs.enqueue(
        kind,
        params,
        owner_org=principal.org,
        key_id=principal.key_id,
        client_token=token,
        job_tag=tag,
        retention_s=86400.0 * (retention_days or svc.settings.job_retention_days),
    )
    ctx.details.update(job_id=job.job_id, new_job=created)
    return StartJobResult(job.job_id)


def _video_wire(v: Video) -> dict[str, Any]:
    s3 = {"Bucket": v.s3_object.bucket, "Name": v.s3_object.name}
    if v.s3_object.version is not None:
        s3["Version"] = v.s3_object.version
    return {"S3Object": s3}


# ---- uploads ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PutVideoRequest:
    name: Annotated[str, Pattern(r"[^\x00]{1,1024}", "an object key of 1-1024 characters")]
    #: The upload, already streamed to a staging file by the HTTP layer (no wire dict can set it).
    staged: Annotated[str | None, INTERNAL] = None


@dataclass(frozen=True)
class PutVideoResult:
    s3_object: dict[str, str]
    size: int


@operation("PutVideo", kind=Kind.DETECT)
def put_video(svc: Service, ctx: Context, req: PutVideoRequest) -> PutVideoResult:
    """Store an uploaded video in your organisation's bucket (POST /v1/videos?Name=...)"""
    if req.staged is None:
        raise InvalidInput("PutVideo takes an upload: POST the video's bytes to /v1/videos?Name=KEY.")
    staged = Path(req.staged)
    bucket = ctx.caller.org
    try:
        with open(staged, "rb") as f:
            chunks = iter(lambda: f.read(1 << 20), b"")
            path = buckets.store(
                svc.settings.resolved_buckets_dir,
                bucket,
                req.name,
                chunks,
                max_bytes=svc.settings.video_max_bytes,
            )
    finally:
        staged.unlink(missing_ok=True)
    size = path.stat().st_size
    ctx.counts["bytes"] = size
    ctx.details["object"] = f"{bucket}/{req.name}"
    return PutVideoResult({"Bucket": bucket, "Name": req.name}, size)


# ---- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GetFaceDetectionRequest:
    job_id: JobId
    max_results: Annotated[int, Range(1, 1000)] = 1000
    next_token: NextToken | None = None


@dataclass(frozen=True)
class GetFaceSearchRequest(GetFaceDetectionRequest):
    sort_by: Annotated[str, OneOf(("INDEX", "TIMESTAMP"), upper=True)] = "TIMESTAMP"


@dataclass(frozen=True)
class JobPage:
    """What every Get... of a video job answers, beside its page of results."""

    job_status: str
    job_id: str
    video: dict[str, Any]
    status_message: str | None = None
    video_metadata: dict[str, Any] | None = None
    next_token: str | None = None
    job_tag: str | None = None


@dataclass(frozen=True)
class GetFaceDetectionResult(JobPage):
    faces: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class GetFaceSearchResult(JobPage):
    persons: list[dict[str, Any]] | None = None


def _page(
    svc: Service, ctx: Context, job: Job, req: GetFaceDetectionRequest, order: str
) -> tuple[JobPage, list[Any]]:
    status, message = wire_status(job)
    ctx.details["job_id"] = job.job_id
    video, meta = job.params["Video"], _metadata(job)
    if status != "SUCCEEDED":  # results are complete only then (Rekognition's rule too)
        return JobPage(status, job.job_id, video, message, meta, None, job.job_tag), []
    page = svc.jobs.results(job.job_id, order=order, limit=req.max_results, next_token=req.next_token)
    ctx.counts["results"] = len(page.items)
    return JobPage(status, job.job_id, video, message, meta, page.next_token, job.job_tag), page.items


@operation(
    "GetFaceDetection", kind=Kind.DETECT, rest=Rest("GET", f"{VIDEO_JOBS}/face-detection/{{JobId}}", "video")
)
def get_face_detection(svc: Service, ctx: Context, req: GetFaceDetectionRequest) -> GetFaceDetectionResult:
    """The status and the faces of a face detection job, a page at a time"""
    head, items = _page(svc, ctx, own_job(svc, ctx, req.job_id, DETECTION), req, "seq")
    return GetFaceDetectionResult(**vars(head), faces=items)


@operation(
    "GetFaceSearch", kind=Kind.IDENTIFY, rest=Rest("GET", f"{VIDEO_JOBS}/face-search/{{JobId}}", "video")
)
def get_face_search(svc: Service, ctx: Context, req: GetFaceSearchRequest) -> GetFaceSearchResult:
    """The status and the people found by a face search job, a page at a time"""
    job = own_job(svc, ctx, req.job_id, SEARCH)
    collection_id = job.params["CollectionId"]
    # the key reading the results must be one that could search that collection now
    decision = svc.policy.decide(
        ctx.caller, ctx.operation, ctx.kind, svc.collection_info(collection_id), collection_id=collection_id,
        now=svc.clock(),
    )  # fmt: skip
    ctx.collection_id = collection_id
    if not decision.allowed:
        raise AccessDenied(decision.reason, decision.rule_id)
    head, items = _page(svc, ctx, job, req, "index" if req.sort_by == "INDEX" else "timestamp")
    return GetFaceSearchResult(**vars(head), persons=_still_visible(svc, collection_id, items))


def _still_visible(svc: Service, collection_id: str, items: list[Any]) -> list[Any]:
    """A results page with the matches whose face is no longer visible taken out: stored results
    are read like the gallery (a consent withdrawn or expired, or a retention passed, since the
    search hides the face from them too)."""
    ids = {m["Face"]["FaceId"] for item in items for m in item.get("FaceMatches") or []}
    if not ids:
        return items
    try:
        shown = set(visible.faces(svc, svc.store.get_collection(collection_id), ids))
    except ResourceNotFound:
        shown = set()
    return [
        {**item, "FaceMatches": [m for m in item["FaceMatches"] if m["Face"]["FaceId"] in shown]}
        if item.get("FaceMatches")
        else item
        for item in items
    ]


def _metadata(job: Any) -> dict[str, Any] | None:
    for source in (job.summary, job.checkpoint):
        if source and source.get("VideoMetadata"):
            meta: dict[str, Any] = source["VideoMetadata"]
            return meta
    return None


# ---- the workers' side ----------------------------------------------------------------------------
def _open(svc: Service, ctx: Context, run: JobRun) -> video.VideoReader:
    params = run.job.params
    if "Path" in params:
        path = Path(params["Path"])
    else:
        s3 = params["Video"]["S3Object"]
        path = svc.s3_path(ctx.caller, S3Object(s3["Bucket"], s3["Name"], s3.get("Version")))
    s = svc.settings
    limits = video.VideoLimits(s.video_max_bytes, s.video_max_seconds, s.video_max_pixels)
    return video.VideoReader(path, limits)


def _progress(run: JobRun, timestamp_ms: int, duration_ms: int) -> None:
    if duration_ms > 0:
        run.progress(min(timestamp_ms / duration_ms, 0.99))
    else:
        run.check()


@job_handler(DETECTION)
def run_face_detection(svc: Service, run: JobRun) -> Completion:
    ctx = job_context(svc, run, "StartFaceDetection")

    def body() -> Completion:
        attributes = run.job.params.get("FaceAttributes", "DEFAULT")
        done = run.checkpoint or {}
        after_ms, seq = int(done.get("after_ms", -1)), int(done.get("seq", 0))
        frames, faces = int(done.get("frames", 0)), int(done.get("faces", 0))
        with _open(svc, ctx, run) as reader:
            meta = reader.metadata
            duration = meta.duration_ms
            pending: list[Result] = []
            batch_frames = 0
            rate = svc.settings.video_sample_rate
            remaining = (f for f in reader.frames(rate) if f.timestamp_ms > after_ms)
            tracks = FaceTracks(svc.engine, attributes=attributes)
            for frame, found in tracks.run(remaining, workers=svc.settings.video_threads):
                for face, _ in sorted(found, key=lambda ft: (ft[0].box.left, ft[0].box.top)):
                    pending.append(Result(seq, {"Timestamp": frame.timestamp_ms, "Face": face.face_detail(attributes)},
                                          sort_ts=frame.timestamp_ms))  # fmt: skip
                    seq += 1
                frames += 1
                faces += len(found)
                batch_frames += 1
                _progress(run, frame.timestamp_ms, duration)
                if batch_frames >= BATCH_FRAMES:
                    run.put(pending, _checkpoint(frame.timestamp_ms, seq, frames, faces, reader.metadata))
                    pending, batch_frames = [], 0
            meta = reader.metadata  # the duration is known for sure once every frame was read
        ctx.counts.update(frames=frames, faces=faces)
        return Completion({"VideoMetadata": meta.to_rekognition(), "frames": frames, "faces": faces}, pending)

    return audited(run, svc, ctx, body)


def _checkpoint(
    after_ms: int, seq: int, frames: int, faces: int, meta: video.VideoMetadata
) -> dict[str, Any]:
    return {
        "after_ms": after_ms,
        "seq": seq,
        "frames": frames,
        "faces": faces,
        "VideoMetadata": meta.to_rekognition(),
    }


@job_handler(SEARCH)
def run_face_search(svc: Service, run: JobRun) -> Completion:
    ctx = job_context(svc, run, "StartFaceSearch")

    def body() -> Completion:
        params = run.job.params
        store, col = collection(svc, ctx, params["CollectionId"])
        engine = engine_of(svc, col)  # the people in the video are compared by the collection's model
        checkpoint = dict(run.checkpoint or {})
        with _open(svc, ctx, run) as reader:
            checkpoint["VideoMetadata"] = reader.metadata.to_rekognition()
            run.put([], checkpoint)
            duration = reader.metadata.duration_ms
            faces = FaceTracks(engine, embed=True)
            for frame, _ in faces.run(
                reader.frames(svc.settings.video_sample_rate), workers=svc.settings.video_threads
            ):
                _progress(run, frame.timestamp_ms, duration)
            meta = reader.metadata
        tracks = faces.finish()
        ctx.counts.update(frames=faces.frames, faces=faces.faces, tracks=len(tracks))
        if "settled" not in checkpoint:  # (a rerun after a crash does not pay twice)
            checkpoint["settled"] = _settle_quota(svc, ctx, len(tracks))
            run.put([], checkpoint)
        ctx.counts["quota_units"] = 1 + int(checkpoint["settled"])
        applied = svc.effective_threshold(
            ctx,
            params.get("FaceMatchThreshold"),
            col.face_count,
            counted="faces",
            subjects=col.subject_count,
            calibration=engine_of(svc, col).calibration,
        )
        results: list[Result] = []
        matched_faces: dict[str, Any] = {}
        persons = 0
        for track in tracks:
            matches = _search_track(svc, store, col, track, applied["Similarity"])
            if not matches:
                continue
            persons += 1
            for m in matches:
                matched_faces[m["Face"]["FaceId"]] = m["_face"]
            face_matches = [{"Similarity": m["Similarity"], "Face": m["Face"]} for m in matches]
            for obs in track.observations:
                detail = obs.payload.face_detail()
                results.append(Result(0, {
                    "Timestamp": obs.timestamp_ms,
                    "Person": {"Index": track.index, "BoundingBox": detail["BoundingBox"], "Face": detail},
                    "FaceMatches": face_matches,
                }, sort_ts=obs.timestamp_ms, sort_index=int(track.index or 0)))  # fmt: skip
        results.sort(key=lambda r: (r.sort_ts, r.sort_index))
        results = [Result(i, r.body, r.sort_ts, r.sort_index) for i, r in enumerate(results)]
        ctx.matched_face_ids = sorted(matched_faces)
        touch(ctx, list(matched_faces.values()))
        ctx.counts.update(matched_persons=persons, matches=len(matched_faces), person_matches=len(results))
        summary = {"VideoMetadata": meta.to_rekognition(), **ctx.counts, "AppliedThreshold": applied}
        return Completion(summary, results)

    return audited(run, svc, ctx, body)


def _settle_quota(svc: Service, ctx: Context, tracks: int) -> int:
    """A video search costs one identification per person found: the one counted at Start, and the
    rest now (returned). If the key has not that many left, nothing is searched."""
    units = max(tracks - 1, 0)
    ctx.counts["quota_units"] = 1 + units
    if not units or ctx.kind is None:
        return units
    try:
        used = svc.quotas.consume(svc.policy, ctx.caller, "StartFaceSearch", ctx.kind, svc.clock(), units)
    except QuotaExceeded as exc:
        raise QuotaExceeded(
            f"The video shows {tracks} people; searching them costs {tracks} identification searches, more "
            f"than the key has left today, so none was searched. {exc.reason}",
            exc.rule,
        ) from None
    ctx.details["quota_used"] = used
    return units


def _search_track(
    svc: Service, store: Any, col: Collection, track: Track, threshold: float
) -> list[dict[str, Any]]:
    """The gallery faces matching a person: each template searched, the best similarity per face."""
    if track.templates is None or not len(track.templates):
        return []
    best: dict[str, tuple[float, Any]] = {}
    for template in track.templates:
        found = visible.search(svc, col, np.asarray(template, np.float32), SEARCH_K)  # consent, retention
        for m, s in zip(found, similarities(svc, col, [m.inner for m in found])):
            if s >= threshold and (m.face.face_id not in best or s > best[m.face.face_id][0]):
                best[m.face.face_id] = (float(s), m.face)
    ranked = sorted(best.values(), key=lambda sf: -sf[0])
    return [{"Similarity": round(s, 4), "Face": f.to_rekognition(), "_face": f} for s, f in ranked]

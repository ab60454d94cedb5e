"""Redaction: every face hidden, in images (RedactFaces) and video, except those of people who
consented to stay visible.

Hiding faces protects people, so ``RedactFaces`` is of kind ``redact``, open to every sector and to
``redaction`` keys. Keeping some faces visible (``KeepCollectionId``) is different: to know whose
face it is, each face is compared with the collection's consenting people, an identification. It
is decided as such (the activity ``KeepConsentingFaces``, kind ``identify``) before anything is
decoded, so the moratorium refuses it to police and immigration keys and a ``redaction`` key may
not do it; each face searched counts against the key's identification quota. A face is kept only
when it is large and sharp enough to identify, matches a face of the collection at the threshold
that collection's searches use, and that face's subject has an active consent; every other face,
too small, blurred, turned away or unknown, is hidden (fail closed).

Video is redacted as a durable job (``StartFaceRedaction``, ``GetFaceRedaction``): a worker decides
again with the starter's key, redacts the stored video (:mod:`facewarden.redact.video`: detection
on 12.5 frames a second, tracks, masks carried forward and backward over the frames between, the
audio copied) into a new object of the caller's bucket, written whole or not at all, and
``GetRedactedVideo`` hands it over. With ``KeepCollectionId`` each person (track) whose faces are
identified costs one identification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from ..engine import DetectedFace, Engine
from ..errors import InvalidInput, ResourceNotFound
from ..jobs import Completion, Job, JobRun
from ..media import buckets
from ..policy.kinds import Kind
from ..redact import masks
from ..redact import video as redact_video
from ..redact.image import redact_image
from . import visible
from .core import Service
from .faces import quality_reasons
from .gallery import collection, engine_of, similarities, touch
from .jobs import JobId, JobTag, audited, job_context, job_handler, own_job, wire_status
from .params import INTERNAL, ClientRequestToken, CollectionId, File, Image, OneOf, Range, S3Object
from .registry import Context, Rest, declare, operation
from .video import VIDEO_JOBS, JobPage, StartJobResult, Video, _metadata, _open, _start, _video_wire

#: Keeping consenting people visible: an identification, decided and counted as one.
KEEP = declare("KeepConsentingFaces", Kind.IDENTIFY)
#: The quality bar a face must pass to be identified at all (else it is hidden): IndexFaces' MEDIUM.
IDENTIFIABLE = "MEDIUM"

Method = Annotated[str, OneOf(masks.METHODS)]
Shape = Annotated[str, OneOf(masks.SHAPES)]
Margin = Annotated[float, Range(0.0, masks.MAX_MARGIN)]


@dataclass(frozen=True)
class RedactFacesRequest:
    image: Image
    #: blur (default), pixelate or solid.
    method: Method = "blur"
    #: ellipse (default) or box.
    shape: Shape = "ellipse"
    #: Added on each side of a face's box, as a fraction of its size (an ellipse needs >= 0.21).
    margin: Margin = masks.DEFAULT_MARGIN
    #: Leave visible the faces of this collection's consenting people (an identification).
    keep_collection_id: CollectionId | None = None
    detector: str | None = None


@dataclass(frozen=True)
class RedactedFace:
    bounding_box: dict[str, float]
    confidence: float
    #: True: left visible (a consenting person of the keep collection); False: hidden.
    kept: bool


@dataclass(frozen=True)
class RedactFacesResult:
    #: The redacted image, in the input's format, without metadata (EXIF, GPS, XMP).
    image: Image
    format: str
    faces_found: int
    faces_hidden: int
    faces_kept: int
    faces: list[RedactedFace]
    applied_threshold: dict[str, Any] | None = None


@operation("RedactFaces", kind=Kind.REDACT, rest=Rest("POST", "/v1/redact", "redaction"))
def redact_faces(svc: Service, ctx: Context, req: RedactFacesRequest) -> RedactFacesResult:
    """Hide every face of an image (blur, pixelate or solid), except consenting people kept visible"""
    style = mask_style(req.method, req.shape, req.margin)
    keep = keeper(svc, ctx, req.keep_collection_id) if req.keep_collection_id else None
    result = redact_image(
        req.image.data,
        svc.engine,
        style,
        keep=keep.faces if keep else None,
        detector=svc.detector(req.detector),
        max_bytes=svc.settings.max_image_bytes,
        max_pixels=svc.settings.max_image_pixels,
    )
    ctx.counts.update(
        faces_found=len(result.faces), faces_hidden=result.faces_hidden, faces_kept=result.faces_kept
    )
    ctx.details.update(method=style.method, shape=style.shape, format=result.format)
    w, h = result.width, result.height
    faces = [
        RedactedFace(f.box.to_rekognition(w, h), f.confidence, k) for f, k in zip(result.faces, result.kept)
    ]
    return RedactFacesResult(
        Image(result.data),
        result.format,
        len(result.faces),
        result.faces_hidden,
        result.faces_kept,
        faces,
        ctx.applied_threshold,
    )


def mask_style(method: str, shape: str, margin: float) -> masks.MaskStyle:
    return masks.MaskStyle(method=method, shape=shape, margin=margin)


# ---- keeping consenting people visible ----------------------------------------------------------------
@dataclass
class Keeper:
    """Who of the keep collection's consenting people a face (or a track's faces) is."""

    svc: Service
    ctx: Context
    subject_of: Callable[[np.ndarray], str | None]
    #: The keep collection's model: faces are compared with its templates by it alone.
    engine: Engine

    def identifiable(self, face: DetectedFace) -> bool:
        return not quality_reasons(face, IDENTIFIABLE)

    def faces(self, pixels: np.ndarray, faces: Sequence[DetectedFace]) -> list[bool]:
        """For a still image: keep each identifiable face whose subject consented."""
        wanted = [i for i, f in enumerate(faces) if self.identifiable(f)]
        self.charge(len(wanted))
        kept = [False] * len(faces)
        if wanted:
            templates = self.engine.embed(pixels, [faces[i] for i in wanted])
            for i, t in zip(wanted, templates):
                kept[i] = self.subject_of(t) is not None
        return kept

    def same_consenting_person(self, templates: Sequence[np.ndarray]) -> bool:
        """For a video track: all its identifiable faces are one consenting person."""
        subjects = {self.subject_of(t) for t in templates}
        return len(subjects) == 1 and None not in subjects

    def charge(self, n: int) -> None:
        """One identification per face searched, against the key's quota (nothing searched past it)."""
        for _ in range(n):
            used = self.svc.quotas.consume(
                self.svc.policy, self.ctx.caller, KEEP, Kind.IDENTIFY, self.svc.clock()
            )
            if used:
                self.ctx.details["quota_used"] = used
        self.ctx.counts["faces_searched"] = self.ctx.counts.get("faces_searched", 0) + n


def keeper(svc: Service, ctx: Context, collection_id: str) -> Keeper:
    """Decide keeping people of ``collection_id`` visible (an identification; a refusal is audited
    and raised before anything is decoded), then the matcher against its consenting people."""
    svc.authorize(ctx.principal, KEEP, collection_id, audit_allowed=False)
    _, col = collection(svc, ctx, collection_id)
    if col.consent_mode != "required":
        raise InvalidInput(
            f"KeepCollectionId {collection_id!r} is a {col.consent_mode} collection: faces are kept visible only "
            "for people whose consent is on record, so name a consent collection."
        )
    applied = svc.effective_threshold(
        ctx, None, col.face_count, counted="faces", calibration=engine_of(svc, col).calibration
    )
    threshold = float(applied["Similarity"])
    kept_subjects: set[str] = set()

    def subject_of(template: np.ndarray) -> str | None:
        matches = visible.search(svc, col, template, 1)  # lapsed consent, passed retention: not there
        if not matches or float(similarities(svc, col, [matches[0].inner])[0]) < threshold:
            return None
        face = matches[0].face
        subject = face.external_image_id
        if not subject or not svc.consents.active(subject, col.collection_id, col.owner_org, svc.clock()):
            return None
        if subject not in kept_subjects:
            kept_subjects.add(subject)
            touch(ctx, [face])
        return subject

    ctx.details["keep_collection"] = col.collection_id
    return Keeper(svc, ctx, subject_of, engine_of(svc, col))


# ---- video: a durable job ---------------------------------------------------------------------------
REDACTION = "FaceRedaction"
#: Media types of the redacted videos handed over, by the file's suffix.
VIDEO_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo", ".ts": "video/mp2t",
}  # fmt: skip


@dataclass(frozen=True)
class StartFaceRedactionRequest:
    video: Video
    #: Where the redacted copy goes, in your organisation's bucket (default: the video's name with
    #: ``.redacted`` before its suffix, beside it). Never the video itself.
    output: Video | None = None
    method: Method = "blur"
    shape: Shape = "ellipse"
    margin: Margin = masks.DEFAULT_MARGIN
    #: Leave visible the faces of this collection's consenting people (an identification).
    keep_collection_id: CollectionId | None = None
    client_request_token: ClientRequestToken | None = None
    notification_channel: dict[str, Any] | None = None
    job_tag: JobTag | None = None
    #: Local files instead of bucket objects (the CLI's; no wire dict can set them).
    path: Annotated[str | None, INTERNAL] = None
    output_path: Annotated[str | None, INTERNAL] = None


@operation(
    "StartFaceRedaction", kind=Kind.REDACT, rest=Rest("POST", f"{VIDEO_JOBS}/face-redaction", "redaction")
)
def start_face_redaction(svc: Service, ctx: Context, req: StartFaceRedactionRequest) -> StartJobResult:
    """Start hiding every face of a stored video (consenting people of KeepCollectionId kept)"""
    style = mask_style(req.method, req.shape, req.margin)
    if req.keep_collection_id:
        keeper(svc, ctx, req.keep_collection_id)  # an identification: refused (and audited) here
    params: dict[str, Any] = {
        "Video": _video_wire(req.video),
        "Method": style.method,
        "Shape": style.shape,
        "Margin": style.margin,
    }
    if req.keep_collection_id:
        params["KeepCollectionId"] = req.keep_collection_id
    if req.path is not None:
        if req.output_path is None:
            raise InvalidInput("A local video needs a local output file.")
        src, dst = Path(req.path).resolve(), Path(req.output_path).resolve()
        if src == dst:
            raise InvalidInput(
                f"The output {req.output_path} would overwrite the video itself; choose another file."
            )
        params["OutputPath"] = str(dst)
    else:
        svc.s3_path(ctx.caller, req.video.s3_object)  # the video exists and the caller may read it
        output = req.output or Video(_redacted_name(req.video.s3_object))
        s3 = output.s3_object
        if not ctx.caller.owner and s3.bucket != ctx.caller.org:
            raise InvalidInput(
                f"The redacted copy goes to your organisation's bucket {ctx.caller.org!r}, not {s3.bucket!r}."
            )
        if (s3.bucket, s3.name) == (req.video.s3_object.bucket, req.video.s3_object.name):
            raise InvalidInput("Output names the video itself; a redaction never overwrites its original.")
        buckets.destination(
            svc.settings.resolved_buckets_dir, s3.bucket, s3.name, create=False
        )  # a valid key
        params["Output"] = _video_wire(output)
    ctx.details.update(method=style.method, shape=style.shape)
    return _start(svc, ctx, REDACTION, params, req.video, req.path, req.client_request_token, req.job_tag,
                  req.notification_channel)  # fmt: skip


def _redacted_name(s3: S3Object) -> S3Object:
    name = Path(s3.name)
    return S3Object(s3.bucket, str(name.with_name(f"{name.stem}.redacted{name.suffix}")))


@dataclass(frozen=True)
class GetFaceRedactionRequest:
    job_id: JobId


@dataclass(frozen=True)
class GetFaceRedactionResult(JobPage):
    #: Where the redacted copy is (once SUCCEEDED): in your bucket, or GetRedactedVideo.
    output: dict[str, Any] | None = None
    #: What was done: frames analysed, faces detected, people (tracks) hidden and kept, and the
    #: face-frames masked (counts only, never where anyone was).
    redaction: dict[str, int] | None = None
    #: How far the job is, 0 to 1.
    progress: float | None = None


@operation(
    "GetFaceRedaction",
    kind=Kind.REDACT,
    rest=Rest("GET", f"{VIDEO_JOBS}/face-redaction/{{JobId}}", "redaction"),
)
def get_face_redaction(svc: Service, ctx: Context, req: GetFaceRedactionRequest) -> GetFaceRedactionResult:
    """The status of a face redaction job, and where its redacted copy is"""
    job = _own(svc, ctx, req.job_id)
    status, message = wire_status(job)
    done = status == "SUCCEEDED"  # (a redaction job stores no result rows: its result is the file)
    counts = {k: int(v) for k, v in (job.summary or {}).get("Redaction", {}).items()} if done else None
    return GetFaceRedactionResult(
        status, job.job_id, job.params["Video"], message, _metadata(job), None, job.job_tag,
        output=job.params.get("Output") if done else None, redaction=counts,
        progress=1.0 if done else round(float(job.progress or 0.0), 3),
    )  # fmt: skip


@dataclass(frozen=True)
class GetRedactedVideoRequest:
    job_id: JobId


@operation(
    "GetRedactedVideo",
    kind=Kind.REDACT,
    rest=Rest("GET", f"{VIDEO_JOBS}/face-redaction/{{JobId}}/video", "redaction"),
)
def get_redacted_video(svc: Service, ctx: Context, req: GetRedactedVideoRequest) -> File:
    """Download the redacted copy a face redaction job made"""
    job = _own(svc, ctx, req.job_id)
    if job.status != "SUCCEEDED":
        raise ResourceNotFound(f"Job {job.job_id} has no redacted copy: it is {job.status}.")
    path = _output_path(svc, ctx, job.params)
    if not path.is_file():
        raise ResourceNotFound(
            f"The redacted copy of job {job.job_id} is no longer there (deleted from the bucket)."
        )
    name = Path(job.params.get("OutputPath") or job.params["Output"]["S3Object"]["Name"]).name
    ctx.counts["bytes"] = path.stat().st_size
    return File(str(path), VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream"), name)


def _own(svc: Service, ctx: Context, job_id: str) -> Job:
    job = own_job(svc, ctx, job_id, REDACTION)
    ctx.details["job_id"] = job.job_id
    return job


def _output_path(svc: Service, ctx: Context, params: dict[str, Any]) -> Path:
    if "OutputPath" in params:
        return Path(params["OutputPath"])
    s3 = params["Output"]["S3Object"]
    if not ctx.caller.owner and s3["Bucket"] != ctx.caller.org:
        raise InvalidInput(f"Bucket {s3['Bucket']!r} is not your organisation's.")
    return buckets.destination(svc.settings.resolved_buckets_dir, s3["Bucket"], s3["Name"], create=False)


def redact_stored_video(
    svc: Service,
    src: Path,
    dst: Path,
    style: masks.MaskStyle,
    keep: Keeper | None,
    limits: Any,
    progress: Callable[[float], None] | None = None,
) -> redact_video.VideoSummary:
    """Redact a video file into ``dst`` (written whole or not at all); with ``keep``, a track stays
    visible only when all its identifiable faces are one consenting person, and each track looked
    at costs one identification."""
    track_keeper = None
    if keep is not None:
        k = keep

        def decide(templates: Sequence[np.ndarray]) -> bool:
            k.charge(1)
            return k.same_consenting_person(templates)

        track_keeper = redact_video.TrackKeeper(identifiable=k.identifiable, decide=decide)
    options = redact_video.VideoOptions(style=style, threads=svc.settings.video_threads)
    engine = keep.engine if keep is not None else svc.engine
    return redact_video.redact_video(
        src, dst, engine, options, keeper=track_keeper, limits=limits, progress=progress
    )


@job_handler(REDACTION)
def run_face_redaction(svc: Service, run: JobRun) -> Completion:
    ctx = job_context(svc, run, "StartFaceRedaction")

    def body() -> Completion:
        params = run.job.params
        style = mask_style(params["Method"], params["Shape"], float(params["Margin"]))
        keep = keeper(svc, ctx, params["KeepCollectionId"]) if params.get("KeepCollectionId") else None
        with _open(svc, ctx, run) as reader:  # the policy, the bucket and the limits, checked first
            src, limits = reader.path, reader.limits
        dst = _output_path(svc, ctx, params)
        summary = redact_stored_video(
            svc, src, dst, style, keep, limits, progress=lambda f: run.progress(min(f, 0.99))
        )
        counts = {
            "FramesAnalysed": summary.frames_analysed,
            "FacesDetected": summary.detections,
            "Tracks": summary.tracks,
            "TracksHidden": summary.tracks_hidden,
            "TracksKept": summary.tracks_kept,
            "MaskedFaceFrames": summary.masked_face_frames,
        }
        ctx.counts.update(
            frames=summary.frames_analysed,
            faces=summary.detections,
            tracks_hidden=summary.tracks_hidden,
            tracks_kept=summary.tracks_kept,
        )
        ctx.details.update(method=style.method, shape=style.shape)
        return Completion({"VideoMetadata": summary.metadata.to_rekognition(), "Redaction": counts}, [])

    return audited(run, svc, ctx, body)

"""Footage release: the answer to "police asked my neighbours for their camera footage".

A requester organisation (police, an insurer, a newsroom) files a request to a footage owner: a
time range, a place, a reason and the legal basis (a warrant's reference, for example). The owner
keeps its footage in its own library (``AddFootage``), sees the request, and declines it or
releases chosen files of its library. What is released is never a file of the library: it is a
redacted copy, every face hidden (or every face but those of the owner's consenting people, which
is an identification the owner's key must be allowed to make). The requester downloads each copy
once, only after the release and before its expiry; the copy is then deleted. No operation hands
a requester a frame of the originals or any template. Every step is an operation of kind
``release``, so each is decided by policy and leaves an audit record; the transparency report
counts the requests by the requester's sector, the decisions and the faces redacted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ..errors import InvalidInput, ResourceNotFound
from ..media import images, video
from ..policy.kinds import Kind
from ..redact import masks
from ..redact.image import redact_image
from ..release import IMAGE, READY, VIDEO, Footage, Item, Request
from ..release import store as release_store
from .core import Service
from .params import INTERNAL, CollectionId, File, Image, Items, Pattern, Range, Time
from .redaction import Margin, Method, Shape, keeper, mask_style, redact_stored_video
from .registry import Context, Rest, operation

TAG = "footage release"
R = "/v1/releases"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}
_MEDIA_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
    ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo",
}  # fmt: skip
_SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                     "TIFF": ".tif"}  # fmt: skip

Text = Annotated[str, Pattern(r"[^\x00]{1,2000}", "1-2000 characters of text")]
Name = Annotated[str, Pattern(r"[^\x00/\\]{1,255}", "a file name of 1-255 characters, without / or \\")]
OrgName = Annotated[str, Pattern(r"[A-Za-z0-9_.\-]{1,128}", "an organisation's name")]
RequestId = Annotated[str, Pattern(r"rel-[0-9a-f]{16}", "a release request id (rel-...)")]
ItemId = Annotated[str, Pattern(r"itm-[0-9a-f]{16}", "a released item id (itm-...)")]
FootageId = Annotated[str, Pattern(r"ftg-[0-9a-f]{16}", "a footage id (ftg-...)")]


def footage_dir(svc: Service, org: str) -> Path:
    return svc.settings.data_dir / "footage" / org


def copies_dir(svc: Service, request_id: str) -> Path:
    return svc.settings.data_dir / "releases" / request_id


# ---- the owner's footage library -------------------------------------------------------------------
@dataclass(frozen=True)
class AddFootageRequest:
    #: A photo, sent as bytes (videos: from the CLI, ``facewarden release footage add FILE``).
    image: Image | None = None
    #: The file's name in the library (default: the uploaded or given file's name).
    name: Name | None = None
    #: When the footage was recorded, and where (for matching requests; free text).
    recorded_at: Time | None = None
    place: Text | None = None
    #: A local file (the CLI's; no wire dict can set it).
    path: Annotated[str | None, INTERNAL] = None


@dataclass(frozen=True)
class FootageInfo:
    footage_id: str
    name: str
    media: str
    size: int
    sha256: str
    recorded_at: float | None
    place: str | None
    added_at: float


def _footage_info(f: Footage) -> FootageInfo:
    return FootageInfo(
        f.footage_id, f.name, f.media, f.size_bytes, f.sha256, f.recorded_at, f.place, f.added_at
    )


@operation("AddFootage", kind=Kind.RELEASE, rest=Rest("POST", f"{R}/footage", TAG))
def add_footage(svc: Service, ctx: Context, req: AddFootageRequest) -> FootageInfo:
    """Add a photo or video to your organisation's footage library (checked: a clear error if it is
    not one)"""
    if (req.image is None) == (req.path is None):
        raise InvalidInput("Send the footage: one Image (a photo's bytes), or a file from the command line.")
    org = ctx.caller.org
    folder = footage_dir(svc, org)
    folder.mkdir(parents=True, exist_ok=True)
    if req.image is not None:
        still = images.decode_still(
            req.image.data, max_bytes=svc.settings.max_image_bytes, max_pixels=svc.settings.max_image_pixels
        )
        name = req.name or f"photo{_SUFFIX_OF_FORMAT.get(still.format, '.img')}"
        media, data = IMAGE, req.image.data
        staged = folder / f".upload-{os.getpid()}-{id(req)}"
        staged.write_bytes(data)
    else:
        source = Path(str(req.path))
        name = req.name or source.name
        media = _check_media(svc, source)
        staged = folder / f".upload-{os.getpid()}-{id(req)}"
        shutil.copyfile(source, staged)
    digest = _sha256(staged)
    footage = svc.releases.add_footage(
        owner_org=org, name=name, media=media, path="", sha256=digest, size_bytes=staged.stat().st_size,
        added_by=ctx.caller.key_id, recorded_at=req.recorded_at, place=req.place,
    )  # fmt: skip
    stored = folder / f"{footage.footage_id}{Path(name).suffix.lower() or '.bin'}"
    staged.replace(stored)
    svc.releases.set_footage_path(footage.footage_id, str(stored.relative_to(svc.settings.data_dir)))
    ctx.counts["bytes"] = footage.size_bytes
    ctx.details.update(footage_id=footage.footage_id, media=media)
    return _footage_info(footage)


def _check_media(svc: Service, path: Path) -> str:
    """``image`` or ``video``, after checking the file is one facewarden can read (clear errors)."""
    s = svc.settings
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        with video.VideoReader(path, _video_limits(svc)):  # a video stream, within the limits
            return VIDEO
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidInput(
            f"{path.name}: the footage library takes photos ({', '.join(sorted(IMAGE_SUFFIXES))}) and videos "
            f"({', '.join(sorted(VIDEO_SUFFIXES))})."
        )
    images.decode_still(images.read_bytes(path, max_bytes=s.max_image_bytes), max_bytes=s.max_image_bytes,
                        max_pixels=s.max_image_pixels)  # fmt: skip
    return IMAGE


def _video_limits(svc: Service) -> video.VideoLimits:
    s = svc.settings
    return video.VideoLimits(s.video_max_bytes, s.video_max_seconds, s.video_max_pixels)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ListFootageRequest:
    max_results: Annotated[int, Range(1, 1000)] = 1000


@dataclass(frozen=True)
class ListFootageResult:
    footage: list[FootageInfo]


@operation("ListFootage", kind=Kind.RELEASE, rest=Rest("GET", f"{R}/footage", TAG))
def list_footage(svc: Service, ctx: Context, req: ListFootageRequest) -> ListFootageResult:
    """List your organisation's footage library"""
    rows = svc.releases.footage(ctx.caller.org, req.max_results)
    ctx.counts["footage"] = len(rows)
    return ListFootageResult([_footage_info(f) for f in rows])


# ---- requests ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeRange:
    start: Time
    end: Time


@dataclass(frozen=True)
class CreateReleaseRequestRequest:
    #: The organisation whose footage is asked for.
    owner_organization: OrgName
    time_range: TimeRange
    place: Text
    reason: Text
    #: The legal basis (e.g. "warrant", "court order", "consent of the person filmed").
    legal_basis: Text
    #: Its reference (a warrant's number), if any.
    reference: Text | None = None


@dataclass(frozen=True)
class ReleasedItem:
    item_id: str
    footage_id: str
    name: str
    media: str
    status: str
    faces_found: int
    faces_hidden: int
    faces_kept: int
    message: str | None = None
    downloaded_at: float | None = None


@dataclass(frozen=True)
class ReleaseRequestInfo:
    request_id: str
    requester_organization: str
    requester_sector: str | None
    owner_organization: str
    time_range: dict[str, float]
    place: str
    reason: str
    legal_basis: str
    reference: str | None
    status: str
    created_at: float
    decision_reason: str | None = None
    decided_at: float | None = None
    expires_at: float | None = None
    keep_collection_id: str | None = None
    items: list[ReleasedItem] | None = None


def _item_info(i: Item) -> ReleasedItem:
    return ReleasedItem(i.item_id, i.footage_id, i.name, i.media, i.status, i.faces_found, i.faces_hidden,
                        i.faces_kept, i.message, i.downloaded_at)  # fmt: skip


def _request_info(r: Request) -> ReleaseRequestInfo:
    return ReleaseRequestInfo(
        r.request_id, r.requester_org, r.requester_sector, r.owner_org, {"Start": r.time_from, "End": r.time_to},
        r.place, r.reason, r.legal_basis, r.reference, r.status, r.created_at, r.decision_reason, r.decided_at,
        r.expires_at, r.keep_collection, [_item_info(i) for i in r.items],
    )  # fmt: skip


def _touch(ctx: Context, r: Request) -> None:
    ctx.details.update(request_id=r.request_id, requester=r.requester_org, owner=r.owner_org, status=r.status)


@operation("CreateReleaseRequest", kind=Kind.RELEASE, rest=Rest("POST", R, TAG))
def create_release_request(
    svc: Service, ctx: Context, req: CreateReleaseRequestRequest
) -> ReleaseRequestInfo:
    """Ask another organisation for its footage of a time and place (it decides; what it releases is
    redacted)"""
    try:
        svc.principals.get_org(req.owner_organization)
    except ResourceNotFound:
        raise ResourceNotFound(
            f"There is no organisation {req.owner_organization!r} on this installation: a request goes to the "
            "footage owner's organisation as registered here (ask it for its name)."
        ) from None
    caller = ctx.caller
    r = svc.releases.create(
        requester_org=caller.org, requester_sector=caller.sector, requester_key=caller.key_id,
        owner_org=req.owner_organization, time_from=float(req.time_range.start), time_to=float(req.time_range.end),
        place=req.place, reason=req.reason, legal_basis=req.legal_basis, reference=req.reference,
    )  # fmt: skip
    _touch(ctx, r)
    return _request_info(r)


@dataclass(frozen=True)
class ListReleaseRequestsRequest:
    #: requester: the requests your organisation made; owner: those made to it; any: both.
    role: Annotated[str, Pattern(r"requester|owner|any", "requester, owner or any")] = "any"
    status: Annotated[str, Pattern(r"PENDING|DECLINED|RELEASED|EXPIRED", "PENDING, DECLINED, RELEASED or EXPIRED")] | None = None  # fmt: skip
    max_results: Annotated[int, Range(1, 1000)] = 100


@dataclass(frozen=True)
class ListReleaseRequestsResult:
    release_requests: list[ReleaseRequestInfo]


@operation("ListReleaseRequests", kind=Kind.RELEASE, rest=Rest("GET", R, TAG))
def list_release_requests(
    svc: Service, ctx: Context, req: ListReleaseRequestsRequest
) -> ListReleaseRequestsResult:
    """List the release requests your organisation made or received, newest first"""
    rows = svc.releases.requests(ctx.caller.org, req.role, req.status, req.max_results)
    ctx.counts["requests"] = len(rows)
    return ListReleaseRequestsResult([_request_info(r) for r in rows])


@dataclass(frozen=True)
class ReleaseRequestRef:
    request_id: RequestId


@operation("DescribeReleaseRequest", kind=Kind.RELEASE, rest=Rest("GET", f"{R}/{{RequestId}}", TAG))
def describe_release_request(svc: Service, ctx: Context, req: ReleaseRequestRef) -> ReleaseRequestInfo:
    """A release request with its decision and released items (to its requester and its owner)"""
    r = svc.releases.get(req.request_id, ctx.caller.org)
    _touch(ctx, r)
    return _request_info(r)


@dataclass(frozen=True)
class DeclineReleaseRequestRequest:
    request_id: RequestId
    reason: Text


@operation("DeclineReleaseRequest", kind=Kind.RELEASE, rest=Rest("POST", f"{R}/{{RequestId}}/decline", TAG))
def decline_release_request(
    svc: Service, ctx: Context, req: DeclineReleaseRequestRequest
) -> ReleaseRequestInfo:
    """Decline a request made to your organisation (nothing is released)"""
    r = svc.releases.decline(req.request_id, ctx.caller.org, ctx.caller.key_id, req.reason)
    _touch(ctx, r)
    return _request_info(r)


@dataclass(frozen=True)
class ReleaseFootageRequest:
    request_id: RequestId
    #: Files of your footage library to release (each as a redacted copy).
    footage_ids: Annotated[list[FootageId], Items("footage ids", 1, 100)]
    #: Leave visible the faces of this consent collection's consenting people (an identification).
    keep_collection_id: CollectionId | None = None
    expires_in_days: Annotated[float, Range(0.01, release_store.MAX_EXPIRY_DAYS)] = (
        release_store.DEFAULT_EXPIRY_DAYS
    )
    method: Method = "blur"
    shape: Shape = "ellipse"
    margin: Margin = masks.DEFAULT_MARGIN
    reason: Text | None = None


@operation("ReleaseFootage", kind=Kind.RELEASE, rest=Rest("POST", f"{R}/{{RequestId}}/release", TAG))
def release_footage(svc: Service, ctx: Context, req: ReleaseFootageRequest) -> ReleaseRequestInfo:
    """Release chosen files of your library to the requester, as redacted copies"""
    style = mask_style(req.method, req.shape, req.margin)
    keep = keeper(svc, ctx, req.keep_collection_id) if req.keep_collection_id else None
    r, pairs = svc.releases.release(
        req.request_id, ctx.caller.org, ctx.caller.key_id, list(req.footage_ids),
        expires_in_days=req.expires_in_days, keep_collection=req.keep_collection_id, reason=req.reason,
    )  # fmt: skip
    _touch(ctx, r)
    out = copies_dir(svc, r.request_id)
    out.mkdir(parents=True, exist_ok=True)
    hidden = kept = 0
    for item, footage in pairs:
        source = svc.settings.data_dir / footage.path
        if footage.media == VIDEO:  # redacted here and now (the request returns once every copy is made)
            copy = out / f"{item.item_id}{source.suffix}"
            summary = redact_stored_video(svc, source, copy, style, keep, _video_limits(svc))
            svc.releases.set_item(
                item.item_id, status=READY, copy_path=str(copy.relative_to(svc.settings.data_dir)),
                faces_found=summary.tracks, faces_hidden=summary.tracks_hidden, faces_kept=summary.tracks_kept,
            )  # fmt: skip
            hidden, kept = hidden + summary.tracks_hidden, kept + summary.tracks_kept
            continue
        result = redact_image(
            source.read_bytes(), svc.engine, style, keep=keep.faces if keep else None,
            max_bytes=svc.settings.max_image_bytes, max_pixels=svc.settings.max_image_pixels,
        )  # fmt: skip
        copy = out / f"{item.item_id}{_SUFFIX_OF_FORMAT.get(result.format, source.suffix)}"
        copy.write_bytes(result.data)
        svc.releases.set_item(
            item.item_id, status=READY, copy_path=str(copy.relative_to(svc.settings.data_dir)),
            faces_found=len(result.faces), faces_hidden=result.faces_hidden, faces_kept=result.faces_kept,
        )  # fmt: skip
        hidden, kept = hidden + result.faces_hidden, kept + result.faces_kept
    ctx.counts.update(items=len(pairs), faces_hidden=hidden, faces_kept=kept)
    return _request_info(svc.releases.get(r.request_id, ctx.caller.org))


# ---- the download --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GetReleasedFootageRequest:
    request_id: RequestId
    item_id: ItemId


@operation(
    "GetReleasedFootage",
    kind=Kind.RELEASE,
    rest=Rest("GET", f"{R}/{{RequestId}}/items/{{ItemId}}", TAG),
)
def get_released_footage(svc: Service, ctx: Context, req: GetReleasedFootageRequest) -> File:
    """Download a released (redacted) copy, once: the copy is deleted once sent"""
    item = svc.releases.take(req.request_id, req.item_id, ctx.caller.org, ctx.caller.key_id)
    ctx.details.update(request_id=req.request_id, item_id=item.item_id)
    ctx.counts.update(faces_hidden=item.faces_hidden, faces_kept=item.faces_kept)
    path = svc.settings.data_dir / str(item.copy_path)
    name = f"{Path(item.name).stem}.redacted{path.suffix}"

    def sent() -> None:
        svc.releases.forget_copy(item.item_id)
        path.unlink(missing_ok=True)

    return File(str(path), _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"), name, sent)


def release_report(svc: Service, since: float | None = None) -> dict[str, Any]:
    """The footage-release part of the transparency report."""
    return svc.releases.report(since)

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from ..engine import DetectedFace, Engine
from ..errors import InvalidInput
from ..policy.kinds import Kind
from ..redact import masks
from ..redact.image import redact_image
from .core import Service
from .faces import quality_reasons
from .gallery import collection, engine_of, similarities, touch
from .params import CollectionId, Image, OneOf, Range
from .registry import Context, Rest, declare, operation

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
    store, col = collection(svc, ctx, collection_id)
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
        matches = store.search(col.collection_id, template, 1)
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

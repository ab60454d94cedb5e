"""Operations on faces in images, with no gallery: DetectFaces, CompareFaces, ClusterFaces; and
the analysis of an image for enrolment (which faces IndexFaces keeps, and why it leaves others)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np

from ..engine import DetectedFace
from ..errors import AccessDenied, InvalidInput, ModelMismatch, NoFaceFound
from ..gallery.cluster import cluster_faces as group_templates
from ..policy.kinds import Kind
from .core import Service, largest
from .registry import Context, Rest, operation
from .params import INTERNAL, Attributes, Image, Items, Similarity

#: A face as Rekognition describes it (BoundingBox, Confidence, Landmarks, Pose, Quality, ...).
FaceDetail = dict[str, Any]


@dataclass(frozen=True)
class DetectFacesRequest:
    image: Image
    attributes: Attributes = "DEFAULT"
    #: facewarden's extension: the face detector to use (default: the configured one).
    detector: str | None = None


@dataclass(frozen=True)
class DetectFacesResult:
    face_details: list[FaceDetail]


@operation("DetectFaces", kind=Kind.DETECT, rest=Rest("POST", "/v1/faces/detect", "faces"))
def detect_faces(svc: Service, ctx: Context, req: DetectFacesRequest) -> DetectFacesResult:
    """Detect faces in an image"""
    pixels = svc.decode_image(req.image)
    faces = svc.engine.detect(pixels, svc.detector(req.detector), req.attributes)
    ctx.counts["faces"] = len(faces)
    return DetectFacesResult([f.face_detail(req.attributes) for f in faces])


@dataclass(frozen=True)
class CompareFacesRequest:
    source_image: Image
    target_image: Image
    #: Default: the configured match threshold (80).
    similarity_threshold: Similarity | None = None
    detector: str | None = None


@dataclass(frozen=True)
class CompareFacesMatch:
    similarity: float
    face: FaceDetail


@dataclass(frozen=True)
class CompareFacesResult:
    source_image_face: FaceDetail
    face_matches: list[CompareFacesMatch]
    unmatched_faces: list[FaceDetail]
    applied_threshold: dict[str, Any] | None


@operation("CompareFaces", kind=Kind.COMPARE, rest=Rest("POST", "/v1/faces/compare", "faces"))
def compare_faces(svc: Service, ctx: Context, req: CompareFacesRequest) -> CompareFacesResult:
    """Compare the largest face of one image with the faces of another"""
    # A 1:1 comparison is a "gallery" of one: only the purpose's floor can raise the threshold.
    threshold = float(svc.effective_threshold(ctx, req.similarity_threshold, 1)["Similarity"])
    source = svc.decode_image(req.source_image)
    target = svc.decode_image(req.target_image)
    detector = svc.detector(req.detector)
    source_faces = svc.engine.detect(source, detector)
    if not source_faces:
        raise NoFaceFound("No face was found in SourceImage. Use a photo where the face is clearly visible.")
    probe_face = largest(source_faces)
    probe = svc.engine.embed(source, [probe_face])[0]
    target_faces = svc.engine.detect(target, detector)[:100]
    templates = svc.engine.embed(target, target_faces)
    sims = svc.engine.similarities(probe, templates)
    matches, unmatched = [], []
    for face, sim in sorted(zip(target_faces, sims), key=lambda fs: -fs[1]):
        if sim >= threshold:
            matches.append(CompareFacesMatch(float(sim), _compared_face(face)))
        else:
            unmatched.append(_compared_face(face))
    ctx.counts.update(target_faces=len(target_faces), matches=len(matches))
    return CompareFacesResult(
        {"BoundingBox": probe_face.face_detail()["BoundingBox"], "Confidence": probe_face.confidence},
        matches,
        unmatched,
        ctx.applied_threshold,
    )


def _compared_face(face: DetectedFace) -> FaceDetail:
    d = face.face_detail()
    return {k: d[k] for k in ("BoundingBox", "Confidence", "Landmarks", "Pose", "Quality")}


# ---- the analysis of an image for enrolment ------------------------------------------------------
#: Quality bars per QualityFilter: detector confidence, face size (shorter side, pixels), pose
#: (largest absolute yaw/pitch, degrees), brightness and sharpness (0-100). AUTO sits at LOW-MEDIUM.
QUALITY_BARS: dict[str, dict[str, float]] = {
    "LOW": {"confidence": 50, "pixels": 20, "pose": 80, "brightness": 4, "sharpness": 2},
    "AUTO": {"confidence": 60, "pixels": 28, "pose": 70, "brightness": 8, "sharpness": 4},
    "MEDIUM": {"confidence": 70, "pixels": 40, "pose": 55, "brightness": 15, "sharpness": 8},
    "HIGH": {"confidence": 85, "pixels": 64, "pose": 40, "brightness": 25, "sharpness": 15},
}


def quality_reasons(face: DetectedFace, quality: str) -> list[str]:
    """Why ``face`` falls below the ``quality`` bar (Rekognition's UnindexedFaces reasons)."""
    bars = QUALITY_BARS.get(quality)
    if bars is None:
        return []
    reasons = []
    if max(abs(face.pose.yaw), abs(face.pose.pitch)) > bars["pose"]:
        reasons.append("EXTREME_POSE")
    if face.quality.brightness < bars["brightness"]:
        reasons.append("LOW_BRIGHTNESS")
    if face.quality.sharpness < bars["sharpness"]:
        reasons.append("LOW_SHARPNESS")
    if face.confidence < bars["confidence"]:
        reasons.append("LOW_CONFIDENCE")
    if min(face.box.width, face.box.height) < bars["pixels"]:
        reasons.append("SMALL_BOUNDING_BOX")
    return reasons


def select_faces(
    faces: list[DetectedFace], max_faces: int, quality: str
) -> tuple[list[DetectedFace], list[tuple[DetectedFace, list[str]]]]:
    """IndexFaces' choice: faces that pass the quality bar, largest first, at most ``max_faces``."""
    kept: list[DetectedFace] = []
    unindexed: list[tuple[DetectedFace, list[str]]] = []
    for face in sorted(faces, key=lambda f: -f.box.area):
        reasons = quality_reasons(face, quality)
        if reasons:
            unindexed.append((face, reasons))
        elif len(kept) < max_faces:
            kept.append(face)
        else:
            unindexed.append((face, ["EXCEEDS_MAX_FACES"]))
    return kept, unindexed


#: One consent, one face: in a consent collection an image enrols its largest face only when that
#: face has at least this many times the area of the next largest one (about 1.6 times its width).
#: Measured on ../shared/faces with the default detector (CenterFace): in the 15 group photos the two
#: largest faces differ by 1.03x-1.73x in area, so each is refused as ambiguous; the 3 single-person
#: photos with a second face have it 3.4x, 3.9x and 13.8x smaller (their subject is enrolled). With
#: dlib's HOG detector the group photos reach 1.44x and the one background face is 18x smaller.
ONE_FACE_MARGIN = 2.5


def select_subject_face(
    faces: list[DetectedFace], quality: str
) -> tuple[list[DetectedFace], list[tuple[DetectedFace, list[str]]]]:
    """IndexFaces' choice in a consent collection, where one consent record covers one person:
    the largest face if it passes the quality bar, every other face unindexed
    (``EXCEEDS_MAX_FACES``). Raises AccessDenied (rule ``one_face``) when the largest face is not
    clearly the largest (:data:`ONE_FACE_MARGIN`): nobody can tell whose consent the image is under."""
    ranked = sorted(faces, key=lambda f: -f.box.area)
    if not ranked:
        return [], []
    subject, others = ranked[0], ranked[1:]
    if others and subject.box.area < ONE_FACE_MARGIN * others[0].box.area:
        raise AccessDenied(
            f"The image holds {len(ranked)} faces and the largest is not clearly the subject's (it has "
            f"{subject.box.area / max(others[0].box.area, 1e-9):.2f} times the area of the next; at least "
            f"{ONE_FACE_MARGIN:g} is needed). In a consent collection one consent record enrols one person's "
            "face: use a photo where the subject's face is clearly the largest, or crop it.",
            "one_face",
        )
    reasons = quality_reasons(subject, quality)
    unindexed = [(subject, reasons)] if reasons else []
    unindexed += [(f, ["EXCEEDS_MAX_FACES"]) for f in others]
    return ([] if reasons else [subject]), unindexed


@dataclass
class AnalysedImage:
    """An image a bulk worker already decoded, analysed and selected faces of
    (:mod:`facewarden.service.bulk`). It reaches IndexFaces and ClusterFaces only through their
    requests' internal ``analysed`` field, which no wire dict can set; the call still takes the
    whole path (policy decision, audit record)."""

    sha256: str
    model_version: str
    kept: list[DetectedFace]
    templates: np.ndarray
    unindexed: list[tuple[DetectedFace, list[str]]] = field(default_factory=list)
    attributes: str = "DEFAULT"
    #: Why the image cannot be enrolled in a consent collection (its largest face is not clearly
    #: the subject's, :func:`select_subject_face`); IndexFaces refuses it, audited.
    refusal: str | None = None


# ---- grouping faces by person (facewarden's own operation) -------------------------------------
MAX_CLUSTER_IMAGES = 100


@dataclass(frozen=True)
class ClusterFacesRequest:
    #: The photos (at most 100 per call); required unless ``analysed`` is given.
    images: Annotated[list[Image], Items("images", 1, MAX_CLUSTER_IMAGES)] | None = None
    #: Similarity that links two faces (default: the configured match threshold; policy may raise it).
    similarity_threshold: Similarity | None = None
    detector: str | None = None
    #: Photos the bulk workers already analysed (in-process callers only).
    analysed: Annotated[list[AnalysedImage] | None, INTERNAL] = None


@dataclass(frozen=True)
class ClusteredFace:
    image_index: int
    face_index: int
    bounding_box: dict[str, float]
    confidence: float


@dataclass(frozen=True)
class FaceGroup:
    faces: list[ClusteredFace]


@dataclass(frozen=True)
class ClusterFacesResult:
    #: Largest group first; a face that matches nobody is a group of one.
    groups: list[FaceGroup]
    applied_threshold: dict[str, Any] | None


@operation("ClusterFaces", kind=Kind.CLUSTER, rest=Rest("POST", "/v1/faces/cluster", "faces"))
def cluster_faces(svc: Service, ctx: Context, req: ClusterFacesRequest) -> ClusterFacesResult:
    """Group the faces of several images by person (no collection): files in Images"""
    items: list[tuple[list[DetectedFace], np.ndarray]]
    engine = svc.engine
    if req.analysed is not None:
        # analysed by a bulk run for a collection: grouped with that collection's model
        versions = sorted({a.model_version for a in req.analysed})
        if len(versions) > 1:
            raise ModelMismatch(f"Templates of {', '.join(versions)} cannot be grouped together.")
        engine = svc.engine_for(versions[0]) if versions else engine
        items = [(a.kept, a.templates) for a in req.analysed]
    elif req.images is None:
        raise InvalidInput("Images is required.")
    else:
        items = []
        for image in req.images:
            pixels = svc.decode_image(image)
            faces = sorted(engine.detect(pixels, svc.detector(req.detector)), key=lambda f: -f.box.area)
            items.append((faces, engine.embed(pixels, faces)))
    index = [(i, j) for i, (faces, _) in enumerate(items) for j in range(len(faces))]
    dim = engine.spec.dim
    templates = (
        np.concatenate([np.asarray(t, np.float32).reshape(-1, dim) for _, t in items])
        if index
        else np.zeros((0, dim))
    )
    applied = svc.effective_threshold(
        ctx, req.similarity_threshold, len(index), calibration=engine.calibration
    )
    groups = group_templates(templates, applied["Similarity"], engine.calibration)
    out = []
    for g in groups:
        faces_out = []
        for k in g:
            i, j = index[k]
            face = items[i][0][j]
            faces_out.append(ClusteredFace(i, j, face.face_detail()["BoundingBox"], face.confidence))
        out.append(FaceGroup(faces_out))
    ctx.counts.update(images=len(items), faces=len(index), groups=sum(1 for g in groups if len(g) > 1))
    return ClusterFacesResult(out, ctx.applied_threshold)

"""The gallery operations: collections, faces and 1:N face search, in Rekognition's shapes.

Each operation checks what it can before touching pixels (the collection exists, the model
matches, consent), decodes the image only then, and fills the context for the audit record
(counts, matched face ids, the applied threshold, the subjects touched; never images or templates).
Search responses carry facewarden's ``AppliedThreshold`` extension: the similarity threshold that
was really applied, why (``requested``, the purpose's ``floor`` or the ``gallery_size``), and the
false match rate it stands for. Users and user search are in :mod:`facewarden.service.users`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from ..engine import DetectedFace, Engine
from ..errors import (
    AccessDenied,
    InvalidInput,
    ModelMismatch,
    NoFaceFound,
    ResourceNotFound,
    ServiceQuotaExceeded,
)
from ..gallery import Collection, Face, NewFace, Store
from ..policy.kinds import Kind
from . import visible
from .consent import require_consent
from .core import Service
from .registry import Context, Rest, operation
from .faces import AnalysedImage, FaceDetail, quality_reasons, select_faces, select_subject_face
from .params import (
    INTERNAL,
    Attributes,
    Check,
    CollectionId,
    ExternalImageId,
    FaceId,
    Image,
    Items,
    NextToken,
    OneOf,
    QualityFilter,
    Range,
    Similarity,
    UserId,
    Wire,
)

#: Where the REST API keeps a collection.
COLLECTION = "/v1/collections/{CollectionId}"
MAX_FACES_TO_INDEX = 100

#: Rekognition's ``Face`` shape (FaceId, BoundingBox, ImageId, ExternalImageId, Confidence, ...).
RekognitionFace = dict[str, Any]


# ---- shared steps ----------------------------------------------------------------------------
def collection(svc: Service, ctx: Context, collection_id: str) -> tuple[Store, Collection]:
    """The store and the collection a request names (ResourceNotFound if there is none)."""
    store = svc.store
    ctx.collection_id = collection_id
    return store, store.get_collection(collection_id)


def engine_of(svc: Service, col: Collection) -> Engine:
    """The engine of the collection's model: its templates are made and compared with no other."""
    return svc.engine_for(col.model_version)


def similarities(svc: Service, col: Collection, inners: list[float]) -> np.ndarray:
    """Inner products of the collection's templates -> calibrated similarities (its model's table)."""
    if not inners:
        return np.zeros(0)
    calibration = engine_of(svc, col).calibration
    return np.atleast_1d(np.asarray(calibration.similarity_from_inner(np.asarray(inners)), dtype=float))


def touch(ctx: Context, faces: list[Face] | None = None, users: list[str] | None = None) -> None:
    """Name the subjects of ``faces`` and ``users`` in the audit record."""
    seen = set(ctx.subjects)
    for f in faces or []:
        for s in (f.external_image_id, f.user_id):
            if s and s not in seen:
                ctx.subjects.append(s)
                seen.add(s)
    for u in users or []:
        if u and u not in seen:
            ctx.subjects.append(u)
            seen.add(u)


def probe_face(
    svc: Service, col: Collection, image: Image, detector: str | None, quality: str
) -> tuple[DetectedFace, np.ndarray, list[DetectedFace]]:
    """The largest face of ``image`` and its template by the collection's model (plus the other faces)."""
    engine = engine_of(svc, col)
    pixels = svc.decode_image(image)
    faces = engine.detect(pixels, svc.detector(detector))
    if not faces:
        raise NoFaceFound("No face was found in the image. Use a photo where the face is clearly visible.")
    faces.sort(key=lambda f: -f.box.area)
    probe = faces[0]
    reasons = quality_reasons(probe, quality)
    if reasons:
        raise NoFaceFound(
            f"The largest face in the image does not meet the QualityFilter {quality} bar "
            f"({', '.join(reasons)}). Use a better photo or a lower QualityFilter."
        )
    template = engine.embed(pixels, [probe])[0]
    return probe, template, faces[1:]


def unsuccessful(failed: dict[str, tuple[str, str | None]]) -> list[dict[str, Any]]:
    """A store's per-face failures in Rekognition's shape ({FaceId, Reasons, UserId?})."""
    out = []
    for fid, (reason, user_id) in failed.items():
        item: dict[str, Any] = {"FaceId": fid, "Reasons": [reason]}
        if user_id:
            item["UserId"] = user_id
        out.append(item)
    return out


@dataclass(frozen=True)
class FaceMatch:
    similarity: float
    face: RekognitionFace


def face_matches(
    svc: Service,
    ctx: Context,
    store: Store,
    col: Collection,
    probe: np.ndarray,
    k: int,
    requested: float | None,
    exclude: tuple[str, ...] = (),
) -> list[FaceMatch]:
    """The faces among the ``k`` nearest that pass the applied threshold, nearest first.

    A face search compares the probe with every face, and every face is a chance for a stranger
    to match: m photos of one person are nearly m chances at the thresholds a large gallery needs
    (measured on ../shared data: bench/bench_library.py), so the gallery-size rule counts faces
    here (``AppliedThreshold`` also shows how many people they are). A user search, which can only
    name users and scores each once, counts users (:mod:`facewarden.service.users`). Faces that
    reached the requested threshold (or the purpose's floor) but not the applied one are counted
    in ``AppliedThreshold.WithheldByCap``, never named."""
    applied = svc.effective_threshold(
        ctx,
        requested,
        col.face_count,
        counted="faces",
        faces=col.face_count,
        subjects=col.subject_count,
        calibration=engine_of(svc, col).calibration,
    )
    matches = visible.search(svc, col, probe, k, exclude=exclude)  # consent and retention, now
    sims = similarities(svc, col, [m.inner for m in matches])
    threshold, asked = applied["Similarity"], asked_threshold(applied)
    out, faces, withheld = [], [], 0
    for m, s in zip(matches, sims):
        if s >= threshold:
            out.append(FaceMatch(float(s), m.face.to_rekognition()))
            faces.append(m.face)
        elif s >= asked:
            withheld += 1
    applied["WithheldByCap"] = withheld
    ctx.matched_face_ids = [f.face_id for f in faces]
    ctx.counts.update(
        gallery_faces=col.face_count,
        gallery_subjects=col.subject_count,
        matches=len(out),
        withheld_by_cap=withheld,
    )
    touch(ctx, faces)
    return out


def asked_threshold(applied: dict[str, Any]) -> float:
    """The threshold a search would have applied without the gallery-size cap: the requested one
    or the purpose's floor."""
    return float(max(applied["RequestedSimilarity"], applied["PurposeFloor"]))


# ---- collections -----------------------------------------------------------------------------
def _tags(value: Any, name: str) -> dict[str, Any]:
    if not (isinstance(value, dict) and len(value) <= 200):
        raise InvalidInput(f"{name} must be an object of at most 200 string keys and values.")
    return value


@dataclass(frozen=True)
class CreateCollectionRequest:
    collection_id: CollectionId
    tags: Annotated[dict[str, str], Check(_tags)] | None = None
    #: facewarden's extension: "required" (consent per face) or "household" (a personal library).
    consent_mode: Annotated[
        str,
        OneOf(
            ("required", "household"),
            "ConsentMode must be 'required' (the default) or 'household' (a personal photo library).",
        ),
    ] = "required"
    #: facewarden's extension: templates older than this are purged.
    retention_days: Annotated[int, Range(1, 36500)] = 365


@dataclass(frozen=True)
class CreateCollectionResult:
    status_code: int
    collection_arn: str
    face_model_version: str


@operation(
    "CreateCollection",
    kind=Kind.MANAGE,
    rest=Rest("POST", "/v1/collections", "collections"),
    creates_collection=True,
)
def create_collection(svc: Service, ctx: Context, req: CreateCollectionRequest) -> CreateCollectionResult:
    """Create a collection (bound to the service's default model, ``FACEWARDEN_MODEL``)"""
    col = svc.store.create_collection(
        req.collection_id,
        svc.engine.model_version,
        svc.engine.spec.dim,
        consent_mode=req.consent_mode,
        retention_days=req.retention_days,
        owner_org=ctx.caller.org,  # the caller's organisation owns what it creates
    )
    ctx.collection_id = req.collection_id
    return CreateCollectionResult(200, svc.collection_arn(ctx, col.collection_id), col.model_version)


@dataclass(frozen=True)
class CollectionRequest:
    collection_id: CollectionId


@dataclass(frozen=True)
class DescribeCollectionResult:
    face_count: int
    user_count: int
    face_model_version: str
    collection_arn: Annotated[str, Wire("CollectionARN")]
    creation_timestamp: float
    #: facewarden's extensions: "required" (consent per face) or "household" (a personal library),
    #: the retention period of its templates, and the organisation it belongs to.
    consent_mode: str | None = None
    retention_days: int | None = None
    owner_organization: str | None = None


@operation("DescribeCollection", kind=Kind.MANAGE, rest=Rest("GET", COLLECTION, "collections"), reads=True)
def describe_collection(svc: Service, ctx: Context, req: CollectionRequest) -> DescribeCollectionResult:
    """Describe a collection"""
    store, col = collection(svc, ctx, req.collection_id)
    return DescribeCollectionResult(
        col.face_count,
        store.count_users(col.collection_id),
        col.model_version,
        svc.collection_arn(ctx, col.collection_id),
        col.created_at,
        col.consent_mode,
        col.retention_days,
        col.owner_org,
    )


@dataclass(frozen=True)
class ListCollectionsRequest:
    #: 0 or absent: 1000.
    max_results: Annotated[int, Range(0, 4096)] = 1000
    next_token: NextToken | None = None


@dataclass(frozen=True)
class ListCollectionsResult:
    collection_ids: list[str]
    face_model_versions: list[str]
    next_token: str | None = None


@operation(
    "ListCollections", kind=Kind.MANAGE, rest=Rest("GET", "/v1/collections", "collections"), reads=True
)
def list_collections(svc: Service, ctx: Context, req: ListCollectionsRequest) -> ListCollectionsResult:
    """List collections"""
    limit = req.max_results or 1000
    store = svc.store
    after, more = svc.page_tokens.open(ctx.operation, "", req.next_token), False
    cols: list[Collection] = []
    while not more:
        page = store.list_collections(after=after, limit=limit + 1)
        for c in page:
            if svc.visible_collection(ctx, c):  # policy: others' household collections are hidden
                if len(cols) == limit:
                    more = True
                    break
                cols.append(c)
        if len(page) < limit + 1:
            break
        after = page[-1].collection_id
    ctx.counts["collections"] = len(cols)
    return ListCollectionsResult(
        [c.collection_id for c in cols],
        [c.model_version for c in cols],
        svc.page_tokens.issue(ctx.operation, "", cols[-1].collection_id if more else None),
    )


@dataclass(frozen=True)
class DeleteCollectionResult:
    status_code: int


@operation("DeleteCollection", kind=Kind.MANAGE, rest=Rest("DELETE", COLLECTION, "collections"))
def delete_collection(svc: Service, ctx: Context, req: CollectionRequest) -> DeleteCollectionResult:
    """Delete a collection and its faces"""
    store, col = collection(svc, ctx, req.collection_id)
    store.delete_collection(col.collection_id)
    ctx.counts["faces_deleted"] = col.face_count
    return DeleteCollectionResult(200)


# ---- faces -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexFacesRequest:
    collection_id: CollectionId
    #: Required unless ``analysed`` is given.
    image: Image | None = None
    external_image_id: ExternalImageId | None = None
    detection_attributes: Attributes = "DEFAULT"
    max_faces: Annotated[int, Range(1, MAX_FACES_TO_INDEX)] = MAX_FACES_TO_INDEX
    quality_filter: QualityFilter = "AUTO"
    detector: str | None = None
    #: The image as a bulk worker analysed it (in-process callers only).
    analysed: Annotated[AnalysedImage | None, INTERNAL] = None


@dataclass(frozen=True)
class FaceRecord:
    face: RekognitionFace
    face_detail: FaceDetail


@dataclass(frozen=True)
class UnindexedFace:
    reasons: list[str]
    face_detail: FaceDetail


@dataclass(frozen=True)
class IndexFacesResult:
    face_records: list[FaceRecord]
    face_model_version: str
    unindexed_faces: list[UnindexedFace]
    #: facewarden's extension: True when the collection already held this image (same content),
    #: which is then not enrolled again; FaceRecords are the faces enrolled from it before.
    already_indexed: bool | None = None


@operation("IndexFaces", kind=Kind.ENROL, rest=Rest("POST", f"{COLLECTION}/faces", "faces in collections"))
def index_faces(svc: Service, ctx: Context, req: IndexFacesRequest) -> IndexFacesResult:
    """Enrol (index) the faces of an image; needs a consent record"""
    # In a consent collection an image enrols at most one face, its subject's (the largest, when
    # clearly the largest); a household collection (a person's own photos) takes up to MaxFaces
    # faces, within its size cap.
    store, col = collection(svc, ctx, req.collection_id)
    external = req.external_image_id
    if external is not None:
        ctx.subjects.append(external)
    require_consent(svc, ctx, col.collection_id, external)  # policy: consent before any pixel
    one_face = col.consent_mode != "household"
    cap = svc.policy.household_max_faces if not one_face else None
    if cap is not None and col.face_count >= cap:
        raise ServiceQuotaExceeded(
            f"Household collection {col.collection_id} holds {col.face_count} faces, its limit "
            f"(collections.household_max_faces = {cap}). Delete faces, or start another collection."
        )
    analysed = req.analysed
    if analysed is not None:
        if analysed.model_version != col.model_version:
            raise ModelMismatch(
                f"Collection {col.collection_id!r} holds templates of model {col.model_version}; these were made "
                f"with {analysed.model_version}."
            )
        sha = analysed.sha256
    elif req.image is not None:
        engine = engine_of(svc, col)  # the collection's model (refused, if unavailable, before any work)
        sha = hashlib.sha256(req.image.data).hexdigest()
    else:
        raise InvalidInput("Image is required.")
    known = store.faces_of_image(col.collection_id, sha)
    if known:  # the same photo again: nothing is decoded, nothing enrolled twice
        return _already_indexed(svc, ctx, col, known)
    if analysed is not None:
        if one_face and analysed.refusal:
            raise AccessDenied(analysed.refusal, "one_face")
        attributes = analysed.attributes
        kept, templates, unindexed = analysed.kept, analysed.templates, analysed.unindexed
        if one_face and len(kept) + len(unindexed) > 1:  # analysed for a household: choose again
            at = {id(f): i for i, f in enumerate(kept)}
            chosen, unindexed = select_subject_face(kept + [f for f, _ in unindexed], req.quality_filter)
            chosen = [f for f in chosen if id(f) in at]  # (a face that failed MaxFaces has no template)
            templates = np.asarray(templates, np.float32)[[at[id(f)] for f in chosen]]
            kept = chosen
    else:
        assert req.image is not None
        attributes = req.detection_attributes
        pixels = svc.decode_image(req.image)
        faces = engine.detect(pixels, svc.detector(req.detector), attributes)
        if one_face:  # chosen before any template is computed: nobody else's face is embedded
            kept, unindexed = select_subject_face(faces, req.quality_filter)
        else:
            kept, unindexed = select_faces(faces, req.max_faces, req.quality_filter)
        templates = engine.embed(pixels, kept)
    image_id = _image_id(sha)
    new = [
        NewFace(
            template=t,
            bbox=f.face_detail()["BoundingBox"],
            confidence=f.confidence,
            external_image_id=external,
            image_id=image_id,
            image_sha256=sha,
        )
        for f, t in zip(kept, templates)
    ]
    # the store checks the image again in the insert's transaction: concurrent requests store it once
    stored = store.add_faces(col.collection_id, new, col.model_version, skip_known_image=True, max_faces=cap)
    if new and not stored:
        return _already_indexed(svc, ctx, col, store.faces_of_image(col.collection_id, sha))
    ctx.counts.update(indexed=len(stored), unindexed=len(unindexed))
    ctx.matched_face_ids = [s.face_id for s in stored]
    return IndexFacesResult(
        [FaceRecord(s.to_rekognition(), f.face_detail(attributes)) for s, f in zip(stored, kept)],
        col.model_version,
        [UnindexedFace(r, f.face_detail(attributes)) for f, r in unindexed],
    )


def _already_indexed(svc: Service, ctx: Context, col: Collection, known: list[Face]) -> IndexFacesResult:
    """IndexFaces of an image the collection holds already: skipped, and the response says so.
    Its faces are listed only while visible (a face whose consent lapsed is not returned)."""
    ctx.counts.update(indexed=0, unindexed=0, skipped_known_image=1)
    ctx.details["already_indexed"] = True
    shown = visible.faces(svc, col, [f.face_id for f in known])
    records = [
        FaceRecord(f.to_rekognition(), {"BoundingBox": f.bbox, "Confidence": f.confidence})
        for f in known
        if f.face_id in shown
    ]
    return IndexFacesResult(records, col.model_version, [], already_indexed=True)


def _image_id(sha256: str) -> str:
    """A stable ImageId (UUID-shaped) for the image's content: the same photo has the same id."""
    h = sha256[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


FaceIds = Annotated[list[FaceId], Items("face ids", 1, 4096)]


@dataclass(frozen=True)
class ListFacesRequest:
    collection_id: CollectionId
    #: 0 or absent: 1000.
    max_results: Annotated[int, Range(0, 4096)] = 1000
    next_token: NextToken | None = None
    user_id: UserId | None = None
    face_ids: FaceIds | None = None


@dataclass(frozen=True)
class ListFacesResult:
    faces: list[RekognitionFace]
    face_model_version: str
    next_token: str | None = None


@operation("ListFaces", kind=Kind.MANAGE, rest=Rest("GET", f"{COLLECTION}/faces", "faces in collections"))
def list_faces(svc: Service, ctx: Context, req: ListFacesRequest) -> ListFacesResult:
    """List the faces of a collection"""
    store, col = collection(svc, ctx, req.collection_id)
    limit = req.max_results or 1000
    after = svc.page_tokens.open(ctx.operation, col.collection_id, req.next_token)
    faces = visible.list_faces(svc, col, after, limit + 1, user_id=req.user_id, face_ids=req.face_ids)
    ctx.counts["faces"] = min(len(faces), limit)
    return ListFacesResult(
        [f.to_rekognition() for f in faces[:limit]],
        col.model_version,
        svc.page_tokens.issue(
            ctx.operation, col.collection_id, faces[limit - 1].face_id if len(faces) > limit else None
        ),
    )


@dataclass(frozen=True)
class DeleteFacesRequest:
    collection_id: CollectionId
    face_ids: FaceIds


@dataclass(frozen=True)
class DeleteFacesResult:
    deleted_faces: list[str]
    unsuccessful_face_deletions: list[dict[str, Any]]


@operation(
    "DeleteFaces",
    kind=Kind.MANAGE,
    rest=Rest("DELETE", f"{COLLECTION}/faces", "faces in collections"),
)
def delete_faces(svc: Service, ctx: Context, req: DeleteFacesRequest) -> DeleteFacesResult:
    """Delete faces (FaceIds in the query string)"""
    store, col = collection(svc, ctx, req.collection_id)
    before = store.get_faces(col.collection_id, req.face_ids)
    deleted, failed = store.delete_faces(col.collection_id, req.face_ids)
    touch(ctx, [before[i] for i in deleted if i in before])
    ctx.counts.update(deleted=len(deleted), failed=len(failed))
    ctx.details["deleted_face_ids"] = deleted  # (for a restore to erase them again: service/recovery.py)
    return DeleteFacesResult(deleted, unsuccessful(failed))


# ---- 1:N face search -------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchFacesRequest:
    collection_id: CollectionId
    face_id: FaceId
    max_faces: Annotated[int, Range(1, 4096)] = 80
    #: Default: the configured match threshold (80); policy may raise it.
    face_match_threshold: Similarity | None = None


@dataclass(frozen=True)
class SearchFacesResult:
    searched_face_id: str
    face_matches: list[FaceMatch]
    face_model_version: str
    applied_threshold: dict[str, Any] | None


@operation(
    "SearchFaces", kind=Kind.IDENTIFY, rest=Rest("POST", f"{COLLECTION}/faces/{{FaceId}}/search", "search")
)
def search_faces(svc: Service, ctx: Context, req: SearchFacesRequest) -> SearchFacesResult:
    """Search the collection for an enrolled face"""
    store, col = collection(svc, ctx, req.collection_id)
    templates = visible.templates(svc, col, [req.face_id])
    if req.face_id not in templates:
        raise ResourceNotFound(f"Face {req.face_id!r} is not in collection {col.collection_id!r}.")
    matches = face_matches(
        svc, ctx, store, col, templates[req.face_id], req.max_faces, req.face_match_threshold, (req.face_id,)
    )
    return SearchFacesResult(req.face_id, matches, col.model_version, ctx.applied_threshold)


@dataclass(frozen=True)
class SearchFacesByImageRequest:
    collection_id: CollectionId
    image: Image
    max_faces: Annotated[int, Range(1, 4096)] = 80
    face_match_threshold: Similarity | None = None
    quality_filter: QualityFilter = "NONE"
    detector: str | None = None


@dataclass(frozen=True)
class SearchFacesByImageResult:
    searched_face_bounding_box: dict[str, float]
    searched_face_confidence: float
    face_matches: list[FaceMatch]
    face_model_version: str
    applied_threshold: dict[str, Any] | None


@operation("SearchFacesByImage", kind=Kind.IDENTIFY, rest=Rest("POST", f"{COLLECTION}/search", "search"))
def search_faces_by_image(
    svc: Service, ctx: Context, req: SearchFacesByImageRequest
) -> SearchFacesByImageResult:
    """Search the collection for the largest face of an image"""
    store, col = collection(svc, ctx, req.collection_id)
    face, template, _ = probe_face(svc, col, req.image, req.detector, req.quality_filter)
    matches = face_matches(svc, ctx, store, col, template, req.max_faces, req.face_match_threshold)
    return SearchFacesByImageResult(
        face.face_detail()["BoundingBox"], face.confidence, matches, col.model_version, ctx.applied_threshold
    )

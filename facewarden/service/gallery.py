"""The gallery operations: collections, faces, users and 1:N search, in Rekognition's shapes.

Each operation validates its request, checks what it can before touching pixels (the collection
exists, the model matches), decodes the image only then, and fills the context for the audit record
(counts, matched face ids, the applied threshold, the subjects touched; never images or templates).
Search responses carry facewarden's ``AppliedThreshold`` extension: the similarity threshold that
was really applied, why (``requested``, the purpose's ``floor`` or the ``gallery_size``), and the
false match rate it stands for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import DetectedFace
from ..errors import InvalidInput, ModelMismatch, NoFaceFound, ResourceAlreadyExists, ResourceNotFound
from ..gallery import MAX_FACES_PER_USER, Collection, Face, NewFace, Store
from ..policy.consent import require_consent
from .core import Context, Service, integer, number, operation
from .faces import _attributes

# ---- request validation ----------------------------------------------------------------------
_COLLECTION_RE = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
_USER_RE = re.compile(r"[a-zA-Z0-9_.\-:]{1,128}")
_EXTERNAL_RE = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
_FACE_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOKEN_RE = re.compile(r"[a-zA-Z0-9_\-]{1,64}")

QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")
#: Quality bars per QualityFilter: detector confidence, face size (shorter side, pixels), pose
#: (largest absolute yaw/pitch, degrees), brightness and sharpness (0-100). AUTO sits at LOW-MEDIUM.
QUALITY_BARS: dict[str, dict[str, float]] = {
    "LOW": {"confidence": 50, "pixels": 20, "pose": 80, "brightness": 4, "sharpness": 2},
    "AUTO": {"confidence": 60, "pixels": 28, "pose": 70, "brightness": 8, "sharpness": 4},
    "MEDIUM": {"confidence": 70, "pixels": 40, "pose": 55, "brightness": 15, "sharpness": 8},
    "HIGH": {"confidence": 85, "pixels": 64, "pose": 40, "brightness": 25, "sharpness": 15},
}
MAX_FACES_TO_INDEX = 100
DEFAULT_USER_MATCH_THRESHOLD = 75.0


def _required(req: dict[str, Any], name: str) -> Any:
    value = req.get(name)
    if value is None:
        raise InvalidInput(f"{name} is required.")
    return value


def _ident(value: Any, name: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"{name} must be {what}; got {value!r}.")
    return value


def collection_id_of(req: dict[str, Any]) -> str:
    return _ident(
        _required(req, "CollectionId"),
        "CollectionId",
        _COLLECTION_RE,
        "1-255 characters of a-z, A-Z, 0-9, _ . -",
    )


def _user_id(req: dict[str, Any], name: str = "UserId") -> str:
    return _ident(_required(req, name), name, _USER_RE, "1-128 characters of a-z, A-Z, 0-9, _ . - :")


def _face_id(value: Any, name: str = "FaceId") -> str:
    return _ident(value, name, _FACE_RE, "a face id as IndexFaces returned it (a lower-case UUID)")


def _face_ids(req: dict[str, Any], name: str, most: int) -> list[str]:
    value = _required(req, name)
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise InvalidInput(f"{name} must be a list of 1 to {most} face ids.")
    return [_face_id(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _threshold_arg(req: dict[str, Any], name: str, default: float) -> float:
    value = req.get(name)
    return default if value is None else number(value, name, 0, 100)


def _token(req: dict[str, Any]) -> str | None:
    value = req.get("NextToken")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise InvalidInput("NextToken must be the NextToken string of the previous response.")
    return value


def _quality_filter(req: dict[str, Any], default: str) -> str:
    value = req.get("QualityFilter", default)
    if not isinstance(value, str) or value.upper() not in QUALITY_FILTERS:
        raise InvalidInput(f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}; got {value!r}.")
    return value.upper()


def _client_token(req: dict[str, Any]) -> str | None:
    value = req.get("ClientRequestToken")
    if value is None:
        return None
    return _ident(value, "ClientRequestToken", _TOKEN_RE, "1-64 characters of a-z, A-Z, 0-9, _ -")


# ---- shared steps ----------------------------------------------------------------------------
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
    kept, unindexed = [], []
    for face in sorted(faces, key=lambda f: -f.box.area):
        reasons = quality_reasons(face, quality)
        if reasons:
            unindexed.append((face, reasons))
        elif len(kept) < max_faces:
            kept.append(face)
        else:
            unindexed.append((face, ["EXCEEDS_MAX_FACES"]))
    return kept, unindexed


@dataclass
class AnalysedImage:
    """An image an indexing worker already decoded, analysed and selected faces of.

    Only in-process callers (the parallel indexer) can pass one, as the request's ``_Analysed``
    value; a JSON request cannot, so the wire APIs always compute templates themselves. The request
    still goes through :meth:`Service.call` (policy decision, audit record) as IndexFaces.
    """

    sha256: str
    model_version: str
    kept: list[DetectedFace]
    templates: np.ndarray
    unindexed: list[tuple[DetectedFace, list[str]]] = field(default_factory=list)
    attributes: str = "DEFAULT"


def applied_threshold(self: Service, ctx: Context, requested: float, gallery_size: int) -> dict[str, Any]:
    """The threshold a search applies: policy may raise the requested one (purpose floor, gallery size)."""
    return self.effective_threshold(ctx, float(requested), int(gallery_size))


def _collection(self: Service, ctx: Context) -> tuple[Store, Collection]:
    store = self.store
    cid = collection_id_of(ctx.request)
    ctx.collection_id = cid
    return store, store.get_collection(cid)


def _check_model(self: Service, col: Collection) -> None:
    if col.model_version != self.engine.model_version:
        raise ModelMismatch(
            f"Collection {col.collection_id!r} holds templates of model {col.model_version}, but this service "
            f"computes {self.engine.model_version} templates, which cannot be compared with them. Use a service "
            f"configured for {col.model_version}, or create a new collection and re-index."
        )


def _similarities(self: Service, inners: list[float]) -> np.ndarray:
    if not inners:
        return np.zeros(0)
    return np.atleast_1d(
        np.asarray(self.engine.calibration.similarity_from_inner(np.asarray(inners)), dtype=float)
    )


def _touch(ctx: Context, faces: list[Face] | None = None, users: list[str] | None = None) -> None:
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


def _probe_face(
    self: Service, ctx: Context, quality: str
) -> tuple[DetectedFace, np.ndarray, list[DetectedFace]]:
    """The largest face of the request's image and its template (plus the other faces)."""
    pixels = self.decode_image(ctx.request.get("Image"))
    faces = self.engine.detect(pixels, self.detector_for(ctx.request))
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
    template = self.engine.embed(pixels, [probe])[0]
    return probe, template, faces[1:]


def _face_matches(
    self: Service,
    ctx: Context,
    store: Store,
    col: Collection,
    probe: np.ndarray,
    k: int,
    requested: float,
    exclude: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    applied = applied_threshold(self, ctx, requested, col.face_count)
    matches = store.search(col.collection_id, probe, k, exclude=exclude)
    sims = _similarities(self, [m.inner for m in matches])
    out, faces = [], []
    for m, s in zip(matches, sims):
        if s >= applied["Similarity"]:
            out.append({"Similarity": float(s), "Face": m.face.to_rekognition()})
            faces.append(m.face)
    ctx.matched_face_ids = [f.face_id for f in faces]
    ctx.counts.update(gallery_faces=col.face_count, matches=len(out))
    _touch(ctx, faces)
    return out


# ---- collections -----------------------------------------------------------------------------
@operation("CreateCollection")
def create_collection(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    cid = collection_id_of(req)
    tags = req.get("Tags")
    if tags is not None and not (isinstance(tags, dict) and len(tags) <= 200):
        raise InvalidInput("Tags must be an object of at most 200 string keys and values.")
    consent_mode = req.get("ConsentMode", "required")
    if consent_mode not in ("required", "household"):
        raise InvalidInput(
            "ConsentMode must be 'required' (the default) or 'household' (a personal photo library)."
        )
    retention = integer(req, "RetentionDays", 1, 36500, 365)
    owner = getattr(ctx.principal, "org", None)  # the caller's organisation owns what it creates
    col = self.store.create_collection(
        cid,
        self.engine.model_version,
        self.engine.spec.dim,
        consent_mode=consent_mode,
        retention_days=retention,
        owner_org=str(owner) if owner is not None else None,
    )
    ctx.collection_id = cid
    return {"StatusCode": 200, "CollectionArn": col.arn, "FaceModelVersion": col.model_version}


@operation("DescribeCollection")
def describe_collection(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    return {
        "FaceCount": col.face_count,
        "UserCount": store.count_users(col.collection_id),
        "FaceModelVersion": col.model_version,
        "CollectionARN": col.arn,
        "CreationTimestamp": col.created_at,
    }


@operation("ListCollections")
def list_collections(self: Service, ctx: Context) -> dict[str, Any]:
    limit = integer(ctx.request, "MaxResults", 0, 4096, 1000) or 1000
    store = self.store
    visible = getattr(self, "visible_collection", None)  # policy: others' household collections are hidden
    after, cols, more = _token(ctx.request), [], False
    while not more:
        page = store.list_collections(after=after, limit=limit + 1)
        for c in page:
            if visible is None or visible(ctx, c):
                if len(cols) == limit:
                    more = True
                    break
                cols.append(c)
        if len(page) < limit + 1:
            break
        after = page[-1].collection_id
    out: dict[str, Any] = {
        "CollectionIds": [c.collection_id for c in cols],
        "FaceModelVersions": [c.model_version for c in cols],
    }
    if more:
        out["NextToken"] = cols[-1].collection_id
    ctx.counts["collections"] = len(out["CollectionIds"])
    return out


@operation("DeleteCollection")
def delete_collection(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    store.delete_collection(col.collection_id)
    ctx.counts["faces_deleted"] = col.face_count
    return {"StatusCode": 200}


# ---- faces -----------------------------------------------------------------------------------
@operation("IndexFaces")
def index_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    external = req.get("ExternalImageId")
    if external is not None:
        _ident(external, "ExternalImageId", _EXTERNAL_RE, "1-255 characters of a-z, A-Z, 0-9, _ . - :")
        ctx.subjects.append(external)
    require_consent(self, ctx, col.collection_id, external)  # policy: consent before any pixel
    max_faces = integer(req, "MaxFaces", 1, MAX_FACES_TO_INDEX, MAX_FACES_TO_INDEX)
    quality = _quality_filter(req, "AUTO")
    analysed = req.get("_Analysed")
    if analysed is not None:
        if not isinstance(analysed, AnalysedImage):
            raise InvalidInput(
                "_Analysed is internal to facewarden's indexer and cannot be sent in a request."
            )
        if analysed.model_version != col.model_version:
            raise ModelMismatch(
                f"Collection {col.collection_id!r} holds templates of model {col.model_version}; these were made "
                f"with {analysed.model_version}."
            )
        attributes, sha = analysed.attributes, analysed.sha256
        kept, templates, unindexed = analysed.kept, analysed.templates, analysed.unindexed
    else:
        attributes = _attributes(req.get("DetectionAttributes"))
        _check_model(self, col)
        pixels = self.decode_image(req.get("Image"))
        sha = hashlib.sha256(bytes(req["Image"]["Bytes"])).hexdigest()
        faces = self.engine.detect(pixels, self.detector_for(req), attributes)
        kept, unindexed = select_faces(faces, max_faces, quality)
        templates = self.engine.embed(pixels, kept)
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
    stored = store.add_faces(
        col.collection_id, new, col.model_version, skip_known_image=bool(req.get("_SkipKnownImage"))
    )
    if new and not stored:
        ctx.counts["skipped_known_image"] = 1
    records = [
        {"Face": s.to_rekognition(), "FaceDetail": f.face_detail(attributes)} for s, f in zip(stored, kept)
    ]
    ctx.counts.update(indexed=len(stored), unindexed=len(unindexed))
    ctx.matched_face_ids = [s.face_id for s in stored]
    return {
        "FaceRecords": records,
        "FaceModelVersion": col.model_version,
        "UnindexedFaces": [{"Reasons": r, "FaceDetail": f.face_detail(attributes)} for f, r in unindexed],
    }


def _image_id(sha256: str) -> str:
    """A stable ImageId (UUID-shaped) for the image's content: the same photo has the same id."""
    h = sha256[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@operation("ListFaces")
def list_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    limit = integer(req, "MaxResults", 0, 4096, 1000) or 1000
    user_id = _user_id(req) if req.get("UserId") is not None else None
    face_ids = _face_ids(req, "FaceIds", 4096) if req.get("FaceIds") is not None else None
    after = _token(req)
    faces = store.list_faces(col.collection_id, after, limit + 1, user_id=user_id, face_ids=face_ids)
    out: dict[str, Any] = {
        "Faces": [f.to_rekognition() for f in faces[:limit]],
        "FaceModelVersion": col.model_version,
    }
    if len(faces) > limit:
        out["NextToken"] = faces[limit - 1].face_id
    ctx.counts["faces"] = len(out["Faces"])
    return out


@operation("DeleteFaces")
def delete_faces(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    ids = _face_ids(ctx.request, "FaceIds", 4096)
    before = store.get_faces(col.collection_id, ids)
    deleted, failed = store.delete_faces(col.collection_id, ids)
    _touch(ctx, [before[i] for i in deleted if i in before])
    ctx.counts.update(deleted=len(deleted), failed=len(failed))
    unsuccessful = []
    for fid, (reason, uid) in failed.items():
        item: dict[str, Any] = {"FaceId": fid, "Reasons": [reason]}
        if uid:
            item["UserId"] = uid
        unsuccessful.append(item)
    return {"DeletedFaces": deleted, "UnsuccessfulFaceDeletions": unsuccessful}


@operation("SearchFaces")
def search_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    face_id = _face_id(_required(req, "FaceId"))
    k = integer(req, "MaxFaces", 1, 4096, 80)
    requested = _threshold_arg(req, "FaceMatchThreshold", self.settings.match_threshold)
    templates = store.templates(col.collection_id, [face_id])
    if face_id not in templates:
        raise ResourceNotFound(f"Face {face_id!r} is not in collection {col.collection_id!r}.")
    matches = _face_matches(self, ctx, store, col, templates[face_id], k, requested, exclude=(face_id,))
    return {
        "SearchedFaceId": face_id,
        "FaceMatches": matches,
        "FaceModelVersion": col.model_version,
        "AppliedThreshold": ctx.applied_threshold,
    }


@operation("SearchFacesByImage")
def search_faces_by_image(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    k = integer(req, "MaxFaces", 1, 4096, 80)
    requested = _threshold_arg(req, "FaceMatchThreshold", self.settings.match_threshold)
    quality = _quality_filter(req, "NONE")
    _check_model(self, col)
    face, template, _ = _probe_face(self, ctx, quality)
    matches = _face_matches(self, ctx, store, col, template, k, requested)
    detail = face.face_detail()
    return {
        "SearchedFaceBoundingBox": detail["BoundingBox"],
        "SearchedFaceConfidence": face.confidence,
        "FaceMatches": matches,
        "FaceModelVersion": col.model_version,
        "AppliedThreshold": ctx.applied_threshold,
    }


# ---- users -----------------------------------------------------------------------------------
@operation("CreateUser")
def create_user(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    user_id = _user_id(ctx.request)
    token = _client_token(ctx.request)
    ctx.subjects.append(user_id)
    try:
        store.create_user(col.collection_id, user_id)
    except ResourceAlreadyExists:
        if token is None:  # with a token, a retry of a create that succeeded is not an error
            raise
    return {}


@operation("DeleteUser")
def delete_user(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    user_id = _user_id(ctx.request)
    _client_token(ctx.request)
    ctx.subjects.append(user_id)
    freed = store.delete_user(col.collection_id, user_id)
    ctx.counts["faces_disassociated"] = len(freed)
    return {}


@operation("ListUsers")
def list_users(self: Service, ctx: Context) -> dict[str, Any]:
    store, col = _collection(self, ctx)
    limit = integer(ctx.request, "MaxResults", 1, 500, 100)
    users = store.list_users(col.collection_id, after=_token(ctx.request), limit=limit + 1)
    out: dict[str, Any] = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in users[:limit]]}
    if len(users) > limit:
        out["NextToken"] = users[limit - 1].user_id
    ctx.counts["users"] = len(out["Users"])
    return out


@operation("AssociateFaces")
def associate_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    user_id = _user_id(req)
    ids = _face_ids(req, "FaceIds", MAX_FACES_PER_USER)
    threshold = _threshold_arg(req, "UserMatchThreshold", DEFAULT_USER_MATCH_THRESHOLD)
    _client_token(req)
    ctx.subjects.append(user_id)
    store.get_user(col.collection_id, user_id)
    require_consent(self, ctx, col.collection_id, user_id)  # policy: consent before association
    # Faces must look like the user's other faces (Rekognition: LOW_MATCH_CONFIDENCE).
    current = [
        f.face_id for f in store.list_faces(col.collection_id, user_id=user_id, limit=MAX_FACES_PER_USER + 1)
    ]
    templates = store.templates(col.collection_id, list(dict.fromkeys(current + ids)))
    anchors = [templates[f] for f in current if f in templates]
    low: dict[str, float] = {}
    accepted: list[str] = []
    rows = store.get_faces(col.collection_id, ids)
    for fid in dict.fromkeys(ids):
        t = templates.get(fid)
        row = rows.get(fid)
        if t is None or row is None or row.user_id is not None:
            accepted.append(fid)  # not found / already someone's: the store decides and reports it
            continue
        if anchors:
            sim = float(np.max(_similarities(self, list(np.stack(anchors) @ t))))
            if sim < threshold:
                low[fid] = sim
                continue
        anchors.append(t)
        accepted.append(fid)
    result = store.associate_faces(col.collection_id, user_id, accepted) if accepted else None
    associated = result.associated if result else []
    failed = dict(result.failed) if result else {}
    status = result.status if result else store.get_user(col.collection_id, user_id).status
    unsuccessful: list[dict[str, Any]] = []
    for fid, (reason, owner) in failed.items():
        item: dict[str, Any] = {"FaceId": fid, "Reasons": [reason]}
        if owner:
            item["UserId"] = owner
        unsuccessful.append(item)
    for fid, sim in low.items():
        unsuccessful.append(
            {"FaceId": fid, "UserId": user_id, "Confidence": sim, "Reasons": ["LOW_MATCH_CONFIDENCE"]}
        )
    ctx.counts.update(associated=len(associated), failed=len(unsuccessful))
    return {
        "AssociatedFaces": [{"FaceId": f} for f in associated],
        "UnsuccessfulFaceAssociations": unsuccessful,
        "UserStatus": status,
    }


@operation("DisassociateFaces")
def disassociate_faces(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    user_id = _user_id(req)
    ids = _face_ids(req, "FaceIds", MAX_FACES_PER_USER)
    _client_token(req)
    ctx.subjects.append(user_id)
    result = store.disassociate_faces(col.collection_id, user_id, ids)
    unsuccessful = []
    for fid, (reason, owner) in result.failed.items():
        item: dict[str, Any] = {"FaceId": fid, "Reasons": [reason]}
        if owner:
            item["UserId"] = owner
        unsuccessful.append(item)
    ctx.counts.update(disassociated=len(result.associated), failed=len(unsuccessful))
    return {
        "DisassociatedFaces": [{"FaceId": f} for f in result.associated],
        "UnsuccessfulFaceDisassociations": unsuccessful,
        "UserStatus": result.status,
    }


def _user_matches(
    self: Service,
    ctx: Context,
    store: Store,
    col: Collection,
    probes: list[np.ndarray],
    max_users: int,
    requested: float,
    exclude_faces: tuple[str, ...] = (),
    exclude_user: str | None = None,
) -> list[dict[str, Any]]:
    applied = applied_threshold(self, ctx, requested, col.face_count)
    k = min(4096, max(100, 10 * max_users))
    best: dict[str, tuple[float, Face]] = {}
    for probe in probes:
        matches = store.search(col.collection_id, probe, k, exclude=exclude_faces)
        sims = _similarities(self, [m.inner for m in matches])
        for m, s in zip(matches, sims):
            uid = m.face.user_id
            if uid is None or uid == exclude_user or s < applied["Similarity"]:
                continue
            if uid not in best or s > best[uid][0]:
                best[uid] = (float(s), m.face)
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:max_users]
    status = store.users_status(col.collection_id, [u for u, _ in ranked]) if ranked else {}  # type: ignore[attr-defined]
    ctx.matched_face_ids = [face.face_id for _, (_, face) in ranked]
    ctx.counts.update(gallery_faces=col.face_count, matches=len(ranked))
    _touch(ctx, users=[u for u, _ in ranked])
    return [
        {"Similarity": sim, "User": {"UserId": uid, "UserStatus": status.get(uid, "ACTIVE")}}
        for uid, (sim, _) in ranked
        if uid in status  # deleted meanwhile: not a match
    ]


@operation("SearchUsers")
def search_users(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    max_users = integer(req, "MaxUsers", 1, 500, 100)
    requested = _threshold_arg(req, "UserMatchThreshold", self.settings.match_threshold)
    has_user, has_face = req.get("UserId") is not None, req.get("FaceId") is not None
    if has_user == has_face:
        raise InvalidInput("SearchUsers needs exactly one of UserId or FaceId.")
    out: dict[str, Any] = {"FaceModelVersion": col.model_version}
    if has_face:
        face_id = _face_id(req["FaceId"])
        templates = store.templates(col.collection_id, [face_id])
        if face_id not in templates:
            raise ResourceNotFound(f"Face {face_id!r} is not in collection {col.collection_id!r}.")
        matches = _user_matches(self, ctx, store, col, [templates[face_id]], max_users, requested, (face_id,))
        out["SearchedFace"] = {"FaceId": face_id}
    else:
        user_id = _user_id(req)
        store.get_user(col.collection_id, user_id)
        ctx.subjects.append(user_id)
        own = [
            f.face_id for f in store.list_faces(col.collection_id, user_id=user_id, limit=MAX_FACES_PER_USER)
        ]
        templates = store.templates(col.collection_id, own)
        probes = [templates[f] for f in own if f in templates]
        matches = (
            _user_matches(
                self, ctx, store, col, probes, max_users, requested, tuple(own), exclude_user=user_id
            )
            if probes
            else []
        )
        if not probes:
            applied_threshold(self, ctx, requested, col.face_count)
        out["SearchedUser"] = {"UserId": user_id}
    out["UserMatches"] = matches
    out["AppliedThreshold"] = ctx.applied_threshold
    return out


@operation("SearchUsersByImage")
def search_users_by_image(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    store, col = _collection(self, ctx)
    max_users = integer(req, "MaxUsers", 1, 500, 100)
    requested = _threshold_arg(req, "UserMatchThreshold", self.settings.match_threshold)
    quality = _quality_filter(req, "NONE")
    _check_model(self, col)
    face, template, others = _probe_face(self, ctx, quality)
    matches = _user_matches(self, ctx, store, col, [template], max_users, requested)
    return {
        "UserMatches": matches,
        "FaceModelVersion": col.model_version,
        "SearchedFace": {"FaceDetail": face.face_detail()},
        "UnsearchedFaces": [
            {"FaceDetails": f.face_detail(), "Reasons": ["FACE_NOT_LARGEST"]} for f in others
        ],
        "AppliedThreshold": ctx.applied_threshold,
    }


# ---- grouping faces by person (facewarden's own operation) -------------------------------------
MAX_CLUSTER_IMAGES = 100


@operation("ClusterFaces")
def cluster_faces_op(self: Service, ctx: Context) -> dict[str, Any]:
    """Group the faces of several images by person (no collection involved).

    Request: ``Images`` ([{"Bytes"}], at most 100) or, in-process only, ``_Analysed`` (a list of
    :class:`AnalysedImage`, from :func:`facewarden.gallery.indexing.cluster_paths`);
    ``SimilarityThreshold`` (default the match threshold; policy may raise it). Response:
    ``Groups`` [{"Faces": [{"ImageIndex", "FaceIndex", "BoundingBox", "Confidence"}]}], largest
    first (a face that matches nobody is a group of one), and ``AppliedThreshold``.
    """
    from ..gallery.indexing import cluster_faces

    req = ctx.request
    requested = _threshold_arg(req, "SimilarityThreshold", self.settings.match_threshold)
    analysed = req.get("_Analysed")
    if analysed is not None:
        if not isinstance(analysed, list) or not all(isinstance(a, AnalysedImage) for a in analysed):
            raise InvalidInput(
                "_Analysed is internal to facewarden's indexer and cannot be sent in a request."
            )
        wrong = {a.model_version for a in analysed} - {self.engine.model_version}
        if wrong:
            raise ModelMismatch(
                f"Templates of {', '.join(sorted(wrong))} cannot be grouped with {self.engine.model_version}."
            )
        items = [(a.kept, a.templates) for a in analysed]
    else:
        images_in = _required(req, "Images")
        if not isinstance(images_in, list) or not 1 <= len(images_in) <= MAX_CLUSTER_IMAGES:
            raise InvalidInput(f"Images must be a list of 1 to {MAX_CLUSTER_IMAGES} images.")
        items = []
        for i, img in enumerate(images_in):
            pixels = self.decode_image(img, f"Images[{i}]")
            faces = sorted(self.engine.detect(pixels, self.detector_for(req)), key=lambda f: -f.box.area)
            items.append((faces, self.engine.embed(pixels, faces)))
    index = [(i, j) for i, (faces, _) in enumerate(items) for j in range(len(faces))]
    dim = self.engine.spec.dim
    templates = (
        np.concatenate([np.asarray(t, np.float32).reshape(-1, dim) for _, t in items])
        if index
        else np.zeros((0, dim))
    )
    applied = applied_threshold(self, ctx, requested, len(index))
    groups = cluster_faces(templates, applied["Similarity"], self.engine.calibration)
    out = []
    for g in groups:
        faces_out = []
        for k in g:
            i, j = index[k]
            face = items[i][0][j]
            faces_out.append(
                {
                    "ImageIndex": i,
                    "FaceIndex": j,
                    "BoundingBox": face.face_detail()["BoundingBox"],
                    "Confidence": face.confidence,
                }
            )
        out.append({"Faces": faces_out})
    ctx.counts.update(images=len(items), faces=len(index), groups=sum(1 for g in groups if len(g) > 1))
    return {"Groups": out, "AppliedThreshold": ctx.applied_threshold}

"""Users: a person's several faces in a collection searched as one (Rekognition's user model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from ..errors import AccessDenied, Conflict, InvalidInput, ResourceAlreadyExists, ResourceNotFound
from ..gallery import MAX_FACES_PER_USER, Collection, Face, Store
from ..policy.kinds import Kind
from . import visible
from .consent import require_consent
from .core import Service
from .registry import Context, Rest, operation
from .faces import FaceDetail
from .gallery import (
    COLLECTION,
    asked_threshold,
    collection,
    engine_of,
    probe_face,
    similarities,
    touch,
    unsuccessful,
)
from .params import (
    ClientRequestToken,
    CollectionId,
    Empty,
    FaceId,
    Image,
    Items,
    NextToken,
    QualityFilter,
    Range,
    Similarity,
    UserId,
)

DEFAULT_USER_MATCH_THRESHOLD = 75.0
UserFaceIds = Annotated[list[FaceId], Items("face ids", 1, MAX_FACES_PER_USER)]


@dataclass(frozen=True)
class UserRequest:
    collection_id: CollectionId
    user_id: UserId
    #: Idempotency: with a token, a retried CreateUser that succeeded is not an error.
    client_request_token: ClientRequestToken | None = None


@operation("CreateUser", kind=Kind.ENROL, rest=Rest("POST", f"{COLLECTION}/users", "users"))
def create_user(svc: Service, ctx: Context, req: UserRequest) -> Empty:
    """Create a user"""
    store, col = collection(svc, ctx, req.collection_id)
    ctx.subjects.append(req.user_id)
    try:
        store.create_user(col.collection_id, req.user_id)
    except ResourceAlreadyExists:
        # Rekognition: ConflictException. A retry with the first request's ClientRequestToken never
        # gets here: the pipeline answers it with the first response.
        raise Conflict(
            f"User {req.user_id!r} already exists in collection {col.collection_id!r}; "
            "choose another UserId or delete the user first."
        ) from None
    return Empty()


@operation("DeleteUser", kind=Kind.MANAGE, rest=Rest("DELETE", f"{COLLECTION}/users/{{UserId}}", "users"))
def delete_user(svc: Service, ctx: Context, req: UserRequest) -> Empty:
    """Delete a user"""
    store, col = collection(svc, ctx, req.collection_id)
    ctx.subjects.append(req.user_id)
    freed = store.delete_user(col.collection_id, req.user_id)
    ctx.counts["faces_disassociated"] = len(freed)
    return Empty()


@dataclass(frozen=True)
class ListUsersRequest:
    collection_id: CollectionId
    max_results: Annotated[int, Range(1, 500)] = 100
    next_token: NextToken | None = None


@dataclass(frozen=True)
class UserView:
    user_id: str
    user_status: str


@dataclass(frozen=True)
class ListUsersResult:
    users: list[UserView]
    next_token: str | None = None


@operation("ListUsers", kind=Kind.MANAGE, rest=Rest("GET", f"{COLLECTION}/users", "users"))
def list_users(svc: Service, ctx: Context, req: ListUsersRequest) -> ListUsersResult:
    """List users"""
    store, col = collection(svc, ctx, req.collection_id)
    limit = req.max_results
    after = svc.page_tokens.open(ctx.operation, col.collection_id, req.next_token)
    users = store.list_users(col.collection_id, after=after, limit=limit + 1)
    ctx.counts["users"] = min(len(users), limit)
    return ListUsersResult(
        [UserView(u.user_id, u.status) for u in users[:limit]],
        svc.page_tokens.issue(
            ctx.operation, col.collection_id, users[limit - 1].user_id if len(users) > limit else None
        ),
    )


@dataclass(frozen=True)
class AssociateFacesRequest:
    collection_id: CollectionId
    user_id: UserId
    face_ids: UserFaceIds
    #: A face must look this much like the user's other faces (Rekognition: LOW_MATCH_CONFIDENCE).
    user_match_threshold: Similarity = DEFAULT_USER_MATCH_THRESHOLD
    client_request_token: ClientRequestToken | None = None


@dataclass(frozen=True)
class FaceIdView:
    face_id: str


@dataclass(frozen=True)
class AssociateFacesResult:
    associated_faces: list[FaceIdView]
    unsuccessful_face_associations: list[dict[str, Any]]
    user_status: str


def user_subject(col: Collection, user_id: str, held: list[Face], joining: list[Face]) -> str | None:
    """The subject a user of a consent collection stands for, and the only one whose faces may join it.

    Consent is a person's, for their own faces: a user's subject is the ExternalImageId its faces
    were enrolled under — set by the first face associated with it, and shared by every face that
    joins it later (the UserId itself is just a name). Raises AccessDenied (rule ``user_subject``),
    naming the faces, if a joining face was enrolled under another subject (or none). None: the
    user has no face and none of ``joining`` exists (nothing will be associated)."""
    have = {f.external_image_id for f in held}
    if len(have) > 1 or None in have:
        raise AccessDenied(
            f"User {user_id!r} holds faces of {len(have)} subjects (or of none); in consent collection "
            f"{col.collection_id} a user stands for one subject. Disassociate its faces and start again.",
            "user_subject",
        )
    if have:
        subject = next(iter(have))
    elif joining:
        subject = joining[0].external_image_id
    else:
        return None
    stranger = [f.face_id for f in joining if f.external_image_id != subject]
    if subject is None or stranger:
        raise AccessDenied(
            f"In consent collection {col.collection_id} a user stands for one consented subject: the "
            "ExternalImageId its faces were enrolled under, set by its first face"
            + (f" (user {user_id!r} has one)" if have else "")
            + f". Face(s) {', '.join((stranger or [f.face_id for f in joining])[:10])} were enrolled under "
            + ("another subject" if subject else "no subject")
            + "; associate each subject's faces with a user of its own.",
            "user_subject",
        )
    return subject


@operation(
    "AssociateFaces", kind=Kind.ENROL, rest=Rest("POST", f"{COLLECTION}/users/{{UserId}}/faces", "users")
)
def associate_faces(svc: Service, ctx: Context, req: AssociateFacesRequest) -> AssociateFacesResult:
    """Associate faces with a user"""
    # In a consent collection a user stands for one consented subject (see user_subject).
    store, col = collection(svc, ctx, req.collection_id)
    user_id, ids = req.user_id, req.face_ids
    ctx.subjects.append(user_id)
    store.get_user(col.collection_id, user_id)
    # (faces whose consent lapsed or whose retention passed are as good as gone: visible.py)
    held = visible.list_faces(svc, col, user_id=user_id, limit=MAX_FACES_PER_USER + 1)
    rows = visible.faces(svc, col, ids)
    subject = None
    if col.consent_mode != "household":  # policy: the subject's consent before association
        subject = user_subject(col, user_id, held, [rows[f] for f in dict.fromkeys(ids) if f in rows])
        if subject is not None:
            require_consent(svc, ctx, col.collection_id, subject)
    # Faces must look like the user's other faces (Rekognition: LOW_MATCH_CONFIDENCE).
    current = [f.face_id for f in held]
    templates = store.templates(col.collection_id, list(dict.fromkeys(current + ids)))
    anchors = [templates[f] for f in current if f in templates]
    low: dict[str, float] = {}
    accepted: list[str] = []
    failed: dict[str, tuple[str, str | None]] = {}
    for fid in dict.fromkeys(ids):
        t = templates.get(fid)
        row = rows.get(fid)
        if row is None:  # absent, or hidden (its consent lapsed or its retention passed)
            failed[fid] = ("FACE_NOT_FOUND", None)
            continue
        if t is None or row.user_id is not None:
            accepted.append(fid)  # already someone's: the store decides and reports it
            continue
        if anchors:
            sim = float(np.max(similarities(svc, col, list(np.stack(anchors) @ t))))
            if sim < req.user_match_threshold:
                low[fid] = sim
                continue
        anchors.append(t)
        accepted.append(fid)
    result = (
        store.associate_faces(col.collection_id, user_id, accepted, subject=subject) if accepted else None
    )
    associated = result.associated if result else []
    failed.update(result.failed if result else {})
    status = result.status if result else store.get_user(col.collection_id, user_id).status
    refused = unsuccessful(failed)
    for fid, sim in low.items():
        refused.append(
            {"FaceId": fid, "UserId": user_id, "Confidence": sim, "Reasons": ["LOW_MATCH_CONFIDENCE"]}
        )
    ctx.counts.update(associated=len(associated), failed=len(refused))
    return AssociateFacesResult([FaceIdView(f) for f in associated], refused, status)


@dataclass(frozen=True)
class DisassociateFacesRequest:
    collection_id: CollectionId
    user_id: UserId
    face_ids: UserFaceIds
    client_request_token: ClientRequestToken | None = None


@dataclass(frozen=True)
class DisassociateFacesResult:
    disassociated_faces: list[FaceIdView]
    unsuccessful_face_disassociations: list[dict[str, Any]]
    user_status: str


@operation(
    "DisassociateFaces",
    kind=Kind.MANAGE,
    rest=Rest("DELETE", f"{COLLECTION}/users/{{UserId}}/faces", "users"),
)
def disassociate_faces(svc: Service, ctx: Context, req: DisassociateFacesRequest) -> DisassociateFacesResult:
    """Disassociate faces (FaceIds in the query string) from a user"""
    store, col = collection(svc, ctx, req.collection_id)
    ctx.subjects.append(req.user_id)
    result = store.disassociate_faces(col.collection_id, req.user_id, req.face_ids)
    refused = unsuccessful(result.failed)
    ctx.counts.update(disassociated=len(result.associated), failed=len(refused))
    return DisassociateFacesResult([FaceIdView(f) for f in result.associated], refused, result.status)


# ---- 1:N user search ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserMatch:
    similarity: float
    user: UserView


def user_matches(
    svc: Service,
    ctx: Context,
    store: Store,
    col: Collection,
    probes: list[np.ndarray],
    max_users: int,
    requested: float | None,
    exclude_faces: tuple[str, ...] = (),
    exclude_user: str | None = None,
) -> list[UserMatch]:
    """Users whose score passes the applied threshold, best first.

    A user's score pools all its faces, as the model's :class:`~facewarden.engine.calibration.
    UserScoring` says (measured per model): its best face, or its mean template; either counted
    as the chances it gives a stranger (x the number of probe faces), so that the score keeps the
    calibrated meaning for the user as a whole. Only users can be returned, so the gallery-size
    rule counts users with faces, not the collection's other faces."""
    users = max(0, col.active_user_count - (1 if exclude_user is not None else 0))
    cal = engine_of(svc, col).calibration
    applied = svc.effective_threshold(
        ctx,
        requested,
        users,
        counted="users",
        faces=col.face_count,
        subjects=col.subject_count,
        calibration=cal,
    )
    threshold, asked = applied["Similarity"], asked_threshold(applied)
    k = min(4096, max(100, 10 * max_users))
    best: dict[str, tuple[float, Face]] = {}
    for probe in probes:
        matches = visible.search(svc, col, probe, k, exclude=exclude_faces)
        sims = similarities(svc, col, [m.inner for m in matches])
        for m, s in zip(matches, sims):
            uid = m.face.user_id
            if uid is None or uid == exclude_user:
                continue
            if uid not in best or s > best[uid][0]:
                best[uid] = (float(s), m.face)
    scoring = cal.users
    sizes = store.subject_sizes(col.collection_id, [f"u:{u}" for u in best]) if best else {}
    if scoring.pooling == "mean" and best:
        means = {
            uid: _unit(t.mean(axis=0)) for uid, t in store.user_templates(col.collection_id, best).items()
        }
        for uid, mean in means.items():
            s_mean = float(np.max(cal.similarity_from_inner(np.stack(probes) @ mean)))
            best[uid] = (s_mean, best[uid][1])
    scored = {
        uid: (cal.pooled(s, len(probes) * scoring.chances(sizes.get(f"u:{uid}", 1))), face)
        for uid, (s, face) in best.items()
        if s >= asked  # a pooled score is never above its raw one
    }
    passed = {u: v for u, v in scored.items() if v[0] >= threshold}
    withheld = sum(1 for u, v in scored.items() if u not in passed and v[0] >= asked)
    applied["WithheldByCap"] = withheld
    ranked = sorted(passed.items(), key=lambda kv: -kv[1][0])[:max_users]
    status = store.users_status(col.collection_id, [u for u, _ in ranked]) if ranked else {}
    ctx.matched_face_ids = [face.face_id for _, (_, face) in ranked]
    ctx.counts.update(
        gallery_faces=col.face_count, gallery_users=users, matches=len(ranked), withheld_by_cap=withheld
    )
    touch(ctx, users=[u for u, _ in ranked])
    return [
        UserMatch(sim, UserView(uid, status.get(uid, "ACTIVE")))
        for uid, (sim, _) in ranked
        if uid in status  # deleted meanwhile: not a match
    ]


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class SearchUsersRequest:
    collection_id: CollectionId
    #: Exactly one of user_id and face_id.
    user_id: UserId | None = None
    face_id: FaceId | None = None
    user_match_threshold: Similarity | None = None
    max_users: Annotated[int, Range(1, 500)] = 100


@dataclass(frozen=True)
class SearchedFaceId:
    face_id: str


@dataclass(frozen=True)
class SearchedUserId:
    user_id: str


@dataclass(frozen=True)
class SearchUsersResult:
    face_model_version: str
    user_matches: list[UserMatch]
    applied_threshold: dict[str, Any] | None
    searched_face: SearchedFaceId | None = None
    searched_user: SearchedUserId | None = None


@operation("SearchUsers", kind=Kind.IDENTIFY, rest=Rest("POST", f"{COLLECTION}/users/search", "search"))
def search_users(svc: Service, ctx: Context, req: SearchUsersRequest) -> SearchUsersResult:
    """Search users by FaceId or UserId"""
    store, col = collection(svc, ctx, req.collection_id)
    if (req.user_id is None) == (req.face_id is None):
        raise InvalidInput("SearchUsers needs exactly one of UserId or FaceId.")
    if req.face_id is not None:
        face_id = req.face_id
        templates = visible.templates(svc, col, [face_id])
        if face_id not in templates:
            raise ResourceNotFound(f"Face {face_id!r} is not in collection {col.collection_id!r}.")
        matches = user_matches(
            svc, ctx, store, col, [templates[face_id]], req.max_users, req.user_match_threshold, (face_id,)
        )
        return SearchUsersResult(
            col.model_version, matches, ctx.applied_threshold, searched_face=SearchedFaceId(face_id)
        )
    user_id = str(req.user_id)
    store.get_user(col.collection_id, user_id)
    ctx.subjects.append(user_id)
    own = [f.face_id for f in visible.list_faces(svc, col, user_id=user_id, limit=MAX_FACES_PER_USER)]
    templates = store.templates(col.collection_id, own)
    probes = [templates[f] for f in own if f in templates]
    if probes:
        matches = user_matches(
            svc, ctx, store, col, probes, req.max_users, req.user_match_threshold, tuple(own), user_id
        )
    else:
        matches = []
        users = col.active_user_count  # the searched user has no faces: it is not among them
        applied = svc.effective_threshold(
            ctx,
            req.user_match_threshold,
            users,
            counted="users",
            faces=col.face_count,
            subjects=col.subject_count,
            calibration=engine_of(svc, col).calibration,
        )
        applied["WithheldByCap"] = 0
    return SearchUsersResult(
        col.model_version, matches, ctx.applied_threshold, searched_user=SearchedUserId(user_id)
    )


@dataclass(frozen=True)
class SearchUsersByImageRequest:
    collection_id: CollectionId
    image: Image
    user_match_threshold: Similarity | None = None
    max_users: Annotated[int, Range(1, 500)] = 100
    quality_filter: QualityFilter = "NONE"
    detector: str | None = None


@dataclass(frozen=True)
class SearchedFace:
    face_detail: FaceDetail


@dataclass(frozen=True)
class UnsearchedFace:
    face_details: FaceDetail
    reasons: list[str]


@dataclass(frozen=True)
class SearchUsersByImageResult:
    user_matches: list[UserMatch]
    face_model_version: str
    searched_face: SearchedFace
    unsearched_faces: list[UnsearchedFace]
    applied_threshold: dict[str, Any] | None


@operation(
    "SearchUsersByImage",
    kind=Kind.IDENTIFY,
    rest=Rest("POST", f"{COLLECTION}/users/search-by-image", "search"),
)
def search_users_by_image(
    svc: Service, ctx: Context, req: SearchUsersByImageRequest
) -> SearchUsersByImageResult:
    """Search users by the largest face of an image"""
    store, col = collection(svc, ctx, req.collection_id)
    face, template, others = probe_face(svc, col, req.image, req.detector, req.quality_filter)
    matches = user_matches(svc, ctx, store, col, [template], req.max_users, req.user_match_threshold)
    return SearchUsersByImageResult(
        matches,
        col.model_version,
        SearchedFace(face.face_detail()),
        [UnsearchedFace(f.face_detail(), ["FACE_NOT_LARGEST"]) for f in others],
        ctx.applied_threshold,
    )

"""The gallery's data model and the :class:`Store` protocol every storage backend implements.

A *collection* holds *faces* (one template each, bound to the collection's model version) and
*users* (subjects) that faces can be associated with, as Rekognition defines them. A backend is
registered under the scheme of its database URL (``sqlite``, ``postgresql``) and opened with
:func:`open_store`; both backends share the SQL of :mod:`facewarden.gallery.sql` and differ only
in how templates are stored and searched (SQLite: blobs plus an in-process exact/FAISS index kept
in step with the database; PostgreSQL: a pgvector column with an HNSW index).

Tables (created by versioned migrations of the component ``gallery``):

* ``gallery_collections`` (collection_id, arn, model_version, dim, created_at, consent_mode,
  retention_days, owner_org, uid, generation, face_count, subject_count, active_user_count)
* ``gallery_faces`` (seq, face_id, collection_id, external_image_id, image_id, image_sha256,
  bbox JSON, confidence, template, dim, model_version, user_id, indexed_at, subject)
* ``gallery_users`` (collection_id, user_id, status, created_at)
* ``gallery_subjects`` (collection_id, subject, faces): how many faces each subject has

**Subjects.** The gallery-size threshold counts people, not photos (:func:`subject_of`): a face
associated with a user belongs to ``u:<UserId>``; otherwise to ``e:<ExternalImageId>#<k>``, the
k-th face of its image with that ExternalImageId (the faces of one photo are different people,
so a group photo indexed under one ExternalImageId still counts each face); a face with neither
is a subject of its own (``f:<FaceId>``). ``gallery_subjects`` keeps each subject's face count
and the collection its number of subjects and of users with faces, in the same transaction as
every write of faces (under the collection's lock), so reading them costs one row.

Every write that changes a collection's faces bumps its ``generation`` in the same transaction,
under the collection's named lock; vector indexes compare generations to know they are stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import Settings
from ..db import Database, Tx
from ..errors import StorageError

#: Most faces one user can be associated with (Rekognition's limit).
MAX_FACES_PER_USER = 100


@dataclass(frozen=True)
class Collection:
    collection_id: str
    arn: str
    model_version: str
    dim: int
    created_at: float
    consent_mode: str = "required"
    retention_days: int = 365
    owner_org: str | None = None
    uid: str = ""
    generation: int = 0
    face_count: int = 0
    #: Distinct subjects (people) the faces belong to; see :func:`subject_of`.
    subject_count: int = 0
    #: Users with at least one face (ACTIVE): the subjects a user search can return.
    active_user_count: int = 0


@dataclass(frozen=True)
class NewFace:
    """A face about to be stored: what IndexFaces computed for it."""

    template: np.ndarray
    bbox: dict[str, float]
    confidence: float
    external_image_id: str | None = None
    image_id: str | None = None
    image_sha256: str | None = None
    face_id: str | None = None  # assigned by the store when None


@dataclass(frozen=True)
class Face:
    """A stored face (without its template; ask :meth:`Store.templates` for those)."""

    face_id: str
    collection_id: str
    external_image_id: str | None
    image_id: str
    image_sha256: str | None
    bbox: dict[str, float]
    confidence: float
    model_version: str
    user_id: str | None
    indexed_at: float
    seq: int = 0
    #: The subject the face belongs to when no user claims it (``e:...#k`` or ``f:...``).
    own_subject: str = ""

    @property
    def subject(self) -> str:
        """The person this face counts as (see :func:`subject_of`)."""
        return subject_of(self.user_id, self.own_subject)

    def to_rekognition(self) -> dict[str, Any]:
        """Rekognition's ``Face`` shape."""
        out: dict[str, Any] = {
            "FaceId": self.face_id,
            "BoundingBox": dict(self.bbox),
            "ImageId": self.image_id,
            "Confidence": float(self.confidence),
            "IndexFacesModelVersion": self.model_version,
        }
        if self.external_image_id is not None:
            out["ExternalImageId"] = self.external_image_id
        if self.user_id is not None:
            out["UserId"] = self.user_id
        return out


def subject_of(user_id: str | None, own_subject: str) -> str:
    """A face's subject: its user's when it has one, else its own (ExternalImageId and place in
    its image, or the face itself)."""
    return f"u:{user_id}" if user_id else own_subject


def unclaimed_subject(face_id: str, external_image_id: str | None, ordinal: int) -> str:
    """The subject of a face no user claims: the ``ordinal``-th face (0, 1, ...) of its image with
    this ExternalImageId, or the face alone when it has no ExternalImageId."""
    return f"e:{external_image_id}#{ordinal}" if external_image_id else f"f:{face_id}"


@dataclass(frozen=True)
class User:
    collection_id: str
    user_id: str
    status: str
    created_at: float
    face_count: int = 0


@dataclass
class Association:
    """What :meth:`Store.associate_faces` did, per face."""

    associated: list[str] = field(default_factory=list)
    #: face_id -> (reason, user_id the face belongs to or None)
    failed: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    status: str = "CREATED"


@dataclass(frozen=True)
class Match:
    face: Face
    #: Inner product of the probe and the face's template (both L2-normalised): 1 - d^2 / 2.
    inner: float


@runtime_checkable
class Store(Protocol):
    """What the service needs from a gallery backend. All methods are thread-safe."""

    db: Database
    #: The time source of indexing times, retention and consent expiry (the service sets its own).
    clock: Callable[[], float]

    # collections
    def create_collection(
        self,
        collection_id: str,
        model_version: str,
        dim: int,
        *,
        consent_mode: str = "required",
        retention_days: int = 365,
        owner_org: str | None = None,
    ) -> Collection: ...
    def get_collection(self, collection_id: str, tx: Tx | None = None) -> Collection: ...
    def list_collections(self, after: str | None = None, limit: int = 1000) -> list[Collection]: ...
    def delete_collection(self, collection_id: str) -> None: ...
    def set_consent_mode(self, collection_id: str, consent_mode: str, *, tx: Tx | None = None) -> None: ...

    # faces
    def add_faces(
        self,
        collection_id: str,
        faces: Sequence[NewFace],
        model_version: str,
        *,
        skip_known_image: bool = False,
        max_faces: int | None = None,
    ) -> list[Face]: ...
    def get_faces(self, collection_id: str, face_ids: Iterable[str]) -> dict[str, Face]: ...
    def list_faces(
        self,
        collection_id: str,
        after: str | None = None,
        limit: int = 1000,
        *,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> list[Face]: ...
    def delete_faces(
        self, collection_id: str, face_ids: Sequence[str], *, force: bool = False, tx: Tx | None = None
    ) -> tuple[list[str], dict[str, tuple[str, str | None]]]: ...
    def templates(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def count_faces(self, collection_id: str) -> int: ...
    def subject_sizes(self, collection_id: str, subjects: Iterable[str]) -> dict[str, int]: ...
    def user_templates(self, collection_id: str, user_ids: Iterable[str]) -> dict[str, np.ndarray]: ...
    def has_image(self, collection_id: str, sha256: str) -> bool: ...
    def faces_of_image(self, collection_id: str, sha256: str) -> list[Face]: ...
    def search(
        self, collection_id: str, probe: np.ndarray, k: int, *, exclude: Sequence[str] = ()
    ) -> list[Match]: ...

    # users
    def create_user(self, collection_id: str, user_id: str) -> User: ...
    def get_user(self, collection_id: str, user_id: str) -> User: ...
    def delete_user(self, collection_id: str, user_id: str) -> list[str]: ...
    def list_users(self, collection_id: str, after: str | None = None, limit: int = 100) -> list[User]: ...
    def count_users(self, collection_id: str) -> int: ...
    def users_status(self, collection_id: str, user_ids: Iterable[str]) -> dict[str, str]: ...
    def associate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        limit: int = MAX_FACES_PER_USER,
        subject: str | None = None,
    ) -> Association: ...
    def disassociate_faces(
        self, collection_id: str, user_id: str, face_ids: Sequence[str]
    ) -> Association: ...

    # data protection (used by policy: erasure, retention)
    def erase_faces(
        self,
        collection_id: str | None = None,
        *,
        external_image_id: str | None = None,
        user_id: str | None = None,
        tx: Tx | None = None,
    ) -> list[str]: ...
    def purge_before(self, collection_id: str, cutoff: float, *, tx: Tx | None = None) -> list[str]: ...

    # index upkeep
    def sync_index(self, collection_id: str) -> None: ...
    def index_face_ids(self, collection_id: str) -> set[str]: ...
    def store_face_ids(self, collection_id: str) -> set[str]: ...
    def close(self) -> None: ...


# ---- backends by URL scheme ------------------------------------------------------------------
StoreFactory = Callable[[Database, Settings], Store]
_BACKENDS: dict[str, StoreFactory] = {}


def register_backend(scheme: str, factory: StoreFactory) -> None:
    """Register a Store implementation for database URLs of ``scheme`` (``sqlite``, ``postgresql``).

    A backend module registers itself when imported; :mod:`facewarden.gallery` imports the built-in
    ones, so importing any part of the gallery makes them known.
    """
    _BACKENDS[scheme] = factory


def backend_schemes() -> list[str]:
    """The URL schemes a store can be opened for."""
    return sorted(_BACKENDS)


def open_store(db: Database, settings: Settings) -> Store:
    """The gallery store for ``db`` (the scheme of its URL picks the backend); migrations are applied."""
    scheme = db.url.partition("://")[0]
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise StorageError(
            f"No gallery backend for {scheme!r} database URLs; known: {', '.join(backend_schemes())}."
        )
    return factory(db, settings)


def bbox_to_json(bbox: dict[str, float]) -> str:
    return json.dumps({k: float(bbox[k]) for k in ("Width", "Height", "Left", "Top")})

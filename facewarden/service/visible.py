"""What a read may return: faces whose consent holds and whose retention has not passed, now.

A face stays in the store until the retention sweep erases it (at start-up, on a schedule in
``facewarden serve``, on request), but it stops being returned the moment its subject's consent
expires or is withdrawn, or its collection's retention period passes: every read of stored faces
goes through here, at the time of the query, whatever the backend (SQLite, PostgreSQL with HNSW or
with the in-process index) and whichever search path (exact or approximate) answers.

* :func:`search` — the nearest visible faces (SearchFaces, SearchFacesByImage, SearchUsers,
  SearchUsersByImage); it asks the store for more candidates while hidden ones crowd the answer;
* :func:`list_faces` — a page of visible faces (ListFaces, a user's faces);
* :func:`faces` / :func:`templates` — named faces, only if visible (a search's probe face,
  AssociateFaces' faces and anchors, ExportSubject).

A face in a consent collection is visible while an active consent record of its subject (its
ExternalImageId) covers the collection; a face of a household collection needs none. Any face is
hidden once ``indexed_at`` is older than the collection's retention period.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..gallery import Collection, Face, Match
from .core import Service


def retention_cutoff(svc: Service, col: Collection, now: float) -> float:
    """Faces of ``col`` indexed before this time (epoch seconds) are past its retention period."""
    days = col.retention_days or svc.policy.default_retention_days
    return now - float(days) * 86400.0


@dataclass(frozen=True)
class Visibility:
    """Which faces of one collection a read may return, decided at one moment."""

    service: Service
    collection: Collection
    now: float

    @classmethod
    def of(cls, svc: Service, col: Collection) -> Visibility:
        return cls(svc, col, svc.clock())

    @property
    def cutoff(self) -> float:
        return retention_cutoff(self.service, self.collection, self.now)

    def keep(self, faces: Iterable[Face]) -> list[Face]:
        """The visible ones of ``faces``, in order."""
        fresh = [f for f in faces if f.indexed_at >= self.cutoff]
        if self.collection.consent_mode == "household" or not fresh:
            return fresh
        col = self.collection
        consented = self.service.consents.active_subjects(
            (f.external_image_id for f in fresh if f.external_image_id),
            col.collection_id,
            col.owner_org,
            self.now,
        )
        return [f for f in fresh if f.external_image_id in consented]


def search(
    svc: Service, col: Collection, probe: np.ndarray, k: int, *, exclude: Sequence[str] = ()
) -> list[Match]:
    """The ``k`` visible faces nearest to ``probe``, best first."""
    vis = Visibility.of(svc, col)
    want = k
    while True:
        found = svc.store.search(col.collection_id, probe, want, exclude=exclude)
        shown = {f.face_id for f in vis.keep(m.face for m in found)}
        out = [m for m in found if m.face.face_id in shown]
        if len(out) >= k or len(found) < want or want >= col.face_count:
            return out[:k]
        want = min(max(col.face_count, k), want * 4)  # hidden faces crowded the answer: ask for more


def list_faces(
    svc: Service,
    col: Collection,
    after: str | None = None,
    limit: int = 1000,
    *,
    user_id: str | None = None,
    face_ids: Sequence[str] | None = None,
) -> list[Face]:
    """Up to ``limit`` visible faces ordered by face id, after ``after`` (as Store.list_faces)."""
    vis = Visibility.of(svc, col)
    out: list[Face] = []
    while len(out) < limit:
        page = svc.store.list_faces(col.collection_id, after, limit, user_id=user_id, face_ids=face_ids)
        out.extend(vis.keep(page))
        if len(page) < limit:
            break
        after = page[-1].face_id
    return out[:limit]


def faces(svc: Service, col: Collection, face_ids: Iterable[str]) -> dict[str, Face]:
    """The visible ones of the named faces (a hidden face is as good as absent)."""
    found = svc.store.get_faces(col.collection_id, face_ids)
    return {f.face_id: f for f in Visibility.of(svc, col).keep(found.values())}


def templates(svc: Service, col: Collection, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Templates of the visible ones of the named faces."""
    return svc.store.templates(col.collection_id, list(faces(svc, col, face_ids)))

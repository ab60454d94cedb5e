"""The SQL both gallery backends share: collections, faces, users, erasure and retention.

The gallery's tables are written here once (:data:`SCHEMA`, with the column types of
:data:`facewarden.db.COLUMN_TYPES`). Backends subclass :class:`SqlStore` and supply how a template
is written and read (``_template_param`` / ``_template_value``), how the nearest templates are found (``_nearest``)
and, optionally, what happens after a commit changed a collection's faces (``_committed``: the
SQLite backend updates its in-process vector index there).

Writers of one collection serialise on the named lock ``gallery:<collection_id>`` (see
:meth:`facewarden.db.Database.transaction`), which holds across processes on both backends: face
counts, the per-user face limit and the collection's ``generation`` are always consistent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..config import Settings
from ..db import Database, Row, Tx, lock_key
from ..errors import (
    AccessDenied,
    InvalidInput,
    ModelMismatch,
    ResourceAlreadyExists,
    ResourceNotFound,
    ServiceQuotaExceeded,
)
from .store import (
    MAX_FACES_PER_USER,
    Association,
    Collection,
    Face,
    Match,
    NewFace,
    User,
    bbox_to_json,
    subject_of,
    unclaimed_subject,
)

COLLECTION_COLS = (
    "collection_id, arn, model_version, dim, created_at, consent_mode, retention_days, owner_org, uid,"
    " generation, face_count, subject_count, active_user_count"
)
FACE_COLS = (
    "seq, face_id, collection_id, external_image_id, image_id, image_sha256, bbox, confidence,"
    " model_version, user_id, indexed_at, subject"
)
ARN_PREFIX = "aws:rekognition:local:000000000000:collection/"
CHUNK = 500

#: The gallery's tables, on every backend (migration 1 of the component ``gallery``, followed by
#: the backend's :attr:`SqlStore.schema_extra`).
SCHEMA = """
CREATE TABLE gallery_collections (
    collection_id TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    model_version TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created_at {double} NOT NULL,
    consent_mode TEXT NOT NULL DEFAULT 'required',
    retention_days INTEGER NOT NULL DEFAULT 365,
    owner_org TEXT NULL,
    uid TEXT NOT NULL,
    generation {bigint} NOT NULL DEFAULT 0,
    face_count {bigint} NOT NULL DEFAULT 0
);
CREATE TABLE gallery_faces (
    seq {serial},
    face_id TEXT NOT NULL UNIQUE,
    collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
    external_image_id TEXT NULL,
    image_id TEXT NOT NULL,
    image_sha256 TEXT NULL,
    bbox TEXT NOT NULL,
    confidence {double} NOT NULL,
    template {vector} NOT NULL,
    dim INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    user_id TEXT NULL,
    indexed_at {double} NOT NULL
);
CREATE INDEX gallery_faces_by_collection ON gallery_faces (collection_id, face_id);
CREATE INDEX gallery_faces_by_external ON gallery_faces (collection_id, external_image_id);
CREATE INDEX gallery_faces_by_user ON gallery_faces (collection_id, user_id);
CREATE INDEX gallery_faces_by_image ON gallery_faces (collection_id, image_sha256);
CREATE INDEX gallery_faces_by_time ON gallery_faces (collection_id, indexed_at);
CREATE TABLE gallery_users (
    collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at {double} NOT NULL,
    PRIMARY KEY (collection_id, user_id)
);
"""

#: Migration 2 of the component ``gallery`` on every backend: subjects (see
#: :mod:`facewarden.gallery.store`), counted for the faces already stored. A face's own subject is
#: its place among the faces of its image with the same ExternalImageId (by seq), or itself.
SUBJECTS_MIGRATION = """
ALTER TABLE gallery_faces ADD COLUMN subject TEXT NULL;
UPDATE gallery_faces SET subject = 'f:' || face_id WHERE external_image_id IS NULL;
UPDATE gallery_faces SET subject = 'e:' || external_image_id || '#' || (
    SELECT COUNT(*) FROM gallery_faces g
    WHERE g.collection_id = gallery_faces.collection_id AND g.external_image_id = gallery_faces.external_image_id
      AND g.image_id = gallery_faces.image_id AND g.seq < gallery_faces.seq
) WHERE external_image_id IS NOT NULL;
CREATE TABLE gallery_subjects (
    collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    faces {bigint} NOT NULL,
    PRIMARY KEY (collection_id, subject)
);
INSERT INTO gallery_subjects (collection_id, subject, faces)
    SELECT collection_id, COALESCE('u:' || user_id, subject), COUNT(*) FROM gallery_faces
    GROUP BY collection_id, COALESCE('u:' || user_id, subject);
ALTER TABLE gallery_collections ADD COLUMN subject_count {bigint} NOT NULL DEFAULT 0;
ALTER TABLE gallery_collections ADD COLUMN active_user_count {bigint} NOT NULL DEFAULT 0;
UPDATE gallery_collections SET
    subject_count = (SELECT COUNT(*) FROM gallery_subjects s WHERE s.collection_id = gallery_collections.collection_id),
    active_user_count = (
        SELECT COUNT(*) FROM gallery_subjects s
        WHERE s.collection_id = gallery_collections.collection_id AND SUBSTR(s.subject, 1, 2) = 'u:'
    );
"""


def _collection(row: Row) -> Collection:
    return Collection(
        collection_id=row[0],
        arn=row[1],
        model_version=row[2],
        dim=int(row[3]),
        created_at=float(row[4]),
        consent_mode=row[5],
        retention_days=int(row[6]),
        owner_org=row[7],
        uid=row[8],
        generation=int(row[9]),
        face_count=int(row[10]),
        subject_count=int(row[11]),
        active_user_count=int(row[12]),
    )


def _face(row: Row) -> Face:
    return Face(
        seq=int(row[0]),
        face_id=row[1],
        collection_id=row[2],
        external_image_id=row[3],
        image_id=row[4],
        image_sha256=row[5],
        bbox=json.loads(row[6]),
        confidence=float(row[7]),
        model_version=row[8],
        user_id=row[9],
        indexed_at=float(row[10]),
        own_subject=row[11] or f"f:{row[1]}",
    )


def _chunks(items: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _rows_in(tx: Tx, sql: str, keys: Iterable[Any], *head: Any) -> Iterator[Row]:
    """The rows of ``sql``, whose ``IN ({in})`` takes ``keys``, a chunk at a time (databases cap the
    number of parameters); ``head`` are the parameters before the list."""
    for part in _chunks(list(keys)):
        yield from tx.all(sql.format(**{"in": _marks(len(part))}), (*head, *part))


def _reassigned(faces: Iterable[Face], user_id: str | None) -> Counter[str]:
    """The subject counts' change when ``faces`` pass to ``user_id`` (None: to no user)."""
    delta: Counter[str] = Counter()
    for f in faces:
        delta[f.subject] -= 1
        delta[subject_of(user_id, f.own_subject)] += 1
    return delta


def lock_name(collection_id: str) -> str:
    return f"gallery:{collection_id}"


class SqlStore:
    """Everything but template storage and nearest-neighbour search."""

    #: DDL the backend adds to the gallery's first migration (e.g. PostgreSQL's HNSW index).
    schema_extra = ""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.clock: Callable[[], float] = time.time
        db.migrate("gallery", [SCHEMA + self.schema_extra, SUBJECTS_MIGRATION])

    # ---- backend hooks -----------------------------------------------------------------------

    def _template_param(self, template: np.ndarray) -> Any:
        raise NotImplementedError

    def _template_value(self, value: Any) -> np.ndarray:
        raise NotImplementedError

    def _nearest(self, col: Collection, probe: np.ndarray, k: int) -> list[tuple[int, float]]:
        """``(seq, inner product)`` of up to ``k`` nearest faces of the collection, best first."""
        raise NotImplementedError

    def _committed(
        self, col: Collection, generation: int, added: list[tuple[int, np.ndarray]], removed: list[int]
    ) -> None:
        """Called after a commit moved ``col`` from ``generation - 1`` to ``generation``."""

    def _dropped(self, collection_id: str) -> None:
        """Called after a collection was deleted."""

    def _lock(self, tx: Tx, collection_id: str) -> None:
        """Inside a caller's transaction, take the collection's writer lock."""
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(lock_name(collection_id)),))

    # ---- collections -------------------------------------------------------------------------
    def create_collection(
        self,
        collection_id: str,
        model_version: str,
        dim: int,
        *,
        consent_mode: str = "required",
        retention_days: int = 365,
        owner_org: str | None = None,
    ) -> Collection:
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            if tx.one("SELECT 1 FROM gallery_collections WHERE collection_id = ?", (collection_id,)):
                raise ResourceAlreadyExists(
                    f"Collection {collection_id!r} already exists. Choose another CollectionId or delete it first."
                )
            tx.execute(
                f"INSERT INTO gallery_collections ({COLLECTION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0)",
                (
                    collection_id,
                    ARN_PREFIX + collection_id,
                    model_version,
                    int(dim),
                    self.clock(),
                    consent_mode,
                    int(retention_days),
                    owner_org,
                    uuid.uuid4().hex,
                ),
            )
            row = tx.one(
                f"SELECT {COLLECTION_COLS} FROM gallery_collections WHERE collection_id = ?", (collection_id,)
            )
        assert row is not None
        return _collection(row)

    def get_collection(self, collection_id: str, tx: Tx | None = None) -> Collection:
        sql = f"SELECT {COLLECTION_COLS} FROM gallery_collections WHERE collection_id = ?"
        if tx is not None:
            row = tx.one(sql, (collection_id,))
        else:
            with self.db.read() as rtx:
                row = rtx.one(sql, (collection_id,))
        if row is None:
            raise ResourceNotFound(
                f"Collection {collection_id!r} does not exist. Create it with CreateCollection, or list the "
                "existing ones with ListCollections."
            )
        return _collection(row)

    def list_collections(self, after: str | None = None, limit: int = 1000) -> list[Collection]:
        with self.db.read() as tx:
            rows = tx.all(
                f"SELECT {COLLECTION_COLS} FROM gallery_collections WHERE collection_id > ?"
                " ORDER BY collection_id LIMIT ?",
                (after or "", int(limit)),
            )
        return [_collection(r) for r in rows]

    def delete_collection(self, collection_id: str) -> None:
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            self.get_collection(collection_id, tx)
            tx.execute("DELETE FROM gallery_faces WHERE collection_id = ?", (collection_id,))
            tx.execute("DELETE FROM gallery_subjects WHERE collection_id = ?", (collection_id,))
            tx.execute("DELETE FROM gallery_users WHERE collection_id = ?", (collection_id,))
            tx.execute("DELETE FROM gallery_collections WHERE collection_id = ?", (collection_id,))
        self._dropped(collection_id)

    def set_consent_mode(self, collection_id: str, consent_mode: str, *, tx: Tx | None = None) -> None:
        """Change a collection's consent mode (``required`` or ``household``); in ``tx`` when given."""
        if consent_mode not in ("required", "household"):
            raise InvalidInput("A collection's consent mode is 'required' or 'household'.")

        def run(t: Tx) -> None:
            self._lock(t, collection_id)
            self.get_collection(collection_id, t)
            t.execute(
                "UPDATE gallery_collections SET consent_mode = ? WHERE collection_id = ?",
                (consent_mode, collection_id),
            )

        if tx is not None:
            run(tx)
            return
        with self.db.transaction(lock=lock_name(collection_id)) as own:
            run(own)

    # ---- faces -------------------------------------------------------------------------------
    def add_faces(
        self,
        collection_id: str,
        faces: Sequence[NewFace],
        model_version: str,
        *,
        skip_known_image: bool = False,
        max_faces: int | None = None,
    ) -> list[Face]:
        """Store faces of one image (or a batch); returns them as stored, with their face ids.

        With ``skip_known_image`` nothing is stored when a face of the same image (by SHA-256) is
        already in the collection: the check and the insert are one transaction, so concurrent
        indexers never store an image twice. With ``max_faces`` nothing is stored (and
        ServiceQuotaExceeded raised) if the collection would then hold more faces than that.
        """
        now = self.clock()
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            col = self.get_collection(collection_id, tx)
            if model_version != col.model_version:
                raise ModelMismatch(
                    f"Collection {collection_id!r} holds templates of model {col.model_version}; these were "
                    f"made with {model_version}, and templates of different models cannot be compared. "
                    f"Index into a collection created for {model_version}, or re-index with {col.model_version}."
                )
            if not faces:
                return []
            if max_faces is not None and col.face_count + len(faces) > max_faces:
                raise ServiceQuotaExceeded(
                    f"Collection {collection_id!r} holds {col.face_count} faces; {len(faces)} more would exceed "
                    f"its limit of {max_faces}. Delete faces, or use another collection."
                )
            if skip_known_image:
                shas = sorted({f.image_sha256 for f in faces if f.image_sha256})
                known = (
                    "SELECT 1 FROM gallery_faces WHERE collection_id = ? AND image_sha256 IN ({in}) LIMIT 1"
                )
                if next(_rows_in(tx, known, shas, collection_id), None):
                    return []
            rows, templates = [], []
            default_image = str(uuid.uuid4())
            ordinals: Counter[tuple[str, str]] = Counter()  # (ExternalImageId, image) -> faces so far
            for f in faces:
                t = np.asarray(f.template, dtype=np.float32).reshape(-1)
                if t.shape[0] != col.dim:
                    raise ModelMismatch(
                        f"A template has {t.shape[0]} values but collection {collection_id!r} holds "
                        f"{col.dim}-value templates of model {col.model_version}."
                    )
                templates.append(t)
                face_id, image_id = f.face_id or str(uuid.uuid4()), f.image_id or default_image
                place = (f.external_image_id or "", image_id)
                subject = unclaimed_subject(face_id, f.external_image_id, ordinals[place])
                ordinals[place] += 1
                rows.append(
                    (
                        face_id,
                        collection_id,
                        f.external_image_id,
                        image_id,
                        f.image_sha256,
                        bbox_to_json(f.bbox),
                        float(f.confidence),
                        self._template_param(t),
                        col.dim,
                        model_version,
                        now,
                        subject,
                    )
                )
            tx.executemany(
                "INSERT INTO gallery_faces (face_id, collection_id, external_image_id, image_id, image_sha256, bbox,"
                " confidence, template, dim, model_version, indexed_at, subject)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._move_subjects(tx, collection_id, Counter(r[11] for r in rows))
            ids = [r[0] for r in rows]
            seq_of = {
                fid: int(seq)
                for seq, fid in _rows_in(
                    tx, "SELECT seq, face_id FROM gallery_faces WHERE face_id IN ({in})", ids
                )
            }
            generation = self._bump(tx, collection_id, len(rows))
        stored = [
            Face(
                face_id=r[0],
                collection_id=collection_id,
                external_image_id=r[2],
                image_id=r[3],
                image_sha256=r[4],
                bbox=json.loads(r[5]),
                confidence=r[6],
                model_version=model_version,
                user_id=None,
                indexed_at=now,
                seq=seq_of[r[0]],
                own_subject=r[11],
            )
            for r in rows
        ]
        self._committed(col, generation, [(f.seq, t) for f, t in zip(stored, templates)], [])
        return stored

    def _bump(self, tx: Tx, collection_id: str, face_delta: int) -> int:
        tx.execute(
            "UPDATE gallery_collections SET generation = generation + 1, face_count = face_count + ?"
            " WHERE collection_id = ?",
            (face_delta, collection_id),
        )
        return int(
            tx.scalar("SELECT generation FROM gallery_collections WHERE collection_id = ?", (collection_id,))
        )

    def _move_subjects(self, tx: Tx, collection_id: str, delta: Counter[str]) -> None:
        """Inside a writer's transaction (the collection's lock held): add ``delta[subject]`` faces
        to each subject (negative: faces gone), keeping the collection's subject counts."""
        delta = Counter({k: v for k, v in delta.items() if v})
        if not delta:
            return
        sql = "SELECT subject, faces FROM gallery_subjects WHERE collection_id = ? AND subject IN ({in})"
        have = {k: int(n) for k, n in _rows_in(tx, sql, sorted(delta), collection_id)}
        new, changed, gone = [], [], []
        subjects = users = 0
        for key, dv in delta.items():
            before = have.get(key, 0)
            after = max(0, before + dv)
            if before == 0 and after > 0:
                new.append((collection_id, key, after))
            elif before > 0 and after == 0:
                gone.append((collection_id, key))
            elif after != before:
                changed.append((after, collection_id, key))
            step = (after > 0) - (before > 0)
            subjects += step
            users += step if key.startswith("u:") else 0
        if new:
            tx.executemany(
                "INSERT INTO gallery_subjects (collection_id, subject, faces) VALUES (?, ?, ?)", new
            )
        if changed:
            tx.executemany(
                "UPDATE gallery_subjects SET faces = ? WHERE collection_id = ? AND subject = ?", changed
            )
        if gone:
            tx.executemany("DELETE FROM gallery_subjects WHERE collection_id = ? AND subject = ?", gone)
        if subjects or users:
            tx.execute(
                "UPDATE gallery_collections SET subject_count = subject_count + ?,"
                " active_user_count = active_user_count + ? WHERE collection_id = ?",
                (subjects, users, collection_id),
            )

    def user_templates(self, collection_id: str, user_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Each user's templates, ``(faces, dim)`` (biometric data: callers must not log or return them)."""
        sql = "SELECT user_id, template FROM gallery_faces WHERE collection_id = ? AND user_id IN ({in})"
        rows: dict[str, list[np.ndarray]] = {}
        with self.db.read() as tx:
            for uid, value in _rows_in(tx, sql, dict.fromkeys(user_ids), collection_id):
                rows.setdefault(uid, []).append(self._template_value(value))
        return {uid: np.stack(ts) for uid, ts in rows.items()}

    def subject_sizes(self, collection_id: str, subjects: Iterable[str]) -> dict[str, int]:
        """How many faces each of these subjects has in the collection (absent: none)."""
        sql = "SELECT subject, faces FROM gallery_subjects WHERE collection_id = ? AND subject IN ({in})"
        with self.db.read() as tx:
            return {k: int(n) for k, n in _rows_in(tx, sql, dict.fromkeys(subjects), collection_id)}

    def get_faces(self, collection_id: str, face_ids: Iterable[str], tx: Tx | None = None) -> dict[str, Face]:
        ids = list(dict.fromkeys(face_ids))
        out: dict[str, Face] = {}

        def run(t: Tx) -> None:
            sql = f"SELECT {FACE_COLS} FROM gallery_faces WHERE collection_id = ? AND face_id IN ({{in}})"
            for row in _rows_in(t, sql, ids, collection_id):
                out[row[1]] = _face(row)

        if tx is not None:
            run(tx)
        else:
            with self.db.read() as rtx:
                run(rtx)
        return out

    def _faces_by_seq(self, tx: Tx, seqs: Sequence[int]) -> dict[int, Face]:
        sql = f"SELECT {FACE_COLS} FROM gallery_faces WHERE seq IN ({{in}})"
        return {int(row[0]): _face(row) for row in _rows_in(tx, sql, seqs)}

    def list_faces(
        self,
        collection_id: str,
        after: str | None = None,
        limit: int = 1000,
        *,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> list[Face]:
        """Faces ordered by face id, starting after ``after`` (keyset pagination: each face once)."""
        where, params = ["collection_id = ?", "face_id > ?"], [collection_id, after or ""]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if face_ids is not None:
            if not face_ids:
                return []
            where.append(f"face_id IN ({_marks(len(face_ids))})")
            params.extend(face_ids)
        with self.db.read() as tx:
            self.get_collection(collection_id, tx)
            rows = tx.all(
                f"SELECT {FACE_COLS} FROM gallery_faces WHERE {' AND '.join(where)} ORDER BY face_id LIMIT ?",
                (*params, int(limit)),
            )
        return [_face(r) for r in rows]

    def delete_faces(
        self, collection_id: str, face_ids: Sequence[str], *, force: bool = False, tx: Tx | None = None
    ) -> tuple[list[str], dict[str, tuple[str, str | None]]]:
        """Delete faces; a face associated with a user is kept (and reported) unless ``force``.
        In the caller's ``tx`` when given (vector indexes then catch up on their next search)."""
        if tx is not None:
            self._lock(tx, collection_id)
            doomed, failed, _ = self._delete(tx, collection_id, face_ids, force)
            return [f.face_id for f in doomed], failed
        with self.db.transaction(lock=lock_name(collection_id)) as own:
            col = self.get_collection(collection_id, own)
            doomed, failed, generation = self._delete(own, collection_id, face_ids, force)
        if doomed:
            self._committed(col, generation, [], [f.seq for f in doomed])
        return [f.face_id for f in doomed], failed

    def _delete(
        self, tx: Tx, collection_id: str, face_ids: Sequence[str], force: bool
    ) -> tuple[list[Face], dict[str, tuple[str, str | None]], int]:
        self.get_collection(collection_id, tx)
        failed: dict[str, tuple[str, str | None]] = {}
        found = self.get_faces(collection_id, face_ids, tx)
        doomed: list[Face] = []
        for fid in dict.fromkeys(face_ids):
            face = found.get(fid)
            if face is None:
                failed[fid] = ("FACE_NOT_FOUND", None)
            elif face.user_id is not None and not force:
                failed[fid] = ("ASSOCIATED_TO_AN_EXISTING_USER", face.user_id)
            else:
                doomed.append(face)
        return doomed, failed, self._delete_rows(tx, collection_id, doomed)

    def _delete_rows(self, tx: Tx, collection_id: str, faces: Sequence[Face]) -> int:
        if not faces:
            return -1
        for part in _chunks([f.seq for f in faces]):
            tx.execute(f"DELETE FROM gallery_faces WHERE seq IN ({_marks(len(part))})", part)
        self._move_subjects(
            tx, collection_id, Counter({k: -n for k, n in Counter(f.subject for f in faces).items()})
        )
        users = {f.user_id for f in faces if f.user_id}
        for uid in users:
            self._refresh_user_status(tx, collection_id, uid)
        return self._bump(tx, collection_id, -len(faces))

    def templates(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Templates of the given faces (biometric data: callers must not log or return them)."""
        sql = "SELECT face_id, template FROM gallery_faces WHERE collection_id = ? AND face_id IN ({in})"
        with self.db.read() as tx:
            rows = _rows_in(tx, sql, dict.fromkeys(face_ids), collection_id)
            return {fid: self._template_value(value) for fid, value in rows}

    def count_faces(self, collection_id: str) -> int:
        return self.get_collection(collection_id).face_count

    def faces_of_image(self, collection_id: str, sha256: str) -> list[Face]:
        """The faces enrolled from the image with this SHA-256, in the order they were stored."""
        with self.db.read() as tx:
            rows = tx.all(
                f"SELECT {FACE_COLS} FROM gallery_faces WHERE collection_id = ? AND image_sha256 = ? ORDER BY seq",
                (collection_id, sha256),
            )
        return [_face(r) for r in rows]

    def has_image(self, collection_id: str, sha256: str) -> bool:
        with self.db.read() as tx:
            return (
                tx.one(
                    "SELECT 1 FROM gallery_faces WHERE collection_id = ? AND image_sha256 = ? LIMIT 1",
                    (collection_id, sha256),
                )
                is not None
            )

    def search(
        self, collection_id: str, probe: np.ndarray, k: int, *, exclude: Sequence[str] = ()
    ) -> list[Match]:
        """The ``k`` faces nearest to ``probe`` (by inner product of normalised templates), best first."""
        col = self.get_collection(collection_id)
        p = np.asarray(probe, dtype=np.float32).reshape(-1)
        if p.shape[0] != col.dim:
            raise ModelMismatch(
                f"The probe template has {p.shape[0]} values; collection {collection_id!r} holds {col.dim}-value "
                f"templates of model {col.model_version}."
            )
        if col.face_count == 0 or k <= 0:
            return []
        excluded = set(exclude)
        want = k + len(excluded)
        nearest = self._nearest(col, p, want)
        if not nearest:
            return []
        with self.db.read() as tx:
            faces = self._faces_by_seq(tx, [s for s, _ in nearest])
        out = []
        for seq, inner in nearest:
            face = faces.get(seq)  # None: deleted after the index answered
            if face is None or face.face_id in excluded or face.collection_id != collection_id:
                continue
            out.append(Match(face, float(inner)))
        out.sort(key=lambda m: -m.inner)
        return out[:k]

    # ---- users -------------------------------------------------------------------------------
    def create_user(self, collection_id: str, user_id: str) -> User:
        now = self.clock()
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            self.get_collection(collection_id, tx)
            if tx.one(
                "SELECT 1 FROM gallery_users WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            ):
                raise ResourceAlreadyExists(
                    f"User {user_id!r} already exists in collection {collection_id!r}."
                )
            tx.execute(
                "INSERT INTO gallery_users (collection_id, user_id, status, created_at) VALUES (?, ?, 'CREATED', ?)",
                (collection_id, user_id, now),
            )
        return User(collection_id, user_id, "CREATED", now, 0)

    def get_user(self, collection_id: str, user_id: str, tx: Tx | None = None) -> User:
        def run(t: Tx) -> User:
            self.get_collection(collection_id, t)
            row = t.one(
                "SELECT status, created_at FROM gallery_users WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            if row is None:
                raise ResourceNotFound(
                    f"User {user_id!r} does not exist in collection {collection_id!r}. Create it with CreateUser."
                )
            n = t.scalar(
                "SELECT COUNT(*) FROM gallery_faces WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            return User(collection_id, user_id, row[0], float(row[1]), int(n))

        if tx is not None:
            return run(tx)
        with self.db.read() as rtx:
            return run(rtx)

    def delete_user(self, collection_id: str, user_id: str) -> list[str]:
        """Delete a user; its faces stay in the collection, disassociated. Returns their ids."""
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            self.get_user(collection_id, user_id, tx)
            rows = tx.all(
                f"SELECT {FACE_COLS} FROM gallery_faces WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            freed = [_face(r) for r in rows]
            ids = [f.face_id for f in freed]
            tx.execute(
                "UPDATE gallery_faces SET user_id = NULL WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            self._move_subjects(tx, collection_id, _reassigned(freed, None))
            tx.execute(
                "DELETE FROM gallery_users WHERE collection_id = ? AND user_id = ?", (collection_id, user_id)
            )
        return ids

    def list_users(self, collection_id: str, after: str | None = None, limit: int = 100) -> list[User]:
        with self.db.read() as tx:
            self.get_collection(collection_id, tx)
            rows = tx.all(
                "SELECT user_id, status, created_at FROM gallery_users WHERE collection_id = ? AND user_id > ?"
                " ORDER BY user_id LIMIT ?",
                (collection_id, after or "", int(limit)),
            )
        return [User(collection_id, r[0], r[1], float(r[2])) for r in rows]

    def users_status(self, collection_id: str, user_ids: Iterable[str]) -> dict[str, str]:
        sql = "SELECT user_id, status FROM gallery_users WHERE collection_id = ? AND user_id IN ({in})"
        with self.db.read() as tx:
            return dict(_rows_in(tx, sql, dict.fromkeys(user_ids), collection_id))

    def count_users(self, collection_id: str) -> int:
        with self.db.read() as tx:
            return int(
                tx.scalar("SELECT COUNT(*) FROM gallery_users WHERE collection_id = ?", (collection_id,))
            )

    def _refresh_user_status(self, tx: Tx, collection_id: str, user_id: str) -> str:
        n = tx.scalar(
            "SELECT COUNT(*) FROM gallery_faces WHERE collection_id = ? AND user_id = ?",
            (collection_id, user_id),
        )
        status = "ACTIVE" if n else "CREATED"
        tx.execute(
            "UPDATE gallery_users SET status = ? WHERE collection_id = ? AND user_id = ?",
            (status, collection_id, user_id),
        )
        return status

    def associate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        limit: int = MAX_FACES_PER_USER,
        subject: str | None = None,
    ) -> Association:
        """Associate faces with a user. With ``subject``, every face of the user (those it has and
        those joining) must carry that ExternalImageId, checked in the same transaction as the
        update: otherwise nothing changes and AccessDenied (rule ``user_subject``) is raised."""
        result = Association()
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            user = self.get_user(collection_id, user_id, tx)
            found = self.get_faces(collection_id, face_ids, tx)
            if subject is not None:
                held = tx.all(
                    "SELECT DISTINCT external_image_id FROM gallery_faces WHERE collection_id = ? AND user_id = ?",
                    (collection_id, user_id),
                )
                others = {r[0] for r in held} | {f.external_image_id for f in found.values()}
                others.discard(subject)
                if others:
                    raise AccessDenied(
                        f"User {user_id!r} stands for one subject, {subject!r}; faces of another subject cannot "
                        "join it.",
                        "user_subject",
                    )
            new: list[str] = []
            for fid in dict.fromkeys(face_ids):
                face = found.get(fid)
                if face is None:
                    result.failed[fid] = ("FACE_NOT_FOUND", None)
                elif face.user_id is not None and face.user_id != user_id:
                    result.failed[fid] = ("ASSOCIATED_TO_A_DIFFERENT_USER", face.user_id)
                elif face.user_id == user_id:
                    result.associated.append(fid)
                else:
                    new.append(fid)
            if user.face_count + len(new) > limit:
                raise ServiceQuotaExceeded(
                    f"User {user_id!r} has {user.face_count} faces; associating {len(new)} more would exceed the "
                    f"limit of {limit} faces per user. Disassociate faces first."
                )
            for part in _chunks(new):
                tx.execute(
                    f"UPDATE gallery_faces SET user_id = ? WHERE collection_id = ? AND face_id IN ({_marks(len(part))})",
                    (user_id, collection_id, *part),
                )
            self._move_subjects(tx, collection_id, _reassigned([found[f] for f in new], user_id))
            result.associated.extend(new)
            result.status = self._refresh_user_status(tx, collection_id, user_id)
        return result

    def disassociate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str]) -> Association:
        result = Association()
        with self.db.transaction(lock=lock_name(collection_id)) as tx:
            self.get_user(collection_id, user_id, tx)
            found = self.get_faces(collection_id, face_ids, tx)
            mine: list[str] = []
            for fid in dict.fromkeys(face_ids):
                face = found.get(fid)
                if face is None:
                    result.failed[fid] = ("FACE_NOT_FOUND", None)
                elif face.user_id != user_id:
                    result.failed[fid] = ("ASSOCIATED_TO_A_DIFFERENT_USER", face.user_id)
                else:
                    mine.append(fid)
            for part in _chunks(mine):
                tx.execute(
                    f"UPDATE gallery_faces SET user_id = NULL WHERE collection_id = ? AND face_id IN ({_marks(len(part))})",
                    (collection_id, *part),
                )
            self._move_subjects(tx, collection_id, _reassigned([found[f] for f in mine], None))
            result.associated = mine
            result.status = self._refresh_user_status(tx, collection_id, user_id)
        return result

    # ---- data protection ---------------------------------------------------------------------
    def erase_faces(
        self,
        collection_id: str | None = None,
        *,
        external_image_id: str | None = None,
        user_id: str | None = None,
        tx: Tx | None = None,
    ) -> list[str]:
        """Erase a data subject's faces: by ``external_image_id`` and/or ``user_id`` (and with a
        ``user_id`` the user record too; a user left without faces by the erasure held only the
        subject's faces, and goes as well), in one collection or in all. Returns the removed face ids.

        All of it happens in one transaction: the caller's ``tx`` when given (so that, e.g., the audit
        record of the erasure commits with it), else a new one. Vector indexes follow.
        """
        if external_image_id is None and user_id is None:
            raise InvalidInput(
                "Erasure needs an external image id or a user id; refusing to erase everything."
            )
        if tx is not None:
            return self._erase(tx, collection_id, external_image_id, user_id)
        with self.db.transaction(lock=lock_name(collection_id) if collection_id else "gallery:*") as own:
            removed = self._erase(own, collection_id, external_image_id, user_id)
        return removed

    def _erase(
        self, tx: Tx, collection_id: str | None, external_image_id: str | None, user_id: str | None
    ) -> list[str]:
        where, params = [], []
        if collection_id is not None:
            where.append("collection_id = ?")
            params.append(collection_id)
        subject = []
        if external_image_id is not None:
            subject.append("external_image_id = ?")
            params.append(external_image_id)
        if user_id is not None:
            subject.append("user_id = ?")
            params.append(user_id)
        where.append("(" + " OR ".join(subject) + ")")
        sql_where = " AND ".join(where)
        collections = sorted(
            {
                r[0]
                for r in tx.all(f"SELECT DISTINCT collection_id FROM gallery_faces WHERE {sql_where}", params)
            }
        )
        if user_id is not None:
            ucond = "user_id = ?" + (" AND collection_id = ?" if collection_id is not None else "")
            uparams = [user_id] + ([collection_id] if collection_id is not None else [])
            collections = sorted(
                set(collections)
                | {r[0] for r in tx.all(f"SELECT collection_id FROM gallery_users WHERE {ucond}", uparams)}
            )
        removed: list[str] = []
        for cid in collections:
            self._lock(tx, cid)
            rows = tx.all(
                f"SELECT {FACE_COLS} FROM gallery_faces WHERE collection_id = ? AND {where[-1]}",
                (cid, *params[1 if collection_id is not None else 0 :]),
            )
            faces = [_face(r) for r in rows]
            for part in _chunks([f.seq for f in faces]):
                tx.execute(f"DELETE FROM gallery_faces WHERE seq IN ({_marks(len(part))})", part)
            if faces:
                self._move_subjects(
                    tx, cid, Counter({k: -n for k, n in Counter(f.subject for f in faces).items()})
                )
                self._bump(tx, cid, -len(faces))
            if user_id is not None:
                tx.execute(
                    "DELETE FROM gallery_users WHERE collection_id = ? AND user_id = ?", (cid, user_id)
                )
            for other in {f.user_id for f in faces if f.user_id and f.user_id != user_id}:
                if self._refresh_user_status(tx, cid, other) == "CREATED":  # it held only these faces
                    tx.execute(
                        "DELETE FROM gallery_users WHERE collection_id = ? AND user_id = ?", (cid, other)
                    )
            removed.extend(f.face_id for f in faces)
        # Indexes notice the generation change and reconcile with the store on their next search.
        return removed

    def purge_before(self, collection_id: str, cutoff: float, *, tx: Tx | None = None) -> list[str]:
        """Delete the collection's faces indexed before ``cutoff`` (epoch seconds): retention."""

        def run(t: Tx) -> list[str]:
            self._lock(t, collection_id)
            rows = t.all(
                f"SELECT {FACE_COLS} FROM gallery_faces WHERE collection_id = ? AND indexed_at < ?",
                (collection_id, float(cutoff)),
            )
            faces = [_face(r) for r in rows]
            if faces:
                self._delete_rows(t, collection_id, faces)
            return [f.face_id for f in faces]

        if tx is not None:
            return run(tx)
        with self.db.transaction(lock=lock_name(collection_id)) as own:
            return run(own)

    # ---- index upkeep (backends with an external index override these) -----------------------
    def sync_index(self, collection_id: str) -> None:
        self.get_collection(collection_id)

    def index_face_ids(self, collection_id: str) -> set[str]:
        """The face ids the vector index would return for this collection."""
        with self.db.read() as tx:
            return {
                r[0]
                for r in tx.all("SELECT face_id FROM gallery_faces WHERE collection_id = ?", (collection_id,))
            }

    def store_face_ids(self, collection_id: str) -> set[str]:
        with self.db.read() as tx:
            return {
                r[0]
                for r in tx.all("SELECT face_id FROM gallery_faces WHERE collection_id = ?", (collection_id,))
            }

    def close(self) -> None:
        pass

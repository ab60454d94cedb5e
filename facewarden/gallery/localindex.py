"""Search through an in-process vector index kept in step with the database.

The database is the truth; the index (:class:`~facewarden.gallery.vindex.VectorIndex`, exact or
FAISS IVF, saved under ``data_dir/index/``) is a cache of it. Every write to a collection's faces
bumps the collection's ``generation`` in the same transaction. After its own commits a process
updates its index in place (when no other writer came between); before every search it compares the
index's generation with the database's and, when they differ (another process wrote, a crash lost
the index file, the file is old), reconciles: it adds the faces the index lacks and drops those the
store no longer has, and retrains only when the collection has doubled or halved since training.

The SQLite backend always searches this way; the PostgreSQL backend can (exact recall at a million
faces, where pgvector's HNSW falls short), at the cost of the index's memory in every process.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..db import Database, Tx
from ..errors import ResourceNotFound
from .sql import CHUNK, SqlStore, _chunks, _marks, _rows_in
from .store import Collection
from .vindex import VectorIndex

#: Above this many templates missing from an index, one pass over the collection reads them.
_SCAN_OVER = 20 * CHUNK


class LocalIndexStore(SqlStore):
    """An :class:`SqlStore` whose nearest-neighbour search runs on in-process vector indexes."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(db, settings)
        #: where the indexes are saved: ``<data_dir>/index``
        self.index_dir = Path(settings.data_dir) / "index"
        self.index_ann_threshold = settings.gallery_ann_threshold  # exact below, FAISS IVF above
        self._indexes: dict[str, VectorIndex] = {}
        self._guard = threading.Lock()

    def _template_matrix(self, values: list[Any], dim: int) -> np.ndarray:
        """Templates as read from the database -> an ``(n, dim)`` float32 matrix."""
        return (
            np.stack([self._template_value(v) for v in values]) if values else np.zeros((0, dim), np.float32)
        )

    # ---- the index ---------------------------------------------------------------------------
    def index_path(self, collection_id: str) -> Path:
        return self.index_dir / (hashlib.sha256(collection_id.encode()).hexdigest()[:32] + ".npz")

    def _index(self, col: Collection) -> VectorIndex:
        with self._guard:
            idx = self._indexes.get(col.collection_id)
            if idx is None or idx.uid != col.uid or idx.dim != col.dim:
                idx = VectorIndex.load(
                    self.index_path(col.collection_id), ann_threshold=self.index_ann_threshold
                )
                if idx is None or idx.uid != col.uid or idx.dim != col.dim:
                    idx = VectorIndex(col.dim, col.uid, ann_threshold=self.index_ann_threshold)
                self._indexes[col.collection_id] = idx
            return idx

    def _save_due(self, idx: VectorIndex) -> bool:
        return idx.mode == "ivf" and idx.changes_since_save >= max(5000, len(idx) // 10)

    def _sync(self, col: Collection, idx: VectorIndex) -> None:
        """Bring ``idx`` (lock held) to the store's current generation."""
        if idx.generation == col.generation and not idx.needs_rebuild():
            return
        rebuilt = False
        with self.db.read(snapshot=True) as tx:  # the generation and the rows it counts agree
            gen = tx.scalar(
                "SELECT generation FROM gallery_collections WHERE collection_id = ? AND uid = ?",
                (col.collection_id, col.uid),
            )
            if gen is None:
                raise ResourceNotFound(f"Collection {col.collection_id!r} was deleted.")
            gen = int(gen)
            if gen == idx.generation and not idx.needs_rebuild():
                return
            seqs = np.concatenate(
                [np.zeros(0, np.int64)]
                + [
                    np.fromiter((r[0] for r in batch), np.int64, len(batch))
                    for batch in tx.stream(
                        "SELECT seq FROM gallery_faces WHERE collection_id = ?", (col.collection_id,)
                    )
                ]
            )
            live = idx.live_ids()
            missing = np.setdiff1d(seqs, live)
            extra = np.setdiff1d(live, seqs)
            every = ("SELECT seq, template FROM gallery_faces WHERE collection_id = ?", (col.collection_id,))
            if idx.generation >= 0 and not idx.needs_rebuild():
                # Reconcile in place (a saved index stays trained): read only what changed.
                idx.remove(extra)
                if len(missing) > _SCAN_OVER:  # one pass over the collection beats thousands of IN lists
                    idx.add(*self._read_templates(tx, *every, col.dim, len(missing), only=missing))
                else:
                    for part in _chunks([int(s) for s in missing]):
                        sql = f"SELECT seq, template FROM gallery_faces WHERE seq IN ({_marks(len(part))})"
                        idx.add(*self._read_templates(tx, sql, part, col.dim, len(part)))
            if idx.generation < 0 or idx.needs_rebuild():
                ids, mat = self._read_templates(tx, *every, col.dim, len(seqs))
                idx.rebuild(ids, mat)
                del mat
                # needs_rebuild() may still say yes for a collection shrunk below the threshold: exact now.
                rebuilt = True
            idx.generation = gen
        if idx.mode == "ivf" and (rebuilt or self._save_due(idx)):
            idx.save(self.index_path(col.collection_id))

    def _nearest(self, col: Collection, probe: np.ndarray, k: int) -> list[tuple[int, float]]:
        idx = self._index(col)
        with idx.lock:
            self._sync(col, idx)
            return idx.search(probe, k)

    def _committed(
        self, col: Collection, generation: int, added: list[tuple[int, np.ndarray]], removed: list[int]
    ) -> None:
        idx = self._indexes.get(col.collection_id)
        if idx is None or idx.uid != col.uid:
            return  # not loaded in this process: the next search loads and reconciles
        with idx.lock:
            if idx.generation != generation - 1:
                return  # another writer came between: stale, reconciled on the next search
            idx.remove(np.asarray(removed, np.int64))
            if added:
                idx.add(np.asarray([s for s, _ in added], np.int64), np.stack([t for _, t in added]))
            idx.generation = generation
            if self._save_due(idx):
                idx.save(self.index_path(col.collection_id))

    def _dropped(self, collection_id: str) -> None:
        with self._guard:
            self._indexes.pop(collection_id, None)
        try:
            self.index_path(collection_id).unlink()
        except FileNotFoundError:
            pass

    # ---- upkeep ------------------------------------------------------------------------------
    def sync_index(self, collection_id: str) -> None:
        col = self.get_collection(collection_id)
        idx = self._index(col)
        with idx.lock:
            self._sync(col, idx)

    def index_face_ids(self, collection_id: str) -> set[str]:
        """The face ids this process's index holds once brought up to date, as every search does
        first (ids the store lacks would show as ``seq:N``)."""
        col = self.get_collection(collection_id)
        idx = self._index(col)
        with idx.lock:
            self._sync(col, idx)
            live = [int(s) for s in idx.live_ids()]
        with self.db.read() as tx:
            sql = "SELECT seq, face_id FROM gallery_faces WHERE seq IN ({in})"
            found = {int(seq): fid for seq, fid in _rows_in(tx, sql, live)}
        return {found.get(s, f"seq:{s}") for s in live}

    def index_info(self, collection_id: str) -> dict[str, Any]:
        col = self.get_collection(collection_id)
        idx = self._index(col)
        return {
            "mode": idx.mode,
            "size": len(idx),
            "generation": idx.generation,
            "store_generation": col.generation,
        }

    def close(self) -> None:
        with self._guard:
            indexes = list(self._indexes.items())
        for cid, idx in indexes:
            with idx.lock:
                if idx.mode == "ivf" and idx.changes_since_save:
                    try:
                        idx.save(self.index_path(cid))
                    except OSError:
                        pass

    def _read_templates(
        self, tx: Tx, sql: str, params: Sequence[Any], dim: int, expected: int, only: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(seqs, templates)`` of the ``(seq, template)`` rows ``sql`` selects (those with a seq in
        ``only``, if given), read a batch at a time into arrays sized up front: a million templates
        never exist as Python objects all at once, which would cost the process more memory (kept by
        the allocator) than the index itself."""
        ids = np.empty(expected, np.int64)
        mat = np.empty((expected, dim), np.float32)
        n = 0
        for batch in tx.stream(sql, params):
            seqs = np.fromiter((r[0] for r in batch), np.int64, len(batch))
            rows = np.arange(len(batch)) if only is None else np.flatnonzero(np.isin(seqs, only))
            k = n + len(rows)
            if k > len(ids):  # rows added since they were counted: grow
                cap = max(k, 2 * len(ids))
                ids = np.concatenate([ids[:n], np.empty(cap - n, np.int64)])
                mat = np.concatenate([mat[:n], np.empty((cap - n, dim), np.float32)])
            ids[n:k] = seqs[rows]
            mat[n:k] = self._template_matrix([batch[i][1] for i in rows], dim)
            n = k
        return ids[:n], mat[:n]

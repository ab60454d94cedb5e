"""The PostgreSQL gallery: templates in a pgvector column, searched in the database.

Several service processes (and machines) share one database; there is no index outside it, so
nothing can go stale. The ``template`` column is ``vector`` (any dimension, so that collections of
different models share the table) with one partial HNSW index per dimension on
``template::vector(<dim>)`` with ``vector_ip_ops`` (the 128-D index of the default model is created
by migration; others when the first collection of that dimension is created).

pgvector 0.6 filters HNSW results *after* the index scan (no iterative scans), which loses matches
when the searched collection is a small part of the table. So a search uses the HNSW index only when
the collection is large (``>= ann_threshold`` faces) and makes up a good share of the faces of its
dimension; otherwise it is an exact scan of the collection's rows (via the collection index).

HNSW's recall falls with size (bench/bench_pgvector.py: 0.99 at 100,000 synthetic templates, 0.78
at a million). ``FACEWARDEN_GALLERY_PG_SEARCH=local`` searches through the same in-process index the
SQLite backend uses instead (:mod:`facewarden.gallery.localindex`): every process keeps the
collections it searches in memory (about 750 bytes a face), kept in step with the database by
generation, as exact as FAISS IVF at a million faces. The database stays the only truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..db import Database
from ..errors import InvalidInput
from .localindex import LocalIndexStore
from .sql import SqlStore
from .store import Collection, register_backend

DEFAULT_ANN_THRESHOLD = 20_000
#: How a search finds the nearest templates: pgvector's HNSW in the database, or an in-process index.
SEARCH_MODES = ("hnsw", "local")

MIGRATIONS = [
    """
    CREATE TABLE gallery_collections (
        collection_id TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        model_version TEXT NOT NULL,
        dim INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        consent_mode TEXT NOT NULL DEFAULT 'required',
        retention_days INTEGER NOT NULL DEFAULT 365,
        owner_org TEXT NULL,
        uid TEXT NOT NULL,
        generation BIGINT NOT NULL DEFAULT 0,
        face_count BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE gallery_faces (
        seq BIGSERIAL PRIMARY KEY,
        face_id TEXT NOT NULL UNIQUE,
        collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
        external_image_id TEXT NULL,
        image_id TEXT NOT NULL,
        image_sha256 TEXT NULL,
        bbox TEXT NOT NULL,
        confidence DOUBLE PRECISION NOT NULL,
        template vector NOT NULL,
        dim INTEGER NOT NULL,
        model_version TEXT NOT NULL,
        user_id TEXT NULL,
        indexed_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX gallery_faces_by_collection ON gallery_faces (collection_id, face_id);
    CREATE INDEX gallery_faces_by_external ON gallery_faces (collection_id, external_image_id);
    CREATE INDEX gallery_faces_by_user ON gallery_faces (collection_id, user_id);
    CREATE INDEX gallery_faces_by_image ON gallery_faces (collection_id, image_sha256);
    CREATE INDEX gallery_faces_by_time ON gallery_faces (collection_id, indexed_at);
    CREATE INDEX gallery_faces_hnsw_128 ON gallery_faces
        USING hnsw ((template::vector(128)) vector_ip_ops) WITH (m = 16, ef_construction = 64)
        WHERE dim = 128;
    CREATE TABLE gallery_users (
        collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (collection_id, user_id)
    );
    """,
]


class PostgresStore(SqlStore):
    """Searched by pgvector's HNSW index in the database (the default search mode)."""

    dialect = "postgresql"

    def __init__(self, db: Database, settings: Any = None, *, ann_threshold: int | None = None) -> None:
        super().__init__(db, settings)
        self.ann_threshold = int(
            ann_threshold
            or getattr(settings, "gallery_ann_threshold", 0)
            or os.environ.get("FACEWARDEN_GALLERY_PG_ANN_THRESHOLD", DEFAULT_ANN_THRESHOLD)
        )
        # HNSW candidate list per query. Measured at 100,000 synthetic templates (bench/): 100 gave
        # recall@1 0.925 (p99 3.5 ms), 200 gave 0.99 (p99 7.7 ms), 400 gave 1.0 (p99 12 ms).
        self.ef_search = int(os.environ.get("FACEWARDEN_GALLERY_PG_EF_SEARCH", 200))
        self._dims_indexed: set[int] = {128}

    def migrations(self) -> list[Any]:
        return MIGRATIONS

    def _template_param(self, template: np.ndarray) -> Any:
        from pgvector import Vector

        return Vector(np.asarray(template, dtype=np.float32))

    def _template_value(self, value: Any) -> np.ndarray:
        if hasattr(value, "to_numpy"):
            value = value.to_numpy()
        return np.asarray(value, dtype=np.float32)

    def create_collection(self, collection_id: str, model_version: str, dim: int, **kw: Any) -> Collection:
        self._ensure_dim_index(int(dim))
        return super().create_collection(collection_id, model_version, dim, **kw)

    def _ensure_dim_index(self, dim: int) -> None:
        if dim in self._dims_indexed:
            return
        with self.db.transaction(lock="migrations") as tx:
            tx.execute(
                f"CREATE INDEX IF NOT EXISTS gallery_faces_hnsw_{dim} ON gallery_faces"
                f" USING hnsw ((template::vector({dim})) vector_ip_ops) WITH (m = 16, ef_construction = 64)"
                f" WHERE dim = {dim}"
            )
        self._dims_indexed.add(dim)

    # ---- search ----------------------------------------------------------------------------
    def index_info(self, collection_id: str) -> dict[str, Any]:
        col = self.get_collection(collection_id)
        mode = "hnsw" if col.face_count >= self.ann_threshold else "exact"
        return {
            "mode": mode,
            "size": col.face_count,
            "generation": col.generation,
            "store_generation": col.generation,
        }

    def _nearest(self, col: Collection, probe: np.ndarray, k: int) -> list[tuple[int, float]]:
        from pgvector import Vector

        dim = int(col.dim)
        vec = Vector(np.asarray(probe, dtype=np.float32))
        with self.db.read() as tx:
            use_ann = False
            if col.face_count >= self.ann_threshold:
                total = tx.scalar(
                    "SELECT face_count FROM gallery_collections WHERE collection_id = ?", (col.collection_id,)
                )
                all_dim = tx.scalar(
                    "SELECT COALESCE(SUM(face_count), 0) FROM gallery_collections WHERE dim = ?", (dim,)
                )
                use_ann = total is not None and float(total) >= 0.5 * float(all_dim or 1)
            if use_ann:
                ef = int(min(1000, max(self.ef_search, 2 * k)))
                tx.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                rows = tx.all(
                    f"SELECT seq, (template::vector({dim}) <#> ?::vector({dim})) AS nip FROM gallery_faces"
                    f" WHERE dim = {dim} AND collection_id = ? ORDER BY template::vector({dim}) <#> ?::vector({dim})"
                    " LIMIT ?",
                    (vec, col.collection_id, vec, int(k)),
                )
            else:
                # Exact: the planner walks the collection's rows; the distance expression deliberately
                # differs from the HNSW index expression so that index is not used (post-filtering).
                rows = tx.all(
                    "SELECT seq, (template <#> ?) AS nip FROM gallery_faces WHERE collection_id = ?"
                    " ORDER BY nip LIMIT ?",
                    (vec, col.collection_id, int(k)),
                )
        # <#> is the *negative* inner product.
        return [(int(seq), -float(nip)) for seq, nip in rows]


class LocalPostgresStore(LocalIndexStore, PostgresStore):
    """Searched through each process's in-process index (``FACEWARDEN_GALLERY_PG_SEARCH=local``);
    everything else as :class:`PostgresStore`."""

    def __init__(self, db: Database, settings: Any = None, *, index_dir: str | Path | None = None) -> None:
        super().__init__(db, settings, index_dir=index_dir)


def open_postgres(db: Database, settings: Any = None, search: str | None = None) -> PostgresStore:
    """The PostgreSQL store in the search mode asked for (default: ``FACEWARDEN_GALLERY_PG_SEARCH``)."""
    mode = (search or os.environ.get("FACEWARDEN_GALLERY_PG_SEARCH") or "hnsw").lower()
    if mode not in SEARCH_MODES:
        raise InvalidInput(
            f"FACEWARDEN_GALLERY_PG_SEARCH must be one of {', '.join(SEARCH_MODES)}, not {mode!r}."
        )
    return LocalPostgresStore(db, settings) if mode == "local" else PostgresStore(db, settings)


register_backend("postgresql", open_postgres)

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
at a million). ``FACEWARDEN_GALLERY_PG_SEARCH=local`` (:attr:`Settings.gallery_pg_search
<facewarden.config.Settings.gallery_pg_search>`) searches through the same in-process index the
SQLite backend uses instead (:mod:`facewarden.gallery.localindex`): every process keeps the
collections it searches in memory (about 750 bytes a face), kept in step with the database by
generation, as exact as FAISS IVF at a million faces. The database stays the only truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import Settings
from ..db import Database
from ..errors import InvalidInput
from .localindex import LocalIndexStore
from .sql import SqlStore
from .store import Collection, register_backend

#: How a search finds the nearest templates: pgvector's HNSW in the database, or an in-process index.
SEARCH_MODES = ("hnsw", "local")


def _hnsw_index(dim: int) -> str:
    """The partial HNSW index over the templates of one dimension."""
    return (
        f"CREATE INDEX IF NOT EXISTS gallery_faces_hnsw_{dim} ON gallery_faces"
        f" USING hnsw ((template::vector({dim})) vector_ip_ops) WITH (m = 16, ef_construction = 64)"
        f" WHERE dim = {dim}"
    )


class PostgresStore(SqlStore):
    """Searched by pgvector's HNSW index in the database (the default search mode)."""

    # The 128-D index of the default model comes with the tables; others with their first collection.
    schema_extra = _hnsw_index(128) + ";\n"

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(db, settings)
        self.ann_threshold = settings.gallery_pg_ann_threshold
        self.ef_search = settings.gallery_pg_ef_search  # HNSW candidate list per query
        self._dims_indexed: set[int] = {128}

    def _template_param(self, template: np.ndarray) -> Any:
        from pgvector import Vector

        return Vector(np.asarray(template, dtype=np.float32))

    def _template_value(self, value: Any) -> np.ndarray:
        return np.asarray(value.to_numpy(), dtype=np.float32)  # a pgvector Vector (register_vector)

    def create_collection(self, collection_id: str, model_version: str, dim: int, **kw: Any) -> Collection:
        self._ensure_dim_index(int(dim))
        return super().create_collection(collection_id, model_version, dim, **kw)

    def _ensure_dim_index(self, dim: int) -> None:
        if dim in self._dims_indexed:
            return
        with self.db.transaction(lock="migrations") as tx:
            tx.execute(_hnsw_index(dim))
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
    """Searched through each process's in-process index (``gallery_pg_search = "local"``);
    everything else as :class:`PostgresStore`."""


def open_postgres(db: Database, settings: Settings) -> PostgresStore:
    """The PostgreSQL store in the search mode of ``settings.gallery_pg_search``."""
    mode = (settings.gallery_pg_search or "hnsw").lower()
    if mode not in SEARCH_MODES:
        raise InvalidInput(
            f"FACEWARDEN_GALLERY_PG_SEARCH must be one of {', '.join(SEARCH_MODES)}, not {mode!r}."
        )
    return LocalPostgresStore(db, settings) if mode == "local" else PostgresStore(db, settings)


register_backend("postgresql", open_postgres)
register_backend("postgres", open_postgres)

"""The SQLite gallery: templates as float32 blobs, searched through an in-process vector index
(:mod:`facewarden.gallery.localindex`, kept in step with the database by generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..db import Database
from .localindex import LocalIndexStore
from .store import register_backend

MIGRATIONS = [
    """
    CREATE TABLE gallery_collections (
        collection_id TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        model_version TEXT NOT NULL,
        dim INTEGER NOT NULL,
        created_at REAL NOT NULL,
        consent_mode TEXT NOT NULL DEFAULT 'required',
        retention_days INTEGER NOT NULL DEFAULT 365,
        owner_org TEXT NULL,
        uid TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        face_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE gallery_faces (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        face_id TEXT NOT NULL UNIQUE,
        collection_id TEXT NOT NULL REFERENCES gallery_collections(collection_id) ON DELETE CASCADE,
        external_image_id TEXT NULL,
        image_id TEXT NOT NULL,
        image_sha256 TEXT NULL,
        bbox TEXT NOT NULL,
        confidence REAL NOT NULL,
        template BLOB NOT NULL,
        dim INTEGER NOT NULL,
        model_version TEXT NOT NULL,
        user_id TEXT NULL,
        indexed_at REAL NOT NULL
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
        created_at REAL NOT NULL,
        PRIMARY KEY (collection_id, user_id)
    );
    """,
]


class SqliteStore(LocalIndexStore):
    dialect = "sqlite"

    def __init__(
        self,
        db: Database,
        settings: Any = None,
        *,
        index_dir: str | Path | None = None,
        ann_threshold: int | None = None,
    ) -> None:
        super().__init__(db, settings, index_dir=index_dir, index_ann_threshold=ann_threshold)

    def migrations(self) -> list[Any]:
        return MIGRATIONS

    def _template_param(self, template: np.ndarray) -> Any:
        return np.asarray(template, dtype="<f4").tobytes()

    def _template_value(self, value: Any) -> np.ndarray:
        return np.frombuffer(value, dtype="<f4").astype(np.float32)

    def _template_matrix(self, values: list[Any], dim: int) -> np.ndarray:
        return np.frombuffer(b"".join(values), "<f4").reshape(len(values), dim)


register_backend("sqlite", lambda db, settings: SqliteStore(db, settings))

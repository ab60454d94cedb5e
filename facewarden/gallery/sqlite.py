"""The SQLite gallery: templates as float32 blobs, searched through an in-process vector index
(:mod:`facewarden.gallery.localindex`, kept in step with the database by generation)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .localindex import LocalIndexStore
from .store import register_backend


class SqliteStore(LocalIndexStore):
    def _template_param(self, template: np.ndarray) -> Any:
        return np.asarray(template, dtype="<f4").tobytes()

    def _template_value(self, value: Any) -> np.ndarray:
        return np.frombuffer(value, dtype="<f4").astype(np.float32)

    def _template_matrix(self, values: list[Any], dim: int) -> np.ndarray:
        return np.frombuffer(b"".join(values), "<f4").reshape(len(values), dim)


register_backend("sqlite", SqliteStore)

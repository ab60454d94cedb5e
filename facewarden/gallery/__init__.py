"""The gallery: collections, faces and users (subjects), persisted and searchable.

Open it with :func:`open_store` (the database URL's scheme picks the backend); the service's
gallery operations (``facewarden.service.gallery``) are its only users besides policy (erasure,
retention) and the CLI (``facewarden.gallery.indexing``).
"""

from .store import (
    MAX_FACES_PER_USER,
    Association,
    Collection,
    Face,
    Match,
    NewFace,
    Store,
    User,
    open_store,
    register_backend,
)

__all__ = [
    "MAX_FACES_PER_USER",
    "Association",
    "Collection",
    "Face",
    "Match",
    "NewFace",
    "Store",
    "User",
    "open_store",
    "register_backend",
]

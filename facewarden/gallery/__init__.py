"""The gallery: collections, faces and users (subjects), persisted and searchable.

Open it with :func:`open_store` (the database URL's scheme picks the backend); the service's
operations (``facewarden.service``) are its only users. :func:`~facewarden.gallery.cluster.cluster_faces`
groups templates by person.
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
    backend_schemes,
    open_store,
    register_backend,
)

# The built-in backends register their URL schemes when imported.
from . import postgres, sqlite  # noqa: F401

__all__ = [
    "MAX_FACES_PER_USER",
    "Association",
    "Collection",
    "Face",
    "Match",
    "NewFace",
    "Store",
    "User",
    "backend_schemes",
    "open_store",
    "register_backend",
]

"""facewarden: self-hosted face recognition with the moratorium and its safeguards in code.

The Python API is a thin facade over the same service the CLI and the HTTP API use, acting as the
installation's owner (or as another key's principal), so policy and audit apply to it too. The
module-level functions use the installation in ``FACEWARDEN_DATA_DIR`` (as ``FACEWARDEN_KEY``'s
principal if that is set, else as the owner), opened on first use::

    import facewarden

    result = facewarden.compare("me.jpg", "passport.jpg")   # CompareFaces, with .match, .similarity
    faces = facewarden.detect("group.jpg")                   # DetectFaces' FaceDetails
    hits = facewarden.search("me.jpg", "family")             # SearchFacesByImage's response

An installation of your choice, as a given key::

    with facewarden.open("~/faces", key_id="FW...") as fw:
        fw.compare("me.jpg", "passport.jpg")
        fw.call("ListCollections", {})                       # any operation, Rekognition's shapes

    from facewarden.service.gallery import SearchFacesByImageRequest, search_faces_by_image
    hits = fw.execute(search_faces_by_image, SearchFacesByImageRequest("family", fw.image("me.jpg")))
    hits.face_matches                                        # typed result
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Settings
from .errors import FacewardenError

if TYPE_CHECKING:  # pragma: no cover
    from .service import Operation
    from .service.params import Image

__all__ = [
    "Comparison",
    "Facewarden",
    "FacewardenError",
    "Settings",
    "compare",
    "default",
    "detect",
    "open",
    "search",
]
__version__ = "0.1.0"

ImageLike = str | Path | bytes
Req = TypeVar("Req")
Res = TypeVar("Res")


class Comparison(dict[str, Any]):
    """CompareFaces' response (a dict in Rekognition's shape) with three shortcuts."""

    @property
    def match(self) -> bool:
        """Is the largest face of the source image among the target's faces (at the threshold)?"""
        return bool(self.get("FaceMatches"))

    @property
    def similarity(self) -> float | None:
        """The best match's calibrated similarity (0-100), or None without a match."""
        matches = self.get("FaceMatches") or []
        return max((float(m["Similarity"]) for m in matches), default=None)

    @property
    def threshold(self) -> float:
        """The similarity threshold that was applied (policy may raise the requested one)."""
        return float((self.get("AppliedThreshold") or {}).get("Similarity", 0.0))


class Facewarden:
    """One service and one principal; every method is one audited operation."""

    def __init__(self, settings: Settings, key_id: str | None = None) -> None:
        from .service import Service

        self.service = Service(settings)
        # An unknown key acts as nobody: policy refuses every call (and the audit log says so).
        self.principal = self.service.principal_for_key(key_id) if key_id else self.service.owner_principal()

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Any operation on a Rekognition-shaped request, e.g. ``call("ListCollections", {})``."""
        return self.service.call(operation, request, self.principal)

    def execute(self, op: Operation[Req, Res], request: Req) -> Res:
        """Any operation on its typed request; the typed result."""
        return self.service.execute(op, request, self.principal)

    def image(self, image: ImageLike) -> Image:
        """An image for a typed request: a path or the encoded bytes."""
        from .media import images
        from .service.params import Image

        if isinstance(image, (bytes, bytearray)):
            return Image(bytes(image))
        return Image(images.read_bytes(Path(image).expanduser()))

    def detect(self, image: ImageLike, attributes: str = "DEFAULT") -> list[dict[str, Any]]:
        """DetectFaces' FaceDetails for ``image``."""
        from .service.faces import DetectFacesRequest, detect_faces

        return self.execute(detect_faces, DetectFacesRequest(self.image(image), attributes)).face_details

    def compare(self, source: ImageLike, target: ImageLike, threshold: float = 80.0) -> Comparison:
        """CompareFaces' response (in Rekognition's shape) for the largest face of ``source``, with
        ``.match``, ``.similarity`` and ``.threshold``."""
        from .service.faces import CompareFacesRequest, compare_faces
        from .service.params import to_wire

        request = CompareFacesRequest(self.image(source), self.image(target), threshold)
        return Comparison(to_wire(self.execute(compare_faces, request)))

    def search(
        self, image: ImageLike, collection_id: str, threshold: float | None = None, max_faces: int = 80
    ) -> dict[str, Any]:
        """SearchFacesByImage's response (in Rekognition's shape, with AppliedThreshold)."""
        from .service.gallery import SearchFacesByImageRequest, search_faces_by_image
        from .service.params import to_wire

        request = SearchFacesByImageRequest(collection_id, self.image(image), max_faces, threshold)
        result: dict[str, Any] = to_wire(self.execute(search_faces_by_image, request))
        return result

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> Facewarden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(data_dir: str | Path | None = None, *, key_id: str | None = None, **settings: Any) -> Facewarden:
    """Open the installation in ``data_dir`` (default: ``FACEWARDEN_DATA_DIR``) as its owner or ``key_id``."""
    return Facewarden(Settings.from_env(data_dir=data_dir, **settings), key_id)


# ---- module-level convenience: one installation per process, opened on first use ------------------
_default: Facewarden | None = None
_default_lock = threading.Lock()


def default() -> Facewarden:
    """The installation the module-level functions use: ``FACEWARDEN_DATA_DIR``, as the principal of
    ``FACEWARDEN_KEY`` if set, else as the owner. Opened once per process, closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            import atexit

            settings = Settings.from_env()
            _default = Facewarden(settings, settings.key or None)
            atexit.register(_default.close)
        return _default


def detect(image: ImageLike, attributes: str = "DEFAULT") -> list[dict[str, Any]]:
    """DetectFaces' FaceDetails for ``image`` (a path or the encoded bytes)."""
    return default().detect(image, attributes)


def compare(source: ImageLike, target: ImageLike, threshold: float = 80.0) -> Comparison:
    """Is the largest face of ``source`` among the faces of ``target``? CompareFaces' response with
    ``.match``, ``.similarity`` and ``.threshold``."""
    return default().compare(source, target, threshold)


def search(image: ImageLike, collection_id: str, threshold: float | None = None) -> dict[str, Any]:
    """Who, in ``collection_id``, is the largest face of ``image``? SearchFacesByImage's response."""
    return default().search(image, collection_id, threshold)

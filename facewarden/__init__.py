"""facewarden: self-hosted face recognition with the moratorium and its safeguards in code.

The Python API is a thin facade over the same service the CLI and the HTTP API use, acting as the
installation's owner (or as another key's principal), so policy and audit apply to it too::

    import facewarden

    fw = facewarden.open("~/.local/share/facewarden")
    faces = fw.detect("group.jpg")                     # DetectFaces' FaceDetails
    result = fw.compare("me.jpg", "passport.jpg")      # CompareFaces' response
    fw.call("SearchFacesByImage", {"CollectionId": "family", "Image": {"Bytes": ...}})

    from facewarden.service.gallery import SearchFacesByImageRequest, search_faces_by_image
    hits = fw.execute(search_faces_by_image, SearchFacesByImageRequest("family", fw.image("me.jpg")))
    hits.face_matches                                  # typed result
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import Settings
from .errors import FacewardenError

if TYPE_CHECKING:  # pragma: no cover
    from .service import Operation
    from .service.params import Image

__all__ = ["Facewarden", "FacewardenError", "Settings", "open"]
__version__ = "0.1.0"

ImageLike = str | Path | bytes
Req = TypeVar("Req")
Res = TypeVar("Res")


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

    def compare(self, source: ImageLike, target: ImageLike, threshold: float = 80.0) -> dict[str, Any]:
        """CompareFaces' response (in Rekognition's shape) for the largest face of ``source``."""
        from .service.faces import CompareFacesRequest, compare_faces
        from .service.params import to_wire

        request = CompareFacesRequest(self.image(source), self.image(target), threshold)
        result: dict[str, Any] = to_wire(self.execute(compare_faces, request))
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

"""facewarden: self-hosted face recognition with the moratorium and its safeguards in code.

The Python API is a thin facade over the same service the CLI and the HTTP API use, acting as the
installation's owner (or as another key's principal), so policy and audit apply to it too::

    import facewarden

    fw = facewarden.open("~/.local/share/facewarden")
    faces = fw.detect("group.jpg")                     # DetectFaces' FaceDetails
    result = fw.compare("me.jpg", "passport.jpg")      # CompareFaces' response
    fw.call("SearchFacesByImage", {"CollectionId": "family", "Image": {"Bytes": ...}})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Settings
from .errors import FacewardenError

__all__ = ["Facewarden", "FacewardenError", "Settings", "open"]
__version__ = "0.1.0"

ImageLike = str | Path | bytes


class Facewarden:
    """One service and one principal; every method is one audited operation."""

    def __init__(self, settings: Settings, key_id: str | None = None) -> None:
        from .service import Service

        self.service = Service(settings)
        self.principal = self.service.principal_for_key(key_id) if key_id else self.service.owner_principal()

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Any Rekognition-shaped operation, e.g. ``call("ListCollections", {})``."""
        return self.service.call(operation, request, self.principal)

    def detect(self, image: ImageLike, attributes: str = "DEFAULT") -> list[dict[str, Any]]:
        return self.call("DetectFaces", {"Image": _image(image), "Attributes": [attributes]})["FaceDetails"]

    def compare(self, source: ImageLike, target: ImageLike, threshold: float = 80.0) -> dict[str, Any]:
        return self.call(
            "CompareFaces",
            {"SourceImage": _image(source), "TargetImage": _image(target), "SimilarityThreshold": threshold},
        )

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> Facewarden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(data_dir: str | Path | None = None, *, key_id: str | None = None, **settings: Any) -> Facewarden:
    """Open the installation in ``data_dir`` (default: ``FACEWARDEN_DATA_DIR``) as its owner or ``key_id``."""
    return Facewarden(Settings.from_env(data_dir=data_dir, **settings), key_id)


def _image(image: ImageLike) -> dict[str, bytes]:
    if isinstance(image, (bytes, bytearray)):
        return {"Bytes": bytes(image)}
    from .media import images

    return {"Bytes": images.read_bytes(Path(image).expanduser())}

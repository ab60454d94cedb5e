"""The service core: the one path every operation takes: policy decision, engine, gallery, audit record, in that order.

Every adapter (the Rekognition wire protocol, the native REST API, the CLI, the Python API) calls
:meth:`Service.call` with a Rekognition-shaped request dict and the caller's principal, and gets a
Rekognition-shaped response dict back. :meth:`Service.call` decides first (a denied request never
decodes an image), then runs the operation, then writes one audit record, for denials and
failures too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import images
from ..config import Settings
from ..db import Database
from ..engine import DetectedFace, Engine
from ..errors import FacewardenError, InvalidInput, InvalidS3Object, UnsupportedOperation

@dataclass
class Context:
    """One call in flight: who asks, what, and what the audit record will say about it."""

    operation: str
    principal: Any
    request: dict[str, Any]
    collection_id: str | None = None
    #: Filled by the operation for the audit record (never images or templates).
    counts: dict[str, int] = field(default_factory=dict)
    matched_face_ids: list[str] = field(default_factory=list)
    applied_threshold: dict[str, Any] | None = None
    subjects: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)


Operation = Callable[["Service", Context], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    """Register a service method as the Rekognition operation ``name``."""

    def deco(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return deco


class Service:
    """The face recognition service: one per process, shared by every adapter and thread."""

    def __init__(self, settings: Settings | None = None, *, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock or time.time
        self.engine = Engine(self.settings)
        self.db = Database(self.settings.resolved_database_url)

    def close(self) -> None:
        self.db.close()

    # ---- the one path ------------------------------------------------------------------------
    def call(self, operation_name: str, request: dict[str, Any], principal: Any = None) -> dict[str, Any]:
        fn = OPERATIONS.get(operation_name)
        if fn is None:
            raise UnsupportedOperation(
                f"facewarden does not offer {operation_name}. It offers: {', '.join(sorted(OPERATIONS))}."
            )
        if not isinstance(request, dict):
            raise InvalidInput("The request must be a JSON object.")
        ctx = Context(operation_name, principal, request, collection_id=request.get("CollectionId"))
        try:
            return fn(self, ctx)
        except FacewardenError:
            raise

    # ---- shared steps ------------------------------------------------------------------------
    def decode_image(self, image: Any, field_name: str = "Image") -> np.ndarray:
        """A Rekognition ``Image`` ({"Bytes": ...}) -> RGB pixels."""
        if not isinstance(image, dict):
            raise InvalidInput(f"{field_name} must be an object with Bytes.")
        if "S3Object" in image:
            raise InvalidS3Object(
                f"{field_name}.S3Object is not supported: facewarden is self-hosted and reads no S3 "
                "buckets. Send the image itself in Bytes."
            )
        data = image.get("Bytes")
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInput(f"{field_name}.Bytes is missing; send the encoded image bytes.")
        return images.decode(
            bytes(data), max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
        )

    def detector_for(self, request: dict[str, Any]) -> str:
        return str(request.get("Detector") or self.settings.detector)


def largest(faces: list[DetectedFace]) -> DetectedFace:
    """The face an operation acts on when it takes one face of an image (Rekognition: the largest)."""
    return max(faces, key=lambda f: f.box.area)


def number(value: Any, name: str, lo: float, hi: float) -> float:
    """A numeric request parameter, range-checked, with a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number between {lo:g} and {hi:g}.")
    if not lo <= float(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo:g} and {hi:g}, not {value}.")
    return float(value)

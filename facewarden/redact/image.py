"""Redact a still image end to end: bytes in, bytes out, every face hidden but those kept.

The image is decoded (animated images refused), every face the engine's detector finds is
masked, except those the caller's ``keep`` decides to leave visible, and the result is written
back in the input's own format without any metadata (no EXIF, so no GPS position and no
thumbnail of the unredacted picture). Who may be kept is not decided here: the service passes
``keep`` after policy has allowed it, and a face it does not explicitly keep is hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..engine import DetectedFace, Engine
from ..media import images
from . import masks

#: Decides, for the faces found in an image, which ones stay visible (True) and which are hidden.
KeepFaces = Callable[[np.ndarray, Sequence[DetectedFace]], Sequence[bool]]


@dataclass(frozen=True)
class RedactedImage:
    """The redacted image's bytes and what was done to it."""

    data: bytes
    format: str
    width: int
    height: int
    faces: list[DetectedFace]
    #: One flag per face in ``faces``: True where the face was left visible.
    kept: list[bool]

    @property
    def faces_hidden(self) -> int:
        return self.kept.count(False)

    @property
    def faces_kept(self) -> int:
        return self.kept.count(True)


def redact_image(
    data: bytes,
    engine: Engine,
    style: masks.MaskStyle | None = None,
    *,
    keep: KeepFaces | None = None,
    detector: str | None = None,
    max_bytes: int = images.DEFAULT_MAX_BYTES,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> RedactedImage:
    """Every face in the image hidden with ``style`` except those ``keep`` keeps."""
    still = images.decode_still(data, max_bytes=max_bytes, max_pixels=max_pixels)
    pixels = still.pixels
    faces = engine.detect(pixels, detector)
    kept = [False] * len(faces)
    if keep is not None and faces:
        decided = list(keep(pixels, faces))
        if len(decided) != len(faces):
            raise ValueError(f"keep decided {len(decided)} faces of {len(faces)}")
        kept = [d is True for d in decided]  # anything but an explicit True is hidden
    hidden = [f.box for f, k in zip(faces, kept) if not k]
    out = masks.apply(pixels, hidden, style)
    h, w = pixels.shape[:2]
    return RedactedImage(images.encode_like(out, still), still.format, w, h, faces, kept)

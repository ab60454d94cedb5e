"""Formats face datasets use (PGM/PPM, TGA, SGI): accepted by the CLI, the Python API and the native
REST API; the Rekognition wire keeps Rekognition's formats."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from facewarden.errors import InvalidImage
from facewarden.media import images
from tests.test_api_support import Harness, face, harness_fixture, signed_post  # noqa: F401

FACE = "barack_obama/barack_obama_1.jpg"


def encoded(fmt: str, mode: str = "L", size: int = 240) -> bytes:
    img = Image.open(io.BytesIO(face(FACE))).convert(mode)
    img.thumbnail((size, size * 2))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "magic"),
    [("PPM", "L", b"P5"), ("PPM", "RGB", b"P6"), ("TGA", "RGB", b""), ("SGI", "RGB", b"\x01\xda")],
)
def test_dataset_formats_decode_to_rgb(fmt: str, mode: str, magic: bytes) -> None:
    data = encoded(fmt, mode)
    assert data.startswith(magic)
    pixels = images.decode(data)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype.name == "uint8"


def test_the_wire_keeps_rekognitions_formats() -> None:
    data = encoded("PPM")
    with (
        images.wire_formats(),
        pytest.raises(
            InvalidImage, match="Unsupported image format PPM. Send a JPEG, PNG, WebP, GIF, BMP or TIFF image"
        ),
    ):
        images.decode(data)
    assert images.decode(data).shape[2] == 3  # outside the wire again


def test_a_pgm_is_detected_over_rest_and_refused_over_the_wire(harness: Harness) -> None:
    pgm = encoded("PPM")
    r = httpx.post(
        f"{harness.url}/v1/faces/detect",
        headers={"Authorization": f"Bearer {harness.owner_key[0]}:{harness.owner_key[1]}"},
        json={"Image": {"Bytes": base64.b64encode(pgm).decode()}},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["FaceDetails"]) == 1
    body = json.dumps({"Image": {"Bytes": base64.b64encode(pgm).decode()}}).encode()
    w: Any = signed_post(harness.url, harness.owner_key, "DetectFaces", body)
    assert w.status_code == 400 and w.json()["__type"] == "InvalidImageFormatException", w.text

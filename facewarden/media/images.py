"""Bytes -> RGB pixels, safely.

Every image facewarden looks at enters here: the byte limit is checked before anything is parsed,
the pixel limit from the header before anything is decoded (so a decompression bomb costs
nothing), EXIF orientation is applied (a phone photo's face is upright), and every mode Pillow can
produce is turned into 8-bit RGB. Each failure is an :class:`~facewarden.errors.InvalidImage` or
:class:`~facewarden.errors.ImageTooLarge` whose message says what was wrong and what to do.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..errors import ImageTooLarge, InvalidImage

#: Pillow format names accepted everywhere, the Rekognition wire included (MPO is the
#: multi-picture JPEG some cameras write).
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats of face datasets that Pillow decodes with its own code (no external program): Netpbm
#: PBM/PGM/PPM/PFM (ORL and Extended Yale B are PGM, FERET PPM), Truevision TGA and SGI. Accepted by
#: the CLI, the Python API and the native REST API; the Rekognition wire keeps SUPPORTED_FORMATS.
DATASET_FORMATS = ("PPM", "TGA", "SGI")
#: File suffixes of every accepted format (folders are walked by suffix).
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo")
FILE_SUFFIXES += (".pbm", ".pgm", ".ppm", ".pnm", ".pfm", ".tga", ".sgi", ".rgb", ".bw")
_SUPPORTED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_DATASET_TEXT = ", PGM/PPM/PBM, TGA or SGI"

_wire_only: ContextVar[bool] = ContextVar("facewarden_wire_formats", default=False)


@contextmanager
def wire_formats() -> Iterator[None]:
    """Within this block (one Rekognition wire request) only :data:`SUPPORTED_FORMATS` decode."""
    token = _wire_only.set(True)
    try:
        yield
    finally:
        _wire_only.reset(token)


def accepted_formats() -> tuple[str, ...]:
    return SUPPORTED_FORMATS if _wire_only.get() else SUPPORTED_FORMATS + DATASET_FORMATS


def _accepted_text() -> str:
    return _SUPPORTED_TEXT if _wire_only.get() else _SUPPORTED_TEXT.replace(" or ", ", ") + _DATASET_TEXT


DEFAULT_MAX_BYTES = 15 * 1024 * 1024
DEFAULT_MAX_PIXELS = 36_000_000

# Never decode a truncated file into a half-grey picture: raise instead.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode encoded image bytes into an ``(height, width, 3)`` ``uint8`` RGB array."""
    return _decode(data, max_bytes, max_pixels, still=False).pixels


@dataclass(frozen=True)
class Still:
    """A decoded still image and what is needed to write it back in its own format."""

    pixels: np.ndarray
    #: Pillow's name of the source format (``JPEG``, ``PNG``, ...).
    format: str
    #: Colour profile and the source's own encoding choices (JPEG quantisation tables and chroma
    #: subsampling, TIFF compression); never metadata about the picture or the camera.
    options: dict[str, Any] = field(default_factory=dict)


def decode_still(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Still:
    """Like :func:`decode`, for an image that will be written back (:func:`encode_like`): an
    animated image (GIF, WebP, PNG, a multi-page TIFF) is refused, since writing back its first
    frame would silently drop the rest."""
    return _decode(data, max_bytes, max_pixels, still=True)


def _decode(data: bytes, max_bytes: int, max_pixels: int, still: bool) -> Still:
    if not data:
        raise InvalidImage(f"The image is empty (0 bytes). Send the bytes of a {_SUPPORTED_TEXT} file.")
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"The image is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB. "
            "Resize or recompress it."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in accepted_formats():
                raise InvalidImage(f"Unsupported image format {fmt}. Send a {_accepted_text()} image.")
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The {fmt} image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
                    f"the limit is {max_pixels / 1e6:.0f} megapixels. Resize it."
                )
            if width < 1 or height < 1:
                raise InvalidImage(f"The {fmt} image has no pixels ({width}x{height}).")
            frames = getattr(img, "n_frames", 1)
            if still and frames > 1 and fmt != "MPO":
                raise InvalidImage(
                    f"The {fmt} image is animated ({frames} frames); only still images are redacted "
                    "as images. Convert it to a video file (e.g. MP4) and redact that."
                )
            img.seek(0)  # first frame of an animated GIF/WebP/TIFF; MPO's primary picture
            img.load()
            options = _save_options(img, fmt) if still else {}
            img = ImageOps.exif_transpose(img) or img
            return Still(_to_rgb(img), fmt, options)
    except (InvalidImage, ImageTooLarge):
        raise
    except UnidentifiedImageError:
        raise InvalidImage(
            f"The data is not a recognised image ({_describe(data)}). Send a {_SUPPORTED_TEXT} file."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(
            f"The image header claims more pixels than the limit of {max_pixels / 1e6:.0f} megapixels "
            "(a possible decompression bomb). Resize it."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct_error()) as exc:
        raise InvalidImage(
            f"The image could not be decoded: it is corrupt or truncated ({exc}). "
            "Check that the whole file was sent."
        ) from None


#: The format an image is written back in: MPO (a camera's multi-picture JPEG) becomes a plain
#: JPEG of its primary picture, since its other pictures would carry the face unredacted.
_WRITE_AS = {"MPO": "JPEG"}
_TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits", "jpeg")


def encode_like(pixels: np.ndarray, source: Still) -> bytes:
    """``pixels`` (RGB) encoded in the source's format with its colour profile and encoding
    choices, and no metadata at all: no EXIF (so no GPS position, camera serial or thumbnail),
    no XMP, IPTC, comments or text chunks."""
    fmt = _WRITE_AS.get(source.format, source.format)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buf, fmt, **source.options)
    return buf.getvalue()


def _save_options(img: Image.Image, fmt: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if img.info.get("icc_profile"):
        options["icc_profile"] = img.info["icc_profile"]
    if fmt in ("JPEG", "MPO"):
        tables = getattr(img, "quantization", None)
        if tables:
            options["qtables"] = [list(tables[k]) for k in sorted(tables)]
        sampling = JpegImagePlugin.get_sampling(img)
        if sampling != -1:
            options["subsampling"] = sampling
        else:
            options["quality"] = 90
    elif fmt == "WEBP":
        options["quality"] = 90
    elif fmt == "TIFF" and img.info.get("compression") in _TIFF_COMPRESSIONS:
        options["compression"] = img.info["compression"]
    return options


def read(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read and decode an image file, without reading more than the byte limit allows."""
    return decode(read_bytes(path, max_bytes=max_bytes), max_bytes=max_bytes, max_pixels=max_pixels)


def read_bytes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ImageTooLarge(
                f"{p} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB. Resize or recompress it."
            )
        return p.read_bytes()
    except FileNotFoundError:
        raise InvalidImage(f"No such file: {p}") from None
    except IsADirectoryError:
        raise InvalidImage(f"{p} is a folder, not an image file.") from None
    except PermissionError:
        raise InvalidImage(f"{p} cannot be read (permission denied).") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-/32-bit greyscale: scale to 8 bits by the range the format can hold.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(arr if arr.max() > 1.0 else arr * 255.0, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _describe(data: bytes) -> str:
    head = data[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it looks like text"
    return f"{len(data)} bytes starting {head[:8].hex()}"


def struct_error() -> type[Exception]:
    import struct

    return struct.error

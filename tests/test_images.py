"""Image intake: every format, every mode, every limit, every kind of broken file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facewarden.media import images
from facewarden.errors import ImageTooLarge, InvalidImage

from .data import engine, faces_dir

FACE = "barack_obama/barack_obama_1.jpg"


def face_image() -> Image.Image:
    return Image.open(faces_dir() / FACE).convert("RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def count_faces(data: bytes) -> int:
    return len(engine().detect(images.decode(data)))


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_rgb_with_the_face(fmt):
    data = encode(face_image(), fmt)
    pixels = images.decode(data)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert count_faces(data) == 1


def test_empty_file():
    with pytest.raises(InvalidImage, match="empty"):
        images.decode(b"")


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n")
    with pytest.raises(InvalidImage, match="not a recognised image.*text"):
        images.read(p)


def test_truncated_jpeg():
    data = encode(face_image(), "JPEG")
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        images.decode(data[: len(data) // 2])


def test_one_pixel_image_has_no_face():
    data = encode(Image.new("RGB", (1, 1), (200, 180, 160)), "PNG")
    assert images.decode(data).shape == (1, 1, 3)
    assert count_faces(data) == 0


def test_decompression_bomb_is_refused_from_the_header():
    data = png_header_only(20000, 20000)  # 400 megapixels claimed by 57 bytes
    with pytest.raises(ImageTooLarge, match="megapixels"):
        images.decode(data)


def test_pixel_limit_applies_below_pillows_own_guard():
    data = png_header_only(7000, 6000)  # 42 MP: over our 36 MP limit, under Pillow's
    with pytest.raises(ImageTooLarge, match="42.0 megapixels; the limit is 36 megapixels"):
        images.decode(data)


def test_byte_limit():
    with pytest.raises(ImageTooLarge, match="limit is 1.0 MB"):
        images.decode(b"\xff" * 1_000_001, max_bytes=1_000_000)


def test_unsupported_format_is_named():
    data = encode(face_image().resize((64, 64)), "ICO")
    with pytest.raises(InvalidImage, match="Unsupported image format ICO"):
        images.decode(data)


def test_cmyk_jpeg_is_converted():
    data = encode(face_image().convert("CMYK"), "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert count_faces(data) == 1


def test_sixteen_bit_png_is_converted():
    grey16 = Image.fromarray(np.asarray(face_image().convert("L"), dtype=np.uint16) * 257)
    data = encode(grey16, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = images.decode(data)
    assert pixels.dtype == np.uint8 and pixels.max() > 200
    assert count_faces(data) == 1


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_other_modes_are_converted(mode):
    data = encode(face_image().convert(mode), "PNG")
    assert images.decode(data).shape[2] == 3
    assert count_faces(data) == 1


def test_animated_gif_uses_the_first_frame():
    face = face_image()
    others = [Image.new("RGB", face.size, (c, c, c)) for c in (0, 128)]
    buf = io.BytesIO()
    face.save(buf, "GIF", save_all=True, append_images=others, duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3
    assert count_faces(buf.getvalue()) == 1


def test_exif_orientation_is_applied():
    # A sideways photo whose EXIF says "rotate 90 degrees clockwise to view": a frontal-face detector
    # finds the face only once the orientation is applied, and the default detector (which finds
    # sideways faces too) finds it upright: eyes above the mouth.
    sideways = face_image().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(sideways, "JPEG", exif=exif.tobytes())
    raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert len(engine().detect(raw, "hog")) == 0, "the raw sideways pixels should hide the face"
    upright = images.decode(data)
    assert upright.shape[:2] == raw.shape[1::-1]
    assert len(engine().detect(upright, "hog")) == 1
    (face,) = engine().detect(upright)
    points = face.align_points
    assert points[:2, 1].max() < points[3:, 1].min()


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InvalidImage, match="No such file"):
        images.read(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImage, match="folder"):
        images.read(tmp_path)

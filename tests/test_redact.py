"""Redaction: masks, the unredacted face-frame measure, carrying masks along tracks, still images.

The measure is tested both ways (it must call an untouched or half-covered face unredacted, and
a masked one hidden), and the masks against facewarden's own detector and embedder: a hidden face
is neither found nor matched any more.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facewarden.engine import detectors
from facewarden.engine.faces import Box
from facewarden.errors import ImageTooLarge, InvalidImage, InvalidInput
from facewarden.media import images
from facewarden.redact import Carry, MaskStyle, Sighting, masks, masks_per_frame, measure, redact_image

from .conftest import CachedEngine, identity_photos
from .data import engine

METHODS = ("blur", "pixelate", "solid")
GROUP = "group/face_recognition_obama_and_biden.jpg"


def jpeg(pixels: np.ndarray, quality: int = 50) -> np.ndarray:
    """Through a lossy encoder and back, as a stand-in for a video encoder."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def scaled(pixels: np.ndarray, box: Box, face_px: float) -> tuple[np.ndarray, Box]:
    """The photo scaled so that the face box is ``face_px`` wide, and the box with it."""
    s = face_px / box.width
    h, w = pixels.shape[:2]
    img = Image.fromarray(pixels).resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BOX)
    return np.asarray(img), box.scaled(s)


@pytest.fixture(scope="module")
def one_per_person(faces_dir: Path, photo_templates: Any) -> list[tuple[Path, Any, np.ndarray]]:
    """(photo, its face, the face's template) for the first photo of each identity with a face."""
    out = []
    for photos in identity_photos(faces_dir).values():
        for p in photos:
            if p in photo_templates:
                out.append((p, *photo_templates[p]))
                break
    assert len(out) >= 20
    return out


# ---- masks ------------------------------------------------------------------------------------
def test_mask_style_refuses_bad_parameters() -> None:
    with pytest.raises(InvalidInput, match="blur, pixelate, solid"):
        MaskStyle(method="smudge")
    with pytest.raises(InvalidInput, match="ellipse, box"):
        MaskStyle(shape="star")
    with pytest.raises(InvalidInput, match="out of range"):
        MaskStyle(margin=-0.1)
    with pytest.raises(InvalidInput, match="out of range"):
        MaskStyle(margin=5)
    with pytest.raises(InvalidInput, match="must be a number"):
        MaskStyle(margin=math.nan)
    with pytest.raises(InvalidInput, match="corners of the face box"):
        MaskStyle(shape="ellipse", margin=0.1)
    MaskStyle(shape="box", margin=0.0)  # a box needs no margin to cover the box
    with pytest.raises(InvalidInput, match="three integers"):
        MaskStyle(method="solid", colour=(0, 0, 300))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_mask_covers_the_whole_box_and_nothing_outside_its_region(method: str, shape: str) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = frame.copy()
    box = Box(50, 30, 90, 80)
    out = masks.apply(frame, [box], MaskStyle(method=method, shape=shape))
    assert np.array_equal(frame, before), "the input frame was modified"
    r = masks.region(box, masks.DEFAULT_MARGIN + (masks.FEATHER if shape == "ellipse" else 0.0))
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= math.floor(r.left) and xs.max() < math.ceil(r.right)
    assert ys.min() >= math.floor(r.top) and ys.max() < math.ceil(r.bottom)
    # every pixel of the face box itself (corners included) is replaced by the mask
    inner = changed[30:80, 50:90]
    assert inner.mean() > 0.97, f"only {inner.mean():.2%} of the face box changed"
    corners = [(30, 50), (30, 89), (79, 50), (79, 89)]
    filled = masks.apply(
        np.zeros_like(frame), [box], MaskStyle(method="solid", shape=shape, colour=(255, 0, 0))
    )
    assert all(tuple(filled[y, x]) == (255, 0, 0) for y, x in corners)
    if method == "solid":  # black over the whole face box (an ellipse fades out beyond it)
        assert (out[30:80, 50:90] == 0).all()


def test_mask_at_the_frame_edge_and_outside_it() -> None:
    frame = np.full((80, 80, 3), 128, np.uint8)
    frame[::2] = 30
    corner = Box(-20, -20, 15, 15)
    out = masks.apply(frame, [corner, Box(200, 200, 260, 260), Box(10, 10, 10, 30)])
    assert out.shape == frame.shape
    assert (out[:8, :8] != frame[:8, :8]).any()
    reach = math.ceil(masks.region(corner, masks.DEFAULT_MARGIN + masks.FEATHER).right)
    assert reach < 80 and np.array_equal(out[reach:, reach:], frame[reach:, reach:])


def test_widen_grows_by_motion_on_both_sides() -> None:
    assert masks.widen(Box(10, 10, 20, 20), -3, 2) == Box(7, 8, 23, 22)


# ---- the measure --------------------------------------------------------------------------------
def test_measure_tells_visible_from_hidden_faces(one_per_person: list) -> None:
    """Untouched (through a lossy encoder) and a third uncovered: unredacted; every method: hidden.
    Faces of 80 and 30 pixels; the numbers behind the threshold are in redact/measure.py."""
    verdicts: dict[str, list[bool]] = {}
    for path, _, _ in one_per_person:
        full = images.read(path)
        face = max(engine().detect(full), key=lambda f: f.box.area)  # the default detector's box
        for px in (80, 30):
            pixels, box = scaled(full, face.box, px)
            cases = {"untouched": pixels}
            for method in METHODS:
                cases[method] = masks.apply(pixels, [box], MaskStyle(method=method))
            off = Box(box.left + box.width / 3, box.top, box.right + box.width / 3, box.bottom)
            cases["third uncovered"] = masks.apply(pixels, [off], MaskStyle(shape="box", margin=0.0))
            for name, out in cases.items():
                verdicts.setdefault(name, []).append(measure.unredacted(pixels, jpeg(out), box))
    assert all(verdicts["untouched"]) and all(verdicts["third uncovered"])
    for method in METHODS:
        assert not any(verdicts[method]), f"{method}: {sum(verdicts[method])} faces counted as visible"
    bad, total = measure.count_unredacted([pixels] * 2, [pixels, cases["blur"]], [[box], [box]])
    assert (bad, total) == (1, 2)


def test_measure_skips_boxes_outside_the_frame_and_flat_faces() -> None:
    frame = np.full((40, 40, 3), 100, np.uint8)
    assert measure.detail_kept(frame, frame, Box(-50, -50, -10, -10)) is None
    assert measure.detail_kept(frame, frame, Box(35, 35, 60, 60)) is None  # 5 px inside
    assert measure.count_unredacted([frame], [frame], [[Box(5, 5, 35, 35)]]) == (0, 0)  # nothing to see


@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_hidden_faces_are_neither_detected_nor_matched(one_per_person: list, shape: str) -> None:
    """facewarden's own detector finds no face where a face was masked, and its embedder, aligned
    on the original landmarks, no longer matches the person at the default threshold. Every
    registered detector, not only the one that found the face, must come up empty."""
    eng = engine()
    threshold = 80.0
    others = [d for d in detectors.names() if d != eng.settings.detector]
    assert others, "the other registered detectors are checked too"
    for path, face, template in one_per_person[:: 1 if shape == "ellipse" else 3]:
        pixels, _ = scaled(images.read(path), face.box, 100)
        found = eng.detect(pixels)
        assert found, path
        f = max(found, key=lambda g: g.box.area)
        assert measure.recognisable(eng, pixels, f, template, threshold), f"{path}: the check cannot fail"
        for method in METHODS:
            out = masks.apply(pixels, [f.box], MaskStyle(method=method, shape=shape))
            assert not measure.recognisable(eng, out, f, template, threshold), (
                f"{path}: {method} still recognisable"
            )
            for name in others:
                seen = [g for g in eng.detect(out, name) if g.box.iou(f.box) > 0.2]
                assert not seen, f"{path}: {method} {shape}: {name} still finds the face"


# ---- carrying masks along tracks -----------------------------------------------------------------
def box_at(x: float, y: float, size: float = 40.0) -> Box:
    return Box(x - size / 2, y - size / 2, x + size / 2, y + size / 2)


def contains(outer: Box, inner: Box) -> bool:
    eps = 1e-6
    return (
        outer.left <= inner.left + eps
        and outer.top <= inner.top + eps
        and outer.right >= inner.right - eps
        and outer.bottom >= inner.bottom - eps
    )


def covered(boxes: list[Box], face: Box) -> bool:
    return any(contains(b, face) for b in boxes)


def test_carry_fills_gaps_reaches_both_ways_and_grows() -> None:
    path = [box_at(100 + 5 * f, 100) for f in range(40)]
    sightings = [Sighting(f, path[f]) for f in (10, 14, 18, 30)]  # a blink from 18 to 30
    per_frame = masks_per_frame([sightings], 40, Carry(reach=6, grow=0.02))
    for f in range(4, 37):
        assert covered(per_frame[f], path[f]), f
    assert per_frame[3] == [] and per_frame[37] == []
    assert per_frame[10] == [path[10]]
    # away from a sighting the mask is larger than the face, and larger the further away
    w = [per_frame[f][0].width for f in (19, 21, 24)]
    assert path[0].width < w[0] < w[1] < w[2]


def test_carry_of_a_single_sighting_and_a_frame_seen_twice() -> None:
    a, b = box_at(50, 50), box_at(60, 50)
    per_frame = masks_per_frame([[Sighting(5, a), Sighting(5, b)]], 10, Carry(reach=2))
    assert per_frame[5] == [Box(a.left, a.top, b.right, b.bottom)]
    assert [len(x) for x in per_frame] == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert masks_per_frame([], 3) == [[], [], []]
    with pytest.raises(InvalidInput):
        Carry(speed_slack=0.5)


def test_carry_when_a_track_passes_from_one_face_to_another() -> None:
    """A face walks in from the left edge as another, standing still, is lost behind it, and the
    tracker links the newcomer's first sighting to the standing face's track: the newcomer is
    still covered in the frames before it was first seen, the standing face after it was lost."""
    standing = box_at(100, 100)
    walker = {f: box_at(-60 + 20 * f, 90) for f in range(0, 20)}
    sightings = [Sighting(f, standing) for f in range(0, 10, 2)] + [
        Sighting(f, walker[f]) for f in range(10, 20, 2)
    ]
    per_frame = masks_per_frame([sightings], 40, Carry(reach=6, grow=0.0))
    for f in range(5, 10):
        assert covered(per_frame[f], walker[f]), f
    for f in range(10, 15):
        assert covered(per_frame[f], standing), f
    assert len(masks_per_frame([[Sighting(f, standing) for f in range(10)]], 20, Carry(reach=2))[5]) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-8, 8), min_size=2, max_size=8),
    st.lists(st.floats(-8, 8), min_size=2, max_size=8),
    st.integers(1, 12),
    st.integers(0, 1000),
)
def test_carry_covers_any_motion_within_its_speed_slack(
    vx: list[float], vy: list[float], every: int, seed: int
) -> None:
    """A face that keeps within the speed slack (1.5 times its average speed between two sightings)
    is covered on every frame between them, however it moves and whichever frames the detector
    blinks on: by the motion model alone (no growth)."""
    rng = np.random.default_rng(seed)
    segs = min(len(vx), len(vy))
    n = segs * 10
    steps = np.array([(vx[i // 10], vy[i // 10]) for i in range(n)])
    centres = np.vstack([[300.0, 300.0], 300.0 + np.cumsum(steps, axis=0)])
    path = [box_at(x, y) for x, y in centres]
    seen = sorted({0, len(path) - 1} | {f for f in range(0, len(path), every) if rng.random() > 0.3})
    params = Carry(reach=0, grow=0.0)
    per_frame = masks_per_frame([[Sighting(f, path[f]) for f in seen]], len(path), params)
    for a, b in zip(seen, seen[1:]):
        span = np.abs(centres[b] - centres[a]) / (b - a)
        for f in range(a + 1, b):
            # the property holds where the path keeps within the slack on each axis
            ok = all(
                np.all(np.abs(centres[f] - centres[g]) <= params.speed_slack * span * abs(f - g) + 1e-9)
                for g in (a, b)
            )
            if ok:
                assert covered(per_frame[f], path[f]), (a, f, b)


@settings(max_examples=100, deadline=None)
@given(st.floats(-8, 8), st.floats(-8, 8), st.floats(0, 1), st.integers(2, 6))
def test_carry_reaches_a_face_that_keeps_going_or_stops(
    vx: float, vy: float, pace: float, every: int
) -> None:
    """Before a track's first and after its last sighting, a face moving on at up to the speed slack
    of its recent velocity, or slowing down to a stop, is covered for the whole reach."""
    seen = list(range(20, 41, every))
    path = {f: box_at(300 + vx * f, 300 + vy * f) for f in seen}
    params = Carry(reach=15, grow=0.0)
    per_frame = masks_per_frame([[Sighting(f, path[f]) for f in seen]], 80, params)
    first, last = seen[0], seen[-1]
    for d in range(1, 16):
        k = pace * params.speed_slack  # 0 (stopped) .. the slack
        ahead = box_at(300 + vx * (last + k * d), 300 + vy * (last + k * d))
        behind = box_at(300 + vx * (first - k * d), 300 + vy * (first - k * d))
        assert covered(per_frame[last + d], ahead) and covered(per_frame[first - d], behind), d


# ---- still images end to end -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cached(engine_cache: Any) -> CachedEngine:
    return CachedEngine(engine_cache)


def group_photo(faces_dir: Path) -> bytes:
    return (faces_dir / GROUP).read_bytes()


def test_every_detected_face_is_hidden_in_a_group_photo(faces_dir: Path, cached: CachedEngine) -> None:
    data = group_photo(faces_dir)
    result = redact_image(data, cached)  # type: ignore[arg-type]
    before = images.decode(data)
    after = images.decode(result.data)
    assert result.format == "JPEG" and (result.width, result.height) == (before.shape[1], before.shape[0])
    assert len(result.faces) == 3 and result.faces_hidden == 3 and result.faces_kept == 0
    for f in result.faces:
        assert measure.unredacted(before, before, f.box)  # the measure sees the face in the input
        assert not measure.unredacted(before, after, f.box)
    assert [f for f in engine().detect(after)] == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_output_keeps_the_input_format(fmt: str, faces_dir: Path, cached: CachedEngine) -> None:
    img = Image.open(faces_dir / GROUP).convert("RGB").resize((500, 357))
    buf = io.BytesIO()
    img.save(buf, fmt)
    result = redact_image(buf.getvalue(), cached, MaskStyle(method="solid"))  # type: ignore[arg-type]
    out = Image.open(io.BytesIO(result.data))
    assert out.format == fmt and out.size == (500, 357)
    assert result.faces_hidden >= 2


def test_exif_gps_and_thumbnail_are_stripped(faces_dir: Path, cached: CachedEngine) -> None:
    img = Image.open(faces_dir / GROUP).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0131] = "Some editor"  # Software
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 0.0)  # GPSLatitudeRef, GPSLatitude
    gps[3], gps[4] = "W", (0.0, 7.0, 0.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), comment=b"taken at home")
    data = buf.getvalue()
    assert b"CameraMaker" in data and Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)
    result = redact_image(data, cached)  # type: ignore[arg-type]
    out = Image.open(io.BytesIO(result.data))
    assert not out.getexif() and "exif" not in out.info and "comment" not in out.info
    assert (
        b"CameraMaker" not in result.data
        and b"Exif" not in result.data
        and b"taken at home" not in result.data
    )


def test_a_phone_photo_rotated_by_exif_is_redacted_upright(faces_dir: Path, cached: CachedEngine) -> None:
    img = Image.open(faces_dir / GROUP).convert("RGB").resize((700, 500))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", exif=exif.tobytes())
    result = redact_image(buf.getvalue(), cached)  # type: ignore[arg-type]
    out = Image.open(io.BytesIO(result.data))
    assert out.size == (700, 500) and result.faces_hidden >= 2  # upright, no orientation tag left
    assert 0x0112 not in out.getexif()


def test_keep_leaves_only_the_faces_it_returns_true_for(faces_dir: Path, cached: CachedEngine) -> None:
    data = group_photo(faces_dir)
    before = images.decode(data)
    result = redact_image(data, cached, keep=lambda px, faces: [i == 0 for i in range(len(faces))])  # type: ignore[arg-type]
    after = images.decode(result.data)
    assert result.kept == [True, False, False]
    assert [measure.unredacted(before, after, f.box) for f in result.faces] == [True, False, False]
    # anything but an explicit True hides the face (fail closed)
    result = redact_image(data, cached, keep=lambda px, faces: [1, None, "yes"])  # type: ignore[arg-type]
    assert result.faces_kept == 0


def test_bad_images_are_refused_clearly(faces_dir: Path, cached: CachedEngine) -> None:
    data = group_photo(faces_dir)
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    cases = {
        b"": "empty",
        data[: len(data) // 2]: "corrupt or truncated",
        b"just some text, not a photo": "not a recognised image",
        buf.getvalue(): "animated",
    }
    for bad, message in cases.items():
        with pytest.raises(InvalidImage, match=message):
            redact_image(bad, cached)  # type: ignore[arg-type]
    with pytest.raises(ImageTooLarge):
        redact_image(data, cached, max_bytes=1000)  # type: ignore[arg-type]

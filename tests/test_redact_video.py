"""Video redaction on clips built here from ../shared/faces and ../shared/faces_demographics crops:
faces that move, cross, shrink, turn, enter and leave, with an audio track. No face-frame may
stay visible (the measure of redact/measure.py), the audio is copied unchanged, and the container,
frame rate, resolution and duration are kept."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden.engine import detectors
from facewarden.engine.faces import Box
from facewarden.errors import InvalidInput, InvalidVideo
from facewarden.media import images, video
from facewarden.redact import measure
from facewarden.redact.masks import MaskStyle
from facewarden.redact.video import TrackKeeper, VideoOptions, redact_video

from .conftest import SHARED_FACES, CachedEngine
from .data import engine
from .videos import Actor, Scene, face_crop, linear, pattern_frames, write_audio, write_video

DEMOGRAPHICS = SHARED_FACES.parent / "faces_demographics" / "utkface"
PEOPLE = {
    "obama": SHARED_FACES / "barack_obama" / "barack_obama_1.jpg",
    "angelina": SHARED_FACES / "angelina" / "angelina_1.jpg",
    "asian_female": DEMOGRAPHICS / "asian_female",
    "black_male": DEMOGRAPHICS / "black_male",
    "indian_female": DEMOGRAPHICS / "indian_female",
    "white_male": DEMOGRAPHICS / "white_male",
}


def photo(path: Path) -> Path:
    return path if path.is_file() else sorted(path.iterdir())[0]


@pytest.fixture(scope="module")
def cast(engine_cache: Any) -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    """name -> (a crop around the person's face, the face's box in it), from the detector's box on
    the source photo (the truth every later frame's box is derived from)."""
    eng = CachedEngine(engine_cache)
    out = {}
    for name, path in PEOPLE.items():
        pixels = images.read(photo(path))
        face = max(eng.detect(pixels), key=lambda f: f.box.area)
        b = face.box
        out[name] = face_crop(pixels, (b.left, b.top, b.right, b.bottom), margin=0.6, size=52)
    return out


def scene(cast: dict) -> Scene:
    """3 s at 25 fps, 480x270: two people cross, one shrinks, one turns away and rolls its head,
    one runs in from the left and out at the right, one sits still; a cut-free shot."""

    def actor(name: str, start: float, end: float, path: Any, turn: Any = None) -> Actor:
        crop, face = cast[name]
        return Actor(name, crop, face, start, end, path, turn)

    def turning(u: float) -> tuple[float, float]:
        w = math.sin(math.pi * u)  # 0 -> 1 -> 0
        return 40.0 * w, 1.0 - 0.45 * w

    return Scene(
        width=480,
        height=270,
        fps=25,
        seconds=3.0,
        actors=[
            actor("obama", 0.0, 3.0, linear(70, 150, 410, 140, 1.0)),
            actor("angelina", 0.0, 3.0, linear(410, 160, 70, 150, 0.95)),
            actor("asian_female", 0.0, 3.0, linear(240, 70, 250, 75, 1.3, 0.7)),
            actor("black_male", 0.0, 3.0, linear(400, 55, 400, 60, 1.0), turning),
            actor("indian_female", 0.8, 2.4, linear(-40, 225, 520, 215, 0.9)),
            actor("white_male", 0.0, 3.0, linear(70, 55, 75, 60, 0.9)),
        ],
    )


@pytest.fixture(scope="module")
def clip(cast: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    path = tmp_path_factory.mktemp("redact-video") / "street.mp4"
    truth = scene(cast).write(path, whole=True)
    return path, truth


def frames_of(path: Path) -> list[np.ndarray]:
    return [f.image for f in video.read_frames(path, None)]


def truth_boxes(
    truth: list[dict], only: set[str] | None = None, skip: set[str] = frozenset()
) -> list[list[Box]]:
    return [[Box(*b) for n, b in d.items() if (only is None or n in only) and n not in skip] for d in truth]


def audio_packets(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def redacted(clip: tuple[Path, list[dict]], engine_cache: Any) -> tuple[Path, Any]:
    src, _ = clip
    dst = src.with_name("street.redacted.mp4")
    seen: list[float] = []
    summary = redact_video(src, dst, CachedEngine(engine_cache), progress=seen.append)  # type: ignore[arg-type]
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0, abs=0.02)
    return dst, summary


def test_no_face_frame_stays_visible(clip: tuple[Path, list[dict]], redacted: tuple[Path, Any]) -> None:
    src, truth = clip
    dst, summary = redacted
    before, after = frames_of(src), frames_of(dst)
    assert len(before) == len(after) == 75
    boxes = truth_boxes(truth)
    # the measure sees every face in the input (so 0 below means something) ...
    visible, counted = measure.count_unredacted(before, before, boxes)
    assert visible == counted and counted >= 6 * 60
    # ... and none in the output
    bad, counted_after = measure.count_unredacted(before, after, boxes)
    assert counted_after == counted
    assert bad == 0, f"{bad} of {counted} face-frames left visible"
    assert summary.tracks >= 6 and summary.tracks_kept == 0 and summary.masked_face_frames >= counted


def test_the_detector_finds_no_face_in_the_output(
    clip: tuple[Path, list[dict]], redacted: tuple[Path, Any]
) -> None:
    """The default detector on every frame, the other registered detectors on every third."""
    src, truth = clip
    after = frames_of(redacted[0])
    boxes = truth_boxes(truth)
    eng = engine()
    for name in detectors.names():
        every = 1 if name == eng.settings.detector else 3
        for i in range(0, len(after), every):
            found = eng.detect(after[i], name)
            assert not any(f.box.iou(b) > 0.2 for f in found for b in boxes[i]), (
                f"frame {i}: {name} still finds a face"
            )


def test_pixelate_hides_every_face_frame_from_the_measure_and_the_detector(
    clip: tuple[Path, list[dict]], engine_cache: Any
) -> None:
    src, truth = clip
    dst = src.with_name("street.pixelated.mp4")
    style = MaskStyle(method="pixelate")
    redact_video(src, dst, CachedEngine(engine_cache), VideoOptions(style=style))  # type: ignore[arg-type]
    before, after = frames_of(src), frames_of(dst)
    boxes = truth_boxes(truth)
    bad, counted = measure.count_unredacted(before, after, boxes)
    assert counted >= 6 * 60 and bad == 0, f"{bad} of {counted} face-frames left visible"
    eng = engine()
    for i in range(0, len(after), 2):
        found = eng.detect(after[i])
        assert not any(f.box.iou(b) > 0.2 for f in found for b in boxes[i]), f"frame {i}: a face is found"


def test_audio_and_container_are_kept(clip: tuple[Path, list[dict]], redacted: tuple[Path, Any]) -> None:
    src, _ = clip
    dst, summary = redacted
    a, b = video.probe(src), video.probe(dst)
    assert (b.format, b.codec, b.width, b.height, b.frame_rate) == (
        a.format,
        a.codec,
        a.width,
        a.height,
        a.frame_rate,
    )
    assert abs(b.duration_ms - a.duration_ms) <= 40 and b.has_audio and b.audio_codec == a.audio_codec
    assert summary.metadata.width == a.width
    assert audio_packets(dst) == audio_packets(src)


def test_a_consenting_person_stays_visible_and_no_one_else(
    clip: tuple[Path, list[dict]], cast: dict, engine_cache: Any
) -> None:
    """The keeper here is the redact package's contract (the service's KeepCollectionId builds it
    from a collection's consenting subjects): the white_male face is kept, everyone is hidden."""
    src, truth = clip
    eng = CachedEngine(engine_cache)
    crop, _ = cast["white_male"]
    faces = eng.detect(crop)
    reference = eng.embed(crop, [max(faces, key=lambda f: f.box.area)])[0]
    decided: list[int] = []

    def decide(templates: Any) -> bool:
        decided.append(len(templates))
        return all(eng.similarity(reference, x) >= 80.0 for x in templates)

    keeper = TrackKeeper(identifiable=lambda f: f.box.width >= 30, decide=decide)
    dst = src.with_name("street.kept.mp4")
    summary = redact_video(src, dst, eng, keeper=keeper)  # type: ignore[arg-type]
    assert summary.tracks_kept == 1 and decided
    before, after = frames_of(src), frames_of(dst)
    kept = truth_boxes(truth, only={"white_male"})
    visible, counted = measure.count_unredacted(before, after, kept)
    assert counted >= 70 and visible == counted
    bad, others = measure.count_unredacted(before, after, truth_boxes(truth, skip={"white_male"}))
    assert others >= 5 * 60 and bad == 0


def test_bad_videos_are_refused_clearly(tmp_path: Path, engine_cache: Any) -> None:
    eng = CachedEngine(engine_cache)
    good = write_video(tmp_path / "ok.mp4", pattern_frames(25))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    audio_only = write_audio(tmp_path / "song.m4a")
    for bad in (empty, text, truncated, audio_only):
        with pytest.raises(InvalidVideo):
            redact_video(bad, tmp_path / "out.mp4", eng)  # type: ignore[arg-type]
        assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(InvalidInput, match="detection rate"):
        VideoOptions(detect_rate=0)

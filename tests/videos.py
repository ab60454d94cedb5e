"""Test videos, made in the tests with PyAV (never committed): synthetic clips with an audio tone,
and scenes in which face crops from ../shared/faces move, enter and leave, cross, and cut.

``write_video`` writes any frames; ``Scene`` composes actors (a face crop following a path between
two moments) over a background and returns, per frame, where each actor's face is, so tests can
compare what the pipeline found with the truth. The video tests and the redaction tests use both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np


_QUIET = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libsvtav1": {"preset": "12", "svtav1-params": "log-level=1"},
}


def tone(sample_rate: int, start: int, n: int, freq: float = 440.0) -> np.ndarray:
    t = (np.arange(start, start + n) / sample_rate).astype(np.float64)
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :]


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float | Fraction = 25,
    codec: str = "libx264",
    audio_codec: str | None = "aac",
    audio_seconds: float | None = None,
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (all of one size) into ``path``; with ``audio_codec``, a 440 Hz tone as long
    as the video (or ``audio_seconds``)."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    frames = iter(frames)
    first = next(frames)
    out = av.open(str(path), "w", format=container)
    video = out.add_stream(codec, rate=rate)
    video.height, video.width = first.shape[:2]
    video.pix_fmt = pix_fmt
    video.codec_context.options = options or _QUIET.get(codec, {})
    audio = None
    sr = 48000
    if audio_codec:
        audio = out.add_stream(audio_codec, rate=sr)
        audio.layout = "mono"
    n = 0
    for image in itertools.chain([first], frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = n
        frame.time_base = 1 / rate
        for packet in video.encode(frame):
            out.mux(packet)
        n += 1
    for packet in video.encode(None):
        out.mux(packet)
    if audio is not None:
        _write_tone(out, audio, int(sr * (audio_seconds if audio_seconds is not None else n / float(rate))))
    out.close()
    return path


def write_audio(path: Path, seconds: float = 1.0, codec: str = "aac") -> Path:
    """A file with an audio stream and no video stream."""
    import av

    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=48000)
    stream.layout = "mono"
    _write_tone(out, stream, int(48000 * seconds))
    out.close()
    return path


def _write_tone(out: Any, audio: Any, total: int) -> None:
    import av

    sr = audio.codec_context.sample_rate
    chunk = audio.codec_context.frame_size or 1024
    for start in range(0, total, chunk):
        samples = tone(sr, start, min(chunk, total - start))
        if samples.shape[1] < chunk:
            samples = np.pad(samples, ((0, 0), (0, chunk - samples.shape[1])))
        af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        af.sample_rate = sr
        af.pts = start
        af.time_base = Fraction(1, sr)
        for packet in audio.encode(af):
            out.mux(packet)
    for packet in audio.encode(None):
        out.mux(packet)


def pattern_frames(n: int, width: int = 320, height: int = 240) -> Iterable[np.ndarray]:
    """A moving bright bar over a colour that changes per frame (frame i is recognisable)."""
    for i in range(n):
        img = np.zeros((height, width, 3), np.uint8)
        img[:, :, 0] = (i * 7) % 256
        img[:, :, 2] = 60
        x = (i * 4) % max(1, width - 40)
        img[height // 3 : height // 3 + 50, x : x + 40] = 255
        yield img


# ---- scenes with faces --------------------------------------------------------------------------
Box = tuple[float, float, float, float]  # left, top, right, bottom in frame pixels


@dataclass
class Actor:
    """A face crop (RGB, with its face box inside the crop) that follows ``path`` from ``start_s`` to
    ``end_s``: ``path(u)`` for u in 0..1 gives the crop's centre (x, y) and its scale."""

    name: str
    crop: np.ndarray
    face: Box  # the face's box inside the crop, in crop pixels
    start_s: float
    end_s: float
    path: Callable[[float], tuple[float, float, float]]
    #: How the head turns: ``turn(u)`` gives the roll in degrees (in the picture's plane) and the
    #: width factor of a turn away (1: frontal; 0.5: the face squeezed to half its width).
    turn: Callable[[float], tuple[float, float]] | None = None


@dataclass
class Scene:
    width: int = 640
    height: int = 360
    fps: float = 25.0
    seconds: float = 4.0
    actors: list[Actor] = field(default_factory=list)
    #: times (s) at which the background changes completely (a cut)
    cuts: Sequence[float] = ()

    def render(self, whole: bool = False) -> tuple[list[np.ndarray], list[dict[str, Box]]]:
        """The frames and, per frame, each visible actor's face box: clipped to the frame, of faces at
        least half inside it; with ``whole``, the whole box of every face with a pixel inside it."""
        from PIL import Image

        frames, truth = [], []
        rng = np.random.default_rng(7)
        backgrounds = [
            np.clip(rng.normal(90 + 50 * k, 12, (self.height, self.width, 3)), 0, 255).astype(np.uint8)
            for k in range(len(self.cuts) + 1)
        ]
        for i in range(int(round(self.seconds * self.fps))):
            t = i / self.fps
            shot = sum(t >= c for c in self.cuts)
            img = backgrounds[shot].copy()
            boxes: dict[str, Box] = {}
            for actor in self.actors:
                if not (actor.start_s <= t < actor.end_s):
                    continue
                u = (t - actor.start_s) / max(actor.end_s - actor.start_s, 1e-9)
                cx, cy, scale = actor.path(u)
                roll, squeeze = actor.turn(u) if actor.turn else (0.0, 1.0)
                h, w = actor.crop.shape[:2]
                sw, sh = max(1, int(round(w * scale * squeeze))), max(1, int(round(h * scale)))
                sx, sy = sw / w, sh / h
                crop = Image.fromarray(actor.crop).resize((sw, sh), Image.Resampling.BILINEAR)
                fl, ft, fr, fb = actor.face
                corners = np.array(
                    [(fl * sx, ft * sy), (fr * sx, ft * sy), (fl * sx, fb * sy), (fr * sx, fb * sy)]
                )
                alpha = None
                if roll:
                    # rotate about the crop's centre (the face box's corners with it)
                    rgba = crop.convert("RGBA").rotate(roll, Image.Resampling.BILINEAR, expand=True)
                    r = np.radians(roll)
                    rot = np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
                    corners = (corners - (sw / 2, sh / 2)) @ rot.T + (rgba.width / 2, rgba.height / 2)
                    sw, sh = rgba.width, rgba.height
                    alpha = np.asarray(rgba)[:, :, 3:] / 255.0
                    crop = rgba.convert("RGB")
                crop = np.asarray(crop)
                x0, y0 = int(round(cx - sw / 2)), int(round(cy - sh / 2))
                fx0, fy0 = max(x0, 0), max(y0, 0)
                fx1, fy1 = min(x0 + sw, self.width), min(y0 + sh, self.height)
                if fx1 <= fx0 or fy1 <= fy0:
                    continue
                part = crop[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
                if alpha is not None:
                    k = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
                    part = (part * k + img[fy0:fy1, fx0:fx1] * (1 - k)).astype(np.uint8)
                img[fy0:fy1, fx0:fx1] = part
                # the face is the oval inscribed in its box: the box around that oval, turned
                ccx, ccy = corners.mean(axis=0)
                ax, ay = (fr - fl) * sx / 2, (fb - ft) * sy / 2
                c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
                hx, hy = math.hypot(ax * c, ay * s), math.hypot(ax * s, ay * c)
                box = (x0 + ccx - hx, y0 + ccy - hy, x0 + ccx + hx, y0 + ccy + hy)
                if whole:
                    if box[0] < self.width and box[1] < self.height and box[2] > 0 and box[3] > 0:
                        boxes[actor.name] = box
                    continue
                clipped = (max(box[0], 0), max(box[1], 0), min(box[2], self.width), min(box[3], self.height))
                if clipped[2] - clipped[0] > 0.5 * (box[2] - box[0]) and clipped[3] - clipped[1] > 0.5 * (
                    box[3] - box[1]
                ):
                    boxes[actor.name] = clipped
            frames.append(img)
            truth.append(boxes)
        return frames, truth

    def write(self, path: Path, whole: bool = False, **kw: object) -> list[dict[str, Box]]:
        frames, truth = self.render(whole)
        write_video(path, frames, fps=self.fps, **kw)  # type: ignore[arg-type]
        return truth


def linear(x0: float, y0: float, x1: float, y1: float, s0: float = 1.0, s1: float | None = None):
    """A straight path from (x0, y0) to (x1, y1), the scale going from s0 to s1."""
    s1 = s0 if s1 is None else s1
    return lambda u: (x0 + (x1 - x0) * u, y0 + (y1 - y0) * u, s0 + (s1 - s0) * u)


def face_crop(image: np.ndarray, box: Box, margin: float = 0.6, size: int = 120) -> tuple[np.ndarray, Box]:
    """A square crop around a face box (``margin`` of the face's size on each side), resized so that the
    face is ``size`` px wide; returns the crop and the face box inside it."""
    from PIL import Image

    left, top, right, bottom = box
    fw, fh = right - left, bottom - top
    side = max(fw, fh) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
    h, w = image.shape[:2]
    padded = np.pad(
        image,
        ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0)),
        mode="edge",
    )
    crop = padded[y0 + max(0, -y0) : y1 + max(0, -y0), x0 + max(0, -x0) : x1 + max(0, -x0)]
    scale = size / fw
    out = np.asarray(
        Image.fromarray(crop).resize(
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            Image.Resampling.LANCZOS,
        )
    )
    return out, ((left - x0) * scale, (top - y0) * scale, (right - x0) * scale, (bottom - y0) * scale)


def photo_face(engine: Any, path: Path, size: int = 90, margin: float = 0.6) -> tuple[np.ndarray, Box]:
    """A crop of the largest face of a photo (its face ``size`` px wide) and the face box in it."""
    from facewarden.media import images

    pixels = images.read(path)
    face = max(engine.detect(pixels), key=lambda f: f.box.area)
    b = face.box
    return face_crop(pixels, (b.left, b.top, b.right, b.bottom), margin=margin, size=size)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0

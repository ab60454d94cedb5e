"""Redact a video file: every face hidden on every frame it is on, the audio untouched.

Two passes over the stored video, so that a mask can reach backward in time:

1. **Plan.** Faces are detected on ``detect_rate`` frames per second (every frame when None),
   and the tracker links the detections of one face into a track (a single detection is a track
   too: here a false face costs a blurred patch, a missed one a person's privacy). Masks are then
   carried along each track (:mod:`.carry`): over the frames between detections and the frames
   where detection blinked, and for ``reach_s`` before a track's first and after its last
   detection, widened for the track's motion and growing with the distance from a detection.
2. **Write.** The video is decoded again and every frame is written with its masks drawn
   (:func:`facewarden.media.video.rewrite`): same container, codec family, resolution, frame
   timing (so frame rate and duration) and audio packets copied unchanged.

With a ``keeper`` (the people who consented to stay visible), the faces of pass 1 that are large
and sharp enough to identify are embedded (one every ``KEEP_EVERY_MS`` of each track), and a
track is left visible only when every one of them belongs to the same consenting person; a track
with no identifiable face, or with one that does not match, is hidden (fail closed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import DetectedFace, Engine
from ..engine.faces import Box
from ..engine.tracking import FaceTracks, Tracker
from ..errors import InvalidInput
from ..media import video
from . import carry as carry_mod
from . import masks

#: Frames analysed per second of video by default (the others are covered by carried masks).
DEFAULT_DETECT_RATE: float | None = 12.5
#: How long a mask is carried before a track's first and after its last detection.
DEFAULT_REACH_S = 1.0
#: How fast a carried mask grows away from a detection, as a fraction of the face per second.
DEFAULT_GROW_PER_S = 0.25
#: A track lost for up to this long and found again is one track: the masks between are
#: interpolated (tight near either end) rather than carried from both ends (wider).
TRACK_GAP_MS = 2000
#: With a keeper, a track's identifiable faces are embedded and checked one every this long, so
#: that every stretch of a track is looked at (a track that changed person half-way is caught).
KEEP_EVERY_MS = 500

Progress = Callable[[float], None]


@dataclass(frozen=True)
class VideoOptions:
    """How a video is redacted (see the module docstring)."""

    style: masks.MaskStyle = field(default_factory=masks.MaskStyle)
    detect_rate: float | None = DEFAULT_DETECT_RATE
    reach_s: float = DEFAULT_REACH_S
    grow_per_s: float = DEFAULT_GROW_PER_S
    #: Frames detected at once, on threads (the detectors release the GIL).
    threads: int = 2

    def __post_init__(self) -> None:
        if self.detect_rate is not None and not (
            isinstance(self.detect_rate, int | float) and 0 < self.detect_rate <= 240
        ):
            raise InvalidInput(
                f"The detection rate is frames per second, above 0 and at most 240; {self.detect_rate!r} is not."
            )
        if not 0 <= self.reach_s <= 10 or not 0 <= self.grow_per_s <= 10:
            raise InvalidInput("The mask reach (s) and growth (per s) must each be between 0 and 10.")


@dataclass(frozen=True)
class TrackKeeper:
    """Who stays visible: ``identifiable`` says whether a face is large and sharp enough to be
    recognised; ``decide`` gets the templates of a track's identifiable faces and returns True
    only when all of them are the same consenting person."""

    identifiable: Callable[[DetectedFace], bool]
    decide: Callable[[Sequence[np.ndarray]], bool]


@dataclass
class Plan:
    """The masks of every frame, from pass 1."""

    metadata: video.VideoMetadata
    masks: list[list[Box]]
    frames_analysed: int
    detections: int
    tracks: int
    tracks_kept: int

    def boxes(self, frame: int) -> list[Box]:
        return self.masks[frame] if 0 <= frame < len(self.masks) else []


@dataclass(frozen=True)
class VideoSummary:
    """What a redaction did (never where anyone was)."""

    metadata: video.VideoMetadata
    frames_analysed: int
    detections: int
    tracks: int
    tracks_hidden: int
    tracks_kept: int
    masked_face_frames: int


def plan(
    path: str | Path,
    engine: Engine,
    options: VideoOptions | None = None,
    *,
    keeper: TrackKeeper | None = None,
    limits: video.VideoLimits | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Pass 1: detect (on ``options.threads`` threads), track and carry; the boxes to mask on
    every frame."""
    options = options or VideoOptions()
    templates: dict[int, list[np.ndarray]] = {}
    embedded_at: dict[int, int] = {}

    def identify(image: np.ndarray, timestamp_ms: int, faces: list[tuple[DetectedFace, int]]) -> None:
        """With a keeper: embed each track's identifiable faces, one every KEEP_EVERY_MS."""
        if keeper is None:
            return
        due = [
            (f, t)
            for f, t in faces
            if keeper.identifiable(f) and timestamp_ms - embedded_at.get(t, -KEEP_EVERY_MS) >= KEEP_EVERY_MS
        ]
        if due:
            for (_, t), template in zip(due, engine.embed(image, [f for f, _ in due])):
                templates.setdefault(t, []).append(template)
                embedded_at[t] = timestamp_ms

    tracks = FaceTracks(engine, tracker=Tracker(min_hits=1, max_age_ms=TRACK_GAP_MS), on_faces=identify)
    last_index = 0
    with video.VideoReader(path, limits) as reader:
        total_ms = max(reader.metadata.duration_ms, 1)
        for frame, _ in tracks.run(reader.frames(options.detect_rate), workers=options.threads):
            last_index = frame.index
            if progress is not None:
                progress(min(frame.timestamp_ms / total_ms, 1.0))
        meta = reader.metadata  # the duration is known for certain once every frame was decoded
    found = tracks.finish()
    kept = {
        t.track_id
        for t in found
        if keeper is not None and templates.get(t.track_id) and keeper.decide(templates[t.track_id]) is True
    }
    fps = meta.frame_rate or 25.0
    params = carry_mod.Carry.for_rate(fps, options.reach_s, options.grow_per_s)
    step = math.ceil(fps / options.detect_rate) if options.detect_rate else 1
    n_frames = last_index + 1 + step + params.reach
    hidden = [t for t in found if t.track_id not in kept]
    per_frame = carry_mod.masks_per_frame(
        [[carry_mod.Sighting(o.frame or 0, o.box) for o in t.observations] for t in hidden], n_frames, params
    )
    return Plan(meta, per_frame, tracks.frames, tracks.faces, len(found), len(kept))


def write(
    src: str | Path,
    dst: str | Path,
    the_plan: Plan,
    style: masks.MaskStyle | None = None,
    *,
    limits: video.VideoLimits | None = None,
    progress: Progress | None = None,
) -> int:
    """Pass 2: the copy with every planned mask drawn; returns the face-frames masked."""
    style = style or masks.MaskStyle()
    drawn = 0

    def transform(frame: video.Frame) -> np.ndarray:
        nonlocal drawn
        boxes = the_plan.boxes(frame.index)
        drawn += len(boxes)
        return masks.apply(frame.image, boxes, style) if boxes else frame.image

    def report(done_ms: int, total_ms: int) -> None:
        if progress is not None:
            progress(min(done_ms / max(total_ms, 1), 1.0))

    video.rewrite(src, dst, transform, limits=limits, progress=report)
    return drawn


def redact_video(
    src: str | Path,
    dst: str | Path,
    engine: Engine,
    options: VideoOptions | None = None,
    *,
    keeper: TrackKeeper | None = None,
    limits: video.VideoLimits | None = None,
    progress: Progress | None = None,
) -> VideoSummary:
    """Both passes: ``dst`` is ``src`` with every face hidden but the kept ones. ``progress`` gets
    0..1 over the whole job (detection is about two thirds of the work)."""
    options = options or VideoOptions()
    first, second = _split(progress, 0.7)
    p = plan(src, engine, options, keeper=keeper, limits=limits, progress=first)
    drawn = write(src, dst, p, options.style, limits=limits, progress=second)
    return VideoSummary(
        metadata=p.metadata,
        frames_analysed=p.frames_analysed,
        detections=p.detections,
        tracks=p.tracks,
        tracks_hidden=p.tracks - p.tracks_kept,
        tracks_kept=p.tracks_kept,
        masked_face_frames=drawn,
    )


def _split(progress: Progress | None, at: float) -> tuple[Progress | None, Progress | None]:
    if progress is None:
        return None, None
    return (lambda f: progress(at * f)), (lambda f: progress(at + (1 - at) * f))

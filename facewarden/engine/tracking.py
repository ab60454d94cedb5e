"""Faces across frames: a SORT-style tracker (constant-velocity Kalman filter + IoU assignment).

Video analysis detects faces on sampled frames; the tracker links the detections of one person
into a *track*, so that a video search embeds and searches a person once (with the track's best
faces) instead of every frame, and so that each person keeps one ``Person.Index``.

The method is SORT (Bewley et al., 2016): each track carries a Kalman filter over its box centre,
scale (area) and aspect ratio, with constant velocities for centre and scale; at each frame the
filters predict where their faces are, and detections are assigned to predictions by the Hungarian
algorithm (:func:`scipy.optimize.linear_sum_assignment`) on ``1 - IoU``. Two changes suit sampled
video: the filter advances by the real time between frames (frames are 200 ms apart at 5/s, not
one step), and a detection that does not overlap its prediction may still join a track whose
centre is within ``max_shift`` face sizes and whose size is similar (a fast face at 5 frames/s can
move more than its own width between samples). A track that goes unmatched for ``max_age_ms`` ends;
a track needs ``min_hits`` detections to count (a single-frame detection is more often a false face
than a person), and confirmed tracks are numbered 0, 1, 2... in the order they began.

Each observation carries a quality in 0..1 (:func:`face_quality`: detector confidence, size,
sharpness, frontal pose), and :meth:`Track.best` picks the observations worth embedding.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .faces import Box, DetectedFace

if TYPE_CHECKING:
    from . import Engine

#: Defaults, tuned on sampled video (5 frames/s).
IOU_THRESHOLD = 0.2
MAX_AGE_MS = 2000
MIN_HITS = 2
MAX_SHIFT = 1.5
#: A face overlapping another person's (predicted) face by more than this is "crowded".
CROWD_IOU = 0.3
#: Face height (px) from which size no longer improves a face's quality for embedding.
GOOD_FACE_PX = 100.0


@dataclass
class Observation:
    """One detection of a track: when, where, what the detector returned and how good it is."""

    timestamp_ms: int
    box: Box
    quality: float
    payload: Any = None  # e.g. the DetectedFace
    frame: int | None = None  # the caller's frame number, if it gave one
    #: Another person's face was (predicted) in the same place: while two people cross, the face
    #: seen may be either's, so such a face is embedded only when a track has no other.
    crowded: bool = False

    @property
    def rank(self) -> tuple[bool, float, int]:
        """Sort key, best first: uncrowded, then higher quality, then earlier."""
        return (self.crowded, -self.quality, self.timestamp_ms)


@dataclass
class Track:
    """One person's detections over time. ``index`` is assigned when the track is confirmed;
    ``templates`` (one row per best face) are filled by :class:`FaceTracks` when asked to embed."""

    track_id: int
    observations: list[Observation] = field(default_factory=list)
    index: int | None = None
    templates: np.ndarray | None = None

    @property
    def start_ms(self) -> int:
        return self.observations[0].timestamp_ms

    @property
    def end_ms(self) -> int:
        return self.observations[-1].timestamp_ms

    def best(self, n: int = 3, min_gap_ms: int = 0) -> list[Observation]:
        """The ``n`` observations of highest quality (uncrowded first; ties: earliest), at least
        ``min_gap_ms`` apart so that they show the face at different moments; in time order."""
        chosen: list[Observation] = []
        for obs in sorted(self.observations, key=lambda o: o.rank):
            if len(chosen) >= n:
                break
            if all(abs(obs.timestamp_ms - c.timestamp_ms) >= min_gap_ms for c in chosen):
                chosen.append(obs)
        return sorted(chosen, key=lambda o: o.timestamp_ms)


def face_quality(face: DetectedFace) -> float:
    """How suitable a detected face is for a template, 0..1: detector confidence x size x sharpness
    x frontality (a profile or blurred face gives a worse template than a sharp frontal one)."""
    conf = min(max(face.confidence / 100.0, 0.0), 1.0)
    size = min(face.box.height / GOOD_FACE_PX, 1.0)
    sharp = 0.25 + 0.75 * min(max(face.quality.sharpness / 100.0, 0.0), 1.0)
    yaw, pitch = abs(face.pose.yaw), abs(face.pose.pitch)
    frontal = max(0.0, math.cos(math.radians(min(yaw, 89.0)))) * max(
        0.0, math.cos(math.radians(min(pitch, 89.0)))
    )
    return float(conf * size * sharp * (0.2 + 0.8 * frontal))


class _Kalman:
    """Constant-velocity Kalman filter over [cx, cy, s, r, vcx, vcy, vs] (s = area, r = w/h);
    velocities are per second, so irregular frame gaps predict correctly."""

    def __init__(self, box: Box) -> None:
        self.x = np.zeros(7)
        self.x[:4] = _to_z(box)
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        self.R = np.diag([1.0, 1.0, 10.0, 10.0])
        self.H = np.eye(4, 7)

    def _F(self, dt: float) -> np.ndarray:
        F = np.eye(7)
        F[0, 4] = F[1, 5] = F[2, 6] = dt
        return F

    def _Q(self, dt: float) -> np.ndarray:
        # process noise grows with the gap; velocities may change (people accelerate, turn)
        q = np.diag([1.0, 1.0, 1.0, 0.01, 100.0, 100.0, 100.0])
        return q * max(dt, 1e-3) * 5.0

    def predict(self, dt: float) -> Box:
        if self.x[2] + self.x[6] * dt <= 0:
            self.x[6] = 0.0
        F = self._F(dt)
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + self._Q(dt)
        return _to_box(self.x)

    def update(self, box: Box) -> None:
        z = _to_z(box)
        y = z - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(7) - K @ self.H) @ self.P

    @property
    def box(self) -> Box:
        return _to_box(self.x)


def _to_z(b: Box) -> np.ndarray:
    w, h = max(b.width, 1e-3), max(b.height, 1e-3)
    return np.array([b.left + w / 2, b.top + h / 2, w * h, w / h])


def _to_box(x: np.ndarray) -> Box:
    s, r = max(float(x[2]), 1e-6), max(float(x[3]), 1e-6)
    w = math.sqrt(s * r)
    h = s / w
    return Box(float(x[0]) - w / 2, float(x[1]) - h / 2, float(x[0]) + w / 2, float(x[1]) + h / 2)


@dataclass
class _Live:
    track: Track
    kf: _Kalman
    last_ms: int  # when it was last matched
    state_ms: int  # the moment its filter's state describes
    hits: int = 1
    predicted: Box | None = None


class Tracker:
    """Feed it each analysed frame in time order with :meth:`update`; :meth:`finish` returns the
    confirmed tracks, numbered by start time. Deterministic: the same detections give the same
    tracks and indices."""

    def __init__(
        self,
        *,
        iou_threshold: float = IOU_THRESHOLD,
        max_age_ms: int = MAX_AGE_MS,
        min_hits: int = MIN_HITS,
        max_shift: float = MAX_SHIFT,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_age_ms = max_age_ms
        self.min_hits = max(1, min_hits)
        self.max_shift = max_shift
        self._live: list[_Live] = []
        self._done: list[Track] = []
        self._next_id = 0
        self._next_index = 0
        self._last_ms: int | None = None
        #: The observations made by the last :meth:`update`, one per detection, in its order.
        self.last: list[Observation] = []

    def update(
        self,
        timestamp_ms: int,
        boxes: Sequence[Box],
        *,
        qualities: Sequence[float] | None = None,
        payloads: Sequence[Any] | None = None,
        frame: int | None = None,
    ) -> list[int]:
        """Add one frame's detections; returns each detection's track id (tracks not yet
        confirmed have ids too; their index is None until ``min_hits`` detections)."""
        if self._last_ms is not None and timestamp_ms < self._last_ms:
            raise ValueError(f"frames must come in time order ({timestamp_ms} ms after {self._last_ms} ms)")
        self._last_ms = timestamp_ms
        n = len(boxes)
        qualities = list(qualities) if qualities is not None else [1.0] * n
        payloads = list(payloads) if payloads is not None else [None] * n
        # end tracks unmatched for too long, then predict the rest to this moment
        still: list[_Live] = []
        for live in self._live:
            if timestamp_ms - live.last_ms > self.max_age_ms:
                self._end(live)
            else:
                live.predicted = live.kf.predict((timestamp_ms - live.state_ms) / 1000.0)
                live.state_ms = timestamp_ms
                still.append(live)
        self._live = still
        predicted = [lv.predicted or lv.kf.box for lv in self._live]
        pairs = self._assign(predicted, list(boxes))
        owner = {di: li for li, di in pairs}
        observations = [
            Observation(
                timestamp_ms,
                b,
                float(qualities[di]),
                payloads[di],
                frame,
                crowded=any(p.iou(b) > CROWD_IOU for li, p in enumerate(predicted) if li != owner.get(di, -1))
                or any(o.iou(b) > CROWD_IOU for dj, o in enumerate(boxes) if dj != di),
            )
            for di, b in enumerate(boxes)
        ]
        ids = [-1] * n
        for li, di in pairs:
            live = self._live[li]
            live.kf.update(boxes[di])
            live.last_ms = timestamp_ms
            live.hits += 1
            live.track.observations.append(observations[di])
            if live.track.index is None and live.hits >= self.min_hits:
                live.track.index = self._next_index
                self._next_index += 1
            ids[di] = live.track.track_id
        for di in range(n):
            if ids[di] >= 0:
                continue
            track = Track(self._next_id, [observations[di]])
            self._next_id += 1
            if self.min_hits <= 1:
                track.index = self._next_index
                self._next_index += 1
            self._live.append(_Live(track, _Kalman(boxes[di]), timestamp_ms, timestamp_ms))
            ids[di] = track.track_id
        self.last = observations
        return ids

    def _assign(self, predicted: list[Box], boxes: list[Box]) -> list[tuple[int, int]]:
        if not predicted or not boxes:
            return []
        from scipy.optimize import linear_sum_assignment

        big = 1e6
        cost = np.full((len(predicted), len(boxes)), big)
        for i, p in enumerate(predicted):
            for j, b in enumerate(boxes):
                iou = p.iou(b)
                if iou >= self.iou_threshold:
                    cost[i, j] = 1.0 - iou
                elif self._near(p, b):
                    # not overlapping enough: allowed, but any overlapping pair is preferred
                    cost[i, j] = 1.0 + _centre_distance(p, b) / _size(p)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] < big]

    def _near(self, p: Box, b: Box) -> bool:
        ratio = _size(b) / _size(p)
        return 0.6 <= ratio <= 1 / 0.6 and _centre_distance(p, b) <= self.max_shift * _size(p)

    def _end(self, live: _Live) -> None:
        if live.track.index is not None:
            self._done.append(live.track)

    def finish(self) -> list[Track]:
        """End every track; the confirmed ones, by index (= by start time of confirmation)."""
        for live in self._live:
            self._end(live)
        self._live = []
        return sorted(self._done, key=lambda t: t.index if t.index is not None else -1)


def _centre_distance(a: Box, b: Box) -> float:
    return math.hypot(
        (a.left + a.right) / 2 - (b.left + b.right) / 2, (a.top + a.bottom) / 2 - (b.top + b.bottom) / 2
    )


def _size(b: Box) -> float:
    return max(math.sqrt(max(b.area, 0.0)), 1e-3)


class FaceTracks:
    """Frames in, tracked faces out: detect faces on each frame with the engine, track them, and keep
    each track's ``best_n`` best faces as aligned chips, embedded (in one batch per track) when the
    track is finished. Only those chips are kept, never frames: memory stays bounded however long
    the video.

    ``add`` returns each detected face with its track id, so a caller can stream per-frame results.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        attributes: str = "DEFAULT",
        embed: bool = False,
        best_n: int = 3,
        tracker: Tracker | None = None,
        on_faces: Callable[[np.ndarray, int, list[tuple[DetectedFace, int]]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.attributes = attributes
        self.embed = embed
        self.best_n = best_n
        self.tracker = tracker or Tracker()
        #: Called with each frame's image, timestamp and (face, track id) pairs while the faces can
        #: still be aligned (redaction embeds the faces it must identify here).
        self.on_faces = on_faces
        self._chips: dict[int, list[tuple[tuple[bool, float, int], np.ndarray]]] = {}
        self.frames = 0
        self.faces = 0

    def add(
        self, timestamp_ms: int, image: np.ndarray, frame: int | None = None
    ) -> list[tuple[DetectedFace, int]]:
        """Detect and track the faces of one frame (frames in time order)."""
        return self._track(timestamp_ms, image, frame, self.engine.detect(image, attributes=self.attributes))

    def run(
        self, frames: Iterable[Any], workers: int = 1
    ) -> Iterator[tuple[Any, list[tuple[DetectedFace, int]]]]:
        """Detect and track a stream of frames (objects with ``timestamp_ms``, ``image`` and
        ``index``, e.g. :class:`facewarden.media.video.Frame`), yielding each frame with its faces,
        in order. With ``workers`` > 1, that many frames are detected at once on threads (the
        detectors release the GIL) while the next frames decode; tracking stays in time order."""
        if workers <= 1:
            for f in frames:
                yield f, self.add(f.timestamp_ms, f.image, f.index)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="detect") as pool:
            pending: deque[tuple[Any, Future[list[DetectedFace]]]] = deque()
            for f in frames:
                pending.append((f, pool.submit(self.engine.detect, f.image, attributes=self.attributes)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, self._track(done.timestamp_ms, done.image, done.index, future.result())
            while pending:
                done, future = pending.popleft()
                yield done, self._track(done.timestamp_ms, done.image, done.index, future.result())

    def _track(
        self, timestamp_ms: int, image: np.ndarray, frame: int | None, faces: list[DetectedFace]
    ) -> list[tuple[DetectedFace, int]]:
        qualities = [face_quality(f) for f in faces]
        ids = self.tracker.update(
            timestamp_ms, [f.box for f in faces], qualities=qualities, payloads=faces, frame=frame
        )
        self.frames += 1
        self.faces += len(faces)
        if self.embed:
            for face, obs, track_id in zip(faces, self.tracker.last, ids):
                self._keep_chip(image, face, obs, track_id)
        if self.on_faces is not None:
            self.on_faces(image, timestamp_ms, list(zip(faces, ids)))
        for face in faces:
            face.shape = None  # the landmark object refers to this frame; drop it with the frame
        return list(zip(faces, ids))

    def _keep_chip(self, image: np.ndarray, face: DetectedFace, obs: Observation, track_id: int) -> None:
        kept = self._chips.setdefault(track_id, [])
        if len(kept) >= self.best_n and obs.rank >= kept[-1][0]:
            return
        kept.append((obs.rank, self.engine.chips(image, [face])[0]))
        kept.sort(key=lambda k: k[0])
        del kept[self.best_n :]

    def finish(self) -> list[Track]:
        """The confirmed tracks by index; with ``embed``, each with the templates of its best faces."""
        tracks = self.tracker.finish()
        if self.embed:
            for track in tracks:
                chips = [c for _, c in self._chips.get(track.track_id, [])]
                track.templates = self.engine.embed_chips(np.stack(chips)) if chips else None
        self._chips.clear()
        return tracks

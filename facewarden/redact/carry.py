"""Carry masks along tracks, over the frames where detection blinked, forward and backward.

A detector misses a face now and then (a turn, motion blur, a hand in front), and on video it
may run only on some frames. A face must never flash through in those frames, so a mask is drawn
on every frame a track could be on, not only where it was seen:

* **between two sightings** of a track the face is where it was seen, moved at no more than
  ``speed_slack`` times its average speed between the two: per axis, the interval reachable from
  both sightings (at the midpoint of a gap this is the span between them, near either end it
  narrows to that sighting);
* **before the first and after the last sighting**, for ``reach`` frames (a second pass over a
  stored video makes the backward direction possible), the face is anywhere between where it was
  first or last seen (it may have stood still) and where its recent motion, at up to
  ``speed_slack`` times its speed, would have taken it;
* everywhere away from a sighting the box also **grows** by ``grow`` of its size per frame on each
  side (up to ``max_grow``), for what speed does not explain: a turn, a change of pace or size;
* where two consecutive sightings of a track do not touch, the tracker may have passed from one
  face to another: each part is also carried on its own (:func:`split_at_jumps`).

The boxes returned are face boxes, to which :mod:`.masks` adds its margin. Over-covering is the
safe error here: a bystander's face is worth more than a few blurred pixels of background.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..engine.faces import Box
from ..errors import InvalidInput


@dataclass(frozen=True)
class Sighting:
    """A track seen at ``frame`` (0-based) in ``box``."""

    frame: int
    box: Box


@dataclass(frozen=True)
class Carry:
    """How far masks are carried (see the module docstring); all distances in frames."""

    reach: int = 25
    speed_slack: float = 1.5
    grow: float = 0.02
    max_grow: float = 1.0
    #: Sightings over which a track's recent speed is measured at its ends.
    speed_window: int = 5

    def __post_init__(self) -> None:
        if (
            self.reach < 0
            or self.speed_slack < 1.0
            or self.grow < 0
            or self.max_grow < 0
            or self.speed_window < 1
        ):
            raise InvalidInput(f"Invalid mask carrying parameters: {self}.")

    @classmethod
    def for_rate(cls, fps: float, reach_s: float = 1.0, grow_per_s: float = 0.5) -> Carry:
        """Parameters in seconds turned into frames at ``fps``."""
        fps = max(fps, 1.0)
        return cls(reach=round(reach_s * fps), grow=grow_per_s / fps)


def masks_per_frame(
    tracks: Iterable[Sequence[Sighting]], n_frames: int, params: Carry | None = None
) -> list[list[Box]]:
    """For each frame ``0 .. n_frames - 1``, the face boxes to mask there."""
    params = params or Carry()
    out: list[list[Box]] = [[] for _ in range(n_frames)]
    for track in tracks:
        parts = [track, *(segments if len(segments := split_at_jumps(track)) > 1 else [])]
        for part in parts:
            for frame, box in track_boxes(part, params):
                if 0 <= frame < n_frames and box not in out[frame]:
                    out[frame].append(box)
    return out


def split_at_jumps(track: Sequence[Sighting]) -> list[list[Sighting]]:
    """The track cut wherever a sighting's box does not touch where the one before it would be
    now, moving on as it did: there the tracker may have passed from one face to another (a face
    entering as another is lost behind it). Each part is then also carried on its own, so the
    face that came in gets its backward reach and the one left behind its forward reach, besides
    the masks between the two sightings."""
    seen = _by_frame(track)
    parts: list[list[Sighting]] = []
    last: tuple[int, Box] | None = None
    vx = vy = 0.0
    for f in sorted(seen):
        box = seen[f]
        if last is not None:
            f0, b0 = last
            px, py = vx * (f - f0), vy * (f - f0)  # where the face seen last would be now
            touching = min(b0.right + px, box.right) > max(b0.left + px, box.left) and min(
                b0.bottom + py, box.bottom
            ) > max(b0.top + py, box.top)
            (x0, y0), (x1, y1) = _centre(b0), _centre(box)
            vx, vy = (x1 - x0) / (f - f0), (y1 - y0) / (f - f0)
        if last is None or not touching:
            parts.append([])
        parts[-1].append(Sighting(f, box))
        last = (f, box)
    return parts


def track_boxes(track: Sequence[Sighting], params: Carry) -> list[tuple[int, Box]]:
    """(frame, box) for every frame one track's mask covers, sighted or carried."""
    seen = _by_frame(track)
    if not seen:
        return []
    frames = sorted(seen)
    out: list[tuple[int, Box]] = []
    # backward from the first sighting, then each sighting and the gap after it, then forward
    first, last = frames[0], frames[-1]
    vx, vy = _velocity(frames[: params.speed_window], seen)
    for d in range(params.reach, 0, -1):
        out.append((first - d, _extrapolated(seen[first], -vx, -vy, d, params)))
    for i, f in enumerate(frames):
        out.append((f, seen[f]))
        if i + 1 < len(frames):
            out.extend(_between(f, seen[f], frames[i + 1], seen[frames[i + 1]], params))
    vx, vy = _velocity(frames[-params.speed_window :], seen)
    for d in range(1, params.reach + 1):
        out.append((last + d, _extrapolated(seen[last], vx, vy, d, params)))
    return out


def _by_frame(track: Sequence[Sighting]) -> dict[int, Box]:
    """Sightings by frame; two in one frame become their union."""
    seen: dict[int, Box] = {}
    for s in track:
        b = seen.get(s.frame)
        seen[s.frame] = (
            s.box
            if b is None
            else Box(
                min(b.left, s.box.left),
                min(b.top, s.box.top),
                max(b.right, s.box.right),
                max(b.bottom, s.box.bottom),
            )
        )
    return seen


def _centre(b: Box) -> tuple[float, float]:
    return (b.left + b.right) / 2.0, (b.top + b.bottom) / 2.0


def _velocity(frames: Sequence[int], seen: dict[int, Box]) -> tuple[float, float]:
    """Average velocity (pixels per frame, per axis) over the given sightings."""
    if len(frames) < 2 or frames[-1] == frames[0]:
        return 0.0, 0.0
    (x0, y0), (x1, y1) = _centre(seen[frames[0]]), _centre(seen[frames[-1]])
    span = frames[-1] - frames[0]
    return (x1 - x0) / span, (y1 - y0) / span


def _grown(half_w: float, half_h: float, d: int, params: Carry) -> tuple[float, float]:
    g = min(params.grow * d, params.max_grow)
    return half_w * (1.0 + 2.0 * g), half_h * (1.0 + 2.0 * g)


def _extrapolated(b: Box, vx: float, vy: float, d: int, params: Carry) -> Box:
    """The box ``d`` frames from a sighting, the face moving at velocity (vx, vy) from it: anywhere
    from standing still to slack x that motion, and grown."""
    cx, cy = _centre(b)
    hw, hh = _grown(b.width / 2.0, b.height / 2.0, d, params)
    dx, dy = params.speed_slack * vx * d, params.speed_slack * vy * d
    return Box(cx + min(dx, 0.0) - hw, cy + min(dy, 0.0) - hh, cx + max(dx, 0.0) + hw, cy + max(dy, 0.0) + hh)


def _between(f0: int, b0: Box, f1: int, b1: Box, params: Carry) -> list[tuple[int, Box]]:
    """Boxes for the frames strictly between two sightings of a track."""
    gap = f1 - f0
    if gap <= 1:
        return []
    (x0, y0), (x1, y1) = _centre(b0), _centre(b1)
    vx, vy = abs(x1 - x0) / gap, abs(y1 - y0) / gap
    half_w = max(b0.width, b1.width) / 2.0
    half_h = max(b0.height, b1.height) / 2.0
    k = params.speed_slack
    out = []
    for f in range(f0 + 1, f1):
        d0, d1 = f - f0, f1 - f
        lo_x, hi_x = max(x0 - k * vx * d0, x1 - k * vx * d1), min(x0 + k * vx * d0, x1 + k * vx * d1)
        lo_y, hi_y = max(y0 - k * vy * d0, y1 - k * vy * d1), min(y0 + k * vy * d0, y1 + k * vy * d1)
        hw, hh = _grown(half_w, half_h, min(d0, d1), params)
        out.append((f, Box(lo_x - hw, lo_y - hh, hi_x + hw, hi_y + hh)))
    return out

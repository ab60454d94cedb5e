"""engine/tracking.py: one track (and one Person index) per person across sampled frames: moving,
crossing, leaving and coming back, fast motion, cuts; track quality picks the best faces."""

from __future__ import annotations

import pytest

from facewarden.engine.faces import Box, DetectedFace, Pose, Quality
from facewarden.engine.tracking import Tracker, face_quality

STEP_MS = 200  # 5 sampled frames per second


def box(cx: float, cy: float, size: float = 80.0) -> Box:
    return Box(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)


def run(tracker: Tracker, frames: list[dict[str, Box]]) -> dict[str, set[int]]:
    """Feed frames of {true person: box}; return person -> the track ids their detections got."""
    got: dict[str, set[int]] = {}
    for k, people in enumerate(frames):
        names = sorted(people)
        ids = tracker.update(k * STEP_MS, [people[n] for n in names], payloads=names, frame=k)
        for n, i in zip(names, ids):
            got.setdefault(n, set()).add(i)
    return got


def test_a_moving_face_is_one_track_with_index_0() -> None:
    tracker = Tracker()
    got = run(tracker, [{"a": box(100 + 25 * k, 200 + 5 * k, 80 + k)} for k in range(20)])
    tracks = tracker.finish()
    assert len(got["a"]) == 1 and len(tracks) == 1
    t = tracks[0]
    assert t.index == 0 and len(t.observations) == 20
    assert (t.start_ms, t.end_ms) == (0, 19 * STEP_MS) and t.observations[3].frame == 3


def test_two_people_crossing_keep_their_indices() -> None:
    # a walks right, b walks left, on the same line: their boxes overlap fully mid-way
    frames = [{"a": box(100 + 40 * k, 200), "b": box(900 - 40 * k, 210)} for k in range(21)]
    # while they overlap, the detector sees only the face in front (b) for two samples
    for k in (10, 11):
        del frames[k]["a"]
    tracker = Tracker()
    got = run(tracker, frames)
    assert len(got["a"]) == 1 and len(got["b"]) == 1 and got["a"] != got["b"]
    tracks = tracker.finish()
    assert [len(t.observations) for t in tracks] == [19, 21]
    assert all(o.payload == tracks[0].observations[0].payload for o in tracks[0].observations)
    assert all(o.payload == tracks[1].observations[0].payload for o in tracks[1].observations)


def test_faces_at_a_crossing_are_crowded_and_never_the_best() -> None:
    frames = [{"a": box(100 + 40 * k, 200), "b": box(900 - 40 * k, 210)} for k in range(21)]
    tracker = Tracker()
    run(tracker, frames)
    for track in tracker.finish():
        crowded = [o.frame for o in track.observations if o.crowded]
        assert crowded == [10]  # the one frame where their boxes overlap (IoU 0.78)
        assert not any(o.crowded for o in track.best(5))


def test_fast_motion_without_overlap_between_samples_stays_one_track() -> None:
    # 1.25 face widths per sample: consecutive boxes never overlap
    tracker = Tracker()
    got = run(tracker, [{"a": box(60 + 100 * k, 300)} for k in range(10)])
    assert len(got["a"]) == 1 and len(tracker.finish()) == 1


def test_leaving_and_coming_back_later_is_a_new_person() -> None:
    frames = [{"a": box(200 + 10 * k, 200)} for k in range(5)]
    frames += [{} for _ in range(12)]  # gone for 2.4 s (> max_age 2 s)
    frames += [{"a": box(250, 200)} for _ in range(5)]
    tracker = Tracker()
    got = run(tracker, frames)
    assert len(got["a"]) == 2
    assert [t.index for t in tracker.finish()] == [0, 1]


def test_a_short_gap_keeps_the_track() -> None:
    # hidden for 1.6 s (7 samples), then seen again where its motion predicts
    frames = [{"a": box(200 + 10 * k, 200)} for k in range(5)] + [{}] * 7 + [{"a": box(320, 200)}]
    tracker = Tracker()
    assert len(run(tracker, frames)["a"]) == 1


def test_a_cut_starts_new_tracks() -> None:
    frames = [{"a": box(150, 150), "b": box(500, 300)} for _ in range(5)]
    frames += [{"c": box(400, 120), "d": box(120, 320)} for _ in range(5)]  # new shot, new places
    tracker = Tracker()
    got = run(tracker, frames)
    assert len(set().union(*got.values())) == 4
    assert len(tracker.finish()) == 4


def test_a_single_detection_is_not_a_person_unless_asked() -> None:
    frames = [{"a": box(200, 200)} for _ in range(5)]
    frames[2]["ghost"] = box(600, 100)
    tracker = Tracker()
    run(tracker, frames)
    assert [len(t.observations) for t in tracker.finish()] == [5]
    every = Tracker(min_hits=1)
    run(every, frames)
    assert sorted(len(t.observations) for t in every.finish()) == [1, 5]


def test_indices_are_given_in_order_of_appearance_and_are_deterministic() -> None:
    frames = [{"a": box(100, 100)}] * 3 + [{"a": box(100, 100), "b": box(400, 100)}] * 3
    frames += [{"a": box(100, 100), "b": box(400, 100), "c": box(250, 300)}] * 3

    def indices() -> list[tuple[int | None, object]]:
        tracker = Tracker()
        run(tracker, frames)
        return [(t.index, t.observations[0].payload) for t in tracker.finish()]

    assert indices() == [(0, "a"), (1, "b"), (2, "c")] == indices()


def test_frames_must_come_in_time_order() -> None:
    tracker = Tracker()
    tracker.update(400, [box(1, 1)])
    with pytest.raises(ValueError, match="time order"):
        tracker.update(200, [])


def _face(height: float, confidence: float = 99.0, sharpness: float = 80.0, yaw: float = 0.0) -> DetectedFace:
    return DetectedFace(
        box=Box(0, 0, height, height),
        confidence=confidence,
        landmarks={},
        pose=Pose(0.0, yaw, 0.0),
        quality=Quality(50.0, sharpness),
        image_size=(640, 480),
    )


def test_face_quality_prefers_large_sharp_frontal_confident_faces() -> None:
    best = face_quality(_face(120))
    assert 0 < best <= 1
    for worse in (_face(40), _face(120, sharpness=5), _face(120, yaw=60), _face(120, confidence=55)):
        assert face_quality(worse) < best
    assert face_quality(_face(200)) == best  # past a good size, size no longer matters


def test_best_picks_the_highest_quality_faces_spread_in_time() -> None:
    tracker = Tracker()
    qualities = [0.1, 0.9, 0.85, 0.2, 0.8, 0.3, 0.7]
    for k, q in enumerate(qualities):
        tracker.update(k * STEP_MS, [box(200, 200)], qualities=[q])
    (track,) = tracker.finish()
    assert [o.quality for o in track.best(3)] == [0.9, 0.85, 0.8]
    # at least 300 ms apart: 0.85 (200 ms after 0.9) gives way
    assert [o.quality for o in track.best(3, min_gap_ms=300)] == [0.9, 0.8, 0.7]
    assert len(track.best(10)) == 7

"""Faces tracked through real video: test clips built from ../shared/faces photos, detected with the
engine's default detector, tracked, and each track's best faces embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from facewarden.engine.tracking import FaceTracks
from facewarden.media import video

from .conftest import SHARED_FACES, CachedEngine
from .videos import Actor, Scene, iou, linear, photo_face


@pytest.fixture(scope="module")
def engine(engine_cache):
    """The real engine: video frames are new pixels every run (and chips need the landmark shapes
    that the test cache does not keep)."""
    return engine_cache.engine


@pytest.fixture(scope="module")
def crops(engine_cache):
    return {
        name: photo_face(CachedEngine(engine_cache), SHARED_FACES / rel)
        for name, rel in (
            ("obama", "barack_obama/barack_obama_1.jpg"),
            ("biden", "joe_biden/joe_biden_1.jpg"),
        )
    }


def _truth_owner(truth: dict[str, tuple], box) -> str | None:
    b = (box.left, box.top, box.right, box.bottom)
    best = max(truth, key=lambda n: iou(truth[n], b), default=None)
    return best if best is not None and iou(truth[best], b) > 0.3 else None


def test_two_people_crossing_keep_one_person_index_each(tmp_path: Path, engine, crops) -> None:
    (a_crop, a_face), (b_crop, b_face) = crops["obama"], crops["biden"]
    scene = Scene(
        seconds=4.0,
        actors=[
            Actor("obama", a_crop, a_face, 0.0, 4.0, linear(110, 180, 530, 180)),
            Actor("biden", b_crop, b_face, 0.0, 4.0, linear(530, 190, 110, 190)),  # drawn in front
        ],
    )
    truth = scene.write(tmp_path / "crossing.mp4")
    faces = FaceTracks(engine, embed=True)
    seen = [f.index for f, _ in faces.run(video.read_frames(tmp_path / "crossing.mp4"), workers=2)]
    assert seen == list(range(0, 100, 5))  # in order, although detected two at a time
    tracks = faces.finish()
    assert faces.frames == 20
    assert len(tracks) == 2, [(t.index, t.start_ms, t.end_ms) for t in tracks]
    owners = []
    for track in tracks:
        # every face of a track is one person's, except where the two faces coincide (there the
        # face seen may be either's: such observations are marked crowded and not embedded)
        clear = [o for o in track.observations if iou(*truth[o.frame].values()) < 0.3]
        names = {_truth_owner(truth[o.frame], o.box) for o in clear}
        assert len(names) == 1 and None not in names, names
        owner = next(iter(names))
        assert all(o.crowded for o in track.observations if _truth_owner(truth[o.frame], o.box) != owner)
        owners.append(owner)
        assert track.end_ms - track.start_ms >= 3000  # followed through the crossing
        assert track.templates is not None and 1 <= len(track.templates) <= 3
    assert sorted(owners) == ["biden", "obama"] and [t.index for t in tracks] == [0, 1]
    # each track's templates are its person's: closer to that person's other photo than to the other's
    refs = {}
    for name, rel in (("obama", "barack_obama/barack_obama_2.jpg"), ("biden", "joe_biden/joe_biden_2.jpg")):
        from facewarden.media import images

        pixels = images.read(SHARED_FACES / rel)
        face = max(engine.detect(pixels), key=lambda f: f.box.area)
        refs[name] = engine.embed(pixels, [face])[0]
    # (in calibrated similarity, whatever the model: its own person matches at the default
    # threshold, 80, the other person does not)
    for owner, track in zip(owners, tracks):
        other = "biden" if owner == "obama" else "obama"
        own = max(engine.similarity(t, refs[owner]) for t in track.templates)
        not_own = max(engine.similarity(t, refs[other]) for t in track.templates)
        assert own >= 80 > not_own, (owner, own, not_own)


def test_enter_leave_and_a_cut(tmp_path: Path, engine, crops) -> None:
    (a_crop, a_face), (b_crop, b_face) = crops["obama"], crops["biden"]
    scene = Scene(
        seconds=5.0,
        cuts=[3.0],
        actors=[
            # walks in from the left edge and out at the right before the cut
            Actor("obama", a_crop, a_face, 0.0, 2.6, linear(-60, 180, 700, 180)),
            # after the cut: appears in the middle, still
            Actor("biden", b_crop, b_face, 3.0, 5.0, linear(320, 170, 330, 175)),
        ],
    )
    truth = scene.write(tmp_path / "cut.mkv")
    faces = FaceTracks(engine)
    for frame in video.read_frames(tmp_path / "cut.mkv"):
        faces.add(frame.timestamp_ms, frame.image, frame.index)
    tracks = faces.finish()

    # The truth holds faces more than half inside the frame; the default detector (CenterFace) also
    # finds the visible part of a face entering or leaving at the edge: not counted as anyone's.
    def edge(o) -> bool:
        return not truth[o.frame] and (o.box.left < 2 or o.box.right > scene.width - 2)

    owners = [{_truth_owner(truth[o.frame], o.box) for o in t.observations if not edge(o)} for t in tracks]
    assert owners == [{"obama"}, {"biden"}]
    assert tracks[0].end_ms < 3000 <= tracks[1].start_ms
    assert all(t.templates is None for t in tracks)  # not asked to embed

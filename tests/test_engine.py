"""The engine on real photos: detection counts, face details, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from facewarden.media import images
from facewarden.engine.faces import template_from_bytes, template_to_bytes

from .data import engine, faces_dir, manifest, photo_templates, single_person_photos

# The default detector (CenterFace) finds every face the manifest counts, the three profile or
# half-hidden people of deepface_selfie_many_people.jpg included (dlib's HOG and CNN found 4 of 7).
# It also finds real bystanders the manifest does not count (the girl at the edge of
# face_recognition_obama_and_biden.jpg): at most one per photo.


def test_every_single_person_photo_yields_a_face():
    missed = [p for p, t in photo_templates().items() if t is None]
    assert not missed, f"no face found in {missed}"


@pytest.mark.parametrize(
    "row", [r for r in manifest() if r["path"].startswith("group/")], ids=lambda r: r["path"]
)
def test_group_photo_counts(row):
    known = int(row["number_of_faces_if_known"])
    found = len(engine().detect(images.read(faces_dir() / row["path"])))
    assert known <= found <= known + 1, f"{row['path']}: found {found}, known {known}"


@pytest.mark.parametrize(
    "row", [r for r in manifest() if r["path"].startswith("noface/")], ids=lambda r: r["path"]
)
def test_no_face_in_noface_images(row):
    assert engine().detect(images.read(faces_dir() / row["path"])) == []


def test_face_detail_shape_and_ranges():
    pixels = images.read(faces_dir() / "group/faceapi_bbt1.jpg")
    faces = engine().detect(pixels)
    assert len(faces) == 4
    for f in faces:
        d = f.face_detail()
        assert set(d) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}
        box = d["BoundingBox"]
        assert 0 <= box["Left"] < 1 and 0 <= box["Top"] < 1 and 0 < box["Width"] < 1 and 0 < box["Height"] < 1
        assert [lm["Type"] for lm in d["Landmarks"]] == [
            "eyeLeft",
            "eyeRight",
            "nose",
            "mouthLeft",
            "mouthRight",
        ]
        lm = {x["Type"]: (x["X"], x["Y"]) for x in d["Landmarks"]}
        # Inside the box, eyes above the nose, nose above the mouth, left left of right.
        for x, y in lm.values():
            assert box["Left"] - 0.02 <= x <= box["Left"] + box["Width"] + 0.02
            assert box["Top"] - 0.02 <= y <= box["Top"] + box["Height"] + 0.02
        assert lm["eyeLeft"][0] < lm["eyeRight"][0] and lm["mouthLeft"][0] < lm["mouthRight"][0]
        assert (
            max(lm["eyeLeft"][1], lm["eyeRight"][1])
            < lm["nose"][1]
            < min(lm["mouthLeft"][1], lm["mouthRight"][1])
        )
        assert all(-180 <= v <= 180 for v in d["Pose"].values())
        assert all(0 <= v <= 100 for v in d["Quality"].values())
        assert 50 <= d["Confidence"] <= 100


def test_pose_follows_a_rotated_face():
    from PIL import Image

    img = Image.open(faces_dir() / "barack_obama/barack_obama_1.jpg").convert("RGB")
    upright = engine().detect(np.asarray(img))[0].pose.roll
    tilted = engine().detect(np.asarray(img.rotate(20, expand=True, fillcolor=(128, 128, 128))))[0].pose.roll
    assert abs((upright - tilted) - 20) < 5


def test_same_image_same_template_and_bytes_round_trip():
    eng = engine()
    pixels = images.read(faces_dir() / single_person_photos()[0])
    faces = eng.detect(pixels)
    a = eng.embed(pixels, faces)
    b = eng.embed(pixels, eng.detect(pixels))
    assert np.array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (1, 128)
    assert abs(float(np.linalg.norm(a[0])) - 1.0) < 1e-5
    back = template_from_bytes(template_to_bytes(a[0]), dim=128)
    assert np.array_equal(back, a[0])
    with pytest.raises(ValueError):
        template_from_bytes(template_to_bytes(a[0])[:-4], dim=128)


def test_every_template_records_its_model_version():
    pixels = images.read(faces_dir() / "group/faceapi_bbt3.jpg")
    results = engine().analyse(pixels)
    assert len(results) == 5
    assert {r.model_version for r in results} == {"sface-2021dec"}  # the default model


def test_unknown_detector_and_attributes_are_clear_errors():
    from facewarden.errors import InvalidInput

    pixels = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(InvalidInput, match="Unknown detector"):
        engine().detect(pixels, "yolo")
    with pytest.raises(InvalidInput, match="DEFAULT or ALL"):
        engine().detect(pixels, attributes="SOME")


def test_concurrent_detection_on_mixed_sizes_is_safe_and_consistent():
    """dlib's detectors keep scratch state: shared between threads they corrupted the heap."""
    from concurrent.futures import ThreadPoolExecutor

    eng = engine()
    photos = [
        images.read(faces_dir() / p)
        for p in (
            "group/faceapi_bbt3.jpg",
            "group/dlib_voc_2008_001009.jpg",
            "barack_obama/barack_obama_1.jpg",
        )
    ]
    expected = [len(eng.detect(p)) for p in photos]
    jobs = [photos[i % 3] for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda p: len(eng.analyse(p)), jobs))
    assert counts == [expected[i % 3] for i in range(24)]


def test_a_face_template_does_not_depend_on_the_other_faces_in_the_photo():
    """dlib's batch chip extraction shares a pyramid between faces of different sizes; we don't."""
    eng = engine()
    pixels = images.read(faces_dir() / "group/deepface_couple.jpg")
    faces = eng.detect(pixels)
    assert len(faces) == 2 and abs(faces[0].box.width - faces[1].box.width) > 0  # two sizes
    together = eng.embed(pixels, faces)
    alone = np.stack([eng.embed(pixels, [f])[0] for f in faces])
    assert np.array_equal(together, alone)

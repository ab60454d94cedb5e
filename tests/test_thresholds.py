"""Thresholds that serve real galleries: the gallery-size rule counts people and keeps its promise,
caps by purpose, users pool their faces, similarity ranks above 99, and an empty answer says why."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden.cli.gallery import threshold_text
from facewarden.engine.calibration import UserScoring
from facewarden.gallery import NewFace
from facewarden.policy.rules import DEFAULT_POLICY_PATH, Policy
from tests.conftest import BOX, capped_policy, identity_photos, near, unit
from tests.test_calibration import _poisson_interval
from tests.test_gallery import MODEL, call

#: The service tests run on SQLite (the store's subject counts are tested on every backend in
#: test_subjects.py).
sqlite = pytest.mark.parametrize("gallery_settings", ["sqlite"], indirect=True)


def with_caps(service: Any, cap: float) -> None:
    """Put the default policy in force with every purpose's cap set to ``cap`` (or its built-in
    ceiling, where that is lower)."""
    service.apply_policy(capped_policy(DEFAULT_POLICY_PATH.read_text(), cap))
    assert service.policy.cap_for("photo_organisation") == cap


def toward(cal: Any, probe: np.ndarray, similarity: float, rng: np.random.Generator) -> np.ndarray:
    """A unit template at exactly ``similarity`` from ``probe``."""
    d = cal.distance_for(similarity)
    c = 1.0 - d * d / 2.0
    u = rng.normal(size=probe.shape)
    u -= (u @ probe) * probe
    u /= np.linalg.norm(u)
    return (c * probe + math.sqrt(max(0.0, 1.0 - c * c)) * u).astype(np.float32)


def add(store: Any, templates: Any, external: str | None) -> list[Any]:
    return store.add_faces(
        "lib", [NewFace(t, BOX, 99.0, external_image_id=external) for t in templates], MODEL
    )


# ---- pooled scores ----------------------------------------------------------------------------------
@sqlite
def test_a_subject_with_m_faces_scores_as_m_chances(service: Any) -> None:
    cal = service.engine.calibration
    assert cal.pooled(85.0, 1) == 85.0
    assert cal.pooled(80.0, 10) == pytest.approx(70.0)  # 10 x FMR 1e-3 = 1e-2
    for s in (99.2, 99.4):
        assert cal.fmr(cal.pooled(s, 4)) == pytest.approx(4 * cal.fmr(s))
        assert 99 < cal.pooled(s, 4) < s
    assert cal.pooled(40.0, 5) == 40.0  # never raised


# ---- 1. what the gallery-size rule counts --------------------------------------------------------
@sqlite
def test_face_search_counts_every_photo_as_a_chance_and_shows_the_people(service: Any) -> None:
    """200 one-photo strangers, one stranger photographed 20 times, two more: 222 faces of 203
    people. Every photo is a chance for a stranger to match, so a face search's threshold is set
    for 222 (and the response shows both counts). What the cap held back is counted, never named."""
    with_caps(service, 0.01)
    cal, store, rng = service.engine.calibration, service.store, np.random.default_rng(5)
    call(service, "CreateCollection", CollectionId="lib")
    q = unit(rng, 1)[0]
    probe = add(store, [q], "probe")[0]
    add(store, unit(rng, 200), None)  # faces without ExternalImageId: a person each
    threshold = cal.similarity_for_fmr(0.01 / 222)
    # 20 photos of "many", one add per photo (the faces of one photo would be 20 different people)
    many = [add(store, [t], "many")[0] for t in [toward(cal, q, 88.0, rng)] + list(unit(rng, 19))]
    one = add(store, [toward(cal, q, cal.similarity_for_fmr(0.01 / 222 / 3), rng)], "one")[0]
    r = call(service, "SearchFaces", CollectionId="lib", FaceId=probe.face_id, FaceMatchThreshold=85)
    t = r["AppliedThreshold"]
    assert (t["GallerySize"], t["GallerySizeCounts"], t["GalleryFaces"], t["GallerySubjects"]) == (
        222,
        "faces",
        222,
        203,
    )
    assert t["Source"] == "gallery_size" and t["Similarity"] == pytest.approx(threshold, abs=1e-4)
    assert t["ExpectedFalseMatches"] <= 0.01 and t["CapMet"]
    assert [m["Face"]["FaceId"] for m in r["FaceMatches"]] == [one.face_id]
    assert t["WithheldByCap"] == 1  # many's face at 88: above the 85 asked, below the threshold
    record = service.audit.last_record("SearchFaces")
    assert record["applied_threshold"]["WithheldByCap"] == 1 and record["counts"]["withheld_by_cap"] == 1
    assert many[0].face_id not in str(record) and one.face_id in record["matched_face_ids"]
    # The 20 photos as one user: still 203 people, still 222 chances.
    call(service, "CreateUser", CollectionId="lib", UserId="many-user")
    store.associate_faces("lib", "many-user", [f.face_id for f in many])
    again = call(service, "SearchFaces", CollectionId="lib", FaceId=probe.face_id, FaceMatchThreshold=85)
    assert (again["AppliedThreshold"]["GallerySize"], again["AppliedThreshold"]["GallerySubjects"]) == (
        222,
        203,
    )


@pytest.fixture(scope="module")
def split_galleries(photo_templates: Any, faces_dir: Path) -> list[tuple[list[str], list[str]]]:
    """Three random halves of the shared identities (with all their photos) as galleries; the
    other half's photos search them as strangers."""
    people = sorted(identity_photos(faces_dir))
    out = []
    for seed in range(3):
        half = set(np.random.default_rng(seed).permutation(people)[: len(people) // 2].tolist())
        out.append((sorted(half), [p for p in people if p not in half]))
    return out


@sqlite
def test_the_cap_keeps_its_promise_on_strangers(
    service: Any, faces_dir: Path, photo_templates: Any, split_galleries: Any
) -> None:
    """Identities of ../shared/faces enrolled with all their photos (16 people, 3-4 photos each on
    average); every photo of the other identities searches them as a stranger. The wrong people
    named per search stay within the cap's Poisson interval. Had the threshold been set for 16
    people, one chance each, they would be well beyond it: a person's photos are several chances."""
    research = service.principals.create_key("test-org", "research_audit")[0]
    with_caps(service, 1.0)  # research: up to one expected false match per search, to measure it
    cal = service.engine.calibration
    photos = identity_photos(faces_dir)
    named = named_if_people = searches = 0
    for i, (gallery, strangers) in enumerate(split_galleries):
        cid = f"half{i}"
        service.call("CreateCollection", {"CollectionId": cid}, research)  # faces stored below, directly
        enrolled = [(who, p) for who in gallery for p in photos[who] if p in photo_templates]
        faces = [
            NewFace(photo_templates[p][1], BOX, 99.0, external_image_id=who, image_id=p.name)
            for who, p in enrolled
        ]
        service.store.add_faces(cid, faces, MODEL)
        for who in gallery:  # (a consent collection returns only faces whose subject consented)
            service.consents.grant("test-org", who, cid, "research consent form")
        G = np.stack([photo_templates[p][1] for _, p in enrolled])
        who_of = np.asarray([who for who, _ in enrolled])
        one_chance_each = cal.similarity_for_fmr(1.0 / len(gallery))
        for who in strangers:
            for p in photos[who]:
                if p not in photo_templates:
                    continue
                r = service.call(
                    "SearchFacesByImage",
                    {"CollectionId": cid, "Image": {"Bytes": p.read_bytes()}, "FaceMatchThreshold": 50},
                    research,
                )
                t = r["AppliedThreshold"]
                assert (t["GallerySizeCounts"], t["GallerySize"], t["GallerySubjects"]) == (
                    "faces",
                    len(enrolled),
                    len(gallery),
                )
                named += len({m["Face"]["ExternalImageId"] for m in r["FaceMatches"]})
                sims = np.asarray(cal.similarity_from_inner(G @ photo_templates[p][1]))
                named_if_people += len(set(who_of[sims >= one_chance_each].tolist()))
                searches += 1
    lo, hi = _poisson_interval(1.0 * searches, 0.001)
    print(
        f"\n{searches} stranger searches, cap {searches}: {named} people wrongly named (accept <= {hi}); "
        f"{named_if_people} had people been counted, one chance each"
    )
    assert named <= hi
    assert named > searches / 4  # the cap is used, not thrown away
    assert named_if_people > hi


# ---- 2. caps by purpose ----------------------------------------------------------------------------
def test_each_purpose_has_its_cap() -> None:
    policy = Policy.default()
    assert policy.cap_for("photo_organisation") == 0.02
    assert policy.cap_for("access_control") == 0.001
    assert policy.cap_for("administration") == policy.max_expected_false_matches == 0.01
    assert policy.cap_for("no_such_purpose") == 0.001  # unknown to the code: the strictest ceiling
    custom = Policy.parse(
        DEFAULT_POLICY_PATH.read_text().replace(
            "max_expected_false_matches = 0.02", "max_expected_false_matches = 0.005"
        )
    )
    assert custom.cap_for("photo_organisation") == 0.005


def test_a_cap_can_only_be_tightened_below_its_purposes_built_in_ceiling() -> None:
    from facewarden.errors import PolicyWeakening
    from facewarden.policy.rules import BUILT_IN

    default = DEFAULT_POLICY_PATH.read_text()
    assert BUILT_IN.cap_ceiling("access_control") == 0.001 and BUILT_IN.cap_ceiling("child_safety") == 0.01
    assert BUILT_IN.cap_ceiling("photo_organisation") == BUILT_IN.cap_ceiling(None) == BUILT_IN.cap == 1.0
    door = "max_expected_false_matches = 0.001"
    assert default.count(door) == 1  # access_control's
    # Looser than the door's ceiling, though far under the general one: refused, saying why.
    with pytest.raises(PolicyWeakening, match=r"access_control.* 0\.001 for purpose access_control"):
        Policy.parse(default.replace(door, "max_expected_false_matches = 0.01"))
    child = default.replace("max_expected_false_matches = 0.01", "max_expected_false_matches = 0.05", 1)
    assert "[purposes.child_safety]" in child[: child.index("= 0.05")]  # the first 0.01 is child safety's
    with pytest.raises(PolicyWeakening, match="child_safety"):
        Policy.parse(child)
    # Tighter: in force.
    assert (
        Policy.parse(default.replace(door, "max_expected_false_matches = 0.0001")).cap_for("access_control")
        == 1e-4
    )
    # A file that drops the door's own cap and loosens the general one: the ceiling still holds.
    head, tail = default.replace(door, "").rsplit("max_expected_false_matches = 0.01", 1)
    assert "[thresholds]" in head[-1000:]
    loose = head + "max_expected_false_matches = 0.5" + tail
    policy = Policy.parse(loose)
    assert policy.cap_for("access_control") == 0.001 and policy.cap_for("administration") == 0.5
    assert policy.cap_for("photo_organisation") == 0.02
    assert BUILT_IN.describe()["PurposeMaxExpectedFalseMatchesCeilings"] == {
        "access_control": 0.001,
        "child_safety": 0.01,
    }


def test_a_purpose_the_code_does_not_know_gets_the_strictest_ceiling() -> None:
    """Renaming access control (a file's own purpose ``door_entry``) does not leave its ceiling behind."""
    from facewarden.errors import PolicyWeakening
    from facewarden.policy.rules import BUILT_IN

    assert BUILT_IN.cap_ceiling("door_entry") == 0.001
    door = (
        '\n[purposes.door_entry]\ndescription = "Open the door for enrolled staff."\n'
        'operations = ["identify"]\nmin_similarity = 90\nmax_expected_false_matches = {cap}\n'
    )
    default = DEFAULT_POLICY_PATH.read_text()
    with pytest.raises(PolicyWeakening, match="door_entry"):
        Policy.parse(default + door.format(cap=0.5))
    assert Policy.parse(default + door.format(cap=0.0005)).cap_for("door_entry") == 0.0005
    # Without a cap of its own it gets the general cap, held to the same ceiling.
    assert (
        Policy.parse(
            default + door.format(cap=0.001).replace("max_expected_false_matches = 0.001\n", "")
        ).cap_for("door_entry")
        == 0.001
    )


def test_a_purpose_cap_must_be_a_positive_number() -> None:
    from facewarden.errors import InvalidInput

    text = DEFAULT_POLICY_PATH.read_text().replace(
        "max_expected_false_matches = 0.02", "max_expected_false_matches = -1"
    )
    with pytest.raises(InvalidInput, match="photo_organisation.max_expected_false_matches"):
        Policy.parse(text)


# ---- 3. users pool their faces ---------------------------------------------------------------------
@sqlite
@pytest.mark.parametrize("pooling", ["best", "mean"])
def test_a_user_scores_from_all_its_faces_calibrated_as_one(
    service: Any, pooling: str, monkeypatch: Any
) -> None:
    """Ann has 4 faces (one like the probe), Bob 1 (as like it). Bob's score is his face's
    similarity; Ann's pools her faces as the model's user scoring says (each pooling tried here),
    counted as the chances 4 faces give a stranger: lower than Bob's, so Bob ranks first."""
    real = service.engine.calibration
    scoring = UserScoring(pooling, (1.0, 1.5, 2.0, 2.5) if pooling == "mean" else ())
    monkeypatch.setattr(service.engine._engine, "_calibration", dataclasses.replace(real, users=scoring))
    with_caps(service, 0.01)
    cal, store, rng = service.engine.calibration, service.store, np.random.default_rng(7)
    call(service, "CreateCollection", CollectionId="lib")
    q = unit(rng, 1)[0]
    probe = add(store, [q], None)[0]
    add(store, unit(rng, 500), None)  # 500 faces of nobody's: not what a user search can name
    s = 95.0
    kept = {}
    for user, n in (("ann", 4), ("bob", 1)):
        call(service, "CreateUser", CollectionId="lib", UserId=user)
        kept[user] = np.stack([toward(cal, q, s, rng)] + list(unit(rng, n - 1)))
        mine = [add(store, [t], user)[0] for t in kept[user]]
        store.associate_faces("lib", user, [f.face_id for f in mine])
    r = call(service, "SearchUsers", CollectionId="lib", FaceId=probe.face_id, UserMatchThreshold=60)
    t = r["AppliedThreshold"]
    assert (t["GallerySize"], t["GallerySizeCounts"]) == (2, "users")
    assert t["Similarity"] == pytest.approx(80.0)  # the purpose's floor: 2 users x FMR 1e-3 is within 0.01
    got = {m["User"]["UserId"]: m["Similarity"] for m in r["UserMatches"]}
    assert got["bob"] == pytest.approx(s, abs=1e-3)
    if pooling == "best":
        expected = cal.pooled(s, 4)  # the best of 4 faces: 4 chances
    else:
        mean = kept["ann"].mean(axis=0)
        expected = cal.pooled(float(cal.similarity_from_inner(q @ (mean / np.linalg.norm(mean)))), 2.5)
    if expected >= 80:
        assert got["ann"] == pytest.approx(expected, abs=1e-3) and got["ann"] < got["bob"]
        assert [m["User"]["UserId"] for m in r["UserMatches"]] == ["bob", "ann"]
    else:
        assert "ann" not in got and [m["User"]["UserId"] for m in r["UserMatches"]] == ["bob"]
    # Asking for more than Ann's score but less than Bob's: Bob alone, and nothing withheld by the cap.
    r2 = call(
        service, "SearchUsers", CollectionId="lib", FaceId=probe.face_id, UserMatchThreshold=(s + 85) / 2
    )
    assert [m["User"]["UserId"] for m in r2["UserMatches"]] == ["bob"]
    assert r2["AppliedThreshold"]["WithheldByCap"] == 0


def test_user_scoring_chances() -> None:
    best = UserScoring()
    assert [best.chances(m) for m in (1, 4, 100)] == [1, 4, 100]
    mean = UserScoring("mean", (1.0, 1.4, 1.7))
    assert [mean.chances(m) for m in (1, 2, 3)] == [1.0, 1.4, 1.7]
    assert mean.chances(6) == pytest.approx(1.7 * 6 / 3)  # beyond what was measured: in proportion to m
    assert UserScoring("mean", (1.0, 5.0)).chances(2) == 2  # never more than m


def test_the_shipped_user_scorings_are_measured() -> None:
    """dlib's mean template gives a stranger more chances than the best face's bound (m), so dlib
    pools by its best face; SFace's gives fewer, so SFace pools by the mean template."""
    from facewarden.engine import models
    from facewarden.engine.calibration import user_scoring_path

    for version, pooling in (("dlib-resnet-v1", "best"), ("sface-2021dec", "mean")):
        scoring = UserScoring.load(user_scoring_path(models.get(version).calibration_file))
        assert scoring.pooling == pooling
        assert scoring.meta["source"]["impostor_photos"] > 2900
        for m, row in scoring.meta["measured"].items():
            assert row["factor"] >= 1 and row["users"] >= 40
            assert (row["factor"] < int(m)) == (pooling == "mean") or pooling == "best"
        if pooling == "mean":
            assert list(scoring.factors) == sorted(scoring.factors) and scoring.factors[0] == 1.0
            assert all(f < m for m, f in enumerate(scoring.factors[1:], start=2))


@sqlite
def test_more_photos_per_person_find_more_at_the_same_false_match_rate(
    service: Any, faces_dir: Path, photo_templates: Any
) -> None:
    """Every photo of a person with 3 or more photos in ../shared/faces searches the users (one
    per person) holding 1, then 2, of each person's other photos (in folds: fold f searches with
    everyone's f-th photo). At the threshold of the same user-level FMR, two photos find more."""
    with_caps(service, 1e-4)
    photos = {k: [p for p in v if p in photo_templates] for k, v in identity_photos(faces_dir).items()}
    people = sorted(k for k, v in photos.items() if len(v) >= 3)
    hits: dict[int, list[bool]] = {1: [], 2: []}
    for enrolled in hits:
        for fold in range(max(len(photos[k]) for k in people)):
            cid = f"fold-{enrolled}-{fold}"
            service.call(
                "CreateCollection", {"CollectionId": cid, "ConsentMode": "household"}, service.test_principal
            )
            for who in people:
                pool = [x for i, x in enumerate(photos[who]) if i != fold][:enrolled]
                faces = service.store.add_faces(
                    cid,
                    [
                        NewFace(photo_templates[x][1], BOX, 99.0, external_image_id=who, image_id=x.name)
                        for x in pool
                    ],
                    MODEL,
                )
                service.store.create_user(cid, who)
                service.store.associate_faces(cid, who, [f.face_id for f in faces])
            for who in people:
                if fold >= len(photos[who]):
                    continue
                p = photos[who][fold]
                q = service.store.add_faces(cid, [NewFace(photo_templates[p][1], BOX, 99.0)], MODEL)[0]
                r = service.call(
                    "SearchUsers",
                    {"CollectionId": cid, "FaceId": q.face_id, "MaxUsers": 1},
                    service.test_principal,
                )
                assert r["AppliedThreshold"]["GallerySize"] == len(people)
                hits[enrolled].append(bool(r["UserMatches"]) and r["UserMatches"][0]["User"]["UserId"] == who)
    rate = {k: sum(v) / len(v) for k, v in hits.items()}
    print(
        f"\n{len(hits[1])} searches of {len(people)} users: rank-1 {rate[1]:.3f} with 1 photo each, {rate[2]:.3f} with 2"
    )
    assert rate[2] > rate[1]


# ---- 4. similarity that ranks --------------------------------------------------------------------
@sqlite
def test_matches_above_99_are_ordered_nearest_first(service: Any) -> None:
    with_caps(service, 0.01)
    cal, store, rng = service.engine.calibration, service.store, np.random.default_rng(9)
    call(service, "CreateCollection", CollectionId="lib")
    q = unit(rng, 1)[0]
    probe = add(store, [q], "probe")[0]
    wanted = [99.05, 99.2, 99.35, 99.6, 99.9]
    for i, s in enumerate(wanted):
        add(store, [toward(cal, q, s, rng)], f"p{i}")
    r = call(service, "SearchFaces", CollectionId="lib", FaceId=probe.face_id, FaceMatchThreshold=80)
    got = [m["Similarity"] for m in r["FaceMatches"]]
    assert got == pytest.approx(sorted(wanted, reverse=True), abs=1e-3)
    assert all(a > b for a, b in zip(got, got[1:])) and max(got) < 100


# ---- 5. say why nothing matched ------------------------------------------------------------------
@sqlite
def test_an_empty_answer_says_how_many_the_cap_withheld(service: Any) -> None:
    with_caps(service, 0.01)
    cal, store, rng = service.engine.calibration, service.store, np.random.default_rng(11)
    call(service, "CreateCollection", CollectionId="lib")
    q = unit(rng, 1)[0]
    probe = add(store, [q], "probe")[0]
    add(store, unit(rng, 998), None)
    add(store, [toward(cal, q, 90.0, rng), toward(cal, q, 92.0, rng)], None)
    r = call(service, "SearchFaces", CollectionId="lib", FaceId=probe.face_id, FaceMatchThreshold=85)
    t = r["AppliedThreshold"]
    assert r["FaceMatches"] == [] and t["WithheldByCap"] == 2 and t["Similarity"] > 92
    text = threshold_text(t)
    assert "2 candidate(s) reached the requested 85.0" in text and "gallery_size" in text
    assert "1001 faces" in text
    assert (
        call(service, "SearchFaces", CollectionId="lib", FaceId=probe.face_id, FaceMatchThreshold=95)[
            "AppliedThreshold"
        ]["WithheldByCap"]
        == 0
    )  # asked for more than both: nothing was withheld by the cap


def test_calibrate_users_measures_the_mean_template_against_the_best_face(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The builder, on synthetic templates whose geometry is known: strangers point anywhere
    (isotropic), so a person's mean template is no likelier to be matched than one photo (factor
    about 1: the mean template is chosen), while the best of m distinct photos is about m chances."""
    from facewarden.config import Settings
    import importlib

    builder = importlib.import_module(
        "facewarden.evaluate.calibrate"
    )  # the module (the package exports a function)
    from facewarden.evaluate.embed import Embedded

    rng = np.random.default_rng(0)
    people, impostors = tmp_path / "people", tmp_path / "impostors"
    vectors: dict[str, np.ndarray] = {}
    for i in range(12):
        base = unit(rng, 1)[0]
        for j, v in enumerate(near(rng, base, 5, noise=0.12)):
            path = people / f"p{i}" / f"p{i}_{j}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            vectors[str(path)] = v
    impostors.mkdir()
    for k, v in enumerate(unit(rng, 4000)):
        path = impostors / f"s{k}.jpg"
        path.write_bytes(b"")
        vectors[str(path)] = v

    def fake_embed(paths: Any, *args: Any, **kwargs: Any) -> dict[str, Embedded]:
        return {str(p): Embedded(str(p), "", vectors[str(p)], "ok") for p in paths}

    monkeypatch.setattr(builder, "embed_images", fake_embed)
    out = tmp_path / "x.users.json"
    scoring = builder.calibrate_users(
        people, impostors, out, Settings(data_dir=tmp_path / "data"), max_faces=4
    )
    assert scoring.pooling == "mean" and len(scoring.factors) == 4
    assert all(1.0 <= f < m for m, f in enumerate(scoring.factors[1:], start=2))
    best = scoring.meta["measured"]["4"]["0.01"]["best_ratio"]
    assert 2.5 < best <= 4.5  # 4 distinct photos: about 4 chances for the best face
    assert UserScoring.load(out).factors == pytest.approx(scoring.factors, abs=1e-4)

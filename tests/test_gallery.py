"""The gallery, against every backend: collections, faces, users, identification, deletion, bad input."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden import errors
from tests.conftest import assert_shape, identity_photos, near, new_faces, unit
from tests.data import poisson_interval

MODEL = "sface-2021dec"  # the default model: the collections these tests create are bound to it


def call(service: Any, op: str, **request: Any) -> dict[str, Any]:
    """One operation as the test principal (a photo-organisation key); collections are household
    collections (no per-face consent: consent is policy's to test), unless the test says otherwise."""
    if op == "CreateCollection":
        request.setdefault("ConsentMode", "household")
    response = service.call(op, request, service.test_principal)
    assert_shape(op, response)
    return response


def fails(service: Any, op: str, request: dict[str, Any]) -> Any:
    return service.call(op, request, service.test_principal)


def image(path: Path) -> dict[str, bytes]:
    return {"Bytes": path.read_bytes()}


# ---- collections -----------------------------------------------------------------------------
def test_collection_lifecycle(service: Any) -> None:
    created = call(service, "CreateCollection", CollectionId="family")
    assert created["StatusCode"] == 200 and created["CollectionArn"].endswith("collection/family")
    assert created["FaceModelVersion"] == MODEL
    with pytest.raises(errors.ResourceAlreadyExists):
        fails(service, "CreateCollection", {"CollectionId": "family", "ConsentMode": "household"})
    described = call(service, "DescribeCollection", CollectionId="family")
    assert described["FaceCount"] == 0 and described["UserCount"] == 0
    assert described["CollectionARN"] == created["CollectionArn"]
    for i in range(5):
        call(service, "CreateCollection", CollectionId=f"c{i}")
    seen, token = [], None
    while True:
        page = call(service, "ListCollections", MaxResults=2, **({"NextToken": token} if token else {}))
        assert len(page["CollectionIds"]) == len(page["FaceModelVersions"]) <= 2
        seen += page["CollectionIds"]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(["family", "c0", "c1", "c2", "c3", "c4"]) and len(seen) == len(set(seen))
    assert call(service, "DeleteCollection", CollectionId="family") == {"StatusCode": 200}
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "DescribeCollection", {"CollectionId": "family"})
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "DeleteCollection", {"CollectionId": "family"})
    assert "family" not in call(service, "ListCollections")["CollectionIds"]


# ---- identification on shared/faces ----------------------------------------------------------
HELD_OUT = ("amy_adams", "eileen_collins", "lin_manuel_miranda", "steve_carell", "john_lennon", "rose_leslie")


def test_identification(service: Any, faces_dir: Path, photo_templates: Any) -> None:
    """Enrol one photo per identity, search with the others: rank-1 >= 97% at the default threshold;
    identities never enrolled match nobody above it."""
    by_identity = identity_photos(faces_dir)
    call(service, "CreateCollection", CollectionId="people")
    enrolled = {}
    for identity, photos in by_identity.items():
        if identity in HELD_OUT or len(photos) < 2:
            continue
        r = call(
            service,
            "IndexFaces",
            CollectionId="people",
            Image=image(photos[0]),
            ExternalImageId=identity,
            MaxFaces=1,
        )
        assert len(r["FaceRecords"]) == 1, (identity, r["UnindexedFaces"])
        enrolled[identity] = r["FaceRecords"][0]["Face"]["FaceId"]
    hits, probes, misses = 0, 0, []
    for identity in enrolled:
        for photo in by_identity[identity][1:]:
            r = call(service, "SearchFacesByImage", CollectionId="people", Image=image(photo), MaxFaces=3)
            assert r["AppliedThreshold"]["Similarity"] >= 80
            probes += 1
            top = r["FaceMatches"][0] if r["FaceMatches"] else None
            if top and top["Face"]["ExternalImageId"] == identity:
                hits += 1
            else:
                misses.append(
                    (photo.name, top and (top["Face"]["ExternalImageId"], round(top["Similarity"], 1)))
                )
            sims = [m["Similarity"] for m in r["FaceMatches"]]
            assert sims == sorted(sims, reverse=True) and all(s >= 80 for s in sims)
    rate = hits / probes
    print(f"rank-1 identification rate: {hits}/{probes} = {rate:.3f}; misses: {misses}")
    # SFace, the default: 89/89 (dlib's model: >= 0.97); aligned on CenterFace's own landmarks
    # instead of dlib's 5-point ones it missed stuart_5.png, a three-quarter view (88/89)
    assert rate >= 0.99, misses
    false_matches, comparisons = [], 0
    for identity in HELD_OUT:
        for photo in by_identity.get(identity, []):
            r = call(service, "SearchFacesByImage", CollectionId="people", Image=image(photo))
            comparisons += len(enrolled)
            false_matches += [
                (photo.name, m["Face"]["ExternalImageId"], m["Similarity"]) for m in r["FaceMatches"]
            ]
    # Never-enrolled people match at the rate the threshold promises (80: FMR 1e-3 per comparison),
    # not more: about 0.2 expected here (208 comparisons; SFace, like dlib's model, matches none),
    # at most the two-sided Poisson test's bound at 0.1%.
    lo, hi = poisson_interval(comparisons * 1e-3, 0.001)
    print(
        f"false matches of never-enrolled people: {false_matches} in {comparisons} comparisons (accept <= {hi})"
    )
    assert len(false_matches) <= hi
    # SearchFaces by FaceId finds the other photos' faces when they are enrolled too.
    extra = call(
        service,
        "IndexFaces",
        CollectionId="people",
        Image=image(by_identity["angelina"][1]),
        ExternalImageId="angelina",
    )
    r = call(service, "SearchFaces", CollectionId="people", FaceId=enrolled["angelina"])
    assert r["SearchedFaceId"] == enrolled["angelina"]
    assert [m["Face"]["FaceId"] for m in r["FaceMatches"]] == [extra["FaceRecords"][0]["Face"]["FaceId"]]


def test_users(service: Any, faces_dir: Path, photo_templates: Any) -> None:
    by_identity = identity_photos(faces_dir)
    call(service, "CreateCollection", CollectionId="users")
    faces: dict[str, list[str]] = {}
    for identity in ("angelina", "barack_obama", "deepface_person_03"):
        for photo in by_identity[identity][:3]:
            r = call(
                service, "IndexFaces", CollectionId="users", Image=image(photo), ExternalImageId=identity
            )
            faces.setdefault(identity, []).append(r["FaceRecords"][0]["Face"]["FaceId"])
    for identity in ("angelina", "barack_obama"):
        assert call(service, "CreateUser", CollectionId="users", UserId=identity) == {}
        r = call(
            service, "AssociateFaces", CollectionId="users", UserId=identity, FaceIds=faces[identity][:2]
        )
        assert sorted(f["FaceId"] for f in r["AssociatedFaces"]) == sorted(faces[identity][:2])
        assert r["UserStatus"] == "ACTIVE"
    with pytest.raises(errors.Conflict):  # Rekognition's ConflictException
        fails(service, "CreateUser", {"CollectionId": "users", "UserId": "angelina"})
    # idempotent with a client token: the retry of a request that succeeded succeeds again
    for _ in range(2):
        assert call(service, "CreateUser", CollectionId="users", UserId="amy", ClientRequestToken="t-1") == {}
    call(service, "DeleteUser", CollectionId="users", UserId="amy")
    # someone else's face cannot be associated; a face of another person fails the match check
    r = call(
        service,
        "AssociateFaces",
        CollectionId="users",
        UserId="barack_obama",
        FaceIds=[faces["angelina"][0], faces["deepface_person_03"][0]],
    )
    reasons = {u["FaceId"]: u["Reasons"] for u in r["UnsuccessfulFaceAssociations"]}
    assert reasons == {
        faces["angelina"][0]: ["ASSOCIATED_TO_A_DIFFERENT_USER"],
        faces["deepface_person_03"][0]: ["LOW_MATCH_CONFIDENCE"],
    }
    # ListFaces by user, SearchUsers by face id, by user id, by image
    listed = call(service, "ListFaces", CollectionId="users", UserId="angelina")["Faces"]
    assert sorted(f["FaceId"] for f in listed) == sorted(faces["angelina"][:2])
    assert all(f["UserId"] == "angelina" for f in listed)
    r = call(service, "SearchUsers", CollectionId="users", FaceId=faces["angelina"][2])
    assert [m["User"]["UserId"] for m in r["UserMatches"]] == ["angelina"]
    assert r["UserMatches"][0]["User"]["UserStatus"] == "ACTIVE" and r["SearchedFace"] == {
        "FaceId": faces["angelina"][2]
    }
    r = call(service, "SearchUsers", CollectionId="users", UserId="angelina")
    assert r["UserMatches"] == [] and r["SearchedUser"] == {"UserId": "angelina"}
    r = call(service, "SearchUsersByImage", CollectionId="users", Image=image(by_identity["barack_obama"][3]))
    assert [m["User"]["UserId"] for m in r["UserMatches"]] == ["barack_obama"]
    assert r["AppliedThreshold"]["Source"] in ("requested", "floor", "gallery_size")
    # a face associated with a user cannot be deleted until disassociated
    r = call(service, "DeleteFaces", CollectionId="users", FaceIds=[faces["angelina"][0]])
    assert r["DeletedFaces"] == []
    assert r["UnsuccessfulFaceDeletions"] == [
        {"FaceId": faces["angelina"][0], "UserId": "angelina", "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}
    ]
    r = call(
        service, "DisassociateFaces", CollectionId="users", UserId="angelina", FaceIds=faces["angelina"][:2]
    )
    assert len(r["DisassociatedFaces"]) == 2 and r["UserStatus"] == "CREATED"
    users = call(service, "ListUsers", CollectionId="users")["Users"]
    assert {u["UserId"]: u["UserStatus"] for u in users} == {"angelina": "CREATED", "barack_obama": "ACTIVE"}
    assert call(service, "DescribeCollection", CollectionId="users")["UserCount"] == 2
    assert call(service, "DeleteUser", CollectionId="users", UserId="barack_obama") == {}
    assert [u["UserId"] for u in call(service, "ListUsers", CollectionId="users")["Users"]] == ["angelina"]
    r = call(service, "SearchUsersByImage", CollectionId="users", Image=image(by_identity["barack_obama"][3]))
    assert r["UserMatches"] == []
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "DeleteUser", {"CollectionId": "users", "UserId": "barack_obama"})


def test_user_face_limit(service: Any, store: Any) -> None:
    rng = np.random.default_rng(1)
    call(service, "CreateCollection", CollectionId="limit")
    stored = store.add_faces("limit", new_faces(near(rng, unit(rng, 1)[0], 101)), MODEL)
    call(service, "CreateUser", CollectionId="limit", UserId="u")
    ids = [f.face_id for f in stored]
    r = call(service, "AssociateFaces", CollectionId="limit", UserId="u", FaceIds=ids[:100])
    assert len(r["AssociatedFaces"]) == 100
    with pytest.raises(errors.ServiceQuotaExceeded):
        fails(service, "AssociateFaces", {"CollectionId": "limit", "UserId": "u", "FaceIds": ids[100:]})
    with pytest.raises(errors.InvalidInput):  # more than 100 ids in one request
        fails(service, "AssociateFaces", {"CollectionId": "limit", "UserId": "u", "FaceIds": ids})


# ---- deletion and pagination -------------------------------------------------------------------
def test_deletion_everywhere(service: Any, store: Any) -> None:
    rng = np.random.default_rng(2)
    call(service, "CreateCollection", CollectionId="del")
    t = unit(rng, 40)
    stored = store.add_faces("del", new_faces(t), MODEL)
    ids = [f.face_id for f in stored]
    assert store.search("del", t[3], 1)[0].face.face_id == ids[3]  # the index is loaded
    r = call(
        service,
        "DeleteFaces",
        CollectionId="del",
        FaceIds=ids[:10] + ["00000000-0000-4000-8000-000000000000"],
    )
    assert sorted(r["DeletedFaces"]) == sorted(ids[:10])
    assert r["UnsuccessfulFaceDeletions"] == [
        {"FaceId": "00000000-0000-4000-8000-000000000000", "Reasons": ["FACE_NOT_FOUND"]}
    ]
    listed = {f["FaceId"] for f in call(service, "ListFaces", CollectionId="del")["Faces"]}
    assert listed == set(ids[10:])
    assert store.index_face_ids("del") == set(ids[10:]) == store.store_face_ids("del")
    for i in range(10):
        assert all(m.face.face_id not in ids[:10] for m in store.search("del", t[i], 5))
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "SearchFaces", {"CollectionId": "del", "FaceId": ids[0]})
    assert call(service, "DescribeCollection", CollectionId="del")["FaceCount"] == 30
    call(service, "DeleteCollection", CollectionId="del")
    with pytest.raises(errors.ResourceNotFound):
        store.search("del", t[20], 1)
    call(service, "CreateCollection", CollectionId="del")  # same name, nothing of the old one
    assert call(service, "ListFaces", CollectionId="del")["Faces"] == []
    assert store.search("del", t[20], 5) == [] and store.index_face_ids("del") == set()


def test_pagination_returns_each_item_once(service: Any, store: Any) -> None:
    rng = np.random.default_rng(3)
    call(service, "CreateCollection", CollectionId="pages")
    ids = {f.face_id for f in store.add_faces("pages", new_faces(unit(rng, 103)), MODEL)}
    for size in (1, 7, 50, 1000):
        seen, token = [], None
        while True:
            req = {"MaxResults": size} | ({"NextToken": token} if token else {})
            page = call(service, "ListFaces", CollectionId="pages", **req)
            assert len(page["Faces"]) <= size
            seen += [f["FaceId"] for f in page["Faces"]]
            token = page.get("NextToken")
            if not token:
                break
        assert len(seen) == len(set(seen)) == 103 and set(seen) == ids
    some = sorted(ids)[:5]
    assert {
        f["FaceId"] for f in call(service, "ListFaces", CollectionId="pages", FaceIds=some)["Faces"]
    } == set(some)
    for i in range(12):
        call(service, "CreateUser", CollectionId="pages", UserId=f"user-{i:02d}")
    seen, token = [], None
    while True:
        page = call(
            service,
            "ListUsers",
            CollectionId="pages",
            MaxResults=5,
            **({"NextToken": token} if token else {}),
        )
        seen += [u["UserId"] for u in page["Users"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [f"user-{i:02d}" for i in range(12)]


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_input(service: Any, store: Any, faces_dir: Path, photo_templates: Any) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    photo = {"Bytes": (faces_dir / "barack_obama" / "barack_obama_1.jpg").read_bytes()}
    for op, req in [
        ("DescribeCollection", {}),
        ("IndexFaces", {"Image": photo}),
        ("SearchFacesByImage", {"Image": photo}),
        ("ListFaces", {}),
        ("ListUsers", {}),
        ("SearchFaces", {"FaceId": unknown}),
        ("CreateUser", {"UserId": "u"}),
    ]:
        with pytest.raises(errors.ResourceNotFound):
            fails(service, op, {"CollectionId": "nope", **req})
    call(service, "CreateCollection", CollectionId="bad")
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "SearchFaces", {"CollectionId": "bad", "FaceId": unknown})
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "AssociateFaces", {"CollectionId": "bad", "UserId": "ghost", "FaceIds": [unknown]})
    with pytest.raises(errors.ResourceNotFound):
        fails(service, "SearchUsers", {"CollectionId": "bad", "UserId": "ghost"})
    for bad in [
        ("CreateCollection", {"CollectionId": "has space"}),
        ("CreateCollection", {"CollectionId": ""}),
        ("CreateCollection", {}),
        ("IndexFaces", {"CollectionId": "bad", "Image": photo, "MaxFaces": 0}),
        ("IndexFaces", {"CollectionId": "bad", "Image": photo, "MaxFaces": 101}),
        ("IndexFaces", {"CollectionId": "bad", "Image": photo, "QualityFilter": "SUPER"}),
        ("IndexFaces", {"CollectionId": "bad", "Image": photo, "ExternalImageId": "no spaces allowed"}),
        ("SearchFacesByImage", {"CollectionId": "bad", "Image": photo, "MaxFaces": 4097}),
        ("SearchFacesByImage", {"CollectionId": "bad", "Image": photo, "FaceMatchThreshold": 101}),
        ("SearchFaces", {"CollectionId": "bad", "FaceId": "not-a-face-id"}),
        ("ListFaces", {"CollectionId": "bad", "MaxResults": 5000}),
        ("ListUsers", {"CollectionId": "bad", "MaxResults": 0}),
        ("SearchUsers", {"CollectionId": "bad"}),
        ("DeleteFaces", {"CollectionId": "bad", "FaceIds": []}),
        ("IndexFaces", {"CollectionId": "bad", "Image": {"Bytes": b"not an image"}}),
    ]:
        with pytest.raises(errors.InvalidInput):
            fails(service, *bad)
    with pytest.raises(errors.NotOffered):  # facewarden infers no demographics
        fails(
            service, "IndexFaces", {"CollectionId": "bad", "Image": photo, "DetectionAttributes": ["GENDER"]}
        )
    # a photo without a face: nothing indexed, no error
    r = call(
        service,
        "IndexFaces",
        CollectionId="bad",
        Image={"Bytes": (faces_dir / "noface" / "skimage_coffee.png").read_bytes()},
    )
    assert r["FaceRecords"] == [] and r["UnindexedFaces"] == []
    with pytest.raises(errors.NoFaceFound):
        fails(
            service,
            "SearchFacesByImage",
            {
                "CollectionId": "bad",
                "Image": {"Bytes": (faces_dir / "noface" / "skimage_coffee.png").read_bytes()},
            },
        )
    # templates of another model never mix with a collection's
    store.create_collection(
        "other-model", "some-other-model-v2", 128, consent_mode="household", owner_org="test-family"
    )
    with pytest.raises(errors.ModelMismatch):
        fails(service, "IndexFaces", {"CollectionId": "other-model", "Image": photo})
    with pytest.raises(errors.ModelMismatch):
        store.add_faces("bad", new_faces(unit(np.random.default_rng(0), 1)), "some-other-model-v2")
    with pytest.raises(errors.ModelMismatch):
        store.add_faces("bad", new_faces(unit(np.random.default_rng(0), 1, dim=64)), MODEL)


def _grid_of_faces(faces_dir: Path, n: int = 200) -> bytes:
    """One photo with ``n`` faces: a face crop tiled into a grid."""
    from PIL import Image

    from facewarden.media import images
    from facewarden.engine import dlib_detectors

    path = faces_dir / "barack_obama" / "barack_obama_1.jpg"
    box = max(
        dlib_detectors.HogDetector().detect(images.decode(path.read_bytes())), key=lambda d: d.box.area
    ).box
    side = max(box.width, box.height) * 1.6
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    tile, cols = 110, 20
    crop = Image.open(path).convert("RGB")
    crop = crop.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))).resize(
        (tile, tile)
    )
    grid = Image.new("RGB", (cols * tile, ((n + cols - 1) // cols) * tile), "white")
    for i in range(n):
        grid.paste(crop, ((i % cols) * tile, (i // cols) * tile))
    out = io.BytesIO()
    grid.save(out, "PNG")
    return out.getvalue()


def test_two_hundred_faces_in_one_photo(service: Any, faces_dir: Path, gallery_settings: Any) -> None:
    if not gallery_settings.database_url.startswith("sqlite"):
        pytest.skip("backend-independent and costly: run once, on SQLite")
    call(service, "CreateCollection", CollectionId="crowd")
    r = call(
        service,
        "IndexFaces",
        CollectionId="crowd",
        Image={"Bytes": _grid_of_faces(faces_dir)},
        ExternalImageId="crowd",
    )
    assert len(r["FaceRecords"]) == 100
    reasons = [u["Reasons"] for u in r["UnindexedFaces"]]
    assert len(reasons) == 100 and all(x == ["EXCEEDS_MAX_FACES"] for x in reasons)
    assert call(service, "DescribeCollection", CollectionId="crowd")["FaceCount"] == 100
    assert len({f["Face"]["FaceId"] for f in r["FaceRecords"]}) == 100


def test_vector_index_save_and_load_round_trip(tmp_path: Path) -> None:
    from facewarden.gallery.vindex import VectorIndex

    rng = np.random.default_rng(3)
    path = tmp_path / "index.npz"
    for n, mode in ((400, "ivf"), (60, "exact")):
        mat = unit(rng, n)
        idx = VectorIndex(128, "uid-1", ann_threshold=100)
        idx.rebuild(np.arange(10, 10 + n), mat)
        idx.generation = 7
        assert idx.mode == mode
        idx.save(path)
        back = VectorIndex.load(path, ann_threshold=100)
        assert back is not None and (back.mode, back.generation, back.uid, len(back)) == (mode, 7, "uid-1", n)
        assert np.array_equal(back.live_ids(), idx.live_ids())
        assert all(back.search(q, 3) == idx.search(q, 3) for q in mat[:25])
    path.write_bytes(path.read_bytes()[:200])  # truncated by a crash: rebuilt from the store instead
    assert VectorIndex.load(path, ann_threshold=100) is None


def test_saved_index_is_reconciled_in_place(tmp_path: Path, monkeypatch: Any) -> None:
    """A restarted process loads the saved index and adds what changed since, without retraining,
    by either read path (IN lists for a few missing templates, one pass for many)."""
    from facewarden.config import Settings
    from facewarden.db import Database
    from facewarden.gallery import localindex
    from facewarden.gallery import sqlite as sqlite_store

    rng = np.random.default_rng(5)
    db = Database(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    settings = Settings(data_dir=tmp_path, database_url=db.url, gallery_ann_threshold=100)

    def store() -> Any:
        return sqlite_store.SqliteStore(db, settings)

    first = store()
    first.create_collection("c", "dlib-resnet-v1", 128)
    first.add_faces("c", new_faces(unit(rng, 300)), "dlib-resnet-v1")
    first.sync_index("c")  # trains and saves
    for scan_over, more in ((10_000, 20), (50, 120)):
        monkeypatch.setattr(localindex, "_SCAN_OVER", scan_over)
        added = first.add_faces("c", new_faces(unit(rng, more)), "dlib-resnet-v1")
        gone = sorted(first.store_face_ids("c") - {f.face_id for f in added})[:7]
        first.delete_faces("c", gone)
        restarted = store()
        assert restarted.index_face_ids("c") == restarted.store_face_ids("c")
        idx = restarted._indexes["c"]
        assert (idx.mode, idx._trained_n) == ("ivf", 300)
        t = restarted.templates("c", [added[-1].face_id])[added[-1].face_id]
        assert restarted.search("c", t, 1)[0].face.face_id == added[-1].face_id
    db.close()

"""Collections of two model versions side by side in one service.

A collection is bound to the model it was created with. Every operation on it (indexing, search,
users, bulk indexing and clustering into it) computes and compares templates with that model,
whatever the service's default; new collections take the default; templates of one model version
are never written into a collection of another.
"""

from __future__ import annotations

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.errors import ModelMismatch
from facewarden.gallery import NewFace
from facewarden.media import images
from facewarden.service import Service
from facewarden.service.bulk import cluster_paths, index_paths

from .data import faces_dir

DLIB, SFACE = "dlib-resnet-v1", "sface-2021dec"


def _photo(identity: str, n: int) -> bytes:
    return sorted((faces_dir() / identity).iterdir())[n].read_bytes()


def _index(svc, owner, collection: str, subject: str, photo: bytes) -> dict:
    svc.call("GrantConsent", {"Subject": subject, "CollectionId": collection, "Evidence": "form"}, owner)
    return svc.call(
        "IndexFaces",
        {"CollectionId": collection, "ExternalImageId": subject, "Image": {"Bytes": photo}},
        owner,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("two-models")
    # An installation that began on dlib's model: its collection is bound to it.
    svc = Service(Settings(data_dir=data, model=DLIB))
    try:
        owner, _ = svc.init_owner("acme", "commercial")
        assert svc.call("CreateCollection", {"CollectionId": "old"}, owner)["FaceModelVersion"] == DLIB
        assert _index(svc, owner, "old", "obama", _photo("barack_obama", 0))["FaceModelVersion"] == DLIB
        _index(svc, owner, "old", "biden", _photo("joe_biden", 0))
    finally:
        svc.close()
    return data


@pytest.fixture(scope="module")
def service(data_dir):
    """The same installation after the default model changed to SFace, with a new collection."""
    svc = Service(Settings(data_dir=data_dir, model=SFACE))
    owner = svc.owner_principal()
    svc.call("CreateCollection", {"CollectionId": "new"}, owner)
    _index(svc, owner, "new", "obama", _photo("barack_obama", 0))
    _index(svc, owner, "new", "biden", _photo("joe_biden", 0))
    yield svc
    svc.close()


def _models(svc, collection: str) -> set[str]:
    faces = svc.call("ListFaces", {"CollectionId": collection}, svc.owner_principal())["Faces"]
    return {f["IndexFacesModelVersion"] for f in faces}


def test_new_collections_take_the_default_model_and_old_ones_keep_theirs(service):
    owner = service.owner_principal()
    listed = service.call("ListCollections", {}, owner)
    assert dict(zip(listed["CollectionIds"], listed["FaceModelVersions"])) == {"old": DLIB, "new": SFACE}
    assert service.call("DescribeCollection", {"CollectionId": "old"}, owner)["FaceModelVersion"] == DLIB
    assert service.call("DescribeCollection", {"CollectionId": "new"}, owner)["FaceModelVersion"] == SFACE
    assert _models(service, "old") == {DLIB} and _models(service, "new") == {SFACE}


@pytest.mark.parametrize("collection,model", [("old", DLIB), ("new", SFACE)])
def test_search_uses_the_collections_model(service, collection, model):
    owner = service.owner_principal()
    probe = _photo("barack_obama", 1)
    found = service.call("SearchFacesByImage", {"CollectionId": collection, "Image": {"Bytes": probe}}, owner)
    assert found["FaceModelVersion"] == model
    assert [m["Face"]["ExternalImageId"] for m in found["FaceMatches"]] == ["obama"]
    # the similarity is the collection's model's: the same pair scored by that model's own engine
    engine = service.engine_for(model)
    assert engine.model_version == model
    pixels = images.decode(probe)
    faces = engine.detect(pixels)
    t = engine.embed(pixels, [max(faces, key=lambda f: f.box.area)])[0]
    face_id = found["FaceMatches"][0]["Face"]["FaceId"]
    stored = service.store.templates(collection, [face_id])[face_id]
    assert found["FaceMatches"][0]["Similarity"] == pytest.approx(engine.similarity(t, stored), abs=1e-3)


def test_templates_of_two_models_never_mix(service):
    owner = service.owner_principal()
    pixels = images.decode(_photo("barack_obama", 1))
    analysed = service.engine_for(SFACE).analyse(pixels)
    new = [NewFace(a.template, a.face.face_detail()["BoundingBox"], 99.0, "obama") for a in analysed]
    with pytest.raises(ModelMismatch):
        service.store.add_faces("old", new, SFACE)
    # an image a bulk worker analysed with SFace cannot be indexed into dlib's collection
    from facewarden.service import gallery
    from facewarden.service.faces import AnalysedImage

    image = AnalysedImage(
        "0" * 64, SFACE, [a.face for a in analysed], np.stack([a.template for a in analysed])
    )
    with pytest.raises(ModelMismatch):
        service.execute(
            gallery.index_faces,
            gallery.IndexFacesRequest("old", external_image_id="obama", analysed=image),
            owner,
        )
    assert _models(service, "old") == {DLIB}


def _folder(tmp_path, identity: str, n: int):
    folder = tmp_path / identity
    folder.mkdir()
    for i, p in enumerate(sorted((faces_dir() / identity).iterdir())[:n]):
        (folder / f"{identity}_{i}{p.suffix}").symlink_to(p)
    return folder


def test_bulk_indexing_and_clustering_into_a_collection_use_its_model(service, tmp_path):
    owner = service.owner_principal()
    for who in ("sheldon", "leonard"):
        for i in range(3):
            service.call(
                "GrantConsent", {"Subject": f"{who}_{i}", "CollectionId": "old", "Evidence": "form"}, owner
            )
    summary = index_paths(
        service, [_folder(tmp_path, "sheldon", 3)], "old", workers=1, progress=False, principal=owner
    )
    assert summary["faces_indexed"] == 3 and not summary["errors"]
    clustered = cluster_paths(
        service,
        [_folder(tmp_path, "leonard", 3)],
        workers=1,
        progress=False,
        principal=owner,
        collection_id="old",
    )
    assert [g["size"] for g in clustered["groups"]] == [3] and all(
        "FaceId" in f for f in clustered["groups"][0]["faces"]
    )
    assert _models(service, "old") == {DLIB}
    found = service.call(
        "SearchFacesByImage", {"CollectionId": "old", "Image": {"Bytes": _photo("sheldon", 4)}}, owner
    )
    assert {m["Face"]["ExternalImageId"] for m in found["FaceMatches"]} == {
        "sheldon_0",
        "sheldon_1",
        "sheldon_2",
    }

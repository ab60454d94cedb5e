"""A user-supplied ONNX embedder end to end: registration, calibration, a collection bound to it,
and refusal to mix its templates with dlib's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.engine import Engine
from facewarden.errors import InvalidInput, ModelMismatch
from facewarden.service import Service

from .data import faces_dir

IDENTITIES = [
    "barack_obama",
    "joe_biden",
    "sheldon",
    "leonard",
    "penny",
    "raj",
    "howard",
    "amy",
    "bernadette",
    "stuart",
]


def tiny_embedder(path) -> None:
    """112x112 RGB -> 8x8 average pool -> fixed random projection to 64-D: a weak but real embedder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(7).standard_normal((192, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def cli(data_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "facewarden.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("usermodel")
    data = root / "data"
    model_file = root / "tiny.onnx"
    tiny_embedder(model_file)
    # A small labelled folder (symlinks, never copies): four photos of each of ten people.
    labelled = root / "labelled"
    for ident in IDENTITIES:
        (labelled / ident).mkdir(parents=True)
        for photo in sorted((faces_dir() / ident).iterdir())[:4]:
            (labelled / ident / photo.name).symlink_to(photo)
    return data, model_file, labelled


def test_user_model_end_to_end(setup):
    data, model_file, labelled = setup
    assert cli(data, "init", "--org-name", "acme", "--sector", "commercial").returncode == 0
    r = cli(data, "--json", "model", "add", str(model_file), "--name", "tiny", "--input-size", "112")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    version = added["FaceModelVersion"]
    assert version.startswith("tiny@") and added["Dimensions"] == 64

    tiny = Settings(data_dir=data, model="tiny")
    # Uncalibrated: refused, because its similarities would mean nothing.
    with pytest.raises(InvalidInput, match="not calibrated"):
        Engine(tiny).calibration  # noqa: B018
    r = cli(data, "model", "list")
    assert "NOT calibrated" in r.stdout

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "facewarden.cli",
            "--data-dir",
            str(data),
            "--json",
            "calibrate",
            "--model",
            "tiny",
            "--images",
            str(labelled),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    sizes = [len(list((labelled / i).iterdir())) for i in IDENTITIES]
    n = sum(sizes)
    assert meta["impostor_pairs"] == n * (n - 1) // 2 - sum(
        k * (k - 1) // 2 for k in sizes
    )  # every cross-identity pair
    cal = Engine(tiny).calibration
    assert cal.model_version == version and np.all(np.diff(cal.distances) >= 0)

    # A collection made by a service running the user model is bound to it.
    svc = Service(tiny)
    try:
        owner = svc.owner_principal()
        made = svc.call("CreateCollection", {"CollectionId": "tinycol"}, owner)
        assert made["FaceModelVersion"] == version
        svc.call("GrantConsent", {"Subject": "obama", "CollectionId": "tinycol", "Evidence": "form 1"}, owner)
        photo = sorted((faces_dir() / "barack_obama").iterdir())[0].read_bytes()
        indexed = svc.call(
            "IndexFaces",
            {"CollectionId": "tinycol", "ExternalImageId": "obama", "Image": {"Bytes": photo}},
            owner,
        )
        assert len(indexed["FaceRecords"]) == 1 and indexed["FaceModelVersion"] == version
        found = svc.call("SearchFacesByImage", {"CollectionId": "tinycol", "Image": {"Bytes": photo}}, owner)
        assert found["FaceMatches"] and found["FaceMatches"][0]["Face"]["ExternalImageId"] == "obama"
        svc.call("CreateCollection", {"CollectionId": "tinycol2"}, owner)
    finally:
        svc.close()

    # A service whose default is dlib's model serves the user model's collection with the user model
    # (every operation on a collection uses the collection's model), and the other way round; a
    # template of one model is never written into the other's collection.
    dlib_svc = Service(Settings(data_dir=data, model="dlib-resnet-v1"))
    try:
        owner = dlib_svc.owner_principal()
        dlib_svc.call("CreateCollection", {"CollectionId": "dlibcol"}, owner)
        found = dlib_svc.call(
            "SearchFacesByImage", {"CollectionId": "tinycol", "Image": {"Bytes": photo}}, owner
        )
        assert found["FaceModelVersion"] == version
        assert found["FaceMatches"][0]["Face"]["ExternalImageId"] == "obama"
        assert {
            f["IndexFacesModelVersion"]
            for f in dlib_svc.call("ListFaces", {"CollectionId": "tinycol"}, owner)["Faces"]
        } == {version}
        with pytest.raises(ModelMismatch):
            dlib_svc.store.add_faces("tinycol", _one_face(dlib_svc, photo), "dlib-resnet-v1")
    finally:
        dlib_svc.close()
    svc = Service(tiny)
    try:
        owner = svc.owner_principal()
        svc.call("GrantConsent", {"Subject": "obama", "CollectionId": "dlibcol", "Evidence": "form 1"}, owner)
        indexed = svc.call(
            "IndexFaces",
            {"CollectionId": "dlibcol", "ExternalImageId": "obama", "Image": {"Bytes": photo}},
            owner,
        )
        assert indexed["FaceModelVersion"] == "dlib-resnet-v1"
        assert indexed["FaceRecords"][0]["Face"]["IndexFacesModelVersion"] == "dlib-resnet-v1"
    finally:
        svc.close()


def _one_face(svc, photo):
    """A dlib template of the photo's face, as a store write would carry it."""
    from facewarden.gallery import NewFace
    from facewarden.media import images

    engine = svc.engine_for("dlib-resnet-v1")
    pixels = images.decode(photo)
    faces = engine.detect(pixels)
    return [NewFace(engine.embed(pixels, faces[:1])[0], faces[0].face_detail()["BoundingBox"], 99.0)]

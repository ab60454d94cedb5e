"""Convert dlib's bundled networks to ONNX, once, and cache the result.

Two networks ship with face_recognition_models and are converted here, without torch, with the
``onnx`` package's helper API:

* ``resnet``: ``dlib_face_recognition_resnet_model_v1.dat``, the 128-D face embedder. Input
  ``chips``: ``(n, 150, 150, 3)`` uint8 RGB; output ``descriptors``: ``(n, 128)`` float32.
* ``mmod``: ``mmod_human_face_detector.dat``, the CNN face detector's convolutions. Input
  ``image``: ``(n, 3, h, w)`` float32 raw pixel values (the tiled image pyramid, see
  ``onnx_mmod.py``); output ``scores``: ``(n, windows, h', w')``.

Input normalisation (``(pixel - mean) / 256``) is folded into the first convolution (exact, as it
has no padding) and every affine (frozen batch-norm) layer into the convolution before it.

Converted files are cached under the model cache directory (``Settings.model_cache_dir``), one
per source file, with the source file's SHA-256 and the converter version recorded in the ONNX
metadata: a cache whose recorded hash differs from the source's is rebuilt. Files are written to
a temporary file and moved into place with ``os.replace``, so concurrent processes never see a
half-written model. No network is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from . import dlib_dat, dlib_runtime
from .dlib_dat import Network

log = logging.getLogger(__name__)

#: Bump when the graphs built here change: cached files of another version are rebuilt.
CONVERTER_VERSION = "1"
OPSET = 17
IR_VERSION = 8  # the IR of opset 17: loadable by older ONNX Runtime builds too


# ---- graph building --------------------------------------------------------------------------


class _Graph:
    """A small builder over onnx.helper: nodes, initialisers and unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


@dataclass
class _Value:
    name: str
    channels: int
    rows: int | None  # None: not known until run time
    cols: int | None


@dataclass
class _PendingConv:
    source: _Value
    filters: np.ndarray  # float64 while folding
    biases: np.ndarray
    stride: int
    padding: int
    relu: bool
    normalised_input: bool  # the input normalisation is already folded in


def _out_size(size: int | None, k: int, stride: int, pad: int) -> int | None:
    return None if size is None else (size + 2 * pad - k) // stride + 1


def _build_layers(net: Network, image: _Value, g: _Graph) -> str:
    """Emit the network's layers (input to output) on ``image`` (raw pixels); returns the output."""
    avg = np.asarray(net.input.attrs["avg"], np.float64)
    cur = image
    raw = True  # cur holds un-normalised pixel values
    tags: dict[int, _Value] = {}
    pending: _PendingConv | None = None

    def normalise() -> None:
        nonlocal cur, raw
        mean = g.const("mean", avg.astype(np.float32).reshape(1, 3, 1, 1))
        scale = g.const("scale", np.full((1, 1, 1, 1), 1 / 256, np.float32))
        cur = _Value(g.op("Mul", [g.op("Sub", [cur.name, mean]), scale], "normalised"), 3, cur.rows, cur.cols)
        raw = False

    def flush() -> None:
        nonlocal pending, cur
        if pending is None:
            return
        p, pending = pending, None
        w, b = p.filters, p.biases
        k = w.shape[-1]
        conv = g.op(
            "Conv",
            [p.source.name, g.const("W", w.astype(np.float32)), g.const("B", b.astype(np.float32))],
            "conv",
            kernel_shape=[k, k],
            strides=[p.stride, p.stride],
            pads=[p.padding] * 4,
        )
        if p.relu:
            conv = g.op("Relu", [conv])
        rows = _out_size(p.source.rows, k, p.stride, p.padding)
        cols = _out_size(p.source.cols, k, p.stride, p.padding)
        cur = _Value(conv, w.shape[0], rows, cols)

    for layer in reversed(net.layers[1:-1]):
        kind, a = layer.kind, layer.attrs
        if kind == "con":
            flush()
            w = layer.params["filters"].astype(np.float64)
            b = layer.params["biases"].astype(np.float64)
            folded = False
            if raw:
                if a["padding"] == 0:  # exact: no zero padding in normalised space to account for
                    b = b - np.einsum("ochw,c->o", w, avg) / 256.0
                    w = w / 256.0
                    folded = True
                else:
                    normalise()
            pending = _PendingConv(cur, w, b, a["stride"], a["padding"], bool(a.get("use_relu")), folded)
            raw = False
            continue
        if kind == "affine":
            if a.get("disabled") or not layer.params:
                continue
            gamma = layer.params["gamma"].astype(np.float64)
            beta = layer.params["beta"].astype(np.float64)
            if pending is not None and not pending.relu and gamma.size == pending.filters.shape[0]:
                pending.filters = pending.filters * gamma[:, None, None, None]
                pending.biases = pending.biases * gamma + beta
                continue
            flush()
            if gamma.size != cur.channels:
                raise ModelError(
                    f"{net.path}: an affine layer in FC mode after a non-convolution is not supported."
                )
            shape = (1, cur.channels, 1, 1)
            mul = g.op("Mul", [cur.name, g.const("gamma", gamma.astype(np.float32).reshape(shape))])
            cur = _Value(
                g.op("Add", [mul, g.const("beta", beta.astype(np.float32).reshape(shape))]),
                cur.channels,
                cur.rows,
                cur.cols,
            )
            continue
        flush()
        if raw and kind != "tag":
            normalise()
        if kind == "relu":
            if not a.get("disabled"):
                cur = _Value(g.op("Relu", [cur.name]), cur.channels, cur.rows, cur.cols)
        elif kind in ("max_pool", "avg_pool"):
            k, s, pad = a["nr"], a["stride"], a["padding"]
            if k == 0:  # pool everything
                cur = _Value(
                    g.op("GlobalAveragePool" if kind == "avg_pool" else "GlobalMaxPool", [cur.name]),
                    cur.channels,
                    1,
                    1,
                )
            else:
                op = "AveragePool" if kind == "avg_pool" else "MaxPool"
                extra = {"count_include_pad": 0} if kind == "avg_pool" else {}
                name = g.op(op, [cur.name], kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4, **extra)
                cur = _Value(
                    name, cur.channels, _out_size(cur.rows, k, s, pad), _out_size(cur.cols, k, s, pad)
                )
        elif kind == "tag":
            tags[layer.tag] = cur
        elif kind == "skip":
            cur = tags[layer.tag]
        elif kind == "add_prev":
            cur = _add_padded(g, cur, tags[layer.tag], net.path)
        elif kind == "fc":
            flat = g.op("Flatten", [cur.name], axis=1)
            w = layer.params["weights"]  # inputs x outputs
            out = g.op("MatMul", [flat, g.const("fc", w.astype(np.float32))])
            if "biases" in layer.params:
                out = g.op("Add", [out, g.const("fc_bias", layer.params["biases"].astype(np.float32))])
            cur = _Value(out, w.shape[1], 1, 1)
        else:  # pragma: no cover - the reader only yields the kinds above
            raise ModelError(f"{net.path}: layer kind {kind!r} is not supported by the ONNX converter.")
    flush()
    return cur.name


def _add_padded(g: _Graph, a: _Value, b: _Value, path: str) -> _Value:
    """dlib's add_prev: the smaller operand is zero-padded (channels, rows, columns) at the end."""
    if None in (a.rows, a.cols, b.rows, b.cols) and (a.rows, a.cols) != (b.rows, b.cols):
        raise ModelError(f"{path}: add_prev of operands with unknown sizes is not supported.")
    shape = (max(a.channels, b.channels), max(a.rows or 0, b.rows or 0), max(a.cols or 0, b.cols or 0))

    def pad(v: _Value) -> str:
        d = (shape[0] - v.channels, shape[1] - (v.rows or 0), shape[2] - (v.cols or 0))
        if d == (0, 0, 0):
            return v.name
        pads = g.const("pads", np.array([0, 0, 0, 0, 0, *d], np.int64))
        return g.op("Pad", [v.name, pads], "zero_pad", mode="constant")

    rows = shape[1] if a.rows is not None else None
    cols = shape[2] if a.cols is not None else None
    return _Value(g.op("Add", [pad(a), pad(b)], "add_prev"), shape[0], rows, cols)


def _model(g: _Graph, inputs: list[Any], outputs: list[Any], doc: str) -> Any:
    from onnx import checker, helper

    graph = helper.make_graph(g.nodes, "facewarden_" + doc.split()[0], inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facewarden", doc_string=doc
    )
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model


def build_resnet(net: Network) -> Any:
    """ONNX model of the ResNet embedder: ``chips`` (n,150,150,3) uint8 -> ``descriptors`` (n,128)."""
    from onnx import TensorProto, helper

    nr, nc = net.input.attrs["nr"], net.input.attrs["nc"]
    g = _Graph()
    pixels = g.op("Cast", ["chips"], "pixels", to=TensorProto.FLOAT)
    nchw = g.op("Transpose", [pixels], "nchw", perm=[0, 3, 1, 2])
    out = _build_layers(net, _Value(nchw, 3, nr, nc), g)
    g.nodes.append(helper.make_node("Identity", [out], ["descriptors"], name="descriptors"))
    dim = net.layers[1].attrs["num_outputs"]
    return _model(
        g,
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", nr, nc, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", dim])],
        "dlib face recognition ResNet v1 (converted by facewarden)",
    )


def build_mmod(net: Network) -> Any:
    """ONNX model of the mmod detector's convolutions: ``image`` (n,3,h,w) float32 raw pixels -> ``scores``."""
    from onnx import TensorProto, helper

    g = _Graph()
    out = _build_layers(net, _Value("image", 3, None, None), g)
    g.nodes.append(helper.make_node("Identity", [out], ["scores"], name="scores"))
    windows = len(net.loss.attrs["detector_windows"])
    return _model(
        g,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", windows, "oh", "ow"])],
        "dlib mmod human face detector (converted by facewarden)",
    )


# ---- sources and the cache -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One of dlib's networks: the weights file, its network type and the ONNX builder."""

    key: str
    dat: str
    net_type: tuple[dlib_dat.LayerSpec, ...]
    build: Callable[[Network], Any]
    what: str


SOURCES: dict[str, Source] = {
    "resnet": Source(
        "resnet", "dlib_face_recognition_resnet_model_v1.dat", dlib_dat.RESNET_V1, build_resnet,
        "dlib's ResNet face recognition network (dlib_face_recognition_resnet_model_v1)",
    ),
    "mmod": Source(
        "mmod", "mmod_human_face_detector.dat", dlib_dat.MMOD_V1, build_mmod,
        "dlib's mmod CNN face detector network (mmod_human_face_detector)",
    ),
}  # fmt: skip

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def default_cache_dir() -> Path:
    from ..config import Settings

    return Settings.from_env().model_cache_dir


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_network(key: str, source: Path | None = None) -> Network:
    """Parse one of dlib's bundled networks (``resnet`` or ``mmod``)."""
    src = SOURCES[key]
    return dlib_dat.read_network(source or dlib_runtime.weights_path(src.dat), src.net_type, src.what)


def recorded_metadata(path: Path) -> dict[str, str]:
    """The facewarden metadata recorded in a converted model ({} if unreadable)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
        return {}
    return {p.key: p.value for p in model.metadata_props}


def convert(key: str, target: Path, source: Path | None = None, source_sha256: str | None = None) -> Path:
    """Convert a dlib network to ``target`` (atomically), recording the source's hash."""
    from onnx import helper

    src = SOURCES[key]
    source = source or dlib_runtime.weights_path(src.dat)
    digest = source_sha256 or sha256_file(source)
    net = dlib_dat.read_network(source, src.net_type, src.what)
    model = src.build(net)
    helper.set_model_props(
        model,
        {
            "facewarden.source": source.name,
            "facewarden.source_sha256": digest,
            "facewarden.converter_version": CONVERTER_VERSION,
        },
    )
    write_atomically(target, model.SerializeToString())
    log.info("converted %s to %s", source, target)
    return target


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target`` and move it into place, so concurrent
    processes never read a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def converted_path(key: str, cache_dir: Path | None = None, source: Path | None = None) -> Path:
    """Path of the cached ONNX model for ``key``, converting it first if missing or stale."""
    src = SOURCES[key]
    source = source or dlib_runtime.weights_path(src.dat)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / (Path(src.dat).stem + ".onnx")
    with lock_for(target.resolve()):
        digest = sha256_file(source)
        if target.is_file():
            meta = recorded_metadata(target)
            if (
                meta.get("facewarden.source_sha256") == digest
                and meta.get("facewarden.converter_version") == CONVERTER_VERSION
            ):
                return target
            log.info("cached %s is stale (source or converter changed); rebuilding", target)
        try:
            return convert(key, target, source, digest)
        except OSError as exc:
            raise ModelError(
                f"Cannot write the converted model to {target}: {exc.strerror or exc}. "
                "Set FACEWARDEN_DATA_DIR to a writable directory."
            ) from exc


def session(key: str, cache_dir: Path | None = None, threads: int = 0) -> Any:
    """The ONNX Runtime session of a converted dlib network (``resnet`` or ``mmod``), converting it
    on first use; one per process, cache directory and thread count."""
    from . import onnx_runtime

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache.resolve() / (Path(SOURCES[key].dat).stem + ".onnx")
    return onnx_runtime.session(str(target), lambda: str(converted_path(key, cache)), threads)

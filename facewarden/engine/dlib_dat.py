"""Read dlib's serialised DNN files (``.dat``) into plain layers and numpy weights.

dlib writes a network with its C++ ``serialize`` functions (``dlib/serialize.h``, ``dlib/dnn``):

* integers: a control byte (low nibble = number of bytes, ``0x80`` = negative), then the bytes,
  little-endian; strings: a length, then the bytes; bools: ASCII ``'0'``/``'1'``;
  float/double: a (mantissa, exponent) integer pair, value = mantissa * 2**exponent;
* tensors: version 2, four dimensions, raw little-endian float32; "alias" tensors hold shapes only;
* the loss layer comes first, then one version integer per layer from the outside in, then the
  input layer, then each layer's details from the inside out (layer name string, weights, ...).

Tag, skip and ``add_prev`` layers write no wiring (a tag or skip leaves only its version integer),
so the file cannot be read without the network *type*. The types of the two networks dlib ships
with face_recognition_models are written down here from dlib's C++ source
(``tools/python/src/face_recognition.cpp`` and ``cnn_face_detector.cpp``) as :data:`RESNET_V1`
and :data:`MMOD_V1`; :func:`read_network` checks every layer of the file against the type and
raises :class:`~facewarden.errors.ModelError` for a truncated or foreign file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["MMOD_V1", "RESNET_V1", "Layer", "LayerSpec", "Network", "parse_network", "read_network"]


# ---- network types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a dlib network type: its kind and what the file must say about it."""

    kind: (
        str  # loss_metric, loss_mmod, fc, avg_pool, max_pool, con, affine, relu, add_prev, tag, skip, input_*
    )
    expect: tuple[tuple[str, Any], ...] = ()
    tag: int = 0  # tag / skip / add_prev: the tag id


def _con(n: int, k: int, s: int) -> LayerSpec:
    return LayerSpec(
        "con", (("num_filters", n), ("nr", k), ("nc", k), ("stride", s), ("padding", 0 if s != 1 else k // 2))
    )


def _pool(kind: str, k: int, s: int) -> LayerSpec:
    return LayerSpec(kind, (("nr", k), ("nc", k), ("stride", s), ("padding", 0 if s != 1 else k // 2)))


_AFFINE = LayerSpec("affine")
_RELU = LayerSpec("relu")


def _tag(i: int) -> LayerSpec:
    return LayerSpec("tag", tag=i)


def _resnet_v1() -> tuple[LayerSpec, ...]:
    """``anet_type`` of dlib's face_recognition.cpp, outermost layer first."""

    def block(n: int, stride: int, sub: list[LayerSpec]) -> list[LayerSpec]:
        # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
        return [_AFFINE, _con(n, 3, 1), _RELU, _AFFINE, _con(n, 3, stride), *sub]

    def ares(n: int, sub: list[LayerSpec]) -> list[LayerSpec]:
        # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
        return [_RELU, LayerSpec("add_prev", tag=1), *block(n, 1, [_tag(1), *sub])]

    def ares_down(n: int, sub: list[LayerSpec]) -> list[LayerSpec]:
        # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
        return [
            _RELU,
            LayerSpec("add_prev", tag=2),
            _pool("avg_pool", 2, 2),
            LayerSpec("skip", tag=1),
            _tag(2),
            *block(n, 2, [_tag(1), *sub]),
        ]

    net = [
        _pool("max_pool", 3, 2),
        _RELU,
        _AFFINE,
        _con(32, 7, 2),
        LayerSpec("input_rgb_image_sized", (("nr", 150), ("nc", 150))),
    ]
    for _ in range(3):
        net = ares(32, net)  # alevel4
    net = ares(64, ares(64, ares(64, ares_down(64, net))))  # alevel3
    net = ares(128, ares(128, ares_down(128, net)))  # alevel2
    net = ares(256, ares(256, ares_down(256, net)))  # alevel1
    net = ares_down(256, net)  # alevel0
    return (
        LayerSpec("loss_metric"),
        LayerSpec("fc", (("num_outputs", 128), ("bias", False))),
        _pool("avg_pool", 0, 1),
        *net,
    )


def _mmod_v1() -> tuple[LayerSpec, ...]:
    """``net_type`` of dlib's cnn_face_detector.cpp, outermost layer first."""
    rcon5 = [_RELU, _AFFINE, _con(45, 5, 1)]
    downsampler = [
        _RELU,
        _AFFINE,
        _con(32, 5, 2),
        _RELU,
        _AFFINE,
        _con(32, 5, 2),
        _RELU,
        _AFFINE,
        _con(16, 5, 2),
    ]
    return (
        LayerSpec("loss_mmod"),
        _con(1, 9, 1),
        *rcon5,
        *rcon5,
        *rcon5,
        *downsampler,
        LayerSpec("input_rgb_image_pyramid"),
    )


#: dlib_face_recognition_resnet_model_v1.dat
RESNET_V1: tuple[LayerSpec, ...] = _resnet_v1()
#: mmod_human_face_detector.dat (input_rgb_image_pyramid<pyramid_down<6>>)
MMOD_V1: tuple[LayerSpec, ...] = _mmod_v1()


# ---- parsed values ---------------------------------------------------------------------------


@dataclass
class Layer:
    """One parsed layer: its kind, its settings and its weights (float32, dlib's shapes)."""

    kind: str
    tag: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Network:
    """A parsed network, ``layers[0]`` the loss layer and ``layers[-1]`` the input layer."""

    layers: list[Layer]
    path: str = ""

    @property
    def loss(self) -> Layer:
        return self.layers[0]

    @property
    def input(self) -> Layer:
        return self.layers[-1]

    def num_params(self) -> int:
        return sum(int(p.size) for layer in self.layers for p in layer.params.values())


# ---- the byte reader -------------------------------------------------------------------------

_MAX_STRING = 1 << 16
_MAX_ELEMENTS = 1 << 28


class _Reader:
    def __init__(self, data: bytes, name: str, what: str) -> None:
        self.data = data
        self.pos = 0
        self.source = name
        self.what = what  # "a dlib ResNet face embedder network", for messages

    # errors
    def truncated(self, reading: str) -> ModelError:
        return ModelError(
            f"Model file {self.source} is truncated: it ends at byte {len(self.data)} while reading {reading} "
            f"of {self.what}. Reinstall the package that ships it (face_recognition_models)."
        )

    def foreign(self, expected: str, found: object) -> ModelError:
        return ModelError(
            f"Model file {self.source} is not {self.what}: at byte {self.pos} expected {expected}, found {found!r}."
        )

    # primitives
    def take(self, n: int, reading: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.truncated(reading)
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def int(self, reading: str = "an integer", signed: bool = True) -> int:
        start = self.pos
        ctrl = self.take(1, reading)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70 or (ctrl & 0x80 and not signed):
            self.pos = start
            raise self.foreign(reading + " (a dlib integer)", f"control byte 0x{ctrl:02x}")
        value = int.from_bytes(self.take(size, reading), "little")
        return -value if ctrl & 0x80 else value

    def version(self, reading: str, allowed: tuple[int, ...]) -> int:
        start = self.pos
        v = self.int(reading)
        if v not in allowed:
            self.pos = start
            raise self.foreign(f"{reading} {' or '.join(map(str, allowed))}", v)
        return v

    def bool(self, reading: str = "a bool") -> bool:
        ch = self.take(1, reading)
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.foreign(reading + " ('0' or '1')", ch)
        return ch == b"1"

    def byte(self, reading: str = "a byte") -> int:
        return self.take(1, reading)[0]

    def string(self, reading: str = "a layer name") -> str:
        start = self.pos
        n = self.int(reading, signed=False)
        if n > _MAX_STRING:
            self.pos = start
            raise self.foreign(reading, f"a string of {n} bytes")
        raw = self.take(n, reading)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.pos = start
            raise self.foreign(reading, raw[:40]) from None

    def name(self, reading: str, allowed: tuple[str, ...]) -> str:
        start = self.pos
        try:
            s = self.string(reading)
        except ModelError as exc:
            if "truncated" in str(exc):
                raise
            raise self.foreign(f"{reading} ({' or '.join(allowed)})", "something else") from None
        if s not in allowed:
            self.pos = start
            raise self.foreign(f"{reading} ({' or '.join(allowed)})", s)
        return s

    def float(self, reading: str = "a floating point number") -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.foreign(reading + " (binary float format)", "dlib's old ASCII float format")
        mantissa = self.int(reading)
        exponent = self.int(reading)
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent)) if mantissa else 0.0

    def shape(self, reading: str) -> tuple[int, int, int, int]:
        dims = tuple(self.int(reading) for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.foreign(reading + " (non-negative dimensions)", dims)
        return dims  # type: ignore[return-value]

    def tensor(self, reading: str = "a tensor") -> np.ndarray:
        self.version(reading + " version", (2,))
        dims = self.shape(reading + " shape")
        count = int(np.prod(dims, dtype=np.int64))
        if count > _MAX_ELEMENTS:
            raise self.foreign(reading + " of a plausible size", dims)
        raw = self.take(4 * count, reading + " data")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, reading: str = "a tensor shape") -> tuple[int, int, int, int]:
        self.version(reading + " version", (1,))
        return self.shape(reading)


# ---- layer details ---------------------------------------------------------------------------


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], r: _Reader, what: str) -> list[np.ndarray]:
    flat = params.reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise r.foreign(f"{sum(sizes)} parameters for the {what} layer", f"{flat.size}")
    out, at = [], 0
    for s, n in zip(shapes, sizes):
        out.append(flat[at : at + n].reshape(s).copy())
        at += n
    return out


def _con_details(r: _Reader) -> Layer:
    version = r.name("a con_ layer", ("con_4", "con_5", "con_6"))
    params = r.tensor("con_ parameters")
    num_filters = r.int("con_ num_filters")
    nr, nc = r.int("con_ nr"), r.int("con_ nc")
    sy, sx = r.int("con_ stride_y"), r.int("con_ stride_x")
    py, px = r.int("con_ padding_y"), r.int("con_ padding_x")
    fshape = r.alias("con_ filters shape")
    bshape = r.alias("con_ biases shape")
    for what in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.float(f"con_ {what}")
    use_bias = r.bool("con_ use_bias") if version in ("con_5", "con_6") else True
    use_relu = r.bool("con_ use_relu") if version == "con_6" else False
    if sy != sx or py != px or nr != nc:
        raise r.foreign("a square convolution", (nr, nc, sy, sx, py, px))
    if fshape[0] != num_filters or fshape[2:] != (nr, nc):
        raise r.foreign(f"filters of shape ({num_filters}, k, {nr}, {nc})", fshape)
    shapes: list[tuple[int, ...]] = [fshape]
    if use_bias and params.size > int(np.prod(fshape)):
        shapes.append((num_filters,))
    parts = _split(params, shapes, r, "con_")
    layer = Layer(
        "con",
        attrs={
            "num_filters": num_filters,
            "nr": nr,
            "nc": nc,
            "stride": sy,
            "padding": py,
            "use_relu": use_relu,
        },
    )
    layer.params["filters"] = parts[0]
    layer.params["biases"] = parts[1] if len(parts) > 1 else np.zeros(num_filters, np.float32)
    del bshape
    return layer


def _affine_details(r: _Reader) -> Layer:
    version = r.name("an affine_ layer", ("affine_", "affine_2", "bn_con2", "bn_fc2"))
    params = r.tensor(f"{version} parameters")
    gshape = r.alias(f"{version} gamma shape")
    r.alias(f"{version} beta shape")
    if version.startswith("bn_"):
        means = r.tensor("bn_ means")
        r.tensor("bn_ invstds")
        running_means = r.tensor("bn_ running_means").reshape(-1)
        running_vars = r.tensor("bn_ running_variances").reshape(-1)
        r.int("bn_ num_updates", signed=False)
        r.int("bn_ running_stats_window_size", signed=False)
        for what in (
            "learning_rate_multiplier",
            "weight_decay_multiplier",
            "bias_learning_rate_multiplier",
            "bias_weight_decay_multiplier",
        ):
            r.float(f"bn_ {what}")
        eps = r.float("bn_ eps")
        g, b = _split(params, [gshape, gshape], r, version)
        # affine_(const bn_&): gamma / sqrt(running_variance + eps), beta - gamma' * running_mean
        scale = (g.reshape(-1) / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
        shift = (b.reshape(-1) - scale * running_means).astype(np.float32)
        del means
        mode = 1 if version == "bn_con2" else 0
        return Layer(
            "affine",
            attrs={"mode": mode, "disabled": False, "converted_from": "bn"},
            params={"gamma": scale, "beta": shift},
        )
    mode = r.int("affine_ mode")
    disabled = r.bool("affine_ disabled") if version == "affine_2" else False
    layer = Layer("affine", attrs={"mode": mode, "disabled": disabled})
    if not disabled and params.size:
        g, b = _split(params, [gshape, gshape], r, "affine_")
        layer.params.update(gamma=g.reshape(-1), beta=b.reshape(-1))
    return layer


def _relu_details(r: _Reader) -> Layer:
    version = r.name("a relu_ layer", ("relu_", "relu_2"))
    disabled = r.bool("relu_ disabled") if version == "relu_2" else False
    return Layer("relu", attrs={"disabled": disabled})


def _pool_details(r: _Reader, kind: str) -> Layer:
    r.name(f"a {kind}_ layer", (f"{kind}_2",))
    nr, nc = r.int(f"{kind} nr"), r.int(f"{kind} nc")
    sy, sx = r.int(f"{kind} stride_y"), r.int(f"{kind} stride_x")
    py, px = r.int(f"{kind} padding_y"), r.int(f"{kind} padding_x")
    if nr != nc or sy != sx or py != px:
        raise r.foreign(f"a square {kind}", (nr, nc, sy, sx, py, px))
    return Layer(kind, attrs={"nr": nr, "nc": nc, "stride": sy, "padding": py})


def _fc_details(r: _Reader) -> Layer:
    version = r.name("an fc_ layer", ("fc_2", "fc_3"))
    num_outputs = r.int("fc_ num_outputs", signed=False)
    num_inputs = r.int("fc_ num_inputs", signed=False)
    params = r.tensor("fc_ parameters")
    wshape = r.alias("fc_ weights shape")
    r.alias("fc_ biases shape")
    bias_mode = r.int("fc_ bias mode")
    for what in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.float(f"fc_ {what}")
    use_bias = r.bool("fc_ use_bias") if version == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    shapes: list[tuple[int, ...]] = [(num_inputs, num_outputs)]
    if has_bias:
        shapes.append((num_outputs,))
    if int(np.prod(wshape)) != num_inputs * num_outputs:
        raise r.foreign(f"fc_ weights of {num_inputs}x{num_outputs}", wshape)
    parts = _split(params, shapes, r, "fc_")
    layer = Layer("fc", attrs={"num_outputs": num_outputs, "num_inputs": num_inputs, "bias": has_bias})
    layer.params["weights"] = parts[0]  # inputs x outputs
    if has_bias:
        layer.params["biases"] = parts[1]
    return layer


def _input_details(r: _Reader, kind: str) -> Layer:
    if kind == "input_rgb_image_sized":
        r.name("the input layer", ("input_rgb_image_sized",))
        avg = [r.float("input avg_red"), r.float("input avg_green"), r.float("input avg_blue")]
        nr, nc = r.int("input nr", signed=False), r.int("input nc", signed=False)
        return Layer(kind, attrs={"avg": avg, "nr": nr, "nc": nc})
    version = r.name("the input layer", ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"))
    avg = [r.float("input avg_red"), r.float("input avg_green"), r.float("input avg_blue")]
    padding, outer = 10, 11
    if version == "input_rgb_image_pyramid2":
        padding = r.int("input pyramid_padding", signed=False)
        outer = r.int("input pyramid_outer_padding", signed=False)
    return Layer(kind, attrs={"avg": avg, "pyramid_padding": padding, "pyramid_outer_padding": outer})


def _loss_details(r: _Reader, kind: str) -> Layer:
    if kind == "loss_metric":
        version = r.name("the loss layer", ("loss_metric_", "loss_metric_2"))
        attrs: dict[str, Any] = {"margin": 0.1, "dist_thresh": 0.75}
        if version == "loss_metric_2":
            attrs.update(
                margin=r.float("loss_metric_ margin"), dist_thresh=r.float("loss_metric_ dist_thresh")
            )
        return Layer(kind, attrs=attrs)
    r.name("the loss layer", ("loss_mmod_",))
    v = r.version("mmod_options version", (1, 2, 3, 4))
    windows: list[tuple[int, int, str]] = []
    if v == 1:
        windows.append((r.int("window width", signed=False), r.int("window height", signed=False), ""))
    else:
        n = r.int("number of detector windows", signed=False)
        if n > 1000:
            raise r.foreign("a plausible number of detector windows", n)
        for _ in range(n):
            wv = r.version("detector window version", (1, 2))
            w, h = r.int("window width", signed=False), r.int("window height", signed=False)
            label = r.string("window label") if wv == 2 else ""
            windows.append((w, h, label))
    attrs = {"detector_windows": windows}
    attrs["loss_per_false_alarm"] = r.float("loss_per_false_alarm")
    attrs["loss_per_missed_target"] = r.float("loss_per_missed_target")
    attrs["truth_match_iou_threshold"] = r.float("truth_match_iou_threshold")
    attrs["overlaps_nms"] = (r.float("overlaps_nms iou"), r.float("overlaps_nms percent covered"))
    attrs["overlaps_ignore"] = (r.float("overlaps_ignore iou"), r.float("overlaps_ignore percent covered"))
    attrs["assume_image_pyramid"] = r.byte("assume_image_pyramid") if v >= 3 else 1
    attrs["use_bounding_box_regression"] = False
    if v >= 4:
        attrs["use_bounding_box_regression"] = r.bool("use_bounding_box_regression")
        attrs["bbr_lambda"] = r.float("bbr_lambda")
    return Layer(kind, attrs=attrs)


def _details(r: _Reader, spec: LayerSpec) -> Layer:
    k = spec.kind
    if k == "con":
        layer = _con_details(r)
    elif k == "affine":
        layer = _affine_details(r)
    elif k == "relu":
        layer = _relu_details(r)
    elif k in ("max_pool", "avg_pool"):
        layer = _pool_details(r, k)
    elif k == "fc":
        layer = _fc_details(r)
    elif k == "add_prev":
        r.name("an add_prev_ layer", ("add_prev_",))
        layer = Layer("add_prev", tag=spec.tag)
    else:  # pragma: no cover - a bad network type
        raise ValueError(f"unknown layer kind {k!r}")
    for key, want in spec.expect:
        got = layer.attrs.get(key)
        if got != want:
            raise r.foreign(f"{k} {key} = {want!r}", got)
    return layer


def _trailer(r: _Reader, on_input: bool, version: int) -> None:
    """The bookkeeping an ``add_layer`` writes after its details (training state, not weights)."""
    r.bool("add_layer this_layer_setup_called")
    r.bool("add_layer gradient_input_is_stale")
    r.bool("add_layer get_output_and_gradient_input_disabled")
    r.tensor("add_layer x_grad")
    r.tensor("add_layer cached_output")
    if on_input:
        r.tensor("add_layer grad_final")
        if version >= 3:
            r.int("add_layer sample_expansion_factor", signed=False)
    elif version == 2:
        r.tensor("add_layer params_grad")


def _parse(r: _Reader, net_type: tuple[LayerSpec, ...]) -> list[Layer]:
    out: list[Layer | None] = [None] * len(net_type)
    r.version("the loss layer version", (1,))
    out[0] = _loss_details(r, net_type[0].kind)
    last = len(net_type) - 1

    # Versions are written from the outside in; details from the inside out. An explicit stack
    # instead of recursion keeps deep networks cheap.
    pending: list[tuple[int, int]] = []  # (index, version) of add_layers waiting for their details
    i = 1
    while i < last:
        spec = net_type[i]
        if spec.kind in ("tag", "skip"):
            r.version(f"the {spec.kind}{spec.tag} layer version", (1,))
            out[i] = Layer(spec.kind, tag=spec.tag)
            i += 1
            continue
        on_input = i + 1 == last
        version = r.version(f"the version of layer {i} ({spec.kind})", (2, 3) if on_input else (1, 2))
        pending.append((i, version))
        i += 1
    in_spec = net_type[last]
    layer_in = _input_details(r, in_spec.kind)
    for key, want in in_spec.expect:
        if layer_in.attrs.get(key) != want:
            raise r.foreign(f"input {key} = {want!r}", layer_in.attrs.get(key))
    out[last] = layer_in
    for idx, version in reversed(pending):
        out[idx] = _details(r, net_type[idx])
        _trailer(r, idx + 1 == last, version)
    if r.pos != len(r.data):
        raise r.foreign("the end of the file", f"{len(r.data) - r.pos} more bytes")
    return [layer for layer in out if layer is not None]


def parse_network(
    data: bytes, net_type: tuple[LayerSpec, ...], name: str = "<bytes>", what: str = "a dlib network"
) -> Network:
    """Parse the bytes of a ``.dat`` file written by dlib for the network type ``net_type``."""
    r = _Reader(data, name, what)
    try:
        layers = _parse(r, net_type)
    except (struct.error, OverflowError, ValueError) as exc:  # defensive: never leak a low-level error
        raise ModelError(f"Model file {name} is not {what}: {exc}") from exc
    return Network(layers, path=name)


def read_network(path: str | Path, net_type: tuple[LayerSpec, ...], what: str = "a dlib network") -> Network:
    """Read a ``.dat`` network file; :class:`ModelError` names the file and what was expected."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read model file {path}: {exc.strerror or exc}.") from exc
    return parse_network(data, net_type, str(path), what)

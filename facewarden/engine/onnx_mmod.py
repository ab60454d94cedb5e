"""dlib's CNN (mmod) face detector on ONNX Runtime: dlib's boxes, 10x faster or more.

Reproduces ``dlib.cnn_face_detection_model_v1(path)(image, 0)``:

1. the image pyramid (``pyramid_down<6>``) tiled into one image exactly as dlib's
   ``input_rgb_image_pyramid`` does it (``compute_tiled_image_pyramid_details`` and the float
   bilinear resize of ``tt::resize_bilinear``, each level from the previous one);
2. the network's convolutions on ONNX Runtime (converted by ``onnx_convert.py``);
3. every output location scoring above 0 becomes an 80x80 window in the tiled image, mapped to the
   image through its pyramid level (``tiled_pyramid_to_image``) and rounded as dlib rounds;
4. dlib's non-max suppression (``test_box_overlap`` with the thresholds stored in the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from . import onnx_convert
from .faces import Box
from .loading import load_once

Rect = tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom, all inclusive

PYRAMID_N = 6  # pyramid_down<6>
MIN_LEVEL_HEIGHT = 5


# ---- geometry, as dlib does it -------------------------------------------------------------


def _height(r: Rect) -> int:
    return r[3] - r[1] + 1


def _width(r: Rect) -> int:
    return r[2] - r[0] + 1


def _area(r: Rect) -> int:
    return max(0, _width(r)) * max(0, _height(r))


def _intersect(a: Rect, b: Rect) -> Rect:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _is_empty(r: Rect) -> bool:
    return r[0] > r[2] or r[1] > r[3]


def _lround(x: float) -> int:
    """C's lround: halves away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def tiled_pyramid_rects(nr: int, nc: int, padding: int, outer_padding: int) -> tuple[list[Rect], int, int]:
    """dlib's ``impl::compute_tiled_image_pyramid_details`` for ``pyramid_down<6>``."""
    if nr * nc == 0:
        return [], 0, 0
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    rects: list[Rect] = [(0, 0, nc - 1, nr - 1)]
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < MIN_LEVEL_HEIGHT:
            break
        rects.append((0, 0, nc - 1, nr - 1))
    first_h, first_w = _height(rects[0]), _width(rects[0])
    total_height = sum(_height(r) + padding for r in rects) - padding * 2
    height = 0
    prev_width = 0
    for r in rects:
        if _width(r) <= first_w - prev_width - padding and (height - first_h) * 2 >= total_height - first_h:
            break
        height += _height(r) + padding
        prev_width = _width(r)
    height -= padding
    width = first_w
    out_nr, out_nc = height + outer_padding * 2, width + outer_padding * 2

    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(rects):
        r = rects[i]
        rects[i] = (r[0] + outer_padding, r[1] + y, r[2] + outer_padding, r[3] + y)
        y += _height(rects[i]) + padding
        i += 1
    y -= padding
    while i < len(rects):
        p1 = (outer_padding + width - 1, y - 1)
        p2 = (p1[0] - rects[i][2], p1[1] - rects[i][3])
        rect = (min(p1[0], p2[0]), min(p1[1], p2[1]), max(p1[0], p2[0]), max(p1[1], p2[1]))
        if not _is_empty(_intersect(rects[0], rect)):
            break  # dlib leaves the remaining levels where they are, and so do we
        rects[i] = rect
        y -= _height(rect) + padding
        i += 1
    return rects, out_nr, out_nc


def _nearest_rect(rects: list[Rect], x: int, y: int) -> int:
    best, best_dist = 0, math.inf
    for i, r in enumerate(rects):
        if r[0] <= x <= r[2] and r[1] <= y <= r[3]:
            return i
        nx = min(max(x, r[0]), r[2])
        ny = min(max(y, r[1]), r[3])
        d = math.hypot(nx - x, ny - y)
        if d < best_dist:
            best, best_dist = i, d
    return best


def _point_up(x: float, y: float, levels: int) -> tuple[float, float]:
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    for _ in range(levels):
        x, y = x * ratio + 0.3, y * ratio + 0.3
    return x, y


def tensor_rect_to_image(rects: list[Rect], left: float, t: float, r: float, b: float) -> Rect:
    """``tiled_pyramid_to_image<pyramid_down<6>>`` then dlib's drectangle -> rectangle rounding."""
    cx, cy = (left + r) / 2, (t + b) / 2
    idx = _nearest_rect(rects, math.floor(cx + 0.5), math.floor(cy + 0.5))
    ox, oy = rects[idx][0], rects[idx][1]
    x1, y1 = _point_up(left - ox, t - oy, idx)
    x2, y2 = _point_up(r - ox, b - oy, idx)
    return (_lround(x1), _lround(y1), _lround(x2), _lround(y2))


def boxes_overlap(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib's ``test_box_overlap`` (note: "union" is the bounding box of both)."""
    inner = _area(_intersect(a, b)) if not _is_empty(_intersect(a, b)) else 0
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return (
        inner / outer > iou_thresh or inner / _area(a) > covered_thresh or inner / _area(b) > covered_thresh
    )


# ---- the pyramid -----------------------------------------------------------------------------


def _resize_bilinear(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """dlib's float ``resize_image`` (bilinear, corners aligned), (c, h, w) -> (c, out_h, out_w).

    Sample positions are computed as dlib computes them (rows in double; columns four at a time
    in float32, accumulated, then a double-precision tail), so the same source pixels and weights
    are used.
    """
    _c, in_h, in_w = src.shape
    xs = (in_w - 1) / max(out_w - 1, 1)
    ys = (in_h - 1) / max(out_h - 1, 1)
    # rows: y += y_scale in double, starting at 0
    y = np.concatenate([[0.0], np.cumsum(np.full(out_h - 1, ys))]) if out_h > 1 else np.zeros(1)
    top = np.floor(y).astype(np.int64)
    bottom = np.minimum(top + 1, in_h - 1)
    tb = y - top
    # columns, SIMD part: four float32 lanes, _x += 4*x_scale per step, stop when right[3] >= in_w
    groups = out_w // 4 + 2
    x0 = -4 * xs
    start = np.array([x0, x0 + xs, x0 + 2 * xs, x0 + 3 * xs], np.float32)
    steps = np.vstack([start[None], np.tile(np.float32(4 * xs), (groups, 4)).astype(np.float32)])
    lanes = np.cumsum(steps, axis=0, dtype=np.float32)[1:]  # sequential float32 adds, as the loop
    left4 = lanes.astype(np.int32)  # truncation, as simd4i(simd4f)
    stop = np.nonzero(left4[:, 3] + 1 >= in_w)[0]
    n_simd = 4 * int(stop[0]) if len(stop) else 4 * groups
    n_simd = min(n_simd, out_w)
    xv = lanes.reshape(-1)[:n_simd]
    left = left4.reshape(-1)[:n_simd].astype(np.int64)
    lr = (xv - left.astype(np.float32)).astype(np.float32)
    # tail in double
    tail_c = np.arange(n_simd, out_w)
    xt = (-xs + n_simd * xs) + np.cumsum(np.full(len(tail_c), xs)) if len(tail_c) else np.zeros(0)
    lt = np.floor(xt).astype(np.int64)

    if len(tail_c):
        left = np.concatenate([left, lt])
        lr = np.concatenate([lr, (xt - lt).astype(np.float32)])
    right = np.minimum(left + 1, in_w - 1)
    # Separable: rows first (dlib mixes all four corners at once; same samples, same weights,
    # float rounding differs by ~1e-7 relative).
    tbf = tb.astype(np.float32)[None, :, None]
    rows = src[:, top, :] * (1 - tbf)
    rows += src[:, bottom, :] * tbf
    out = np.take(rows, left, axis=2)
    out *= 1 - lr
    out += np.take(rows, right, axis=2) * lr
    return out


def tiled_pyramid(
    image: np.ndarray, avg: np.ndarray, padding: int, outer_padding: int
) -> tuple[np.ndarray, list[Rect]]:
    """The (3, NR, NC) float32 tiled pyramid of raw pixel values (empty space = the mean colour)."""
    h, w = image.shape[:2]
    rects, nr, nc = tiled_pyramid_rects(h, w, padding, outer_padding)
    tiled = np.empty((3, nr, nc), np.float32)
    tiled[:] = avg.reshape(3, 1, 1)
    if not rects:
        return tiled, rects
    r0 = rects[0]
    tiled[:, r0[1] : r0[3] + 1, r0[0] : r0[2] + 1] = image.transpose(2, 0, 1)
    for i in range(1, len(rects)):
        s, d = rects[i - 1], rects[i]
        src = tiled[:, s[1] : s[3] + 1, s[0] : s[2] + 1]
        tiled[:, d[1] : d[3] + 1, d[0] : d[2] + 1] = _resize_bilinear(src, _height(d), _width(d))
    return tiled, rects


# ---- the detector ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _MmodInfo:
    avg: np.ndarray
    padding: int
    outer_padding: int
    windows: tuple[tuple[int, int], ...]
    nms: tuple[float, float]
    scale: float  # output location -> tensor location: p * scale + offset
    offset: float
    convs: tuple[tuple[int, int, int], ...]  # (k, stride, padding) input to output, for sizes


@load_once
def _info() -> _MmodInfo:
    net = onnx_convert.read_network("mmod")
    if net.loss.attrs.get("use_bounding_box_regression"):
        raise InvalidInput("mmod models with bounding box regression are not supported by the ONNX runner.")
    scale, offset = 1.0, 0.0
    convs = []
    for layer in net.layers[1:-1]:  # output side first
        if layer.kind in ("con", "max_pool", "avg_pool") and layer.attrs["nr"]:
            a = layer.attrs
            offset = offset * a["stride"] - a["padding"] + a["nr"] // 2
            scale *= a["stride"]
            convs.append((a["nr"], a["stride"], a["padding"]))
    return _MmodInfo(
        avg=np.asarray(net.input.attrs["avg"], np.float32),
        padding=int(net.input.attrs["pyramid_padding"]),
        outer_padding=int(net.input.attrs["pyramid_outer_padding"]),
        windows=tuple((w, h) for w, h, _ in net.loss.attrs["detector_windows"]),
        nms=tuple(net.loss.attrs["overlaps_nms"]),  # type: ignore[arg-type]
        scale=scale,
        offset=offset,
        convs=tuple(reversed(convs)),
    )


class OnnxCnnDetector:
    """dlib's mmod CNN face detector with dlib's results, on ONNX Runtime."""

    def __init__(self, cache_dir: Path | None = None, threads: int = 0) -> None:
        self.cache_dir = cache_dir
        self.threads = threads

    @property
    def session(self) -> Any:
        return onnx_convert.session("mmod", self.cache_dir, self.threads)

    def detect(self, image: np.ndarray, threshold: float = 0.0) -> list[tuple[Box, float]]:
        """Faces in an RGB (or grayscale) uint8 image: ``(Box, score)``, strongest first."""
        image = _as_rgb(image)
        info = _info()
        h, w = image.shape[:2]
        if h * w == 0:
            return []
        tiled, rects = tiled_pyramid(image, info.avg, info.padding, info.outer_padding)
        oh, ow = tiled.shape[1:]
        for k, s, p in info.convs:
            oh, ow = (oh + 2 * p - k) // s + 1, (ow + 2 * p - k) // s + 1
        if oh <= 0 or ow <= 0:
            return []
        scores = self.session.run(["scores"], {"image": tiled[None]})[0][0]
        return self._boxes(scores, rects, info, threshold)

    @staticmethod
    def _boxes(
        scores: np.ndarray, rects: list[Rect], info: _MmodInfo, threshold: float
    ) -> list[tuple[Box, float]]:
        cands: list[tuple[float, Rect]] = []
        for k, (ww, wh) in enumerate(info.windows):
            rs, cs = np.nonzero(scores[k] > threshold)
            for r, c in zip(rs.tolist(), cs.tolist()):
                px, py = c * info.scale + info.offset, r * info.scale + info.offset
                hw, hh = (ww - 1) / 2, (wh - 1) / 2
                rect = tensor_rect_to_image(rects, px - hw, py - hh, px + hw, py + hh)
                cands.append((float(scores[k, r, c]), rect))
        cands.sort(key=lambda sr: -sr[0])
        kept: list[tuple[float, Rect]] = []
        iou, covered = info.nms
        for score, rect in cands:
            if any(boxes_overlap(k_rect, rect, iou, covered) for _, k_rect in kept):
                continue
            kept.append((score, rect))
        return [(Box(r[0], r[1], r[2] + 1, r[3] + 1), s) for s, r in kept]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput(
            f"The CNN detector takes an RGB or grayscale image, not an array of shape {image.shape}."
        )
    if image.dtype != np.uint8:
        raise InvalidInput(f"The CNN detector takes 8-bit images, not {image.dtype}.")
    return image

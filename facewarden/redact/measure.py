"""The unredacted face-frame: whether a face that was in a frame can still be seen after redaction.

The tests and the bench count, over every frame of a clip and every true face box in it, the face
boxes whose output still shows the face. One measure serves both, so that facewarden and the peer
are judged alike, from pixels alone (any redactor, any mask shape):

1. Both frames are cut to the true face box (the part inside the frame), turned to grey and
   scaled to ``SIZE`` x ``SIZE`` pixels, so that big and small faces are judged at one scale.
2. What identifies a face is its detail: the shapes of eyes, nose, mouth and brows, a few pixels
   across at this scale. Both crops are reduced to that detail band (a difference of Gaussians,
   sigma ``BAND[0]`` to ``BAND[1]`` pixels), which discards the colour and light of the region,
   the part a blur rightly keeps.
3. On a ``GRID`` x ``GRID`` grid over the box, counting only pixels inside the ellipse inscribed in
   the box (eyes, nose and mouth lie inside it; its corners hold hair and background), each cell
   scores ``kept = 2 <a, b> / (|a|^2 + |b|^2)`` between the input's detail ``a`` and the output's
   ``b``: the contrast-and-structure term of SSIM (Wang et al. 2004) without its stabilising
   constants, which would swamp detail of a few grey levels. ``kept`` is 1 when the detail
   passes unchanged and falls towards 0 when it is gone (a blur), replaced by other detail (a
   mosaic's block edges) or blotted out (a solid fill). A cell whose input has almost no detail
   (RMS under ``TEXTURE_MIN`` grey levels: a flat patch of cheek) is skipped: it identifies no one.
4. The face-frame is **unredacted** if any cell keeps ``kept >= THRESHOLD``. One cell is enough: a
   mask that lags a moving face and leaves an eye uncovered fails, however well it hides the rest.

Why these numbers (measured on the 61 photos of ``shared/faces`` with a detectable face, each
scaled so the face is 80 px and 30 px across, through JPEG at quality 50 or 20 as a stand-in for a
video encoder): a face that passes untouched keeps >= 0.94 in its best cell (median 0.99); faces
hidden by facewarden's blur keep at most 0.26 (median 0.07), by its pixelate at most 0.65 (the
mosaic's block edges fall on the outline of hair and chin by chance), by a solid fill at most
0.14; a box that leaves a third of the face's width uncovered keeps >= 0.88. ``THRESHOLD = 0.8``
separates them with a margin on both sides. For the same hidden faces facewarden's detector finds
no face and its embedder's similarity to the original falls to that of strangers (at most 66
against a match threshold of 80); :func:`recognisable` is that check, too slow to run on every
frame of every clip, so the tests run it on stills and on sampled frames.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..engine import Engine
from ..engine.faces import Box, DetectedFace

SIZE = 48
GRID = 3
BAND = (0.7, 3.0)
THRESHOLD = 0.8
TEXTURE_MIN = 2.0
#: A face box with less than this many pixels of it inside the frame, on either axis, is not
#: counted: nothing there could identify anyone.
MIN_VISIBLE_PX = 8


def detail_kept(before: np.ndarray, after: np.ndarray, box: Box) -> np.ndarray | None:
    """``kept`` of each grid cell of ``box`` between the two RGB frames (NaN for a cell without
    detail); None when too little of the box lies inside the frame to count."""
    h, w = before.shape[:2]
    x0, y0 = max(0, math.floor(box.left)), max(0, math.floor(box.top))
    x1, y1 = min(w, math.ceil(box.right)), min(h, math.ceil(box.bottom))
    if x1 - x0 < MIN_VISIBLE_PX or y1 - y0 < MIN_VISIBLE_PX:
        return None
    a = _detail(before[y0:y1, x0:x1])
    b = _detail(after[y0:y1, x0:x1])
    # Pixel centres of the SIZE x SIZE crop in frame coordinates; the ellipse and the grid are
    # those of the whole box, so a box cut by the frame's edge keeps the cells it still has.
    ys = y0 + (np.arange(SIZE) + 0.5) * (y1 - y0) / SIZE
    xs = x0 + (np.arange(SIZE) + 0.5) * (x1 - x0) / SIZE
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    inside = ((ys[:, None] - cy) / (box.height / 2)) ** 2 + ((xs[None, :] - cx) / (box.width / 2)) ** 2 <= 1
    cell_y = np.clip(np.floor((ys - box.top) / box.height * GRID), 0, GRID - 1).astype(int)
    cell_x = np.clip(np.floor((xs - box.left) / box.width * GRID), 0, GRID - 1).astype(int)
    out = np.full((GRID, GRID), np.nan)
    for gy in range(GRID):
        for gx in range(GRID):
            sel = inside & (cell_y[:, None] == gy) & (cell_x[None, :] == gx)
            if sel.sum() < 4:
                continue
            aa, bb = a[sel], b[sel]
            energy = float((aa * aa).sum())
            if math.sqrt(energy / aa.size) < TEXTURE_MIN:
                continue
            out[gy, gx] = 2.0 * float((aa * bb).sum()) / (energy + float((bb * bb).sum()))
    return out


def unredacted(before: np.ndarray, after: np.ndarray, box: Box) -> bool:
    """Whether the face in ``box`` can still be seen in ``after`` (the module's measure)."""
    return _verdict(detail_kept(before, after, box)) is True


def count_unredacted(
    before: Sequence[np.ndarray], after: Sequence[np.ndarray], truth: Sequence[Sequence[Box]]
) -> tuple[int, int]:
    """(unredacted face-frames, face-frames counted) over frames paired with their true boxes."""
    bad = total = 0
    for b, a, boxes in zip(before, after, truth, strict=True):
        for box in boxes:
            verdict = _verdict(detail_kept(b, a, box))
            if verdict is not None:
                total += 1
                bad += verdict
    return bad, total


def _verdict(cells: np.ndarray | None) -> bool | None:
    """True: unredacted; False: hidden; None: not a countable face-frame."""
    if cells is None or np.isnan(cells).all():
        return None
    return bool(np.nanmax(cells) >= THRESHOLD)


def _detail(rgb: np.ndarray) -> np.ndarray:
    """The crop in grey at SIZE x SIZE, reduced to the detail band."""
    img = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    resample = Image.Resampling.BOX if img.width > SIZE else Image.Resampling.BILINEAR
    grey = np.asarray(img.resize((SIZE, SIZE), resample), dtype=np.float64)
    fine, coarse = _gauss_matrix(BAND[0]), _gauss_matrix(BAND[1])
    return fine @ grey @ fine.T - coarse @ grey @ coarse.T


@functools.cache
def _gauss_matrix(sigma: float) -> np.ndarray:
    """``G`` such that ``G @ x @ G.T`` is the Gaussian blur of a SIZE x SIZE image (edges mirrored)."""
    r = math.ceil(3 * sigma)
    taps = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()
    g = np.zeros((SIZE, SIZE))
    for i in range(SIZE):
        for k, t in zip(range(-r, r + 1), taps):
            j = i + k
            j = -j - 1 if j < 0 else (2 * SIZE - j - 1 if j >= SIZE else j)  # mirror at the edges
            g[i, j] += t
    return g


def recognisable(
    engine: Engine, frame: np.ndarray, face: DetectedFace, reference: np.ndarray, threshold: float
) -> bool:
    """Whether facewarden's own detector still finds a face over ``face.box`` in ``frame``, or its
    embedder, aligned on the original landmarks of ``face``, still matches ``reference`` at
    ``threshold`` (calibrated similarity). Slow: for stills and sampled frames."""
    if any(f.box.iou(face.box) > 0.2 for f in engine.detect(frame)):
        return True
    template = engine.embed(frame, [face])[0]
    return bool(engine.similarity(reference, template) >= threshold)

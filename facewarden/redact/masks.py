"""Masks over faces: blur, pixelate or a solid fill, in an ellipse or a box, with a margin.

A face box from the detector is tight (brows to chin, cheek to cheek). A mask covers the box
widened by ``margin`` of its width and height on each side; an ellipse inscribed in that region
covers every corner of the face box once the margin is at least ``(sqrt(2) - 1) / 2 = 0.207``.
The default margin is larger, 0.4, and an ellipse then fades out over a further ``FEATHER`` (0.4)
of the face's size.

What fills the mask is destroyed, not merely softened:

* ``blur`` (default) averages the region down to ``BLUR_CELLS`` (2) samples across the face box
  and spreads them back smoothly (bilinear, then a Gaussian of half a cell). Averaging throws the
  detail away before anything is drawn, so no deconvolution can bring it back.
* ``pixelate`` draws the mean colour of each of ``PIXELATE_CELLS`` (3) cells across the face box:
  the familiar mosaic, its block edges softened by a Gaussian of ``MOSAIC_SOFTEN`` of a cell.
* ``solid`` fills the region with one colour (black by default): nothing of the face remains.

Why these numbers. A hidden face must be hidden from a detector too, and a blurred blob the size
and shape of a head, above shoulders, is still a face to one: with the earlier margin of 0.25,
fade of 0.15 and 3 blur samples, CenterFace (the default detector) reported a face at Confidence
85 (50 reports a face) at full resolution in one frame of the test clip of
``tests/test_redact_video.py``, and at 54 at the resolution it works at. A mask that also covers
the hair, ears and outline of the head, fades out softly and keeps only 2 samples across the face
leaves no head shape: CenterFace's best score over the masked faces fell to at most 2.9 on that
clip and at most 8.9 on the 32 faces (100 px) of ``shared/faces``, at each of its three working
scales. A crisp mosaic is no face to the detector, but its block edges are detail of their own:
where one falls on a strong edge of the face (a hairline across a cell) it reproduces it, and on
CenterFace's tall face boxes a 4-cell mosaic kept 0.87 of a cell's detail by the measure of
:mod:`.measure` (0.8 counts as visible). Three cells with edges softened by a tenth of a cell keep
at most 0.62 while CenterFace's best score stays at 30.6 (softer edges make the mosaic a blurred
face again: 46 at 0.15 of a cell). ``tests/test_redact.py`` and ``tests/test_redact_video.py``
check all of it with every registered detector and the embedder.

Everything here is a pure function of numpy arrays and boxes; the video path calls
:func:`apply` once per frame with the boxes the tracks carried there (:mod:`.carry`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ..engine.faces import Box
from ..errors import InvalidInput

METHODS = ("blur", "pixelate", "solid")
SHAPES = ("ellipse", "box")
#: Samples across the face box that survive a blur (see the module docstring for the numbers).
BLUR_CELLS = 2
#: Mosaic cells across the face box for ``pixelate``.
PIXELATE_CELLS = 3
#: A blur is spread back at this many pixels a cell, then scaled up (speed; see ``_mosaic``).
SMOOTH_PX = 8.0
#: The mosaic's block edges are softened by a Gaussian of this fraction of a cell.
MOSAIC_SOFTEN = 0.1
DEFAULT_MARGIN = 0.4
MAX_MARGIN = 2.0
#: An ellipse's soft edge, beyond its margin, as a fraction of the face box: the mask fades out
#: over it. A hard-edged oval of skin tone is itself face-like (CenterFace found a face in 4 of 119
#: blurred faces of the test clip).
FEATHER = 0.4
#: The smallest margin at which the inscribed ellipse covers the whole face box.
ELLIPSE_MIN_MARGIN = (math.sqrt(2.0) - 1.0) / 2.0


@dataclass(frozen=True)
class MaskStyle:
    """How a face is hidden: ``method`` (blur, pixelate, solid), ``shape`` (ellipse, box), the
    ``margin`` added on each side as a fraction of the box's size, and the ``colour`` of solid."""

    method: str = "blur"
    shape: str = "ellipse"
    margin: float = DEFAULT_MARGIN
    colour: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInput(
                f"Unknown redaction method {self.method!r}; choose one of: {', '.join(METHODS)}."
            )
        if self.shape not in SHAPES:
            raise InvalidInput(f"Unknown mask shape {self.shape!r}; choose one of: {', '.join(SHAPES)}.")
        if not (isinstance(self.margin, int | float) and math.isfinite(self.margin)):
            raise InvalidInput(f"The mask margin must be a number, not {self.margin!r}.")
        if not 0.0 <= self.margin <= MAX_MARGIN:
            raise InvalidInput(
                f"The mask margin is a fraction of the face box added on each side, from 0 to {MAX_MARGIN:g}; "
                f"{self.margin:g} is out of range."
            )
        if self.shape == "ellipse" and self.margin < ELLIPSE_MIN_MARGIN:
            raise InvalidInput(
                f"An ellipse with a margin under {ELLIPSE_MIN_MARGIN:.3f} leaves the corners of the face box "
                f"visible; use a margin of at least {ELLIPSE_MIN_MARGIN:.3f} or shape 'box'."
            )
        if len(self.colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.colour):
            raise InvalidInput(f"The solid colour must be three integers from 0 to 255, not {self.colour!r}.")


def region(box: Box, margin: float) -> Box:
    """The face box widened by ``margin`` of its width and height on each side."""
    mx, my = box.width * margin, box.height * margin
    return Box(box.left - mx, box.top - my, box.right + mx, box.bottom + my)


def widen(box: Box, dx: float, dy: float) -> Box:
    """``box`` grown by ``|dx|`` on the left and right and ``|dy|`` above and below: the room a face
    moving by ``(dx, dy)`` may need (the mask does not know which way it will go next)."""
    dx, dy = abs(dx), abs(dy)
    return Box(box.left - dx, box.top - dy, box.right + dx, box.bottom + dy)


def apply(frame: np.ndarray, boxes: Sequence[Box], style: MaskStyle | None = None) -> np.ndarray:
    """A copy of the RGB ``frame`` with every face box hidden (the input is never modified)."""
    style = style or MaskStyle()
    out = np.array(frame, dtype=np.uint8, copy=True)
    for box in boxes:
        apply_inplace(out, box, style)
    return out


def apply_inplace(frame: np.ndarray, box: Box, style: MaskStyle) -> None:
    """Hide one face box in ``frame`` (an ``(h, w, 3)`` uint8 array), in place."""
    h, w = frame.shape[:2]
    if box.width <= 0 or box.height <= 0:
        return
    inner = region(box, style.margin)
    r = inner if style.shape == "box" else region(box, style.margin + FEATHER)
    x0, y0 = max(0, math.floor(r.left)), max(0, math.floor(r.top))
    x1, y1 = min(w, math.ceil(r.right)), min(h, math.ceil(r.bottom))
    if x1 <= x0 or y1 <= y0:
        return  # wholly outside the frame
    patch = frame[y0:y1, x0:x1]
    face_px = max(box.width, box.height)
    if style.method == "solid":
        filled = np.empty_like(patch)
        filled[:] = style.colour
    elif style.method == "pixelate":
        filled = _mosaic(patch, face_px / PIXELATE_CELLS, smooth=False)
    else:
        filled = _mosaic(patch, face_px / BLUR_CELLS, smooth=True)
    if style.shape == "box":
        patch[:] = filled
        return
    alpha = _ellipse_alpha(inner, r, x0, y0, x1, y1)
    mask = Image.fromarray((alpha * 255.0 + 0.5).astype(np.uint8), "L")
    blended = Image.composite(Image.fromarray(filled), Image.fromarray(np.ascontiguousarray(patch)), mask)
    patch[:] = np.asarray(blended)


def _mosaic(patch: np.ndarray, cell: float, smooth: bool) -> np.ndarray:
    """The patch averaged over cells of ``cell`` pixels, drawn back as blocks or smoothly."""
    ph, pw = patch.shape[:2]
    cell = max(cell, 1.0)
    small = (max(1, round(pw / cell)), max(1, round(ph / cell)))
    img = Image.fromarray(np.ascontiguousarray(patch)).resize(small, Image.Resampling.BOX)
    if not smooth:
        blocks = img.resize((pw, ph), Image.Resampling.NEAREST)
        return np.asarray(blocks.filter(ImageFilter.GaussianBlur(radius=max(0.5, cell * MOSAIC_SOFTEN))))
    # Spread back smoothly at SMOOTH_PX pixels a cell (a Gaussian of half a cell there), then scaled
    # up to the patch: the same picture as blurring at full size, in a small part of the time.
    k = min(1.0, SMOOTH_PX / cell)
    work = (max(1, round(pw * k)), max(1, round(ph * k)))
    img = img.resize(work, Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(radius=max(1.0, cell * k / 2.0))
    )
    return np.asarray(img.resize((pw, ph), Image.Resampling.BILINEAR))


def _ellipse_alpha(inner: Box, outer: Box, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Mask strength of each pixel (by its centre) of the window ``[x0, x1) x [y0, y1)``: 1 inside
    the ellipse inscribed in ``inner``, falling linearly to 0 at the one inscribed in ``outer``."""
    cx, cy = (inner.left + inner.right) / 2.0, (inner.top + inner.bottom) / 2.0
    ax, ay = max(inner.width / 2.0, 0.5), max(inner.height / 2.0, 0.5)
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / ay
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / ax
    rr = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    band = max(outer.width / inner.width - 1.0, 1e-6) if inner.width > 0 else 1e-6
    return np.clip(1.0 - (rr - 1.0) / band, 0.0, 1.0)

"""Image quality of a face region: Brightness and Sharpness on 0-100, as Rekognition reports them."""

from __future__ import annotations

import numpy as np

from .faces import Box, Quality

_SHARPNESS_SCALE = (
    150.0  # Laplacian variance at which Sharpness reads 50 (sharp faces: 300-3000, blurred: 2-6)
)


def measure(image: np.ndarray, box: Box) -> Quality:
    h, w = image.shape[:2]
    x0, y0 = max(int(box.left), 0), max(int(box.top), 0)
    x1, y1 = min(int(box.right), w), min(int(box.bottom), h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return Quality(brightness=0.0, sharpness=0.0)
    crop = image[y0:y1, x0:x1].astype(np.float32)
    grey = crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # Sample to about 96 px so that Sharpness does not depend on the face's pixel size.
    step = max(1, int(min(grey.shape) // 96))
    g = grey[::step, ::step]
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    var = float(lap.var()) if lap.size else 0.0
    return Quality(
        brightness=float(grey.mean() / 255.0 * 100.0),
        sharpness=float(100.0 * var / (var + _SHARPNESS_SCALE)),
    )

"""Grouping templates by person: connected components of the "similar enough" graph."""

from __future__ import annotations

import numpy as np

from ..engine.calibration import Calibration


def cluster_faces(
    templates: np.ndarray, threshold_similarity: float, calibration: Calibration
) -> list[list[int]]:
    """Groups (lists of row indices, largest group first) of templates linked by calibrated
    similarity >= ``threshold_similarity`` (connected components / single linkage). Faces that
    match nobody are groups of one."""
    t = np.asarray(templates, np.float32)
    n = len(t)
    if n == 0:
        return []
    d = calibration.distance_for(float(threshold_similarity))
    min_ip = 1.0 - (d * d) / 2.0 if np.isfinite(d) else -np.inf
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    block = 2048
    for start in range(0, n, block):
        ip = t[start : start + block] @ t.T
        rows, cols = np.nonzero(ip >= min_ip)
        for r, c in zip(rows + start, cols):
            if c > r:
                a, b = find(int(r)), find(int(c))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))

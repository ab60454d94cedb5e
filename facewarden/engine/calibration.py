"""Calibrated similarity: Similarity = 50 + 10 * -log10(FMR), clamped to [0, 100].

Every 10 points of similarity is ten times fewer false matches: 80 means a false match rate of
1e-3, 90 of 1e-4, 100 of 1e-5. The table that maps a template distance to a similarity is measured
per model version on impostor pairs (pairs of photos of different people) and ships beside the
model (``calibration/<version>.json``), with the data it came from and its resolution.

Where the impostor set is too small to resolve a target FMR (fewer than ``MIN_TAIL_COUNT``
impostor pairs at that distance), the distance is extrapolated from a straight-line fit of
log10(FMR) against distance over the closest impostor pairs, and the point is marked so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

MIN_TAIL_COUNT = 5
SIM_GRID = np.round(np.arange(50.0, 100.0 + 1e-9, 0.25), 2)


def fmr_for_similarity(similarity: float) -> float:
    """The false match rate a similarity value stands for."""
    return float(10.0 ** (-(similarity - 50.0) / 10.0))


def similarity_for_fmr(fmr: float) -> float:
    if fmr <= 0:
        return 100.0
    return float(min(100.0, max(0.0, 50.0 - 10.0 * math.log10(fmr))))


@dataclass(frozen=True)
class Calibration:
    model_version: str
    #: Distances (ascending) of L2-normalised templates and the similarity each stands for (descending).
    distances: np.ndarray
    similarities: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def similarity(self, distance: float | np.ndarray) -> Any:
        """Template distance -> calibrated similarity (0-100)."""
        s = np.interp(distance, self.distances, self.similarities, left=100.0, right=50.0)
        return float(s) if np.ndim(s) == 0 else s

    def distance_for(self, similarity: float) -> float:
        """The largest distance that still reaches ``similarity`` (the matching threshold)."""
        sims = self.similarities[::-1]
        return float(np.interp(similarity, sims, self.distances[::-1], left=np.inf, right=0.0))

    def similarity_from_inner(self, inner: float | np.ndarray) -> Any:
        """Similarity from the inner product of two normalised templates (``d^2 = 2 - 2 ip``)."""
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.asarray(inner, dtype=np.float64)))
        return self.similarity(d)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        data = dict(self.meta)
        data.update(
            model_version=self.model_version,
            points=[[round(float(s), 2), float(d)] for s, d in zip(self.similarities, self.distances)],
        )
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())
            points = np.asarray(data.pop("points"), dtype=np.float64)
            version = data.pop("model_version")
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"Calibration table {path} is missing or unreadable ({exc}).") from None
        return cls(version, *_table(points[:, 1], points[:, 0]), data)

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, impostor_distances: np.ndarray, model_version: str, source: dict[str, Any]) -> Calibration:
        """Build the table from the distances of impostor pairs (all pairs of different people)."""
        d = np.sort(np.asarray(impostor_distances, dtype=np.float64))
        n = len(d)
        if n < 100:
            raise ModelError(f"Calibration needs at least 100 impostor pairs; got {n}.")
        tail = d[: max(50, min(n, 1000))]
        ranks = np.arange(1, len(tail) + 1) / n
        slope, intercept = np.polyfit(tail, np.log10(ranks), 1)
        sims, dists, extrapolated = [], [], 0
        for s in SIM_GRID:
            fmr = fmr_for_similarity(float(s))
            count = fmr * n
            if count >= MIN_TAIL_COUNT:
                dist = float(np.quantile(d, fmr, method="linear"))
            else:
                dist = float((math.log10(fmr) - intercept) / slope) if slope > 0 else float(d[0])
                extrapolated += 1
            sims.append(float(s))
            dists.append(dist)
        dists_arr = np.maximum.accumulate(np.asarray(dists)[::-1])[::-1]  # monotone: higher sim, smaller d
        dists_arr = np.minimum.accumulate(dists_arr)
        finest = MIN_TAIL_COUNT / n
        meta = {
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "impostor_pairs": int(n),
            "finest_fmr_resolved": finest,
            "finest_similarity_resolved": similarity_for_fmr(finest),
            "extrapolated_points": extrapolated,
            "tail": (
                f"below {MIN_TAIL_COUNT} impostor pairs the distance is extrapolated from a log-linear fit "
                f"of the closest {len(tail)} impostor pairs; similarity is clamped to [50, 100]"
            ),
            "min_impostor_distance": float(d[0]),
            "median_impostor_distance": float(np.median(d)),
        }
        dists_arr = np.maximum(dists_arr, 0.0)  # an extrapolated tail may cross zero: distances cannot
        return cls(model_version, *_table(dists_arr, np.asarray(sims)), meta)


def _table(distances: np.ndarray, similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending distances, one similarity each (the highest where several share a distance)."""
    best: dict[float, float] = {}
    for d, s in zip(distances.tolist(), similarities.tolist()):
        best[d] = max(s, best.get(d, -1.0))
    d_sorted = np.asarray(sorted(best), dtype=np.float64)
    return d_sorted, np.asarray([best[d] for d in d_sorted.tolist()], dtype=np.float64)


def impostor_distances(templates: np.ndarray, identities: list[str]) -> np.ndarray:
    """Distances of every pair of normalised templates whose identities differ."""
    t = np.asarray(templates, dtype=np.float32)
    ids = np.asarray(identities)
    out = []
    for i in range(len(t) - 1):
        ip = t[i + 1 :] @ t[i]
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * ip))
        out.append(d[ids[i + 1 :] != ids[i]])
    return np.concatenate(out) if out else np.zeros(0)

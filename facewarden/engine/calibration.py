"""Calibrated similarity: Similarity = 50 + 10 * -log10(FMR) up to 99, then a fine tail up to 100.

Every 10 points of similarity is ten times fewer false matches: 80 means a false match rate of
1e-3, 90 of 1e-4, 99 of 1.26e-5. The table that maps a template distance to a similarity is
measured per model version on impostor pairs (pairs of photos of different people) and ships
beside the model (``calibration/<version>.json``), with the data it came from and its resolution.

**The fine tail (99 to 100).** Genuine matches of a good model lie far beyond FMR 1e-5; on the
plain scale they would all read 100 and could not be ranked. So the last point spreads the rest
of the model's impostor tail: between 99 and 100 the false match rate falls log-linearly from
FMR(99) = 1.26e-5 to the model's ``fmr_at_100``, the rate at distance 0 (identical templates),
``log10 FMR(s) = log10 FMR(99) + (s - 99) * (log10 fmr_at_100 - log10 FMR(99))``. Where the
impostor set resolves the rate (at least ``MIN_TAIL_COUNT`` impostor pairs) the distance of each
point is measured; below that it follows a straight line of log10(FMR) against distance, fitted to
the closest impostor pairs and continued from the finest measured point down to distance 0 (which
defines ``fmr_at_100``). Similarity therefore keeps ranking to the end: only identical templates
read 100.0. Similarities are computed from distances at query time, so the scale can change
without touching stored templates.
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
#: Where the fine tail starts: below, FMR(s) = 10^-((s - 50) / 10) for every model.
FINE_FROM = 99.0
FMR_AT_FINE_FROM = 10.0 ** (-(FINE_FROM - 50.0) / 10.0)
SIM_GRID = np.round(np.arange(50.0, FINE_FROM + 1e-9, 0.25), 2)
#: The fine tail's points (similarity 99 to 100).
FINE_GRID = np.round(np.arange(FINE_FROM + 0.02, 100.0 + 1e-9, 0.02), 2)
#: Closest impostor pairs the tail's log-linear fit uses (after the first MIN_TAIL_COUNT - 1,
#: which in a real set are mostly duplicates and label errors).
TAIL_FIT_PAIRS = 1000
#: Table format: 2 = with the fine tail (older tables stop at 100 = FMR 1e-5; converted on load).
SCALE = 2


def fmr_for_similarity(similarity: float, fmr_at_100: float | None = None) -> float:
    """The false match rate a similarity value stands for. Above 99 it depends on the model
    (``fmr_at_100``, from its calibration table; :meth:`Calibration.fmr` passes it); without it
    the plain formula 10^-((s - 50) / 10) continues."""
    s = float(similarity)
    if s <= FINE_FROM or fmr_at_100 is None:
        return float(10.0 ** (-(s - 50.0) / 10.0))
    lo = math.log10(FMR_AT_FINE_FROM)
    return float(10.0 ** (lo + (min(s, 100.0) - FINE_FROM) * (math.log10(fmr_at_100) - lo)))


def similarity_for_fmr(fmr: float, fmr_at_100: float | None = None) -> float:
    """The similarity that stands for a false match rate (the inverse of :func:`fmr_for_similarity`),
    clamped to [0, 100]."""
    if fmr <= 0:
        return 100.0
    if fmr >= FMR_AT_FINE_FROM or fmr_at_100 is None:
        return float(min(100.0, max(0.0, 50.0 - 10.0 * math.log10(fmr))))
    lo = math.log10(FMR_AT_FINE_FROM)
    return float(min(100.0, FINE_FROM + (math.log10(fmr) - lo) / (math.log10(fmr_at_100) - lo)))


#: How a user's faces are pooled into one score: its best face, or its mean template.
POOLINGS = ("best", "mean")


@dataclass(frozen=True)
class UserScoring:
    """How a model scores a user (a person with several faces) and how many chances that score
    gives a stranger, shipped beside the model's table as ``<version>.users.json`` (measured on
    ../shared photos by :func:`facewarden.evaluate.calibrate.calibrate_users`).

    * ``best``: the user's best face. A stranger compared with m faces of one person has at most m
      times a single face's chance to reach a similarity (the union bound), and measured on
      ../shared data the best of m photos comes close to it at strict thresholds: m chances.
    * ``mean``: the user's mean template (normalised), compared once. Its chance is measured:
      ``factors[m - 1]`` for a user of m faces (the upper 95% bound of how much more often than one
      photo a stranger reaches a threshold; at most m); beyond the largest m measured (M), the
      factor grows in proportion to m (``factors[M - 1] * m / M``), never beyond m.
    """

    pooling: str = "best"
    factors: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def chances(self, faces: int) -> float:
        """How many single-face chances a user of ``faces`` faces gives a stranger."""
        m = max(1, int(faces))
        if self.pooling == "best" or not self.factors:
            return float(m)
        top = len(self.factors)
        factor = self.factors[m - 1] if m <= top else self.factors[-1] * m / top
        return float(min(m, factor))

    def save(self, path: str | Path) -> None:
        data = dict(self.meta)
        data.update(pooling=self.pooling, factors=[round(f, 4) for f in self.factors])
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> UserScoring:
        """The scoring in ``path``; the best face (the union bound) when there is no such file."""
        p = Path(path)
        if not p.exists():
            return cls()
        try:
            data = json.loads(p.read_text())
            pooling, factors = data.pop("pooling"), tuple(float(f) for f in data.pop("factors"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"User scoring table {p} is unreadable ({exc}).") from None
        if pooling not in POOLINGS or any(f < 1.0 for f in factors):
            raise ModelError(f"User scoring table {p}: pooling must be one of {POOLINGS} and factors >= 1.")
        return cls(pooling, factors, data)


def user_scoring_path(calibration_file: str | Path) -> Path:
    """Where a model's user scoring lives: beside its calibration table."""
    p = Path(calibration_file)
    return p.with_name(p.name.removesuffix(".json") + ".users.json")


@dataclass(frozen=True)
class Calibration:
    model_version: str
    #: Distances (ascending) of L2-normalised templates and the similarity each stands for (descending).
    distances: np.ndarray
    similarities: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    #: How this model scores users (read from ``<version>.users.json`` beside the table).
    users: UserScoring = field(default_factory=UserScoring)

    @property
    def fmr_at_100(self) -> float:
        """The false match rate at similarity 100 (distance 0): where this model's fine tail ends."""
        return float(self.meta["fmr_at_100"])

    def fmr(self, similarity: float) -> float:
        """The false match rate ``similarity`` stands for with this model (see the fine tail)."""
        return fmr_for_similarity(similarity, self.fmr_at_100)

    def similarity_for_fmr(self, fmr: float) -> float:
        """The lowest similarity whose false match rate is at most ``fmr``, with this model."""
        return similarity_for_fmr(fmr, self.fmr_at_100)

    def pooled(self, similarity: float, chances: float) -> float:
        """The score of a subject that gives a stranger ``chances`` single-comparison chances (a
        person with several faces, several probes: see :class:`UserScoring`) and reached
        ``similarity``: the similarity whose false match rate is ``chances`` times the single
        comparison's, so that the score keeps the calibrated meaning for the subject as a whole."""
        s = float(similarity)
        if chances <= 1:
            return s
        return min(s, self.similarity_for_fmr(min(1.0, chances * self.fmr(s))))

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
        if data.get("scale") != SCALE:
            points, data = _with_fine_tail(points, data)
        return cls(
            version, *_table(points[:, 1], points[:, 0]), data, UserScoring.load(user_scoring_path(path))
        )

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, impostor_distances: np.ndarray, model_version: str, source: dict[str, Any]) -> Calibration:
        """Build the table from the distances of impostor pairs (all pairs of different people)."""
        d = np.sort(np.asarray(impostor_distances, dtype=np.float64))
        n = len(d)
        if n < 100:
            raise ModelError(f"Calibration needs at least 100 impostor pairs; got {n}.")
        # The tail: log10(FMR) against distance, fitted over the closest pairs; it is continued from
        # the finest measured point (MIN_TAIL_COUNT pairs), so measured and extrapolated meet.
        first = MIN_TAIL_COUNT - 1
        tail = d[first : max(first + 50, min(n, TAIL_FIT_PAIRS))]
        ranks = np.arange(first + 1, first + len(tail) + 1) / n
        slope, _ = np.polyfit(tail, np.log10(ranks), 1)
        finest = MIN_TAIL_COUNT / n
        anchor_d = float(np.quantile(d, finest, method="linear"))
        if finest > FMR_AT_FINE_FROM:  # too few pairs to measure up to 99: anchor on the fit at 99
            anchor_d -= (math.log10(finest) - math.log10(FMR_AT_FINE_FROM)) / slope if slope > 0 else 0.0
            finest = FMR_AT_FINE_FROM
        anchor_d = max(anchor_d, 0.0)
        slope = float(slope) if slope > 0 else 1.0
        fmr_at_100 = _fmr_at_zero(anchor_d, finest, slope)
        sims, dists, extrapolated = [], [], 0
        for s in np.concatenate([SIM_GRID, FINE_GRID]):
            fmr = fmr_for_similarity(float(s), fmr_at_100)
            if fmr * n >= MIN_TAIL_COUNT:
                dist = float(np.quantile(d, fmr, method="linear"))
            else:
                dist = anchor_d - (math.log10(finest) - math.log10(fmr)) / slope
                extrapolated += 1
            sims.append(float(s))
            dists.append(dist)
        dists_arr = np.maximum.accumulate(np.asarray(dists)[::-1])[::-1]  # monotone: higher sim, smaller d
        dists_arr = np.minimum.accumulate(dists_arr)
        dists_arr[-1] = 0.0  # similarity 100: identical templates (the line meets 0 here by construction)
        meta = {
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "impostor_pairs": int(n),
            "scale": SCALE,
            "finest_fmr_resolved": MIN_TAIL_COUNT / n,
            "finest_similarity_resolved": similarity_for_fmr(MIN_TAIL_COUNT / n, fmr_at_100),
            "fmr_at_100": fmr_at_100,
            "tail_slope": slope,
            "extrapolated_points": extrapolated,
            "tail": (
                f"below {MIN_TAIL_COUNT} impostor pairs the distance follows a log-linear fit of the closest "
                f"{len(tail)} impostor pairs ({slope:.1f} decades of FMR per unit of distance), continued from "
                "the finest measured point to distance 0, which is similarity 100 (FMR fmr_at_100); between "
                "99 and 100, log10 FMR falls linearly from FMR(99) to fmr_at_100"
            ),
            "min_impostor_distance": float(d[0]),
            "median_impostor_distance": float(np.median(d)),
        }
        dists_arr = np.maximum(dists_arr, 0.0)
        return cls(model_version, *_table(dists_arr, np.asarray(sims)), meta)


def _fmr_at_zero(anchor_d: float, anchor_fmr: float, slope: float) -> float:
    """The tail's line continued from (anchor_d, anchor_fmr) to distance 0; at least ten times below
    FMR(99) so that the fine tail always spans a decade."""
    return float(min(10.0 ** (math.log10(anchor_fmr) - slope * anchor_d), FMR_AT_FINE_FROM / 10.0))


def _with_fine_tail(points: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """A table of the older format (its top point, 100, meant FMR 1e-5 and clamped every closer
    distance to it) on the current scale: its points up to 99 as they are, then the fine tail
    continued log-linearly, with the slope of its last measured decade (90 to 99), to distance 0."""
    pts = points[np.argsort(-points[:, 0])]
    keep = pts[pts[:, 0] <= FINE_FROM + 1e-9]
    d99 = float(np.interp(FINE_FROM, keep[::-1, 0], keep[::-1, 1]))
    d90 = float(np.interp(90.0, keep[::-1, 0], keep[::-1, 1]))
    slope = (FINE_FROM - 90.0) / 10.0 / (d90 - d99) if d90 > d99 else 1.0
    fmr_at_100 = _fmr_at_zero(d99, FMR_AT_FINE_FROM, slope)
    fine = []
    for s in FINE_GRID:
        fmr = fmr_for_similarity(float(s), fmr_at_100)
        fine.append([float(s), max(0.0, d99 - (math.log10(FMR_AT_FINE_FROM) - math.log10(fmr)) / slope)])
    fine[-1][1] = 0.0
    out = dict(meta)
    out.update(
        scale=SCALE,
        fmr_at_100=fmr_at_100,
        tail_slope=slope,
        converted="from a table without the fine tail: above 99 extrapolated from its 90-99 slope",
    )
    return np.concatenate([keep, np.asarray(fine)]), out


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

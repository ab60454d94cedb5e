"""Per-pair scores of a 1:1 evaluation: what :mod:`.pairs` computes and :mod:`.report` draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embed import Embedded


@dataclass
class PairScores:
    """Per-pair results: the raw material of every figure (and of the tests' independent checks)."""

    path_a: list[str]
    path_b: list[str]
    same: np.ndarray  # bool
    similarity: np.ndarray  # calibrated, -inf where a face was missed
    distance: np.ndarray  # template distance, +inf where a face was missed
    group: list[str | None]
    failures: dict[str, Embedded] = field(default_factory=dict)  # relative path -> failed image

    def __len__(self) -> int:
        return len(self.same)

    def subset(self, mask: np.ndarray) -> PairScores:
        idx = np.flatnonzero(mask)
        return PairScores(
            [self.path_a[i] for i in idx],
            [self.path_b[i] for i in idx],
            self.same[idx],
            self.similarity[idx],
            self.distance[idx],
            [self.group[i] for i in idx],
            {
                p: e
                for p, e in self.failures.items()
                if any(p in (self.path_a[i], self.path_b[i]) for i in idx)
            },
        )

    @property
    def missed(self) -> np.ndarray:
        return ~np.isfinite(self.distance)

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "path_a": a,
                "path_b": b,
                "same": bool(s),
                "similarity": float(sim) if np.isfinite(sim) else None,
                "group": g,
            }
            for a, b, s, sim, g in zip(self.path_a, self.path_b, self.same, self.similarity, self.group)
        ]

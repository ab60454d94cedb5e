"""Verification metrics as pure functions on score arrays.

Conventions, used throughout :mod:`facewarden.evaluate`:

- A *score* is higher-is-more-alike (a calibrated similarity, or minus a template distance).
- A pair is declared a match when ``score >= threshold`` (as CompareFaces does with
  ``SimilarityThreshold``).
- A pair that could not be scored (a face was missed in either image) has score ``-inf`` (``nan``
  and ``None`` are read as ``-inf``). It is a non-match at every threshold: it adds to the false
  non-match rate of genuine pairs and can never be a false match. The curves therefore end at
  ``FNMR = missed genuine pairs / genuine pairs``, not at 0, as in NIST's FRVT/FRTE reports.
- Rates come with counts; a rate over zero trials is ``None`` with a reason, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def as_scores(values: Iterable[float | None] | np.ndarray) -> np.ndarray:
    """A float64 array with missing scores (``None``, ``nan``) as ``-inf``."""
    if isinstance(values, np.ndarray):
        arr = values.astype(np.float64, copy=True).reshape(-1)
    else:
        arr = np.array([-np.inf if v is None else float(v) for v in values], dtype=np.float64)
    arr[np.isnan(arr)] = -np.inf
    return arr


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95% by default); None if n == 0."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n]; got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact at the ends (rounding can leave 1e-17 above/below the point estimate)
    if k == 0:
        lo = 0.0
    if k == n:
        hi = 1.0
    return (lo, hi)


@dataclass(frozen=True)
class Rate:
    """``count`` events (errors, or hits for an identification rate) out of ``trials``, with the point
    estimate and a 95% Wilson interval."""

    count: int
    trials: int

    @property
    def value(self) -> float | None:
        return self.count / self.trials if self.trials else None

    @property
    def ci(self) -> tuple[float, float] | None:
        return wilson(self.count, self.trials)

    def to_dict(self, what: str = "pairs") -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "count": self.count,
            "trials": self.trials,
            "ci95": list(self.ci) if self.ci else None,
        }
        if not self.trials:
            out["reason"] = f"no {what}"
        return out


def fmr(impostor: np.ndarray, threshold: float) -> Rate:
    """False match rate: impostor pairs scoring at or above the threshold."""
    imp = as_scores(impostor)
    return Rate(int(np.count_nonzero(imp >= threshold)), len(imp))


def fnmr(genuine: np.ndarray, threshold: float) -> Rate:
    """False non-match rate: genuine pairs scoring below the threshold (missed faces included)."""
    gen = as_scores(genuine)
    return Rate(int(np.count_nonzero(~(gen >= threshold))), len(gen))


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> dict[str, Any]:
    """FMR, FNMR and accuracy at one threshold, each with counts and 95% Wilson intervals."""
    fm = fmr(impostor, threshold)
    fnm = fnmr(genuine, threshold)
    n = fm.trials + fnm.trials
    correct = (fm.trials - fm.count) + (fnm.trials - fnm.count)
    acc = Rate(correct, n)
    return {
        "threshold": float(threshold),
        "fmr": fm.to_dict("impostor pairs"),
        "fnmr": fnm.to_dict("genuine pairs"),
        "accuracy": acc.to_dict("pairs"),
    }


def error_curve(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, np.ndarray]:
    """Every operating point: ``thresholds`` (descending, starting at +inf), ``fmr`` (non-decreasing)
    and ``fnmr`` (non-increasing), one point per distinct finite score.

    The DET curve is ``(fmr, fnmr)``; the ROC curve is ``(fmr, 1 - fnmr)``.
    """
    gen = np.sort(as_scores(genuine))
    imp = np.sort(as_scores(impostor))
    finite = np.concatenate([gen[np.isfinite(gen)], imp[np.isfinite(imp)]])
    thresholds = np.concatenate([[np.inf], np.unique(finite)[::-1]])
    n_gen, n_imp = len(gen), len(imp)
    # number of scores >= t = n - (number of scores < t)
    imp_ge = n_imp - np.searchsorted(imp, thresholds, side="left")
    gen_lt = np.searchsorted(gen, thresholds, side="left")
    fmr_arr = imp_ge / n_imp if n_imp else np.full(len(thresholds), np.nan)
    fnmr_arr = gen_lt / n_gen if n_gen else np.full(len(thresholds), np.nan)
    return {"thresholds": thresholds, "fmr": np.asarray(fmr_arr, float), "fnmr": np.asarray(fnmr_arr, float)}


def roc_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC: ``(fmr, tmr, thresholds)`` with ``tmr = 1 - fnmr``, FMR ascending."""
    c = error_curve(genuine, impostor)
    return c["fmr"], 1.0 - c["fnmr"], c["thresholds"]


def det_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET: ``(fmr, fnmr, thresholds)``, FMR ascending, FNMR descending."""
    c = error_curve(genuine, impostor)
    return c["fmr"], c["fnmr"], c["thresholds"]


def eer(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, Any]:
    """Equal error rate: where FMR and FNMR cross, linearly interpolated between operating points.

    ``{"value", "threshold"}``; ``value`` is None (with ``reason``) when either class is empty or the
    curves never cross (more genuine pairs lost to missed faces than impostor pairs ever match).
    """
    gen, imp = as_scores(genuine), as_scores(impostor)
    if not len(gen) or not len(imp):
        return {"value": None, "threshold": None, "reason": "needs both genuine and impostor pairs"}
    c = error_curve(gen, imp)
    d = c["fmr"] - c["fnmr"]  # starts at -1 (t=+inf), non-decreasing
    idx = np.flatnonzero(d >= 0)
    if not len(idx):
        return {
            "value": None,
            "threshold": None,
            "reason": "FMR and FNMR never cross (detection failures keep FNMR above every FMR)",
        }
    i = int(idx[0])
    if d[i] == 0 or i == 0:
        value = float(c["fmr"][i])
    else:
        a = -d[i - 1] / (d[i] - d[i - 1])
        value = float(c["fmr"][i - 1] + a * (c["fmr"][i] - c["fmr"][i - 1]))
    return {"value": value, "threshold": float(c["thresholds"][i])}


def fnmr_at_fmr(genuine: np.ndarray, impostor: np.ndarray, target: float) -> dict[str, Any]:
    """FNMR at the most permissive threshold whose FMR does not exceed ``target``.

    Resolved only when ``target >= 1 / impostor pairs``: a finer FMR cannot be measured on this many
    impostor pairs, and the result is then ``{"value": None, "resolved": False, "reason": ...}``.
    ``threshold`` is the score the operating point needs (a match is ``score >= threshold``).
    """
    gen, imp = as_scores(genuine), as_scores(impostor)
    n_imp, n_gen = len(imp), len(gen)
    base: dict[str, Any] = {"target_fmr": float(target), "impostor_pairs": n_imp, "genuine_pairs": n_gen}
    if n_gen == 0:
        return base | {"value": None, "resolved": False, "reason": "no genuine pairs"}
    if n_imp == 0 or target < 1.0 / n_imp:
        need = math.ceil(1.0 / target) if target > 0 else None
        return base | {
            "value": None,
            "resolved": False,
            "reason": f"not resolved: {n_imp} impostor pairs resolve FMR down to "
            f"{(1.0 / n_imp) if n_imp else float('nan'):.3g}; FMR {target:g} needs at least {need}",
        }
    allowed = math.floor(target * n_imp + 1e-9)  # false matches allowed
    desc = np.sort(imp)[::-1]
    if allowed >= n_imp or not np.isfinite(desc[allowed]):
        # every scored impostor pair may match: the threshold is the lowest finite score
        finite = np.concatenate([gen[np.isfinite(gen)], imp[np.isfinite(imp)]])
        threshold = float(finite.min()) if len(finite) else -np.inf
    else:
        threshold = float(np.nextafter(desc[allowed], np.inf))
    fm = fmr(imp, threshold)
    fnm = fnmr(gen, threshold)
    return base | {
        "value": fnm.value,
        "resolved": True,
        "threshold": threshold,
        "fnmr": fnm.to_dict("genuine pairs"),
        "fmr_achieved": fm.to_dict("impostor pairs"),
    }


def calibration_points(
    impostor_similarity: np.ndarray, thresholds: Iterable[float], claimed: Any
) -> list[dict[str, Any]]:
    """Claimed vs observed FMR at similarity thresholds. ``claimed(s)`` is the FMR the scale promises.

    ``resolved`` says whether the claimed FMR is at least ``1 / impostor pairs``; ``consistent`` whether
    the claimed FMR lies inside the observed 95% interval.
    """
    imp = as_scores(impostor_similarity)
    out = []
    for s in thresholds:
        r = fmr(imp, float(s))
        claim = float(claimed(float(s)))
        ci = r.ci
        out.append(
            {
                "similarity": float(s),
                "claimed_fmr": claim,
                "observed_fmr": r.value,
                "false_matches": r.count,
                "impostor_pairs": r.trials,
                "ci95": list(ci) if ci else None,
                "resolved": bool(r.trials and claim >= 1.0 / r.trials),
                "consistent": bool(ci and ci[0] <= claim <= ci[1]),
            }
        )
    return out


def differential(values: dict[str, Rate]) -> dict[str, Any]:
    """NIST-style differential of one rate across groups: the highest and lowest, and their ratio.

    Groups whose rate is undefined (no trials) are left out and listed. With a lowest rate of 0 the
    ratio is None: it is unbounded on this data, and the reason says so.
    """
    defined = {g: r for g, r in values.items() if r.trials}
    out: dict[str, Any] = {"undefined_groups": sorted(set(values) - set(defined))}
    if not defined:
        return out | {"max": None, "min": None, "ratio": None, "reason": "no group has trials"}
    hi_g = max(defined, key=lambda g: (defined[g].value, g))
    lo_g = min(defined, key=lambda g: (defined[g].value, g))
    hi, lo = defined[hi_g], defined[lo_g]
    out |= {
        "max": {"group": hi_g, **hi.to_dict()},
        "min": {"group": lo_g, **lo.to_dict()},
    }
    if len(defined) < 2:
        return out | {"ratio": None, "reason": "fewer than two groups with trials"}
    if lo.value == 0:
        if hi.value == 0:
            return out | {"ratio": 1.0}
        return out | {
            "ratio": None,
            "reason": f"lowest rate is 0 of {lo.trials} ({lo_g}); the ratio is unbounded",
        }
    return out | {"ratio": float(hi.value / lo.value)}  # type: ignore[operator]

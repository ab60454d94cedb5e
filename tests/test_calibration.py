"""Calibrated similarity: the shipped table, checked on data it was not built from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facewarden.engine import models
from facewarden.engine.calibration import (
    Calibration,
    fmr_for_similarity,
    impostor_distances,
    similarity_for_fmr,
)

from .data import engine, pairs, photo_templates, poisson_interval as _poisson_interval


def test_formula():
    assert fmr_for_similarity(80) == 1e-3
    assert math.isclose(fmr_for_similarity(90), 1e-4)
    assert math.isclose(fmr_for_similarity(99), 10**-4.9)
    assert similarity_for_fmr(1e-3) == 80 and similarity_for_fmr(1e-9) == 100 and similarity_for_fmr(1) == 50


#: Every built-in model ships a table built on the same impostor set and is checked on the same pairs.
MODELS = ("dlib-resnet-v1", "sface-2021dec")


@pytest.mark.parametrize("model", MODELS)
def test_shipped_table_is_monotone_and_states_its_resolution(model):
    cal = engine(model).calibration
    assert cal.model_version == model
    assert np.all(np.diff(cal.distances) >= 0) and np.all(np.diff(cal.similarities) <= 0)
    meta = cal.meta
    assert meta["impostor_pairs"] > 4_000_000
    assert meta["finest_fmr_resolved"] < 1e-5  # the clamp at 100 (FMR 1e-5) is measured, not extrapolated
    assert meta["extrapolated_points"] == 0
    assert meta["source"]["folder"] == "shared/faces_impostors"
    assert cal.similarity(0.0) == 100 and cal.similarity(2.0) == 50
    assert abs(cal.similarity(cal.distance_for(80)) - 80) < 1e-6


def _cross_identity_similarities(model: str) -> np.ndarray:
    t = {p: v for p, v in photo_templates(model).items() if v is not None}
    ids = [p.split("/")[0] for p in t]
    return np.asarray(
        engine(model).calibration.similarity(impostor_distances(np.stack(list(t.values())), ids))
    )


@pytest.mark.parametrize("model", MODELS)
def test_fmr_at_80_is_consistent_with_1e_3_on_independent_impostor_pairs(model):
    sims = _cross_identity_similarities(model)
    n, observed = len(sims), int((sims >= 80).sum())
    expected = n * 1e-3
    # Two-sided Poisson test at the 0.1% level: the observed count must be plausible for FMR 1e-3.
    lo, hi = _poisson_interval(expected, 0.001)
    print(
        f"\n{model}: cross-identity pairs {n}: {observed} at similarity >= 80, expected {expected:.1f} "
        f"(accept {lo}..{hi})"
    )
    assert lo <= observed <= hi
    # And an order of magnitude either way is clearly distinguishable here.
    assert not (_poisson_interval(n * 1e-2, 0.001)[0] <= observed <= _poisson_interval(n * 1e-2, 0.001)[1])


def _rates_at_80(model: str | None) -> tuple[float, int, int]:
    """Accuracy, false non-matches and false matches on pairs.tsv at the default threshold (80)."""
    t = photo_templates(model)
    cal = engine(model).calibration
    tp = fn = fp = tn = 0
    for a, b, same in pairs():
        ta, tb = t.get(a), t.get(b)
        matched = ta is not None and tb is not None and cal.similarity(float(np.linalg.norm(ta - tb))) >= 80
        tp += same and matched
        fn += same and not matched
        fp += (not same) and matched
        tn += (not same) and not matched
    accuracy = (tp + tn) / (tp + tn + fp + fn)
    print(
        f"\n{model or 'default'}: pairs.tsv at 80: accuracy {accuracy:.4f}  FNMR {fn}/{tp + fn}  FMR {fp}/{fp + tn}"
    )
    return accuracy, fn, fp


@pytest.mark.parametrize("model", MODELS)
def test_verification_accuracy_on_pairs_at_the_default_threshold(model):
    accuracy, _, _ = _rates_at_80(model)
    assert accuracy >= 0.985


def test_the_default_model_verifies_at_least_as_well_as_dlib():
    accuracy, misses, false_matches = _rates_at_80(models.DEFAULT_MODEL)
    dlib_accuracy, dlib_misses, dlib_false_matches = _rates_at_80("dlib-resnet-v1")
    assert accuracy >= dlib_accuracy and misses <= dlib_misses


def test_build_extrapolates_the_tail_when_the_data_does_not_resolve_it():
    rng = np.random.default_rng(0)
    d = np.sort(rng.normal(1.0, 0.1, 20_000))
    cal = Calibration.build(d, "test-model", {"folder": "synthetic"})
    assert cal.meta["extrapolated_points"] > 0
    assert np.all(np.diff(cal.distances) >= 0)
    # Where measured, the table reproduces the empirical FMR.
    thr = cal.distance_for(70)
    assert abs((d <= thr).mean() - 1e-2) < 2e-3

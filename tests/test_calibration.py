"""Calibrated similarity: the shipped table, checked on data it was not built from."""

from __future__ import annotations

import json
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


def test_the_fine_tail_spreads_a_models_last_decades_over_99_to_100():
    at_100 = 1e-14
    # Below 99 the model does not matter; above, log10 FMR runs linearly from FMR(99) to FMR(100).
    assert fmr_for_similarity(90, at_100) == fmr_for_similarity(90)
    assert math.isclose(fmr_for_similarity(99.5, at_100), 10 ** ((-4.9 - 14) / 2))
    assert math.isclose(fmr_for_similarity(100, at_100), at_100)
    for fmr in (1e-5, 3.3e-6, 1e-8, 1e-13):
        s = similarity_for_fmr(fmr, at_100)
        assert 99 < s < 100 and math.isclose(fmr_for_similarity(s, at_100), fmr)
    assert similarity_for_fmr(1e-3, at_100) == 80 and similarity_for_fmr(1e-20, at_100) == 100


#: Every built-in model ships a table built on the same impostor set and is checked on the same pairs.
MODELS = ("dlib-resnet-v1", "sface-2021dec")


@pytest.mark.parametrize("model", MODELS)
def test_shipped_table_is_monotone_and_states_its_resolution(model):
    cal = engine(model).calibration
    assert cal.model_version == model
    assert np.all(np.diff(cal.distances) >= 0) and np.all(np.diff(cal.similarities) <= 0)
    meta = cal.meta
    assert meta["impostor_pairs"] > 4_000_000
    # Measured (not extrapolated) up to 99 and into the fine tail; only beyond is the fit's line.
    assert meta["finest_fmr_resolved"] < 1e-5 and meta["finest_similarity_resolved"] > 99.05
    measured = cal.similarities[cal.similarities <= meta["finest_similarity_resolved"]]
    assert meta["extrapolated_points"] == int((cal.similarities > meta["finest_similarity_resolved"]).sum())
    assert len(measured) > 200
    assert meta["source"]["folder"] == "shared/faces_impostors"
    assert cal.similarity(0.0) == 100 and cal.similarity(2.0) == 50
    assert abs(cal.similarity(cal.distance_for(80)) - 80) < 1e-6
    # Above 99 similarity keeps falling with distance (strictly): nothing but identical templates reads 100.
    fine = cal.distances[cal.similarities >= 99]
    assert np.all(np.diff(fine) > 0) and cal.similarity(1e-4) < 100
    assert 1e-16 < cal.fmr_at_100 < 1e-8
    assert math.isclose(cal.fmr(cal.similarity_for_fmr(3e-6)), 3e-6)


@pytest.mark.parametrize("model", MODELS)
def test_genuine_matches_rank_instead_of_tying_at_100(model):
    """The old scale read every genuine pair closer than FMR 1e-5 as exactly 100; the fine tail
    keeps them apart, and a nearer pair always reads higher."""
    t = {p: v for p, v in photo_templates(model).items() if v is not None}
    by_id: dict[str, list[np.ndarray]] = {}
    for p, v in t.items():
        by_id.setdefault(p.split("/")[0], []).append(v)
    d = np.asarray(
        [np.linalg.norm(a - b) for vs in by_id.values() for i, a in enumerate(vs) for b in vs[i + 1 :]]
    )
    cal = engine(model).calibration
    s = np.asarray(cal.similarity(d))
    old_top = cal.distance_for(cal.similarity_for_fmr(1e-5))  # where the old scale reached 100
    print(f"\n{model}: {int((d <= old_top).sum())} of {len(d)} genuine pairs read 100.0 on the old scale")
    assert (d <= old_top).sum() > len(d) // 4  # the problem was real
    assert (s >= 100).sum() == 0
    order = np.argsort(d)
    assert np.all(np.diff(s[order]) <= 0)
    distinct = d[np.argsort(d)]
    sims = s[np.argsort(d)]
    assert np.all(np.diff(sims)[np.diff(distinct) > 1e-6] < 0)


def test_a_table_without_the_fine_tail_is_read_on_the_current_scale(tmp_path):
    """Tables written before the fine tail (their 100 meant FMR 1e-5, clamping every closer
    distance) load with their points up to 99 as they were and a fine tail from their 90-99 slope."""
    rng = np.random.default_rng(3)
    new = Calibration.build(np.sort(rng.normal(1.0, 0.1, 200_000)), "old-model", {"folder": "synthetic"})
    sims = np.round(np.arange(50.0, 100.0 + 1e-9, 0.25), 2)
    old_points = [
        [
            float(s),
            new.distance_for(s if s <= 99 else similarity_for_fmr(fmr_for_similarity(s), new.fmr_at_100)),
        ]
        for s in sims
    ]
    path = tmp_path / "old.json"
    path.write_text(
        json.dumps({"model_version": "old-model", "impostor_pairs": 200_000, "points": old_points})
    )
    cal = Calibration.load(path)
    assert cal.meta["scale"] == 2 and "converted" in cal.meta
    for s in (60.0, 80.0, 90.0, 99.0):
        assert abs(cal.distance_for(s) - new.distance_for(s)) < 1e-9
    assert cal.similarity(0.0) == 100 and 99 < cal.similarity(new.distance_for(99) * 0.9) < 100
    assert 1e-20 < cal.fmr_at_100 < 1e-6


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
    # Too few pairs to reach 99: the fit's line carries the scale from where the data stops to 100.
    assert cal.meta["finest_similarity_resolved"] < 99 and cal.similarity(0.0) == 100
    assert np.all(np.diff(cal.distances[cal.similarities >= 95]) > 0)
    # Where measured, the table reproduces the empirical FMR.
    thr = cal.distance_for(70)
    assert abs((d <= thr).mean() - 1e-2) < 2e-3

"""Per-group verification from a dataset's own labels: pairs and groups read from a manifest.

``../shared/faces_demographics`` holds UTKFace crops labelled by race and gender, one photo per
person: every pair is an impostor pair, so the per-group report gives each group's false match
rate (and says FNMR is undefined there, not 0%).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.errors import InvalidInput
from facewarden.evaluate import evaluate_pairs, manifest_pairs, read_groups, score_pairs

from .data import REPO, faces_dir

DEMOGRAPHICS = REPO.parent / "shared" / "faces_demographics"
PER_GROUP = 8


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """The first PER_GROUP images of each race, as a manifest of their own."""
    if not (DEMOGRAPHICS / "MANIFEST.tsv").is_file():
        pytest.fail(f"Test data missing: {DEMOGRAPHICS}/MANIFEST.tsv", pytrace=False)
    with open(DEMOGRAPHICS / "MANIFEST.tsv", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows, fields = list(reader), reader.fieldnames
    taken: dict[str, int] = {}
    keep = []
    for r in rows:
        if taken.get(r["race"], 0) < PER_GROUP:
            taken[r["race"]] = taken.get(r["race"], 0) + 1
            keep.append(r)
    path = tmp_path_factory.mktemp("demographics") / "MANIFEST.tsv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
        w.writeheader()
        w.writerows(keep)
    return path


def test_groups_and_pairs_come_from_the_manifest(subset):
    groups = read_groups(subset, group_by="race")
    assert len(groups) == 5 * PER_GROUP and set(groups.values()) == {
        "asian",
        "black",
        "indian",
        "others",
        "white",
    }
    within = manifest_pairs(subset, groups=groups)
    assert len(within) == 5 * PER_GROUP * (PER_GROUP - 1) // 2  # within-group pairs only
    assert not any(same for _, _, same in within)  # identity "unknown": one person per photo
    assert all(groups[a] == groups[b] for a, b, _ in within)
    every = manifest_pairs(subset)
    n = 5 * PER_GROUP
    assert len(every) == n * (n - 1) // 2
    with pytest.raises(InvalidInput, match="no column colour"):
        read_groups(subset, group_by="colour")


def test_genuine_pairs_follow_the_identity_column():
    rows = list(csv.DictReader(open(faces_dir() / "MANIFEST.tsv", newline=""), delimiter="\t"))
    ids = [r["identity"] for r in rows]
    expected = sum(1 for i in range(len(ids)) for j in range(i + 1, len(ids)) if ids[i] and ids[i] == ids[j])
    pairs = manifest_pairs(faces_dir() / "MANIFEST.tsv")
    assert sum(same for _, _, same in pairs) == expected > 200


@pytest.mark.parametrize("model", ["sface-2021dec", "dlib-resnet-v1"])
def test_per_group_false_match_rates_for_each_model(subset, tmp_path, model):
    settings = Settings(data_dir=tmp_path / "data", model=model)
    groups = read_groups(subset, group_by="race")
    pairs = manifest_pairs(subset, groups=groups)
    report = evaluate_pairs(
        pairs, DEMOGRAPHICS, groups, out_dir=tmp_path / "out", settings=settings, workers=1, progress=False
    )
    assert report["inputs"]["model_version"] == model
    assert set(report["groups"]) == {"asian", "black", "indian", "others", "white"}
    assert report["cross_group_pairs"]["pairs"] == 0
    scores = score_pairs(pairs, DEMOGRAPHICS, groups, settings, workers=1, progress=False)
    for g, fig in report["groups"].items():
        assert fig["impostor"] == PER_GROUP * (PER_GROUP - 1) // 2 and fig["genuine"] == 0
        assert fig["fnmr_at"]["80"] is None  # undefined without genuine pairs, never 0%
        # the report's FMR is the count of this group's impostor pairs at or above 80
        mine = np.array([gg == g for gg in scores.group])
        assert fig["rates"]["80"]["fmr"]["count"] == int((scores.similarity[mine] >= 80).sum())
        assert fig["rates"]["80"]["fmr"]["ci95"] is not None
    assert report["differentials"]["80"]["fmr"]["max"] is not None
    assert (tmp_path / "out" / "report.html").is_file()

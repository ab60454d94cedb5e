"""Where the shared test photos live (never copied into the repo) and how to read their labels."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
IMPOSTORS = REPO.parent / "shared" / "faces_impostors"


def faces_dir() -> Path:
    if not (FACES / "MANIFEST.tsv").is_file():
        pytest.fail(
            f"Test photos missing: expected ../shared/faces beside the repo ({FACES}).", pytrace=False
        )
    return FACES


def manifest() -> list[dict[str, str]]:
    with open(faces_dir() / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def pairs() -> list[tuple[str, str, bool]]:
    with open(faces_dir() / "pairs.tsv", newline="") as f:
        return [(r["path_a"], r["path_b"], r["same"] == "1") for r in csv.DictReader(f, delimiter="\t")]


def single_person_photos() -> list[str]:
    return [r["path"] for r in manifest() if not r["path"].startswith(("group/", "noface/"))]


_cache: dict[str, object] = {}


def engine(model: str | None = None):
    """One engine per model version for the whole test session (models load once); the default
    model when ``model`` is None."""
    key = f"engine:{model}"
    if key not in _cache:
        from facewarden.config import Settings
        from facewarden.engine import Engine

        _cache[key] = Engine(Settings.from_env(), model=model)
    return _cache[key]


def _largest_faces() -> dict[str, object]:
    """The largest face of every single-person photo (None where none is found), detected once."""
    if "faces" not in _cache:
        from facewarden.media import images
        from facewarden.service import largest

        eng = engine()
        out: dict[str, object] = {}
        for rel in single_person_photos():
            faces = eng.detect(images.read(faces_dir() / rel))
            out[rel] = largest(faces) if faces else None
        _cache["faces"] = out
    return _cache["faces"]  # type: ignore[return-value]


def photo_templates(model: str | None = None) -> dict[str, object]:
    """Template of the largest face of every single-person photo (None where none is found), once
    per model; every model embeds the same detected faces."""
    key = f"templates:{model}"
    if key not in _cache:
        from facewarden.media import images

        eng = engine(model)
        out: dict[str, object] = {}
        for rel, face in _largest_faces().items():
            out[rel] = None if face is None else eng.embed(images.read(faces_dir() / rel), [face])[0]
        _cache[key] = out
    return _cache[key]  # type: ignore[return-value]


def poisson_interval(mean: float, alpha: float) -> tuple[int, int]:
    """Smallest and largest counts not rejected by a two-sided Poisson test at level ``alpha``."""
    from math import exp, lgamma, log

    def pmf(k: int) -> float:
        return exp(k * log(mean) - mean - lgamma(k + 1)) if mean > 0 else float(k == 0)

    ks = range(int(mean * 5 + 50))
    cdf, acc = [], 0.0
    for k in ks:
        acc += pmf(k)
        cdf.append(acc)
    lo = next(k for k in ks if cdf[k] > alpha / 2)
    hi = next(k for k in ks if 1 - cdf[k] < alpha / 2)
    return lo, hi

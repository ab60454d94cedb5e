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


def engine():
    """One engine for the whole test session (models load once)."""
    if "engine" not in _cache:
        from facewarden.config import Settings
        from facewarden.engine import Engine

        _cache["engine"] = Engine(Settings.from_env())
    return _cache["engine"]


def photo_templates() -> dict[str, object]:
    """Template of the largest face of every single-person photo (None where none is found), once."""
    if "templates" not in _cache:
        from facewarden.media import images
        from facewarden.service import largest

        eng = engine()
        out: dict[str, object] = {}
        for rel in single_person_photos():
            pixels = images.read(faces_dir() / rel)
            faces = eng.detect(pixels)
            out[rel] = eng.embed(pixels, [largest(faces)])[0] if faces else None
        _cache["templates"] = out
    return _cache["templates"]  # type: ignore[return-value]

"""The CLI as a user runs it: a real subprocess, real photos, exit codes and output shapes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .data import faces_dir

OBAMA = "barack_obama/barack_obama_1.jpg"
OBAMA2 = "barack_obama/barack_obama_2.jpg"
BIDEN = "joe_biden/joe_biden_1.jpg"


def run(*args: str, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facewarden.cli", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    init = run("init", "--org-name", "test-org", "--sector", "commercial", data_dir=d)
    assert init.returncode == 0, init.stderr
    return d


def test_detect_json_is_one_detectfaces_response_per_image_in_order(data_dir):
    f = faces_dir()
    paths = [f / "group/faceapi_bbt3.jpg", f / "noface/dlib_dog.jpg", f / OBAMA]
    r = run("--json", "detect", *map(str, paths), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [len(x["FaceDetails"]) for x in lines] == [5, 0, 1]
    assert [x["Image"] for x in lines] == [str(p) for p in paths]  # each line names its file
    assert all(set(x) == {"FaceDetails", "Image"} for x in lines)


def test_detect_table(data_dir):
    r = run("detect", str(faces_dir() / OBAMA), data_dir=data_dir)
    assert r.returncode == 0 and "1 face" in r.stdout and "confidence=" in r.stdout


def test_compare_match_and_no_match(data_dir):
    f = faces_dir()
    same = run("--json", "compare", str(f / OBAMA), str(f / OBAMA2), data_dir=data_dir)
    assert same.returncode == 0, same.stderr
    out = json.loads(same.stdout)
    assert {"SourceImageFace", "FaceMatches", "UnmatchedFaces"} <= set(out)
    assert len(out["FaceMatches"]) == 1 and out["FaceMatches"][0]["Similarity"] >= 80
    other = run("compare", str(f / OBAMA), str(f / BIDEN), "--threshold", "80", data_dir=data_dir)
    assert other.returncode == 0 and "NO MATCH" in other.stdout


def test_exit_codes(data_dir, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    r = run("detect", str(bad), data_dir=data_dir)
    assert r.returncode == 3 and "InvalidImageFormatException" in r.stderr
    r = run("compare", str(faces_dir() / "noface/dlib_dog.jpg"), str(faces_dir() / OBAMA), data_dir=data_dir)
    assert r.returncode == 3 and "No face was found in SourceImage" in r.stderr
    r = run("detect", "--detector", "yolo", str(bad), data_dir=data_dir)
    assert r.returncode == 2
    r = run("compare", str(faces_dir() / OBAMA), data_dir=data_dir)
    assert r.returncode == 2

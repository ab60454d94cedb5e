"""The accuracy and bias audit (facewarden.evaluate): metrics, pairs, groups, reports, 1:N, calibration.

Uses the labelled photos in ``../shared/faces`` (relative to the repository root). Every image is
embedded once, in two processes; the template cache is kept in pytest's cache folder under a key
of the engine's source code, so a later run with the same engine embeds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.engine.calibration import Calibration, fmr_for_similarity
from facewarden.evaluate import calibrate, evaluate_gallery, evaluate_pairs, metrics, score_pairs
from facewarden.evaluate import embed as embed_mod

REPO = Path(__file__).resolve().parents[1]
FACES = (REPO.parent / "shared" / "faces").resolve()
THRESHOLDS = ("80", "90", "95", "99")


def _faces_dir() -> Path:
    if not (FACES / "pairs.tsv").is_file() or not (FACES / "MANIFEST.tsv").is_file():
        pytest.fail(
            f"Test data missing: expected the labelled photos at {FACES} (pairs.tsv, MANIFEST.tsv and "
            "<identity>/ folders), i.e. ../shared/faces beside the repository."
        )
    return FACES


def _identities(faces: Path) -> list[str]:
    return sorted(p.name for p in faces.iterdir() if p.is_dir() and p.name not in ("group", "noface"))


# ---- session fixtures: embed once ------------------------------------------------------------------
@pytest.fixture(scope="session")
def faces() -> Path:
    return _faces_dir()


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose data folder (and so the template cache) survives between runs of the same engine."""
    h = hashlib.sha256()
    for src in sorted(
        [*(REPO / "facewarden" / "engine").glob("*.py"), REPO / "facewarden" / "evaluate" / "embed.py"]
    ):
        h.update(src.name.encode() + src.read_bytes())
    cache = getattr(request.config, "cache", None)
    name = f"facewarden_evaluate_{h.hexdigest()[:16]}"
    data_dir = Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)
    # dlib's model on the dlib runtime, pinned: these figures and the parallel-vs-in-process check
    # were measured with it (the evaluation itself is model-independent; test_evaluate_groups
    # runs it with SFace too)
    return Settings(data_dir=data_dir, runtime="dlib", model="dlib-resnet-v1")


@pytest.fixture(scope="session")
def identity_tree(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of symlinks to the single-person photos only (no group/ or noface/)."""
    root = tmp_path_factory.mktemp("identities")
    for ident in _identities(faces):
        (root / ident).mkdir()
        for img in sorted((faces / ident).iterdir()):
            (root / ident / img.name).symlink_to(img)
    return root


@pytest.fixture(scope="session")
def calibration(settings: Settings, identity_tree: Path) -> Calibration:
    """The shipped table when it exists; otherwise one built in-process from the test photos."""
    from facewarden.engine import Engine

    engine = Engine(settings)
    spec_file = engine.spec.calibration_file
    if spec_file is not None and spec_file.exists():
        return engine.calibration
    return calibrate(identity_tree, "folder", None, settings, workers=2, progress=False)


@pytest.fixture(scope="session")
def groups_tsv(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Groups by source repository (from MANIFEST.tsv), with one identity alone in its own group.

    'amy' alone has genuine pairs only: her impostor pairs all cross into other groups.
    """
    rows = list(csv.DictReader((faces / "MANIFEST.tsv").read_text().splitlines(), delimiter="\t"))
    by_identity = {}
    for r in rows:
        if r["identity"] and r["path"].split("/")[0] not in ("group", "noface"):
            by_identity[r["identity"]] = r["source_repo"]
    by_identity["amy"] = "solo-amy"
    path = tmp_path_factory.mktemp("groups") / "groups.tsv"
    path.write_text("identity\tgroup\n" + "".join(f"{i}\t{g}\n" for i, g in sorted(by_identity.items())))
    return path


@pytest.fixture(scope="session")
def pairs_report(faces, settings, calibration, groups_tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = evaluate_pairs(
        faces / "pairs.tsv",
        faces,
        groups_tsv=groups_tsv,
        out_dir=out,
        settings=settings,
        workers=2,
        thresholds=(70, 85),
        policy_floors={"access_control": 95, "photo_organisation": 85},
        calibration=calibration,
        progress=False,
    )
    full = json.loads((out / "report.json").read_text())
    return report, full, out


# ---- pure metrics ----------------------------------------------------------------------------------
def test_wilson_interval_known_values_and_edges():
    lo, hi = metrics.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = metrics.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert metrics.wilson(10, 10)[1] == 1.0
    assert metrics.wilson(0, 0) is None
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        k = int(rng.integers(0, n + 1))
        lo, hi = metrics.wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_rates_count_missed_faces_as_non_matches():
    gen = np.array([90.0, 85.0, -np.inf, np.nan])
    imp = metrics.as_scores([50.0, 82.0, None])
    r = metrics.rates_at(gen, imp, 80)
    assert (r["fnmr"]["count"], r["fnmr"]["trials"]) == (2, 4)  # the two missed genuine pairs are errors
    assert (r["fmr"]["count"], r["fmr"]["trials"]) == (1, 3)  # a missed impostor pair never matches
    assert r["accuracy"]["value"] == pytest.approx((2 + 2) / 7)
    empty = metrics.rates_at(gen, np.zeros(0), 80)
    assert empty["fmr"]["value"] is None and empty["fmr"]["reason"] == "no impostor pairs"


def test_error_curve_is_monotonic_and_matches_brute_force():
    rng = np.random.default_rng(7)
    gen = np.round(rng.normal(2.0, 1.0, 300), 1)
    imp = np.round(rng.normal(0.0, 1.0, 900), 1)
    gen[:5] = -np.inf
    fmr, fnmr, t = metrics.det_points(gen, imp)
    assert np.all(np.diff(fmr) >= 0) and np.all(np.diff(fnmr) <= 0) and np.all(np.diff(t) < 0)
    assert fmr[0] == 0 and fnmr[0] == 1
    assert fnmr[-1] == pytest.approx(5 / 300)  # the curve ends at the missed genuine pairs, not at 0
    for i in range(0, len(t), 7):
        assert fmr[i] == np.mean(imp >= t[i]) and fnmr[i] == np.mean(~(gen >= t[i]))
    roc_fmr, tmr, _ = metrics.roc_points(gen, imp)
    assert np.all(np.diff(tmr) >= 0) and np.array_equal(roc_fmr, fmr)


def test_eer_and_fnmr_at_fmr():
    assert metrics.eer(np.array([3.0, 4.0]), np.array([1.0, 2.0]))["value"] == 0.0
    e = metrics.eer(np.array([1.0, 3.0]), np.array([2.0, 0.0]))
    assert e["value"] == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    gen, imp = rng.normal(3, 1, 2000), rng.normal(0, 1, 2000)
    e = metrics.eer(gen, imp)["value"]
    assert e == pytest.approx(0.0668, abs=0.015)  # Phi(-1.5) for two unit normals 3 apart

    imp = np.arange(1000, dtype=float)  # 0..999
    gen = np.array([995.5, 998.5, 999.5, 1000.5, 5.0])
    r = metrics.fnmr_at_fmr(gen, imp, 1e-2)  # 10 false matches allowed: threshold just above 989
    assert r["resolved"] and r["fmr_achieved"]["count"] == 10 and r["value"] == pytest.approx(1 / 5)
    r = metrics.fnmr_at_fmr(gen, imp, 1e-3)
    assert r["resolved"] and r["fmr_achieved"]["count"] == 1 and r["value"] == pytest.approx(2 / 5)
    r = metrics.fnmr_at_fmr(gen, imp, 1e-4)  # finer than 1 / 1000: not reported
    assert not r["resolved"] and r["value"] is None and "not resolved" in r["reason"]


def test_differential_never_treats_missing_as_zero():
    d = metrics.differential({"a": metrics.Rate(2, 100), "b": metrics.Rate(1, 200), "c": metrics.Rate(0, 0)})
    assert d["max"]["group"] == "a" and d["min"]["group"] == "b" and d["ratio"] == pytest.approx(4.0)
    assert d["undefined_groups"] == ["c"]
    d = metrics.differential({"a": metrics.Rate(2, 100), "b": metrics.Rate(0, 50)})
    assert d["ratio"] is None and "unbounded" in d["reason"]


# ---- pairs mode on ../shared/faces -----------------------------------------------------------------
def test_headline_keys_and_counts(pairs_report, faces):
    report, _, _ = pairs_report
    lines = (faces / "pairs.tsv").read_text().splitlines()[1:]
    same = [ln.split("\t")[2] for ln in lines if ln.strip()]
    for key in ("pairs", "genuine", "impostor", "detection_failures", "threshold_default",
                "accuracy_at_default", "fmr_at", "fnmr_at", "eer", "groups"):  # fmt: skip
        assert key in report, key
    assert report["pairs"] == len(same)
    assert report["genuine"] == same.count("1") and report["impostor"] == same.count("0")
    assert report["threshold_default"] == 80
    for t in THRESHOLDS:
        assert t in report["fmr_at"] and t in report["fnmr_at"]
    json.dumps(report, allow_nan=False)  # the CLI prints it with --json: strict JSON, no Infinity


def test_figures_match_an_independent_computation(pairs_report):
    report, full, _ = pairs_report
    sims = {True: [], False: []}
    for p in full["per_pair"]:
        sims[p["same"]].append(-math.inf if p["similarity"] is None else p["similarity"])
    gen, imp = sims[True], sims[False]
    for t in (*THRESHOLDS, "70", "85"):
        thr = float(t)
        fm = sum(1 for s in imp if s >= thr)
        fnm = sum(1 for s in gen if not s >= thr)
        assert report["fmr_at"][t] == fm / len(imp)
        assert report["fnmr_at"][t] == fnm / len(gen)
        assert report["rates"][t]["fmr"]["count"] == fm and report["rates"][t]["fnmr"]["count"] == fnm
    acc = (sum(s >= 80 for s in gen) + sum(s < 80 for s in imp)) / (len(gen) + len(imp))
    assert report["accuracy_at_default"] == pytest.approx(acc)
    assert report["policy_floors"]["access_control"]["threshold"] == 95
    assert 0 <= report["eer"] < 0.2
    # FNMR at FMR: 1e-2 is resolved on ~700 impostor pairs, 1e-3 and finer are not
    n_imp = report["impostor"]
    for k, r in report["fnmr_at_fmr"].items():
        assert r["resolved"] == (float(k) >= 1 / n_imp)
        if not r["resolved"]:
            assert r["value"] is None and "not resolved" in r["reason"]
        else:
            assert r["fmr_achieved"]["value"] <= float(k)
    assert set(report["fnmr_at_fmr"]) >= {"1e-02", "1e-03", "1e-04"}


def test_similarities_match_the_engine(pairs_report, faces, settings, calibration):
    """Spot-check two per-pair similarities against the engine itself (largest face of each image)."""
    from facewarden.media import images
    from facewarden.engine import Engine

    _, full, _ = pairs_report
    engine = Engine(settings)
    picks = [
        next(p for p in full["per_pair"] if p["same"]),
        next(p for p in full["per_pair"] if not p["same"]),
    ]
    for p in picks:
        tpl = []
        for rel in (p["path_a"], p["path_b"]):
            found = engine.analyse(images.read(faces / rel))
            tpl.append(max(found, key=lambda f: f.face.box.area).template)
        d = float(np.linalg.norm(tpl[0] - tpl[1]))
        assert p["similarity"] == pytest.approx(calibration.similarity(d), abs=1e-3)


def test_curves_are_monotonic(pairs_report):
    _, full, _ = pairs_report
    gen = metrics.as_scores([p["similarity"] for p in full["per_pair"] if p["same"]])
    imp = metrics.as_scores([p["similarity"] for p in full["per_pair"] if not p["same"]])
    fmr, fnmr, _ = metrics.det_points(gen, imp)
    assert np.all(np.diff(fmr) >= 0) and np.all(np.diff(fnmr) <= 0)
    report = pairs_report[0]
    fmr_series = [report["fmr_at"][k] for k in sorted(report["fmr_at"], key=float)]
    fnmr_series = [report["fnmr_at"][k] for k in sorted(report["fnmr_at"], key=float)]
    assert fmr_series == sorted(fmr_series, reverse=True) and fnmr_series == sorted(fnmr_series)
    observed = [p["observed_fmr"] for p in report["calibration"]["points"]]
    assert observed == sorted(observed, reverse=True)


def _rates(node):
    if isinstance(node, dict):
        if "ci95" in node and "value" in node:
            yield node
        for v in node.values():
            yield from _rates(v)
    elif isinstance(node, list):
        for v in node:
            yield from _rates(v)


def test_confidence_intervals_contain_the_estimate(pairs_report):
    report, _, _ = pairs_report
    found = list(_rates(report))
    assert len(found) > 50
    for r in found:
        if r["value"] is None:
            assert r["ci95"] is None
        else:
            lo, hi = r["ci95"]
            assert 0 <= lo <= r["value"] <= hi <= 1
    for p in report["calibration"]["points"]:
        lo, hi = p["ci95"]
        assert lo <= p["observed_fmr"] <= hi
        at_100 = report["calibration"]["fmr_at_100"]  # the model's fine tail above 99
        assert p["claimed_fmr"] == pytest.approx(fmr_for_similarity(p["similarity"], at_100))


def test_groups_and_a_group_without_impostor_pairs(pairs_report):
    report, _, _ = pairs_report
    groups = report["groups"]
    assert {"serengil/deepface", "justadudewhohacks/face-api.js", "solo-amy"} <= set(groups)
    solo = groups["solo-amy"]
    assert solo["impostor"] == 0 and solo["genuine"] > 0
    for t in THRESHOLDS:
        assert solo["fmr_at"][t] is None  # undefined, never 0%
        assert solo["rates"][t]["fmr"]["reason"] == "no impostor pairs"
        assert solo["fnmr_at"][t] is not None
    assert solo["eer"] is None
    assert any("no impostor pairs" in n for n in solo["notes"])
    for key in ("80", "95", "85"):
        d = report["differentials"][key]
        assert "solo-amy" in d["fmr"]["undefined_groups"]
        assert d["fmr"]["max"]["group"] != "solo-amy" and d["fmr"]["min"]["group"] != "solo-amy"
    # group figures add up: every pair is in exactly one group or crosses groups
    total = sum(g["pairs"] for g in groups.values()) + report["cross_group_pairs"]["pairs"]
    assert total == report["pairs"]
    deep = groups["serengil/deepface"]
    assert deep["impostor"] > 0 and deep["fmr_at"]["80"] is not None


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_parses_and_its_plots_exist(pairs_report):
    _, full, out = pairs_report
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert page.tags.count("table") >= 4
    text = " ".join(page.text)
    assert "solo-amy" in text and "Calibration" in text
    assert len(page.images) >= 4
    for src in page.images:
        png = out / src
        assert png.is_file() and png.stat().st_size > 1000, src
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert full["report_files"]["html"] == "report.html"


def test_detection_failures_are_errors_and_listed(faces, settings, calibration, tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "amy").mkdir(parents=True)
    (imgs / "amy" / "a1.png").symlink_to(faces / "amy" / "amy_1.png")
    (imgs / "amy" / "a2.png").symlink_to(faces / "amy" / "amy_2.png")
    (imgs / "amy" / "dog.jpg").symlink_to(faces / "noface" / "dlib_dog.jpg")  # no face: a detection failure
    (imgs / "amy" / "broken.jpg").write_bytes(b"not an image at all")
    (imgs / "other").mkdir()
    (imgs / "other" / "o1.jpg").symlink_to(faces / "barack_obama" / "barack_obama_1.jpg")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "path_a\tpath_b\tsame\n"
        "amy/a1.png\tamy/a2.png\t1\n"
        "amy/a1.png\tamy/dog.jpg\t1\n"
        "amy/broken.jpg\tamy/a2.png\t1\n"
        "amy/dog.jpg\tother/o1.jpg\t0\n"
        "amy/a1.png\tother/o1.jpg\t0\n"
    )
    report = evaluate_pairs(
        pairs, imgs, settings=settings, workers=1, calibration=calibration, progress=False
    )
    assert report["detection_failures"] == 2
    listed = {f["path"]: f["status"] for f in report["detection_failure_images"]}
    assert listed == {"amy/dog.jpg": "no_face", "amy/broken.jpg": "invalid_image"}
    assert report["pairs_with_detection_failure"] == {"genuine": 2, "impostor": 1}
    for t in THRESHOLDS:
        assert report["rates"][t]["fnmr"]["count"] >= 2  # missed genuine pairs are errors at every threshold
        assert report["rates"][t]["fmr"]["trials"] == 2
    assert report["rates"]["80"]["fnmr"]["count"] == 2  # the real amy pair matches at 80
    assert report["fmr_at"]["80"] == 0.0


def test_templates_are_cached_by_content(faces, settings, pairs_report, monkeypatch, tmp_path):
    """After the session's run, the same photos (under other names) are not embedded again."""
    link = tmp_path / "renamed.jpg"
    link.symlink_to(faces / "joe_biden" / "joe_biden_1.jpg")

    def boom(*a, **k):
        raise AssertionError("embedded again despite the cache")

    monkeypatch.setattr(embed_mod, "embed_file", boom)
    out = embed_mod.embed_images(
        [link, faces / "angelina" / "angelina_1.jpg"], settings, workers=1, progress=False
    )
    assert all(e.ok and e.template.shape == (128,) for e in out.values())
    assert abs(float(np.linalg.norm(out[str(link)].template)) - 1.0) < 1e-4
    cache = embed_mod.cache_path(settings, "dlib-resnet-v1")
    assert cache.is_file() and oct(cache.stat().st_mode & 0o777) == "0o600"


def test_cached_templates_are_keyed_by_the_pipeline(faces, settings, monkeypatch, tmp_path):
    """A changed detector, or changed detector parameters, never serves the templates cached before."""
    from facewarden.engine import centerface

    calls: list[str] = []

    def fake(engine, path, face_choice="largest"):
        calls.append(engine.pipeline_key())
        return np.ones(128, np.float32) / np.sqrt(128), "ok", "", 1

    monkeypatch.setattr(embed_mod, "embed_file", fake)
    photo = [faces / "amy" / "amy_1.png"]
    s = settings.replace(detector="centerface")

    def run(s: Settings) -> None:
        embed_mod.embed_images(photo, s, workers=1, progress=False, cache_dir=tmp_path)

    run(s)
    run(s)
    assert len(calls) == 1  # the same pipeline: served from the cache
    monkeypatch.setattr(centerface, "THRESHOLD", 0.5)
    run(s)
    assert len(calls) == 2 and calls[0] != calls[1]  # new detector parameters: embedded again
    run(s.replace(detector="hog"))
    assert len(calls) == 3  # another detector
    monkeypatch.setattr(centerface, "THRESHOLD", 0.4)
    run(s)
    assert len(calls) == 3  # back to the first pipeline: its templates are still there


def test_parallel_embedding_matches_in_process(faces, settings, pairs_report, tmp_path):
    """Two worker processes (a fresh cache) give the session's templates (centre face = only face)."""
    photos = [faces / "amy" / "amy_1.png", faces / "penny" / "penny_1.png", faces / "noface" / "dlib_dog.jpg"]
    fresh = embed_mod.embed_images(
        photos, settings, workers=2, face_choice="centre", progress=False, cache_dir=tmp_path
    )
    cached = embed_mod.embed_images(photos, settings, workers=1, progress=False)
    assert (tmp_path / "templates-dlib-resnet-v1.npz").is_file()
    for p in map(str, photos[:2]):
        assert fresh[p].ok and fresh[p].faces == 1
        np.testing.assert_allclose(fresh[p].template, cached[p].template, atol=1e-5)
    dog = fresh[str(photos[2])]
    assert not dog.ok and dog.status == "no_face" and dog.template is None


# ---- 1:N gallery mode ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def gallery_run(identity_tree, settings, calibration, tmp_path_factory):
    """Every second identity enrolled with its first photo; its other photos are mated probes, and
    every photo of the other identities is a non-mated probe."""
    root = tmp_path_factory.mktemp("gallery")
    ids = sorted(p.name for p in identity_tree.iterdir())
    enrolled = ids[::2]
    for ident in ids:
        photos = sorted((identity_tree / ident).iterdir())
        for k, photo in enumerate(photos):
            role = "gallery" if ident in enrolled and k == 0 else "probes"
            (root / role / ident).mkdir(parents=True, exist_ok=True)
            (root / role / ident / photo.name).symlink_to(os.readlink(photo))
    result = evaluate_gallery(
        root / "gallery",
        root / "probes",
        settings=settings,
        workers=1,
        calibration=calibration,
        progress=False,
    )
    return root, enrolled, result


def test_gallery_counts(gallery_run):
    root, enrolled, g = gallery_run
    assert g["gallery_identities"] == len(enrolled) == g["gallery_faces"]
    n_probes = sum(1 for _ in (root / "probes").rglob("*.*"))
    assert g["probes"] == n_probes == g["mated_probes"] + g["non_mated_probes"]
    assert g["mated_probes"] > 0 and g["non_mated_probes"] > 0
    assert 0.5 < g["rank1_rate"] <= 1.0
    for t, r in g["thresholds"].items():
        nm = r["non_mated"]
        assert nm["comparisons"] == g["non_mated_probes"] * g["gallery_faces"]  # every face was found
        assert nm["expected_false_match_pairs"] == pytest.approx(
            nm["comparisons"] * fmr_for_similarity(float(t))
        )
        assert nm["expected_false_matches_per_probe"] == pytest.approx(
            g["gallery_faces"] * fmr_for_similarity(float(t))
        )
        assert nm["probes_with_false_match"] <= nm["false_match_pairs"]
        assert r["mated"]["correct_first_above_threshold"] <= g["rank1"]["count"]
    ids = [r["mated"]["correct_first_above_threshold"] for r in g["thresholds"].values()]
    assert ids == sorted(ids, reverse=True)


def test_gallery_consistent_with_pairs_mode(gallery_run, settings, calibration):
    """Score every probe x gallery pair in pairs mode: the false-match counts and rank-1 agree."""
    root, enrolled, g = gallery_run
    gallery = sorted(p.relative_to(root).as_posix() for p in (root / "gallery").rglob("*.*"))
    probes = sorted(p.relative_to(root).as_posix() for p in (root / "probes").rglob("*.*"))

    def ident(rel: str) -> str:
        return rel.split("/")[1]

    tsv = root / "all-pairs.tsv"
    tsv.write_text(
        "path_a\tpath_b\tsame\n"
        + "".join(f"{p}\t{q}\t{int(ident(p) == ident(q))}\n" for p in probes for q in gallery)
    )
    scores = score_pairs(tsv, root, settings=settings, workers=1, calibration=calibration, progress=False)
    non_mated = np.array([ident(a) not in enrolled for a in scores.path_a])
    for t, r in g["thresholds"].items():
        hits = scores.similarity >= float(t)
        assert r["non_mated"]["false_match_pairs"] == int((hits & non_mated).sum())
        assert r["mated"]["false_match_pairs"] == int((hits & ~non_mated & ~scores.same).sum())
        # the same figure from the pairs report: FMR over the non-mated probes' (all impostor) pairs
        assert int((hits & non_mated & ~scores.same).sum()) == r["non_mated"]["false_match_pairs"]
    # rank-1 from the pair similarities
    best: dict[str, tuple[float, str]] = {}
    for a, b, s in zip(scores.path_a, scores.path_b, scores.similarity):
        if ident(a) in enrolled and (a not in best or s > best[a][0]):
            best[a] = (s, ident(b))
    rank1 = sum(1 for a, (s, who) in best.items() if who == ident(a))
    assert g["rank1"]["count"] == rank1 and g["rank1"]["trials"] == len(best)


# ---- calibration -----------------------------------------------------------------------------------
def test_calibrate_from_a_labelled_folder(identity_tree, settings, pairs_report, tmp_path):
    out = tmp_path / "table.json"
    cal = calibrate(identity_tree, "folder", out, settings, workers=1, progress=False)
    src = cal.meta["source"]
    assert src["identities"] == len(_identities(FACES)) and src["detection_failures"] == 0
    n = src["templates"]
    counts = [len(list((identity_tree / i).iterdir())) for i in _identities(FACES)]
    assert cal.meta["impostor_pairs"] == n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in counts)
    loaded = Calibration.load(out)
    assert loaded.model_version == cal.model_version == "dlib-resnet-v1"
    d = np.linspace(0.0, 1.2, 50)
    s = loaded.similarity(d)
    assert np.all(np.diff(s) <= 1e-9) and s[0] == 100.0 and s[-1] == 50.0
    # identity from the file name (LFW style: one photo per person, a trailing number dropped)
    flat = tmp_path / "flat"
    flat.mkdir()
    chosen = _identities(FACES)[:16]
    for ident in chosen:
        photo = min((identity_tree / ident).iterdir())
        (flat / f"{ident}_0001{photo.suffix}").symlink_to(os.readlink(photo))
    cal = calibrate(flat, "filename", None, settings, workers=1, progress=False)
    assert cal.meta["source"]["identities"] == 16 and cal.meta["source"]["identity_from"] == "filename"
    assert cal.meta["impostor_pairs"] == 16 * 15 // 2

"""Face models side by side: dlib's ResNet (``dlib-resnet-v1``) against SFace (``sface-2021dec``).

    python bench/bench_models.py [--workers N] [--detector hog] [--cache FILE] [--variants]

Every photo is decoded and its faces detected ONCE; both models embed the same face from the same
detection (the largest face of each photo of ../shared/faces, the face nearest the centre of each
photo of ../shared/faces_impostors, as the calibration does). Genuine pairs: the 236 of
../shared/faces/pairs.tsv (a missed face is a miss at every threshold); impostor pairs: every pair
of the 3,000 one-person photos of ../shared/faces_impostors (about 4.4 million). For each model:
EER, FNMR at FMR 1e-3, 1e-4 and 1e-5 (thresholds set on the impostor pairs) with 95% Wilson
intervals, then the shipped calibration checked on the 7,000-odd cross-identity pairs of
../shared/faces (data it was not built from), and the embedding cost per face (alignment +
network, one thread; batch 1 as an indexer embeds one photo's face, and batch 32), the models
alternated in one loop, medians.

Per group: the false match rate at similarity 80 and 90 within each race of
../shared/faces_demographics (UTKFace crops, one photo per person: every pair an impostor pair),
with the highest/lowest ratio, as ``facewarden.evaluate`` reports it per group.

``--variants`` adds SFace rows for other alignments from the same dlib 5-point landmarks (the
nose base taken for the nose tip; PIL's pixel-corner convention instead of OpenCV's pixel
centres) and times the int8 copy of the SFace graph against the float32 one. ``--cache FILE``
keeps the templates between runs. Not a test.
"""

from __future__ import annotations

import os

for _var in ("FACEWARDEN_ONNX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import csv
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import table

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine, geometry
from facewarden.engine.calibration import impostor_distances
from facewarden.engine.faces import normalise
from facewarden.evaluate import metrics
from facewarden.evaluate.embed import choose_face, list_images

SHARED = ROOT.parent / "shared"
FACES, IMPOSTORS = SHARED / "faces", SHARED / "faces_impostors"
DEMOGRAPHICS = SHARED / "faces_demographics"
MODELS = ("dlib-resnet-v1", "sface-2021dec")
VARIANTS = ("sface:nose-base", "sface:pil-corners")
TARGETS = (1e-3, 1e-4, 1e-5)

_engines: dict[str, Engine] = {}


def _init(detector: str, variants: bool) -> None:
    settings = Settings.from_env(detector=detector)
    for m in MODELS:
        _engines[m] = Engine(settings, model=m)
    _engines["_variants"] = variants  # type: ignore[assignment]


def _align_pil_corners(image: np.ndarray, pts: np.ndarray, size: int = 112) -> np.ndarray:
    """``geometry.align`` without its half-pixel shift (PIL's corner convention, as before)."""
    from PIL import Image

    m = geometry.similarity_transform(geometry.ARCFACE_112, pts)
    coeffs = tuple(m.reshape(-1))
    pil = Image.fromarray(image)
    return np.asarray(pil.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR))


def _one(path: str, face_choice: str) -> dict[str, Any]:
    """Templates of one photo's chosen face, by every model (and variant), from one detection."""
    first = _engines[MODELS[0]]
    try:
        rgb = images.read(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable photo is a detection failure here
        return {"path": path, "error": str(exc)}
    faces = first.detect(rgb)
    if not faces:
        return {"path": path, "error": "no face"}
    face = choose_face(faces, face_choice, (rgb.shape[1], rgb.shape[0]))
    out: dict[str, Any] = {"path": path}
    for m in MODELS:
        out[m] = _engines[m].embed(rgb, [face])[0]
    if _engines["_variants"]:
        sface = _engines["sface-2021dec"]
        parts = np.array([(p.x, p.y) for p in face.shape.parts()], dtype=np.float64)
        base = geometry.alignment_points(parts)
        base[2] = parts[4]  # the nose base where the template has the nose tip
        chips = {
            "sface:nose-base": geometry.align(rgb, [base], geometry.ARCFACE_112, 112),
            "sface:pil-corners": _align_pil_corners(rgb, face.align_points)[None],
        }
        for name, chip in chips.items():
            out[name] = normalise(sface.embedder.embed(chip))[0]
    return out


def embed_all(paths: list[Path], face_choice: str, workers: int, detector: str, variants: bool) -> list[dict]:
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init, initargs=(detector, variants)
    ) as pool:
        return list(pool.map(_one, [str(p) for p in paths], [face_choice] * len(paths), chunksize=8))


def load_or_embed(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    names = [*MODELS, *(VARIANTS if args.variants else ())]
    if args.cache and Path(args.cache).is_file():
        z = np.load(args.cache, allow_pickle=False)
        if all(f"t:{n}" in z for n in names):
            paths = [str(p) for p in z["paths"]]
            return {
                p: {n: (z[f"t:{n}"][i] if z["ok"][i] else None) for n in names} for i, p in enumerate(paths)
            }
    singles = [p for p in list_images(FACES) if p.parent.name not in ("group", "noface")]
    strangers = list_images(IMPOSTORS, recursive=False)
    t = time.perf_counter()
    rows = embed_all(singles, "largest", args.workers, args.detector, args.variants)
    rows += embed_all(strangers, "centre", args.workers, args.detector, args.variants)
    crops = list_images(DEMOGRAPHICS)
    rows += embed_all(crops, "largest", args.workers, args.detector, args.variants)
    print(f"detected and embedded {len(rows)} photos in {time.perf_counter() - t:.0f} s", flush=True)
    out = {r["path"]: {n: r.get(n) for n in names} for r in rows}
    if args.cache:
        paths = list(out)
        ok = np.array([out[p][MODELS[0]] is not None for p in paths])
        arrays = {
            f"t:{n}": np.stack(
                [out[p][n] if out[p][n] is not None else np.zeros(128, np.float32) for p in paths]
            )
            for n in names
        }
        np.savez(args.cache, paths=np.array(paths), ok=ok, **arrays)
    return out


def read_pairs() -> list[tuple[str, str, bool]]:
    with open(FACES / "pairs.tsv", newline="") as f:
        return [(r["path_a"], r["path_b"], r["same"] == "1") for r in csv.DictReader(f, delimiter="\t")]


def accuracy_rows(templates: dict[str, dict[str, Any]], names: list[str]) -> tuple[list[list], list[list]]:
    genuine = [(a, b) for a, b, same in read_pairs() if same]
    strangers = sorted(p for p in templates if Path(p).parent == IMPOSTORS)
    singles = sorted(p for p in templates if Path(p).parent.parent == FACES)
    rows, cal_rows = [], []
    for name in names:
        gen = np.array(
            [
                -float(np.linalg.norm(ta - tb))
                if (ta := templates[str(FACES / a)][name]) is not None
                and (tb := templates[str(FACES / b)][name]) is not None
                else -np.inf
                for a, b in genuine
            ]
        )
        ok = [p for p in strangers if templates[p][name] is not None]
        imp = -impostor_distances(np.stack([templates[p][name] for p in ok]), ok)
        e = metrics.eer(gen, imp)
        row: list[Any] = [name, f"{len(gen)} / {len(imp):,}", _pct(e["value"])]
        for target in TARGETS:
            r = metrics.fnmr_at_fmr(gen, imp, target)
            f = r["fnmr"]
            row.append(f"{_pct(f['value'])} [{_pct(f['ci95'][0])}, {_pct(f['ci95'][1])}] ({f['count']})")
        rows.append(row)
        model = name.split(":")[0].replace("sface", "sface-2021dec") if ":" in name else name
        cal = _calibration(model)
        if cal is None or ":" in name:
            continue
        have = [p for p in singles if templates[p][name] is not None]
        ids = [Path(p).parent.name for p in have]
        sims = np.asarray(
            cal.similarity(impostor_distances(np.stack([templates[p][name] for p in have]), ids))
        )
        for s in (80.0, 90.0):
            fm = metrics.fmr(sims, s)
            lo, hi = fm.ci or (0.0, 0.0)
            cal_rows.append(
                [name, f"{s:g}", f"{10 ** -((s - 50) / 10):.0e}", f"{fm.count} / {fm.trials}", f"{fm.value:.2e}",
                 f"[{lo:.1e}, {hi:.1e}]", f"{fm.trials * 10 ** -((s - 50) / 10):.1f}"]
            )  # fmt: skip
    return rows, cal_rows


def group_rows(templates: dict[str, dict[str, Any]]) -> tuple[list[list], list[str]]:
    """FMR at 80 and 90 within each race of faces_demographics, per model, with the max/min ratio."""
    from facewarden.evaluate import read_groups

    groups = read_groups(DEMOGRAPHICS / "MANIFEST.tsv", group_by="race")
    names = sorted(set(groups.values()))
    rows = []
    for model in MODELS:
        cal = _calibration(model)
        if cal is None:
            continue
        for s in (80.0, 90.0):
            rates = {}
            for g in names:
                paths = [str(DEMOGRAPHICS / p) for p, gg in groups.items() if gg == g]
                have = [templates[p][model] for p in paths if templates.get(p, {}).get(model) is not None]
                n = len(paths)
                sims = cal.similarity(impostor_distances(np.stack(have), [str(i) for i in range(len(have))]))
                # a pair with a missed face is a trial that never matches (as the report counts it)
                rates[g] = metrics.Rate(int((np.asarray(sims) >= s).sum()), n * (n - 1) // 2)
            diff = metrics.differential(rates)
            cells = [f"{r.count}/{r.trials} {_sci(r.value)}" for r in rates.values()]
            ratio = f"{diff['ratio']:.1f}" if diff.get("ratio") else "unbounded (a group has 0)"
            rows.append([model, f"{s:g}", *cells, ratio])
    return rows, names


def _sci(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def _calibration(model: str) -> Any:
    try:
        return Engine(Settings.from_env(), model=model).calibration
    except Exception:  # noqa: BLE001 - a model not yet calibrated has no check to print
        return None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def timing(args: argparse.Namespace) -> list[list]:
    """ms per face for alignment + network, one thread, models alternated in one loop."""
    settings = Settings.from_env(detector=args.detector)
    engines = {m: Engine(settings, model=m) for m in MODELS}
    photos = [p for p in list_images(FACES) if p.parent.name not in ("group", "noface")][: args.timing_photos]
    work = []
    for p in photos:
        rgb = images.read(p)
        faces = engines[MODELS[0]].detect(rgb)
        if faces:
            work.append((rgb, choose_face(faces, "largest", (rgb.shape[1], rgb.shape[0]))))
    extra: dict[str, Any] = {}
    if args.variants:
        import onnxruntime as ort

        from facewarden.engine import sface
        from facewarden.engine.onnx_runtime import providers, session_options

        q = sface.converted_path(settings.model_cache_dir, dequantise=False)
        sess = ort.InferenceSession(str(q), session_options(), providers=providers())
        extra["sface int8 copy"] = lambda chips: sess.run(
            None, {"data": chips.transpose(0, 3, 1, 2).astype(np.float32)}
        )
    for e in engines.values():  # load and warm up
        e.embed(work[0][0], [work[0][1]])
    chips = {m: np.concatenate([e.chips(rgb, [f]) for rgb, f in work]) for m, e in engines.items()}
    batch = {m: np.concatenate([c] * max(1, -(-32 // len(c))))[:32] for m, c in chips.items()}
    per1: dict[str, list[float]] = {}
    per32: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for m, e in engines.items():
            t = time.perf_counter()
            for rgb, f in work:
                e.embed(rgb, [f])
            per1.setdefault(m, []).append((time.perf_counter() - t) * 1000 / len(work))
            t = time.perf_counter()
            e.embedder.embed(batch[m])
            per32.setdefault(m, []).append((time.perf_counter() - t) * 1000 / 32)
        for name, fn in extra.items():
            fn(batch["sface-2021dec"][:1])
            t = time.perf_counter()
            for c in chips["sface-2021dec"]:
                fn(c[None])
            per1.setdefault(name, []).append((time.perf_counter() - t) * 1000 / len(work))
            t = time.perf_counter()
            fn(batch["sface-2021dec"])
            per32.setdefault(name, []).append((time.perf_counter() - t) * 1000 / 32)
    base1, base32 = statistics.median(per1[MODELS[0]]), statistics.median(per32[MODELS[0]])
    return [
        [m, f"{statistics.median(per1[m]):.1f}", f"{statistics.median(per1[m]) / base1:.2f}",
         f"{statistics.median(per32[m]):.1f}", f"{statistics.median(per32[m]) / base32:.2f}"]
        for m in per1
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--detector", default="hog")
    ap.add_argument("--cache", default=None, help="npz file keeping the templates between runs")
    ap.add_argument("--variants", action="store_true", help="other SFace alignments and its int8 copy")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timing-photos", type=int, default=24)
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args()
    if not (FACES / "pairs.tsv").is_file() or not IMPOSTORS.is_dir():
        raise SystemExit(f"bench data missing: expected {FACES} and {IMPOSTORS}")
    if not args.no_accuracy:
        templates = load_or_embed(args)
        names = [*MODELS, *(VARIANTS if args.variants else ())]
        rows, cal_rows = accuracy_rows(templates, names)
        heads = [
            "model",
            "genuine / impostor pairs",
            "EER",
            *(f"FNMR at FMR {t:.0e} [95% CI] (misses)" for t in TARGETS),
        ]
        print(table(heads, rows))
        print("\nCalibration on data it was not built from (cross-identity pairs of shared/faces):")
        print(
            table(
                ["model", "similarity", "claimed FMR", "false matches", "observed FMR", "95% CI", "expected"],
                cal_rows,
            )
        )
        grows, names = group_rows(templates)
        print("\nFalse matches within each race of shared/faces_demographics (one photo per person):")
        print(table(["model", "similarity", *names, "max/min"], grows))
    print(
        f"\nEmbedding cost per face (alignment + network; {args.timing_photos} photos; medians of {args.repeats}):"
    )
    print(table(["model", "ms/face batch 1", "ratio", "ms/face batch 32", "ratio"], timing(args)))


if __name__ == "__main__":
    main()

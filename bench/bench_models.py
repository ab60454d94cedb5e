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

``--variants`` adds SFace rows for other alignments of the same face, and times the int8 copy of the
SFace graph against the float32 one. SFace aligns on points placed from dlib's 5-point model on the
detector's box (eye centres from its eye corners, the nose tip estimated above its nose base, the
mouth corners placed by the fit). With a detector that has its own five landmarks (CenterFace, the
default) the variants align on those instead: as the detector gives them (OpenCV's pixel centres),
and half a pixel either side (``+0.5px``: taken as the network gives them, pixel corners at whole
coordinates; ``-0.5px``: shifted twice), which shows whether the convention is right. With dlib's
detectors the variants are the nose base taken for the nose tip and PIL's pixel-corner convention
instead of OpenCV's pixel centres. ``--convention N`` first
checks the pixel convention of the detector's landmarks on N photos of ../shared/faces_impostors
(flipped and rescaled copies; see :func:`convention_check`). ``--cache FILE`` keeps the templates
between runs. Not a test.
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
#: SFace variants (see the docstring): with a detector that has landmarks, and with dlib's detectors
VARIANTS_LANDMARKS = (
    "sface:detector-landmarks",
    "sface:detector-landmarks+0.5px",
    "sface:detector-landmarks-0.5px",
)
VARIANTS_DLIB = ("sface:nose-base", "sface:pil-corners")
TARGETS = (1e-3, 1e-4, 1e-5)

_engines: dict[str, Engine] = {}


def variant_names(detector: str) -> tuple[str, ...]:
    from facewarden.engine import detectors

    return VARIANTS_LANDMARKS if detectors.get(detector).landmarks else VARIANTS_DLIB


def _init(detector: str, variants: bool) -> None:
    settings = Settings.from_env(detector=detector)
    for m in MODELS:
        _engines[m] = Engine(settings, model=m)
    _engines["_variants"] = variant_names(detector) if variants else ()  # type: ignore[assignment]


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
        if _engines["_variants"] == VARIANTS_LANDMARKS:  # the detector's own landmarks, same box
            own = next(d.landmarks for d in first.detector()[1].detect(rgb) if d.box == face.box)
            pts = {
                "sface:detector-landmarks": own,
                "sface:detector-landmarks+0.5px": own + 0.5,
                "sface:detector-landmarks-0.5px": own - 0.5,
            }
            chips = {n: geometry.align(rgb, [p], geometry.ARCFACE_112, 112) for n, p in pts.items()}
        else:
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
    names = [*MODELS, *(variant_names(args.detector) if args.variants else ())]
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
        if name in MODELS:
            cal_rows += calibration_rows(name, templates, singles, -imp)
    return rows, cal_rows


def calibration_rows(
    model: str, templates: dict[str, dict[str, Any]], singles: list[str], impostor: np.ndarray
) -> list[list]:
    """The shipped table and one rebuilt from this run's impostor pairs (as ``facewarden calibrate``
    builds it from the same photos), each checked on the impostor pairs themselves, on the
    cross-identity pairs of shared/faces (data neither was built from) and on pairs.tsv at 80."""
    from facewarden.engine.calibration import Calibration

    shipped = _calibration(model)
    tables = {"rebuilt": Calibration.build(impostor, model, {"folder": str(IMPOSTORS)})}
    if shipped is not None:
        tables = {"shipped": shipped, **tables}
    have = [p for p in singles if templates[p][model] is not None]
    cross = impostor_distances(
        np.stack([templates[p][model] for p in have]), [Path(p).parent.name for p in have]
    )
    pairs = read_pairs()
    out = []
    for label, cal in tables.items():
        imp_sims, cross_sims = np.asarray(cal.similarity(impostor)), np.asarray(cal.similarity(cross))
        pair_sims = np.array(
            [
                cal.similarity(float(np.linalg.norm(ta - tb)))
                if (ta := templates[str(FACES / a)][model]) is not None
                and (tb := templates[str(FACES / b)][model]) is not None
                else 0.0
                for a, b, _ in pairs
            ]
        )
        same = np.array([s for _, _, s in pairs])
        fnm, fm = int((pair_sims[same] < 80).sum()), int((pair_sims[~same] >= 80).sum())
        acc = 1 - (fnm + fm) / len(pairs)
        for s in (80.0, 90.0):
            claimed = 10 ** -((s - 50) / 10)
            on_imp = metrics.fmr(imp_sims, s)
            fmx = metrics.fmr(cross_sims, s)
            lo, hi = fmx.ci or (0.0, 0.0)
            out.append(
                [model, label, f"{s:g}", f"{cal.distance_for(s):.4f}", f"{claimed:.0e}",
                 f"{on_imp.value:.2e} ({on_imp.count})", f"{fmx.count} / {fmx.trials}", f"{fmx.value:.2e}",
                 f"[{lo:.1e}, {hi:.1e}]", f"{fmx.trials * claimed:.1f}",
                 f"{100 * acc:.2f}%, {fnm}/{int(same.sum())}, {fm}/{int((~same).sum())}" if s == 80 else ""]
            )  # fmt: skip
    return out


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


def convention_check(n: int, sizes: tuple[int, ...] = (96, 128, 192, 256)) -> list[list]:
    """The pixel convention of CenterFace's landmarks as the network gives them (``detect_raw``), on
    ``n`` LFW photos of ../shared/faces_impostors resized to squares whose sides are multiples of 32
    (no padding, so a mirror image is the network's mirror input), the face nearest the centre.

    * mirror: a landmark at x and its mirror twin at x' add up to the width W if pixel corners are at
      whole coordinates, to W - 1 if pixel centres are: the row gives ``(x + x' - W) / 2``, the
      constant to subtract to reach the corner convention (0: corners; -0.5: centres);
    * rescale: the same photo at sides a and b; if landmarks are ``side * u + c`` (u in 0..1 of the
      photo), the row gives c, again 0 for corners and -0.5 for centres.
    """
    from PIL import Image

    from facewarden.engine.centerface import CenterFaceDetector

    det = CenterFaceDetector(threads=1)
    paths = list_images(IMPOSTORS, recursive=False)
    paths = paths[:: max(1, len(paths) // n)][:n]
    mirror: dict[int, list[float]] = {s: [] for s in sizes}
    at: dict[int, list[np.ndarray | None]] = {s: [] for s in sizes}
    for p in paths:
        rgb = images.read(p)
        for side in sizes:
            img = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR))
            a, b = det.detect_raw(img), det.detect_raw(np.ascontiguousarray(img[:, ::-1]))
            centre = np.array([side / 2, side / 2])
            if not a or not b:
                at[side].append(None)
                continue
            la = min(a, key=lambda d: float(np.sum((d.landmarks[2] - centre) ** 2))).landmarks
            lb = min(b, key=lambda d: float(np.sum((d.landmarks[2] - centre) ** 2))).landmarks[
                [1, 0, 2, 4, 3]
            ]
            at[side].append(la)
            mirror[side] += list((la[:, 0] + lb[:, 0] - side) / 2)
    rows = []
    for side in sizes:
        v = np.asarray(mirror[side])
        rows.append(
            [f"mirror, {side} px", len(v) // 5, f"{v.mean():+.3f}", f"{v.std() / np.sqrt(len(v)):.3f}"]
        )
    for i, a in enumerate(sizes):
        for b in sizes[i + 1 :]:
            est = [
                (pa * b - pb * a) / (b - a)  # c from pa = a*u + c, pb = b*u + c
                for pa, pb in zip(at[a], at[b])
                if pa is not None and pb is not None
            ]
            v = np.asarray(est).reshape(-1)
            rows.append(
                [f"rescale {a} / {b} px", len(est), f"{v.mean():+.3f}", f"{v.std() / np.sqrt(len(v)):.3f}"]
            )
    return rows


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
    ap.add_argument("--detector", default=Settings.from_env().detector)
    ap.add_argument("--cache", default=None, help="npz file keeping the templates between runs")
    ap.add_argument("--variants", action="store_true", help="other SFace alignments and its int8 copy")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timing-photos", type=int, default=24)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument(
        "--convention", type=int, default=0, metavar="N", help="check CenterFace's pixel convention"
    )
    args = ap.parse_args()
    if args.convention:
        print(f"CenterFace's landmark convention on {args.convention} LFW photos (0: pixel corners at whole")
        print("coordinates; -0.5: pixel centres), network pixels:")
        print(table(["test", "faces", "constant", "standard error"], convention_check(args.convention)))
    if not (FACES / "pairs.tsv").is_file() or not IMPOSTORS.is_dir():
        raise SystemExit(f"bench data missing: expected {FACES} and {IMPOSTORS}")
    if not args.no_accuracy:
        templates = load_or_embed(args)
        names = [*MODELS, *(variant_names(args.detector) if args.variants else ())]
        rows, cal_rows = accuracy_rows(templates, names)
        heads = [
            "model",
            "genuine / impostor pairs",
            "EER",
            *(f"FNMR at FMR {t:.0e} [95% CI] (misses)" for t in TARGETS),
        ]
        print(table(heads, rows))
        print(
            "\nCalibration: the shipped table and one rebuilt from this run's impostor pairs, on those pairs and"
            "\non data neither was built from (cross-identity pairs of shared/faces; pairs.tsv at 80):"
        )
        print(
            table(
                ["model", "table", "similarity", "distance", "claimed FMR", "FMR on impostor set",
                 "shared/faces false matches", "observed FMR", "95% CI", "expected",
                 "pairs.tsv: accuracy, FNMR, FMR"],
                cal_rows,
            )
        )  # fmt: skip
        grows, names = group_rows(templates)
        print("\nFalse matches within each race of shared/faces_demographics (one photo per person):")
        print(table(["model", "similarity", *names, "max/min"], grows))
    print(
        f"\nEmbedding cost per face (alignment + network; {args.timing_photos} photos; medians of {args.repeats}):"
    )
    print(table(["model", "ms/face batch 1", "ratio", "ms/face batch 32", "ratio"], timing(args)))


if __name__ == "__main__":
    main()

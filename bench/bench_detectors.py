"""Face detectors side by side (issue 15): misses per group, false faces, group photos, small
photos and speed, for every registered detector and for face_recognition's default (dlib HOG,
upsampled once) on the same images, in one run. Not a test.

Sets (all from ../shared):
  faces_demographics  990 UTKFace crops (200x200), one face each, labelled by race: misses per group
                      with 95% Wilson intervals (the target: <= 0.5% overall, <= 1% in the worst group)
  noface              6 images with no human face (dog, cat, horses, blank): every face is false
  group               15 group photos: faces found against the manifest's count, per photo
  single              123 single-person photos of shared/faces: photos where no face is found
  orl-size            the single-person photos cropped around the face (half the frame's height, as in
                      ORL and Yale) and reduced to 92x112 greyscale
Speed: median ms per demographics crop, and frames/s at 1280x720 (a group photo letterboxed), on one
core (ONNX Runtime with one thread).

    python bench/bench_detectors.py [--detectors centerface,hog,cnn,face_recognition] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import FACES, table, timed

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine
from facewarden.evaluate.detection import Item, build_report, ratio_text

DEMOGRAPHICS = FACES.parent / "faces_demographics"


def _manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def counter(name: str, engine: Engine):
    """image -> number of faces, for a registered detector or the face_recognition peer."""
    if name == "face_recognition":
        import face_recognition

        return lambda img: len(face_recognition.face_locations(img))
    engine.detector(name)  # fail early on an unknown name
    return lambda img: len(engine.detector(name)[1].detect(img))


def orl_size(img: np.ndarray, box: Any, face_fraction: float = 0.5) -> np.ndarray:
    """A 92x112 greyscale photo around ``box`` (the face half the frame's height), as ORL's and Yale's."""
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    h = box.height / face_fraction
    w = h * 92 / 112
    crop = (
        Image.fromarray(img)
        .convert("L")
        .crop((int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2)))
    )
    return np.repeat(np.asarray(crop.resize((92, 112), Image.Resampling.BOX))[:, :, None], 3, axis=2)


def letterbox_720p(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(1280 / w, 720 / h)
    small = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR))
    out = np.zeros((720, 1280, 3), np.uint8)
    y, x = (720 - small.shape[0]) // 2, (1280 - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default="centerface,hog,cnn,face_recognition")
    ap.add_argument("--limit", type=int, default=0, help="at most N demographics crops (0: all)")
    args = ap.parse_args()
    engine = Engine(Settings(data_dir=Path("/tmp") / "facewarden-bench-detectors", onnx_threads=1))
    names = [n.strip() for n in args.detectors.split(",") if n.strip()]

    demo = _manifest(DEMOGRAPHICS / "MANIFEST.tsv")
    if args.limit:
        demo = demo[:: max(1, len(demo) // args.limit)][: args.limit]
    demo_imgs = [images.read(DEMOGRAPHICS / r["path"]) for r in demo]
    orl = [
        np.repeat(
            np.asarray(Image.fromarray(im).convert("L").resize((92, 112), Image.Resampling.BOX))[:, :, None],
            3,
            2,
        )
        for im in demo_imgs[::5]
    ]
    faces_rows = _manifest(FACES / "MANIFEST.tsv")
    group = [r for r in faces_rows if r["path"].startswith("group/")]
    noface = [r for r in faces_rows if r["path"].startswith("noface/")]
    single = [r for r in faces_rows if not r["path"].startswith(("group/", "noface/"))]
    read = {r["path"]: images.read(FACES / r["path"]) for r in group + noface + single}
    frame = letterbox_720p(read["group/faceapi_bbt4.jpg"])
    hog = engine.detector("hog")[1]
    orl = [
        orl_size(read[r["path"]], max(hog.detect(read[r["path"]]), key=lambda d: d.box.area).box)
        for r in single
    ]

    summary, group_table, per_group = [], {}, {}
    for name in names:
        count = counter(name, engine)
        count(demo_imgs[0])  # load the model before timing
        times, found = [], []
        for im in demo_imgs:
            t = time.perf_counter()
            found.append(count(im))
            times.append(time.perf_counter() - t)
        rep = build_report([Item(r["path"], r["race"], 1) for r in demo], [(n, "") for n in found], "race")
        per_group[name] = rep
        false_noface = sum(count(read[r["path"]]) for r in noface)
        gcounts = {r["path"]: count(read[r["path"]]) for r in group}
        group_table[name] = gcounts
        group_exact = sum(gcounts[r["path"]] == int(r["number_of_faces_if_known"]) for r in group)
        single_missed = sum(count(read[r["path"]]) == 0 for r in single)
        orl_missed = sum(count(im) == 0 for im in orl)
        fps = 1.0 / timed(lambda c=count: c(frame), repeats=5, warmup=1)
        worst = rep["differential"]["max"]
        summary.append(
            [
                name,
                f"{rep['missed']}/{rep['faces']} ({100 * rep['miss_rate']['value']:.2f}%)",
                f"{worst['group']} {100 * worst['value']:.2f}%",
                ratio_text(rep).split(" (")[0],
                f"{false_noface}",
                f"{group_exact}/{len(group)}",
                f"{single_missed}/{len(single)}",
                f"{orl_missed}/{len(orl)}",
                f"{1000 * statistics.median(times):.1f}",
                f"{fps:.1f}",
            ]
        )
        print(f"{name}: done", flush=True)

    print(f"\nDetectors on ../shared ({len(demo)} demographics crops); one core, medians\n")
    print(
        table(
            ["detector", "missed (demographics)", "worst group", "worst/best", "false faces (noface)",
             "group photos exact", "single photos missed", "ORL-size missed", "ms/crop", "fps 1280x720"],
            summary,
        )
    )  # fmt: skip
    races = sorted({r["race"] for r in demo})
    print("\nMissed faces per group (count / faces, 95% Wilson interval)\n")
    rows = []
    for name in names:
        g = per_group[name]["groups"]
        rows.append(
            [name]
            + [
                f"{g[r]['missed']}/{g[r]['faces']} [{100 * g[r]['miss_rate']['ci95'][0]:.1f}-"
                f"{100 * g[r]['miss_rate']['ci95'][1]:.1f}%]"
                for r in races
            ]
        )
    print(table(["detector"] + races, rows))
    print("\nGroup photos: faces found (manifest count)\n")
    print(
        table(
            ["photo", "known"] + names,
            [
                [r["path"].split("/")[1], r["number_of_faces_if_known"]]
                + [group_table[n][r["path"]] for n in names]
                for r in group
            ],
        )
    )


if __name__ == "__main__":
    main()

"""Video redaction, side by side with ``deface`` (CenterFace, the widely used anonymiser) on the same
generated 720p clips, on 2 cores.

For each clip (built here from ../shared/faces and ../shared/faces_demographics crops: people who
walk across and cross, turn their heads and walk away, and a crowd, with an audio track), both
tools redact the video in a process of their own, pinned to 2 cores, and the bench prints:

* **unredacted face-frames**, by the one measure the tests use (facewarden/redact/measure.py):
  for every frame and every true face box, whether the output still shows the face's detail;
* **wall time per video second** (whole process, model loading included), the median of
  ``--repeats`` runs taken in turn (facewarden, deface, facewarden, ...), and the ratio of the
  medians; and the **CPU time** (user + system) per video second, median too, which a machine
  shared with other work disturbs less than the wall time.

``deface`` is installed only for the bench, in a virtual environment of its own
(``bench/.deface-venv``, created on first use), never as a dependency of facewarden. It is installed
as ``pip install deface`` installs it, so it runs CenterFace on OpenCV's DNN module; with ONNX
Runtime added it was slower on this machine (19.9 s against 11.0 s for a 3 s 480x270 clip).

Run: ``python bench/bench_redaction.py [--seconds 8] [--repeats 3] [--clips street,turns,crowd]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from common import table

from facewarden.engine.faces import Box
from facewarden.media import images, video
from facewarden.redact import measure
from tests.videos import Actor, Scene, face_crop, linear

SHARED = ROOT.parent / "shared"
DEFACE = ("deface==1.5.0",)
DEFACE_VENV = ROOT / "bench" / ".deface-venv"
WIDTH, HEIGHT, FPS = 1280, 720, 25


# ---- the clips ------------------------------------------------------------------------------------
def people(engine: object) -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    """Face crops (face 100 px wide) and their boxes: one person of each group of
    faces_demographics, then identities of faces/."""
    sources = [sorted(d.iterdir())[3] for d in sorted((SHARED / "faces_demographics" / "utkface").iterdir())]
    for d in sorted((SHARED / "faces").iterdir()):
        if d.is_dir() and d.name not in ("group", "noface"):
            sources.append(sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0])
    out = []
    for path in sources:
        pixels = images.read(path)
        faces = engine.detect(pixels)  # type: ignore[attr-defined]
        if not faces:
            continue
        b = max(faces, key=lambda f: f.box.area).box
        crop, face = face_crop(pixels, (b.left, b.top, b.right, b.bottom), margin=0.6, size=100)
        out.append((path.stem, crop, face))
    return out


def clip_scenes(cast: list, seconds: float) -> dict[str, Scene]:
    rng = np.random.default_rng(3)
    pick = iter(cast * 4)

    def actor(start: float, end: float, path, turn=None) -> Actor:  # type: ignore[no-untyped-def]
        name, crop, face = next(pick)
        return Actor(f"{name}-{start:.1f}", crop, face, start, end, path, turn)

    def turning(roll: float, squeeze: float, cycles: float):  # type: ignore[no-untyped-def]
        return lambda u: (
            roll * math.sin(2 * math.pi * cycles * u),
            1 - squeeze * abs(math.sin(math.pi * cycles * u)),
        )

    s = seconds
    street = [
        actor(0, s, linear(-80, 300, 1360, 320, 1.0)),
        actor(0, s, linear(1360, 330, -80, 300, 0.9)),
        actor(0.5, s, linear(200, 560, 1100, 540, 0.7)),
        actor(1.0, s - 1, linear(1300, 560, 100, 580, 0.8)),
        actor(0, s, linear(640, 150, 700, 160, 1.2, 0.6)),
        actor(s / 3, s, linear(-60, 120, 1340, 180, 0.6)),
    ]
    turns = [
        actor(0, s, linear(200, 250, 260, 260, 1.1), turning(40, 0.45, 1.5)),
        actor(0, s, linear(640, 250, 600, 300, 1.4, 0.5), turning(-35, 0.3, 1)),
        actor(0, s, linear(1050, 250, 1000, 240, 0.6, 1.3), turning(30, 0.5, 2)),
        actor(0, s, linear(300, 560, 1000, 560, 0.8), turning(45, 0.2, 1)),
        actor(1, s, linear(1000, 580, 200, 560, 0.9), turning(-25, 0.45, 3)),
    ]
    crowd = []
    for row in range(3):
        for col in range(5):
            x, y = 140 + col * 250 + rng.uniform(-30, 30), 140 + row * 220 + rng.uniform(-20, 20)
            crowd.append(actor(0, s, linear(x, y, x + rng.uniform(-40, 40), y + rng.uniform(-20, 20), 0.5)))
    crowd.append(actor(1, s - 1, linear(-50, 360, 1330, 380, 0.7)))
    return {
        name: Scene(width=WIDTH, height=HEIGHT, fps=FPS, seconds=seconds, actors=actors)
        for name, actors in (("street", street), ("turns", turns), ("crowd", crowd))
    }


# ---- the two redactors ------------------------------------------------------------------------------
def two_cores() -> list[str]:
    cpus = sorted(os.sched_getaffinity(0))
    return (
        ["taskset", "-c", ",".join(map(str, cpus[:2]))] if len(cpus) > 2 and shutil.which("taskset") else []
    )


def timed(cmd: list[str], quiet: bool = False) -> tuple[float, float]:
    """(wall s, CPU s of the process and its children) of one run of ``cmd`` on 2 cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(two_cores() + cmd, check=True, stdout=out, stderr=out)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_facewarden(src: Path, dst: Path) -> tuple[float, float]:
    return timed([sys.executable, __file__, "--facewarden-only", str(src), str(dst)], quiet=True)


def run_deface(src: Path, dst: Path) -> tuple[float, float]:
    return timed([str(DEFACE_VENV / "bin" / "deface"), str(src), "-o", str(dst), "--keep-audio"], quiet=True)


def ensure_deface() -> None:
    if (DEFACE_VENV / "bin" / "deface").exists():
        return
    print(f"installing the peer into {DEFACE_VENV} (bench only): {' '.join(DEFACE)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DEFACE_VENV)], check=True)
    subprocess.run([str(DEFACE_VENV / "bin" / "pip"), "install", "--quiet", *DEFACE], check=True)


def unredacted(src: Path, dst: Path, truth: list[dict]) -> tuple[int, int]:
    from PIL import Image

    before = [f.image for f in video.read_frames(src, None)]
    after = [f.image for f in video.read_frames(dst, None)]
    h, w = before[0].shape[:2]
    after = [
        a if a.shape == before[0].shape else np.asarray(Image.fromarray(a).resize((w, h))) for a in after
    ]
    if len(after) != len(before):
        print(f"  note: {dst.name} has {len(after)} frames, the input {len(before)}", flush=True)
    n = min(len(before), len(after))
    boxes = [[Box(*b) for b in d.values()] for d in truth[:n]]
    return measure.count_unredacted(before[:n], after[:n], boxes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clips", default="street,turns,crowd")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each tool per clip (medians reported)")
    ap.add_argument("--skip-peer", action="store_true", help="facewarden only")
    ap.add_argument("--facewarden-only", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    from facewarden.config import Settings
    from facewarden.engine import Engine

    if args.facewarden_only:  # the child process timed by run_facewarden
        from facewarden.redact.video import redact_video

        summary = redact_video(args.facewarden_only[0], args.facewarden_only[1], Engine(Settings.from_env()))
        print(json.dumps({"tracks": summary.tracks, "frames_analysed": summary.frames_analysed}))
        return
    if not args.skip_peer:
        ensure_deface()
    cast = people(Engine(Settings.from_env()))
    rows = []
    sec = args.seconds
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="facewarden-bench-redact-") as tmp:
        scenes = clip_scenes(cast, sec)
        for name in args.clips.split(","):
            src = Path(tmp) / f"{name}.mp4"
            truth = scenes[name].write(src, whole=True)
            ours_out, theirs_out = Path(tmp) / f"{name}.facewarden.mp4", Path(tmp) / f"{name}.deface.mp4"
            ours, theirs = [], []
            for i in range(args.repeats):  # in turn, so that both see the machine's ups and downs
                ours.append(run_facewarden(src, ours_out))
                if not args.skip_peer:
                    theirs.append(run_deface(src, theirs_out))
                print(f"  {name} run {i + 1}: facewarden {ours[-1][0]:.1f} s"
                      + (f", deface {theirs[-1][0]:.1f} s" if theirs else ""), flush=True)  # fmt: skip
            bad, total = unredacted(src, ours_out, truth)
            wall, cpu = med(w for w, _ in ours), med(c for _, c in ours)
            row = [name, sec, total, bad, wall / sec, cpu / sec]
            if not args.skip_peer:
                pbad, _ = unredacted(src, theirs_out, truth)
                pwall, pcpu = med(w for w, _ in theirs), med(c for _, c in theirs)
                row += [pbad, pwall / sec, pcpu / sec, pwall / wall]
            rows.append(row)
    headers = [
        "clip",
        "video s",
        "face-frames",
        "unredacted (facewarden)",
        "wall s per video s",
        "CPU s per video s",
    ]
    if not args.skip_peer:
        headers += [
            "unredacted (deface)",
            "wall s per video s (deface)",
            "CPU s per video s (deface)",
            "faster than deface",
        ]
    cores = min(2, len(os.sched_getaffinity(0)))
    print(f"\n{WIDTH}x{HEIGHT} at {FPS} fps, {cores} cores, medians of {args.repeats} runs per clip and tool")
    print(table(headers, rows))


if __name__ == "__main__":
    main()

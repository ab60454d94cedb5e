"""Detection + embedding per photo: facewarden against the face_recognition library, same photos.

Both run on one process, one photo at a time, on the photos of ../shared/faces (single-person and
group photos). face_recognition is run at its defaults (HOG, one upsampling, 5-point "small"
landmarks, one jitter); facewarden at its defaults (HOG with size-dependent scale, default runtime).
Each stage is timed apart, by photo size, so the table shows where the time goes: decode, detect
(facewarden's includes its landmarks and quality measures) and embed (face_recognition's includes
its landmarks). The last line is Amdahl's bound: the ratio facewarden would reach if
everything but its face detection cost nothing. Not a test.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import numpy as np
from PIL import Image
from common import photos, table

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine

BANDS = ((0, 1000, "< 1000 px"), (1000, 2000, "1000-1999 px"), (2000, 10**9, ">= 2000 px"))
STAGES = ("decode", "detect", "embed")


def _band(path) -> str:
    with Image.open(path) as im:
        w, h = im.size
    return next(name for lo, hi, name in BANDS if lo <= max(w, h) < hi)


def main() -> None:
    try:
        import face_recognition
    except ImportError:
        raise SystemExit("install the peer first: pip install --no-deps face_recognition==1.3.0") from None
    paths = photos()
    engine = Engine(Settings.from_env())
    engine.analyse(images.read(paths[0]))  # load models outside the timings
    face_recognition.face_encodings(face_recognition.load_image_file(str(paths[0])))
    ours: dict[str, list[list[float]]] = defaultdict(list)  # band -> per photo [decode, detect, embed]
    peer: dict[str, list[list[float]]] = defaultdict(list)
    faces_ours = faces_peer = 0
    for path in paths:
        band = _band(path)
        t0 = time.perf_counter()
        img = images.read(path)
        t1 = time.perf_counter()
        faces = engine.detect(img)
        t2 = time.perf_counter()
        engine.embed(img, faces)
        t3 = time.perf_counter()
        ours[band].append([t1 - t0, t2 - t1, t3 - t2])
        faces_ours += len(faces)
        t0 = time.perf_counter()
        img = face_recognition.load_image_file(str(path))
        t1 = time.perf_counter()
        locations = face_recognition.face_locations(img)
        t2 = time.perf_counter()
        faces_peer += len(face_recognition.face_encodings(img, locations))
        t3 = time.perf_counter()
        peer[band].append([t1 - t0, t2 - t1, t3 - t2])

    def total(runs: dict[str, list[list[float]]], band: str | None = None) -> np.ndarray:
        rows = [r for b, rs in runs.items() if band in (None, b) for r in rs]
        return np.sum(rows, axis=0)

    rows = []
    for name in [b[2] for b in BANDS if b[2] in ours] + [None]:
        o, p = total(ours, name), total(peer, name)
        n = sum(len(v) for b, v in ours.items() if name in (None, b))
        rows.append(
            [name or "all", n]
            + [f"{o[i]:.1f} / {p[i]:.1f}" for i in range(len(STAGES))]
            + [f"{p.sum() / o.sum():.2f}x"]
        )
    print(f"{len(paths)} photos of ../shared/faces, one process, seconds facewarden / face_recognition")
    print(table(["longer side", "photos", *STAGES, "ratio"], rows))
    every_o = [sum(r) for rs in ours.values() for r in rs]
    every_p = [sum(r) for rs in peer.values() for r in rs]
    print(f"faces found: facewarden {faces_ours}, face_recognition {faces_peer}")
    print(f"ratio of median ms/photo: {statistics.median(every_p) / statistics.median(every_o):.2f}x")
    o, p = total(ours), total(peer)
    print(
        f"share of time in face detection: facewarden {o[1] / o.sum():.0%}, face_recognition {p[1] / p.sum():.0%}; "
        f"bound if all but facewarden's detection were free: {p.sum() / o[1]:.2f}x"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

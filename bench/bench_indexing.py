"""Folder indexing on 2 cores: `facewarden index` against the face_recognition library.

Both index the same photos of ../shared/faces (single-person and group photos) using every core:
facewarden through its indexer (worker processes detect and embed, the parent writes through the
service: policy, store, audit), face_recognition through a process pool running its defaults per
photo (load_image_file, face_locations, face_encodings), as its own `face_recognition --cpus`
does. Best of three runs each, in the same process, then the ratio. Finally the templates are
compared on the same face boxes: facewarden's (ONNX Runtime) and face_recognition's (dlib),
both L2-normalised. Not a test.

    python bench/bench_indexing.py                      # both at their defaults, every photo
    python bench/bench_indexing.py --lfw 300            # 300 LFW-size photos (250x250) of
                                                        # ../shared/faces_impostors instead
    python bench/bench_indexing.py --detector hog       # facewarden on dlib's HOG too
    python bench/bench_indexing.py --detector cnn       # dlib's CNN detector on both (ONNX Runtime in
                                                        # facewarden), photos up to --max-side 300 px

The peer runs its default HOG detector, or its CNN detector when facewarden runs ``cnn``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import FACES, photos, table

from facewarden.media import images
from facewarden.config import Settings
from facewarden.engine import Engine
from facewarden.service.bulk import index_paths
from facewarden.service import Service

WORKERS = os.cpu_count() or 2


def _peer_one(path: str, model: str = "hog") -> int:
    import face_recognition

    img = face_recognition.load_image_file(path)
    return len(face_recognition.face_encodings(img, face_recognition.face_locations(img, model=model)))


def peer_run(paths: list[str], detector: str = "hog") -> tuple[float, int]:
    t = time.perf_counter()
    with ProcessPoolExecutor(WORKERS) as pool:
        faces = sum(pool.map(_peer_one, paths, [detector] * len(paths), chunksize=4))
    return time.perf_counter() - t, faces


def ours_run(paths: list[str], detector: str = "hog") -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        svc = Service(Settings(data_dir=Path(d), detector=detector))
        owner, _ = svc.init_owner("bench", "individual", purpose="photo_organisation")
        svc.call("CreateCollection", {"CollectionId": "bench", "ConsentMode": "household"}, owner)
        t = time.perf_counter()
        summary = index_paths(svc, paths, "bench", workers=WORKERS, progress=False, principal=owner)
        elapsed = time.perf_counter() - t
        svc.close()
    return elapsed, summary["faces_indexed"] + summary.get("faces_unindexed", 0)


def descriptor_agreement(paths: list[str], detector: str = "hog") -> tuple[int, float]:
    """Max abs difference of normalised templates on facewarden's boxes, over every face."""
    import face_recognition

    engine = Engine(Settings(detector=detector))
    worst, n = 0.0, 0
    for p in paths:
        img = images.read(p)
        faces = engine.detect(img)
        if not faces:
            continue
        ours = engine.embed(img, faces)
        boxes = [
            (int(round(b.top)), int(round(b.right)) - 1, int(round(b.bottom)) - 1, int(round(b.left)))
            for b in (f.box for f in faces)
        ]
        theirs = np.asarray(face_recognition.face_encodings(img, boxes))
        theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
        worst = max(worst, float(np.abs(ours - theirs).max()))
        n += len(faces)
    return n, worst


def main() -> None:
    try:
        import face_recognition  # noqa: F401
    except ImportError:
        raise SystemExit("install the peer first: pip install --no-deps face_recognition==1.3.0") from None
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=Settings().detector, help="a registered detector")
    ap.add_argument("--max-side", type=int, default=None, help="only photos up to this size (cnn: 300)")
    ap.add_argument("--lfw", type=int, default=0, help="N LFW-size photos of ../shared/faces_impostors")
    args = ap.parse_args()
    peer_model = "cnn" if args.detector == "cnn" else "hog"
    max_side = args.max_side or (300 if args.detector == "cnn" else 10**9)
    if args.lfw:
        lfw = sorted((FACES.parent / "faces_impostors").glob("*.jpg"))
        paths = [str(p) for p in lfw[:: max(1, len(lfw) // args.lfw)][: args.lfw]]
    else:
        paths = [str(p) for p in photos() if max(Image.open(p).size) <= max_side]
    ours_t, peer_t = [], []
    for _ in range(3):
        t, ours_faces = ours_run(paths, args.detector)
        ours_t.append(t)
        t, peer_faces = peer_run(paths, peer_model)
        peer_t.append(t)
    best_ours, best_peer = min(ours_t), min(peer_t)
    print(
        f"{len(paths)} photos of {'../shared/faces_impostors (LFW)' if args.lfw else '../shared/faces'}, "
        f"facewarden {args.detector} / face_recognition {peer_model}, {WORKERS} worker processes each, "
        "best of 3 (median in brackets)"
    )
    print(
        table(
            ["indexer", "seconds", "photos/s", "faces"],
            [
                [
                    f"facewarden index ({WORKERS} workers)",
                    f"{best_ours:.1f} ({statistics.median(ours_t):.1f})",
                    len(paths) / best_ours,
                    ours_faces,
                ],
                [
                    f"face_recognition ({WORKERS} processes)",
                    f"{best_peer:.1f} ({statistics.median(peer_t):.1f})",
                    len(paths) / best_peer,
                    peer_faces,
                ],
            ],
        )
    )
    print(f"ratio (facewarden photos/s / face_recognition photos/s): {best_peer / best_ours:.2f}x")
    n, worst = descriptor_agreement(paths, args.detector)
    print(f"templates on the same {n} face boxes: max abs difference {worst:.2e} (L2-normalised)")


if __name__ == "__main__":
    main()

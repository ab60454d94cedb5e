"""Detection + embedding per photo: facewarden against the face_recognition library, same photos.

Both run on one process, one photo at a time, on the photos of ../shared/faces (single-person and
group photos). face_recognition is run at its defaults (HOG, one upsampling, 5-point "small"
landmarks, one jitter); facewarden at its defaults (HOG with size-dependent scale, default runtime).
Medians of per-photo times and the ratio are printed.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from common import photos, table

from facewarden import images
from facewarden.config import Settings
from facewarden.engine import Engine


def main() -> None:
    try:
        import face_recognition
    except ImportError:
        raise SystemExit("install the peer first: pip install --no-deps face_recognition==1.3.0") from None
    paths = photos()
    pixels = [images.read(p) for p in paths]
    engine = Engine(Settings.from_env())
    engine.analyse(pixels[0])  # load models outside the timings
    face_recognition.face_encodings(pixels[0])
    ours, peer, faces_ours, faces_peer = [], [], 0, 0
    for img in pixels:
        t = time.perf_counter()
        faces_ours += len(engine.analyse(img))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        locations = face_recognition.face_locations(img)
        faces_peer += len(face_recognition.face_encodings(img, locations))
        peer.append(time.perf_counter() - t)
    rows = [
        [
            "facewarden (" + engine.runtime_name + ")",
            statistics.median(ours) * 1000,
            len(ours) / sum(ours),
            faces_ours,
        ],
        ["face_recognition 1.3.0", statistics.median(peer) * 1000, len(peer) / sum(peer), faces_peer],
    ]
    print(f"{len(paths)} photos of ../shared/faces, one process, detection + embedding")
    print(table(["pipeline", "median ms/photo", "photos/s", "faces found"], rows))
    print(f"ratio (facewarden photos/s / face_recognition photos/s): {sum(peer) / sum(ours):.2f}x")
    print(f"ratio of medians: {statistics.median(peer) / statistics.median(ours):.2f}x")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

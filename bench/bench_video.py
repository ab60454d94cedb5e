"""Video face detection and search on 2 cores: seconds of 720p video per wall second, beside a
per-frame face_recognition loop on the same clip.

The clip is made here (never stored): 1280x720, 25 fps, H.264 with an AAC track, faces from
../shared/faces walking across, entering and leaving, two of them crossing. Three measurements:

* per stage (one worker, so the stages add up): decoding and sampling, detection, tracking,
  chips + embedding of each track's best faces, gallery search;
* end to end through the service, as a user runs it: StartFaceDetection / StartFaceSearch, a worker
  pool of the service runs the job, GetFace* until SUCCEEDED; the real-time factor is video
  seconds / wall seconds (> 1 = faster than real time);
* the peer: face_recognition's documented video loop (face_locations + face_encodings +
  compare_faces per frame) on the same sampled frames (5 per second), no tracking.

    python bench/bench_video.py                      # 20 s clip, 5 sampled frames/s
    python bench/bench_video.py --seconds 60 --rate 2
    python bench/bench_video.py --detector cnn       # dlib's CNN detector (on ONNX Runtime)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import FACES, table

from facewarden.config import Settings
from facewarden.engine import Box, Engine
from facewarden.engine.tracking import Tracker, face_quality
from facewarden.media import images, video
from facewarden.service import Service
from tests.videos import Actor, Scene, linear, photo_face

PEOPLE = [
    ("barack_obama", "barack_obama/barack_obama_1.jpg"),
    ("joe_biden", "joe_biden/joe_biden_1.jpg"),
    ("kit_harington", "kit_harington/kit_harington_1.jpg"),
    ("angelina", "angelina/angelina_1.jpg"),
]


def make_clip(path: Path, engine: Engine, seconds: float) -> None:
    crops = [
        photo_face(engine, FACES / rel, size=size) for (_, rel), size in zip(PEOPLE, (110, 140, 90, 160))
    ]
    s = seconds
    actors = [
        Actor("a", *crops[0], 0.0, 0.6 * s, linear(-80, 300, 1360, 330)),  # walks through, leaves
        Actor("b", *crops[1], 0.1 * s, s, linear(1200, 360, 150, 320)),  # crosses a
        Actor("c", *crops[2], 0.3 * s, 0.9 * s, linear(640, 150, 700, 180, 1.0, 1.4)),  # comes closer
        Actor("d", *crops[3], 0.5 * s, s, linear(1000, 500, 900, 480)),  # enters late
    ]
    Scene(width=1280, height=720, fps=25, seconds=seconds, actors=actors).write(
        path, options={"preset": "veryfast", "crf": "20"}
    )


def stages(clip: Path, engine: Engine, rate: float, gallery: np.ndarray) -> dict[str, float]:
    """Seconds per stage over the clip, one worker."""
    t: dict[str, float] = dict.fromkeys(("decode", "detect", "track", "chips", "embed", "search"), 0.0)
    warm = Tracker()  # (imports scipy's assignment solver outside the timing)
    warm.update(0, [Box(0, 0, 10, 10)])
    warm.update(200, [Box(0, 0, 10, 10)])
    tracker = Tracker()
    chips: dict[int, list[np.ndarray]] = {}
    frames = video.read_frames(clip, sample_rate=rate)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        t["decode"] += time.perf_counter() - t0
        if frame is None:
            break
        t0 = time.perf_counter()
        faces = engine.detect(frame.image)
        t["detect"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = tracker.update(
            frame.timestamp_ms, [f.box for f in faces], qualities=[face_quality(f) for f in faces]
        )
        t["track"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for face, obs, tid in zip(faces, tracker.last, ids):
            kept = chips.setdefault(tid, [])
            if len(kept) < 3 or obs.quality > min(q for q, _ in kept):
                kept.append((obs.quality, engine.chips(frame.image, [face])[0]))
                kept.sort(key=lambda k: -k[0])
                del kept[3:]
        t["chips"] += time.perf_counter() - t0
    tracks = tracker.finish()
    t0 = time.perf_counter()
    templates = [engine.embed_chips(np.stack([c for _, c in chips[tr.track_id]])) for tr in tracks]
    t["embed"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for tpl in templates:
        np.linalg.norm(gallery[None, :, :] - tpl[:, None, :], axis=2).min(axis=0)
    t["search"] += time.perf_counter() - t0
    return t


def end_to_end(
    clip: Path, data: Path, rate: float, threads: int, reference: dict[str, Path], detector: str
) -> dict[str, float]:
    """Wall seconds of a detection job and a search job through the service (Start to SUCCEEDED)."""
    from facewarden.service.jobs import worker_pool

    settings = Settings(data_dir=data, video_sample_rate=rate, video_threads=threads, detector=detector)
    bucket = settings.resolved_buckets_dir / "bench"
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "clip.mp4").write_bytes(clip.read_bytes())
    svc = Service(settings)
    owner, _ = svc.init_owner("bench", "commercial")
    svc.call("CreateCollection", {"CollectionId": "staff"}, owner)
    for name, photo in reference.items():
        svc.call("GrantConsent", {"CollectionId": "staff", "Subject": name, "Evidence": "bench"}, owner)
        svc.call(
            "IndexFaces",
            {
                "CollectionId": "staff",
                "Image": {"Bytes": photo.read_bytes()},
                "ExternalImageId": name,
                "MaxFaces": 1,
            },
            owner,
        )
    pool = worker_pool(svc, 1, poll_s=0.02).start()
    out = {}
    try:
        for op, get, extra in (
            ("StartFaceDetection", "GetFaceDetection", {}),
            ("StartFaceSearch", "GetFaceSearch", {"CollectionId": "staff"}),
        ):
            t0 = time.perf_counter()
            job = svc.call(
                op, {"Video": {"S3Object": {"Bucket": "bench", "Name": "clip.mp4"}}, **extra}, owner
            )
            pool.wake()
            while (r := svc.call(get, {"JobId": job["JobId"], "MaxResults": 1}, owner))[
                "JobStatus"
            ] == "IN_PROGRESS":
                time.sleep(0.02)
            out[op] = time.perf_counter() - t0
            assert r["JobStatus"] == "SUCCEEDED", r
            if op == "StartFaceSearch":
                out["persons"] = svc.jobs.get(job["JobId"]).summary["matched_persons"]
    finally:
        pool.stop()
        svc.close()
    return out


def peer(clip: Path, rate: float, known: list[np.ndarray]) -> float:
    import face_recognition

    frames = [f.image for f in video.read_frames(clip, sample_rate=rate)]
    t0 = time.perf_counter()
    for image in frames:
        locations = face_recognition.face_locations(image)
        for encoding in face_recognition.face_encodings(image, locations):
            face_recognition.compare_faces(known, encoding)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=video.DEFAULT_SAMPLE_RATE)
    ap.add_argument("--workers", type=int, default=2, help="threads a job detects with")
    ap.add_argument("--detector", default=None, help="face detector (default: the engine's default)")
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        engine = Engine(
            Settings(data_dir=tmp / "engine", **({"detector": args.detector} if args.detector else {}))
        )
        clip = tmp / "clip.mp4"
        make_clip(clip, engine, args.seconds)
        meta = video.probe(clip)
        secs = meta.duration_ms / 1000
        print(
            f"clip: {meta.width}x{meta.height} {meta.codec} {meta.frame_rate} fps {secs:.1f} s, "
            f"sampled at {args.rate}/s; detector: {engine.settings.detector}"
        )
        reference = {name: FACES / rel.replace("_1.", "_2.") for name, rel in PEOPLE}
        known = []
        for p in reference.values():
            px = images.read(p)
            faces = engine.detect(px)
            known.append(engine.embed(px, [max(faces, key=lambda f: f.box.area)])[0])
        gallery = np.stack(known)
        t = stages(clip, engine, args.rate, gallery)
        total = sum(t.values())
        print(table(["stage", "seconds", "share"], [(k, v, f"{100 * v / total:.0f}%") for k, v in t.items()]))
        print(f"one worker, stages in sequence: {secs / total:.2f}x real time")
        e2e = end_to_end(clip, tmp / "service", args.rate, args.workers, reference, engine.settings.detector)
        rows = [
            (f"facewarden {op} job ({args.workers} threads)", e2e[op], secs / e2e[op])
            for op in ("StartFaceDetection", "StartFaceSearch")
        ]
        if not args.no_peer:
            wall = peer(clip, args.rate, known)
            rows.append(("face_recognition per-frame loop", wall, secs / wall))
        print(table(["720p, wall time", "seconds", "x real time"], rows))
        print(f"people matched by the search job: {e2e['persons']} of {len(PEOPLE)}")
        if not args.no_peer:
            print(f"face search vs face_recognition's loop: {rows[-1][1] / rows[1][1]:.1f}x faster")


if __name__ == "__main__":
    main()

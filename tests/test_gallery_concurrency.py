"""The gallery under concurrent writers, several processes and a crash (SIGKILL), on every backend."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.db import Database
from facewarden.gallery import open_store
from facewarden.service.gallery import IndexFacesRequest, index_faces
from facewarden.service.params import Image
from tests.conftest import REPO, identity_photos, new_faces, unit
from tests.test_gallery import MODEL, call

WRITER = textwrap.dedent(
    """
    import base64, pickle, sys, numpy as np
    from facewarden.db import Database
    from facewarden.gallery import NewFace, open_store
    settings = pickle.loads(base64.b64decode(sys.argv[1]))  # the Settings object, handed over
    collection, n, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = open_store(Database(settings.database_url), settings)
    rng = np.random.default_rng(seed)
    box = {"Width": 0.2, "Height": 0.2, "Left": 0.1, "Top": 0.1}
    for i in range(n):
        t = rng.normal(size=128).astype(np.float32)
        t /= np.linalg.norm(t)
        face = store.add_faces(collection, [NewFace(t, box, 99.0, external_image_id=f"p{seed}-{i}")], "MODEL")[0]
        if i % 7 == 0:
            store.search(collection, t, 3)  # keep this process's index loaded and updated in place
        print(face.face_id, flush=True)  # acknowledged: committed before this line is written
    """
).replace("MODEL", MODEL)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _writer(settings: Settings, collection: str, n: int, seed: int, cwd: Path) -> subprocess.Popen:
    """A writer process, handed the test's Settings object (pickled), as a worker pool hands it."""
    handed = base64.b64encode(pickle.dumps(settings)).decode()
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, handed, collection, str(n), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=cwd,
    )


def test_eight_threads_index_one_collection(
    service: Any, store: Any, faces_dir: Path, photo_templates: Any
) -> None:
    """8 threads index at once (each photo also submitted twice, resumably): no face lost, none
    duplicated; a reader meanwhile only ever sees faces that exist and counts that never drop."""
    call(service, "CreateCollection", CollectionId="busy")
    photos = [p for ps in identity_photos(faces_dir).values() for p in ps]
    jobs = [photos[i::8] for i in range(8)]
    acknowledged: list[list[str]] = [[] for _ in range(8)]
    errors_seen: list[BaseException] = []
    done = threading.Event()
    probe = next(iter(photo_templates.values()))[1]

    def writer(k: int) -> None:
        try:
            for p in jobs[k] + jobs[(k + 1) % 8][:3]:  # the 3 extra photos are another thread's too
                request = IndexFacesRequest("busy", Image(p.read_bytes()), external_image_id=p.stem)
                r = service.execute(index_faces, request, service.test_principal)
                if not r.already_indexed:  # a repeat answers with the faces stored the first time
                    acknowledged[k] += [f.face["FaceId"] for f in r.face_records]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors_seen.append(exc)

    def reader() -> None:
        last = 0
        try:
            while not done.is_set():
                count = store.count_faces("busy")
                assert count >= last, "the face count went down during inserts"
                last = count
                matches = store.search("busy", probe, 10)
                ids = [m.face.face_id for m in matches]
                assert len(set(ids)) == len(ids)
                assert set(store.get_faces("busy", ids)) == set(ids), "search returned a face the store lacks"
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors_seen.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    r.join()
    assert not errors_seen, errors_seen
    acked = [f for a in acknowledged for f in a]
    assert len(acked) == len(set(acked))
    stored = store.store_face_ids("busy")
    assert stored == set(acked)
    assert store.count_faces("busy") == len(stored)
    # every photo's faces stored exactly once, although 24 photos were submitted twice
    faces = store.list_faces("busy", limit=10_000)
    by_image: dict[str, set[str]] = {}
    for f in faces:
        by_image.setdefault(f.image_sha256, set()).add(f.external_image_id)
    shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    assert set(by_image) == shas
    assert len(faces) == sum(1 for f in faces)
    per_image = {}
    for f in faces:
        per_image[f.image_sha256] = per_image.get(f.image_sha256, 0) + 1
    assert max(per_image.values()) <= 2  # a photo may hold two faces, but was never stored twice
    assert store.index_face_ids("busy") == stored


def test_processes_share_one_gallery(gallery_settings: Settings, tmp_path: Path) -> None:
    """Two processes write one collection at once (the named lock holds across processes)."""
    store = open_store(Database(gallery_settings.database_url), gallery_settings)
    store.create_collection("shared", MODEL, 128)
    procs = [_writer(gallery_settings, "shared", 60, seed, tmp_path) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    acked = {line for out, _ in outs for line in out.split()}
    assert len(acked) == 120
    assert store.store_face_ids("shared") == acked
    assert store.count_faces("shared") == 120
    assert store.index_face_ids("shared") == acked
    store.db.close()


def test_crash_loses_no_acknowledged_face(gallery_settings: Settings, tmp_path: Path) -> None:
    """SIGKILL a writer mid-indexing: every face it acknowledged is stored, and after restart the
    vector index (here forced into FAISS mode, with an index file saved before the crash) agrees
    with the store exactly."""
    # faces enough that the in-process index is FAISS (threshold 100) and saved to a file: then stale.
    settings = gallery_settings.replace(gallery_ann_threshold=100)
    store = open_store(Database(settings.database_url), settings)
    store.create_collection("crash", MODEL, 128)
    base = store.add_faces("crash", new_faces(unit(np.random.default_rng(9), 150)), MODEL)
    proc = _writer(settings, "crash", 100000, 3, tmp_path)
    acked = []
    assert proc.stdout is not None
    while len(acked) < 250:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the writer stopped early: {proc.stderr.read() if proc.stderr else ''}")
        acked.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    acked += [x for x in rest.split() if len(x) == 36]
    stored = store.store_face_ids("crash")
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged faces were lost"
    assert stored >= {f.face_id for f in base}
    assert store.count_faces("crash") == len(stored)
    store.db.close()
    # "restart": a fresh process-level store, with the writer's stale index file on disk
    db2 = Database(settings.database_url)
    restarted: Any = open_store(db2, settings)
    assert restarted.index_face_ids("crash") == stored == restarted.store_face_ids("crash")
    t = restarted.templates("crash", [acked[-1]])[acked[-1]]
    assert restarted.search("crash", t, 1)[0].face.face_id == acked[-1]
    local = settings.database_url.startswith("sqlite") or settings.gallery_pg_search == "local"
    assert restarted.index_info("crash")["mode"] == ("ivf" if local else "exact")
    db2.close()

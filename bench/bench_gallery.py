"""Benchmark of 1:N search in the gallery: latency, recall@1 against exact search, memory per face.

    .venv/bin/python bench/bench_gallery.py [--sizes 10000,100000] [--backends sqlite,postgres]
                                            [--queries 200] [--million]

For each backend and gallery size it inserts synthetic templates through the store (as IndexFaces
would: L2-normalised float32, 128-D), then runs genuine-like probes (a stored template plus noise,
so that the true nearest face is well defined, as for a real search) and reports:

* search latency p50 / p99 of ``Store.search(k=1)``, end to end (index + reading the face rows);
* recall@1: how often the backend's best face is the exact (brute-force) best face;
* memory per face: SQLite+FAISS: growth of the process's resident memory when the index is loaded,
  plus the database file; PostgreSQL: table + indexes on disk (shared buffers hold the hot part).

Synthetic templates are drawn around "identity" centres inside a cone, like real face templates
(whose impostor distances cluster well below sqrt(2)). With ``--real`` the templates the test
suite cached (``.pytest_cache/d/facewarden_templates``) are also measured: tiny, but real.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from facewarden.config import Settings
from facewarden.db import Database
from facewarden.gallery import NewFace, open_store

DIM = 128
MODEL = "dlib-resnet-v1"
BOX = {"Width": 0.2, "Height": 0.2, "Left": 0.1, "Top": 0.1}


def synthetic(n: int, rng: np.random.Generator) -> np.ndarray:
    mean = rng.normal(size=DIM).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.normal(size=(max(1, n // 3), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    idx = rng.integers(0, len(centres), size=n)
    x = 1.2 * mean + centres[idx] + 0.35 * rng.normal(size=(n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def probes(gallery: np.ndarray, q: int, rng: np.random.Generator) -> np.ndarray:
    pick = rng.choice(len(gallery), size=min(q, len(gallery)), replace=False)
    x = gallery[pick] + 0.04 * rng.normal(size=(len(pick), DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(store, cid: str, gallery: np.ndarray, batch: int = 5000) -> tuple[list[str], float]:
    ids: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(gallery), batch):
        part = gallery[i : i + batch]
        faces = [NewFace(t, BOX, 99.0, external_image_id=f"s{i + j}") for j, t in enumerate(part)]
        ids += [f.face_id for f in store.add_faces(cid, faces, MODEL)]
    return ids, time.perf_counter() - t0


def measure(store, cid: str, ids: list[str], gallery: np.ndarray, qs: np.ndarray) -> dict[str, float]:
    exact = np.argmax(qs @ gallery.T, axis=1)
    store.search(cid, qs[0], 1)  # warm: load / sync the index
    lat, hits = [], 0
    for q, e in zip(qs, exact):
        t0 = time.perf_counter()
        m = store.search(cid, q, 1)
        lat.append(time.perf_counter() - t0)
        hits += bool(m) and m[0].face.face_id == ids[e]
    lat_ms = np.asarray(lat) * 1000
    return {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "recall1": hits / len(qs),
    }


def bench_sqlite(n: int, gallery: np.ndarray, qs: np.ndarray, tmp: Path) -> dict[str, object]:
    from facewarden.gallery.sqlite import SqliteStore

    d = tmp / f"sqlite-{n}"
    d.mkdir()
    db = Database(f"sqlite:///{d / 'g.sqlite3'}")
    settings = Settings(data_dir=d, database_url=db.url)
    store = SqliteStore(db, settings)
    store.create_collection("bench", MODEL, DIM)
    ids, insert_s = fill(store, "bench", gallery)
    # a fresh store (a restarted process): measure what loading the index costs in memory and time
    fresh = SqliteStore(db, settings)
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    fresh.sync_index("bench")
    load_s = time.perf_counter() - t0
    grown = rss_mb() - before
    out = measure(fresh, "bench", ids, gallery, qs)
    mode = fresh.index_info("bench")["mode"]
    db_bytes = sum(p.stat().st_size for p in d.glob("g.sqlite3*"))
    db.close()
    shutil.rmtree(d, ignore_errors=True)
    return {
        "backend": f"sqlite+{'faiss-ivf' if mode == 'ivf' else 'exact'}",
        "n": n,
        **out,
        "mem_B_per_face": grown * 2**20 / n,
        "disk_B_per_face": db_bytes / n,
        "insert_s": insert_s,
        "index_load_s": load_s,
    }


def bench_postgres(n: int, gallery: np.ndarray, qs: np.ndarray, url: str) -> dict[str, object]:
    import psycopg

    name = f"bench_{n}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = url.partition("?")
    db = Database(base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else ""))
    store = open_store(db, Settings(database_url=db.url))  # HNSW: no files of its own
    store.create_collection("bench", MODEL, DIM)
    ids, insert_s = fill(store, "bench", gallery, batch=2000)
    with db.read() as tx:
        tx.execute("ANALYZE gallery_faces")
        size = tx.scalar("SELECT pg_total_relation_size('gallery_faces')")
        hnsw = tx.scalar("SELECT pg_relation_size('gallery_faces_hnsw_128')")
    out = measure(store, "bench", ids, gallery, qs)
    mode = "hnsw" if n >= store.ann_threshold else "exact"
    db.close()
    return {
        "backend": f"postgres+pgvector-{mode}",
        "n": n,
        **out,
        "mem_B_per_face": float("nan"),
        "disk_B_per_face": size / n,
        "hnsw_B_per_face": hnsw / n,
        "insert_s": insert_s,
        "index_load_s": 0.0,
    }


def bench_real(tmp: Path) -> dict[str, object] | None:
    cache_dir = REPO / ".pytest_cache" / "d" / "facewarden_templates"
    files = sorted(cache_dir.glob("*.pkl"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    _, templates = pickle.loads(files[-1].read_bytes())
    gallery = np.stack(list(templates.values())).astype(np.float32)
    rng = np.random.default_rng(1)
    from facewarden.gallery.sqlite import SqliteStore

    d = tmp / "real"
    d.mkdir()
    url = f"sqlite:///{d / 'g.sqlite3'}"
    store = SqliteStore(Database(url), Settings(data_dir=d, database_url=url, gallery_ann_threshold=64))
    store.create_collection("bench", MODEL, DIM)
    ids, _ = fill(store, "bench", gallery)
    qs = probes(gallery, 100, rng)
    out = measure(store, "bench", ids, gallery, qs)
    return {"backend": "sqlite+faiss-ivf (real templates)", "n": len(gallery), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--million", action="store_true", help="also 1,000,000 faces (minutes, ~1 GB)")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--real", action="store_true", default=True)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.million:
        sizes.append(1_000_000)
    backends = args.backends.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="facewarden-bench-"))
    rows = []
    server = None
    try:
        if "postgres" in backends:
            import pgserver

            server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="delete")
            pg_url = server.get_uri()
        for n in sizes:
            rng = np.random.default_rng(n)
            gallery = synthetic(n, rng)
            qs = probes(gallery, args.queries, rng)
            if "sqlite" in backends:
                rows.append(bench_sqlite(n, gallery, qs, tmp))
                print(rows[-1], file=sys.stderr, flush=True)
            if "postgres" in backends:
                rows.append(bench_postgres(n, gallery, qs, pg_url))
                print(rows[-1], file=sys.stderr, flush=True)
        if args.real:
            r = bench_real(tmp)
            if r:
                rows.append(r)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{'backend':38} {'faces':>9} {'p50 ms':>8} {'p99 ms':>8} {'recall@1':>9} {'RAM B/face':>11}"
        f" {'disk B/face':>12} {'insert s':>9}"
    )
    for r in rows:
        mem = r.get("mem_B_per_face", float("nan"))
        print(
            f"{r['backend']:38} {r['n']:>9,} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['recall1']:>9.3f}"
            f" {mem:>11.0f} {r.get('disk_B_per_face', float('nan')):>12.0f} {r.get('insert_s', float('nan')):>9.1f}"
        )
    print(
        f"\n(max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB;"
        " PostgreSQL RAM is the server's shared buffers, not per face)"
    )


if __name__ == "__main__":
    main()

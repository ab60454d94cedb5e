"""PostgreSQL search at scale: pgvector's HNSW against ef_search, and the store's in-process index.

The gallery's PostgreSQL store keeps its HNSW index up to date on every insert, which costs about
2.7 s per 1,000 templates on this machine (bench_gallery.py), too slow to fill a million here.
This bench loads the same synthetic templates with COPY, builds the index the store uses
(vector_ip_ops, m = 16, ef_construction = 64) once, and measures exact-top-1 recall and latency
at several ef_search values (the store's default is 200). Then it loads the same templates into
the store's own tables and searches them as the store does with FACEWARDEN_GALLERY_PG_SEARCH=local
(an in-process FAISS index built from the database): recall, latency, build time and the memory the
index takes in the process. Not a test.

    python bench/bench_pgvector.py [--sizes 100000,1000000] [--queries 200] [--ef 100,200,400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gallery import probes, synthetic
from common import table


def run(
    n: int, queries: int, efs: list[int], m: int = 16, ef_construction: int = 64, local: bool = True
) -> list[list[object]]:
    import pgserver
    import psycopg
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(0)
    gallery = synthetic(n, rng)
    qs = probes(gallery, queries, rng)
    truth = np.argmax(qs @ gallery.T, axis=1)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="facewarden-pgbench-") as d:
        Path(d).chmod(0o777)  # pgserver runs PostgreSQL as its own user
        srv = pgserver.get_server(Path(d) / "db", cleanup_mode="stop")
        conn = psycopg.connect(srv.get_uri(), autocommit=True)
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("CREATE TABLE t (id int, v vector(128))")
        t = time.perf_counter()
        with conn.cursor().copy("COPY t (id, v) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "vector"])
            for i, v in enumerate(gallery):
                cp.write_row((i, v))
        load = time.perf_counter() - t
        conn.execute("SET maintenance_work_mem = '3GB'")
        t = time.perf_counter()
        if efs:
            conn.execute(
                f"CREATE INDEX ON t USING hnsw (v vector_ip_ops) WITH (m = {m}, ef_construction = {ef_construction})"
            )
            size = conn.execute("SELECT pg_relation_size('t_v_idx')").fetchone()[0]
        build = time.perf_counter() - t
        for ef in efs:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            hits, lat = 0, []
            for q, tr in zip(qs, truth):
                t = time.perf_counter()
                r = conn.execute("SELECT id FROM t ORDER BY v <#> %s LIMIT 10", (q,)).fetchall()
                lat.append(time.perf_counter() - t)
                hits += r[0][0] == tr
            rows.append(
                [
                    f"{n:,}",
                    ef,
                    hits / len(qs),
                    np.median(lat) * 1000,
                    np.percentile(lat, 99) * 1000,
                    f"{load:.0f}",
                    f"{build:.0f}",
                    round(size / n),
                ]
            )
        if local:
            rows.append(local_row(srv, conn, gallery, qs, truth, Path(d)))
        conn.close()
        srv.cleanup()
    return rows


def local_row(srv, conn, gallery: np.ndarray, qs: np.ndarray, truth: np.ndarray, tmp: Path) -> list[object]:
    """The store's ``local`` search mode on the same templates, bulk-loaded into its own tables."""
    import uuid

    from bench_gallery import rss_mb

    from facewarden.config import Settings
    from facewarden.db import Database
    from facewarden.gallery.postgres import LocalPostgresStore

    n = len(gallery)
    conn.execute("CREATE DATABASE gallery")
    url = srv.get_uri("gallery")
    store = LocalPostgresStore(Database(url), Settings(data_dir=tmp, database_url=url))
    store.create_collection("bench", "dlib-resnet-v1", 128)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as bulk:
        register_vector(bulk)
        bulk.execute("DROP INDEX gallery_faces_hnsw_128")  # not used by this mode; slows COPY
        with bulk.cursor().copy(
            "COPY gallery_faces (seq, face_id, collection_id, image_id, bbox, confidence, template, dim,"
            " model_version, indexed_at) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(
                ["int8", "text", "text", "text", "text", "float8", "vector", "int4", "text", "float8"]
            )
            for i, v in enumerate(gallery):
                cp.write_row((i + 1, ids[i], "bench", ids[i], "{}", 99.0, v, 128, "dlib-resnet-v1", 0.0))
        bulk.execute("UPDATE gallery_collections SET face_count = %s, generation = 1", (n,))
    before = rss_mb()
    t = time.perf_counter()
    store.sync_index("bench")
    build = time.perf_counter() - t
    grown = (rss_mb() - before) * 2**20 / n
    hits, lat = 0, []
    for q, tr in zip(qs, truth):
        t = time.perf_counter()
        m = store.search("bench", q, 1)
        lat.append(time.perf_counter() - t)
        hits += bool(m) and m[0].face.face_id == ids[tr]
    mode = f"local ({store.index_info('bench')['mode']})"
    store.db.close()
    return [
        f"{n:,}",
        mode,
        hits / len(qs),
        np.median(lat) * 1000,
        np.percentile(lat, 99) * 1000,
        "",
        f"{build:.0f}",
        round(grown),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", default="100,200,400", help='HNSW ef_search values; "" for the local index only')
    ap.add_argument("--m", type=int, default=16, help="HNSW m (the store's: 16)")
    ap.add_argument("--ef-construction", type=int, default=64, help="HNSW ef_construction (the store's: 64)")
    ap.add_argument("--no-local", action="store_true", help="skip the store's local index mode")
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        efs = [int(e) for e in args.ef.split(",") if e]
        rows += run(n, args.queries, efs, args.m, args.ef_construction, not args.no_local)
    print(
        table(
            [
                "templates",
                "ef_search",
                "recall@1",
                "p50 ms",
                "p99 ms",
                "COPY s",
                "index build s",
                "index B/face",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

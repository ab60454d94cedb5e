"""pgvector's HNSW at scale: recall@1 and latency against ef_search, bulk-loaded.

The gallery's PostgreSQL store keeps its HNSW index up to date on every insert, which costs about
2.7 s per 1,000 templates on this machine (bench_gallery.py), too slow to fill a million here.
This bench loads the same synthetic templates with COPY, builds the index the store uses
(vector_ip_ops, m = 16, ef_construction = 64) once, and measures exact-top-1 recall and latency
at several ef_search values (the store's default is 200). Not a test.

    python bench/bench_pgvector.py [--sizes 100000,1000000] [--queries 200]
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


def run(n: int, queries: int, efs: list[int]) -> list[list[object]]:
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
        conn.execute("CREATE INDEX ON t USING hnsw (v vector_ip_ops) WITH (m = 16, ef_construction = 64)")
        build = time.perf_counter() - t
        size = conn.execute("SELECT pg_relation_size('t_v_idx')").fetchone()[0]
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
        conn.close()
        srv.cleanup()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", default="100,200,400")
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += run(n, args.queries, [int(e) for e in args.ef.split(",")])
    print(
        table(
            [
                "templates",
                "ef_search",
                "recall@1",
                "p50 ms",
                "p99 ms",
                "COPY s",
                "HNSW build s",
                "index B/face",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

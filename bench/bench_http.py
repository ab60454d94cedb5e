"""The cost of HTTP: CompareFaces and SearchFacesByImage over the Rekognition wire protocol (boto3,
SigV4, JSON + base64, uvicorn on loopback) against the same calls made in-process.

    python bench/bench_http.py [--requests N] [--clients 1,4,16]

For 1, 4 and 16 concurrent clients: requests/s and p50/p99 latency, in-process and over HTTP,
and the overhead ratio (HTTP / in-process, for p50 latency and for throughput). Both sides run
the real engine on the same small photos; the gallery holds a few dozen enrolled faces. Not a
test; small request counts so it runs in a couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import FACES, table

from facewarden.api import create_app
from facewarden.api.testing import ServerThread
from facewarden.config import Settings
from facewarden.service import Service


def small(path: Path, width: int = 320) -> bytes:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.thumbnail((width, width * 4))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88)
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def run(clients: int, total: int, make_call: Callable[[], Callable[[], Any]]) -> tuple[float, float, float]:
    """``clients`` threads share ``total`` calls; (requests/s, p50 ms, p99 ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        call = make_call()  # one client per thread (boto3 clients are not shared)
        mine = []
        for _ in range(n):
            t = time.perf_counter()
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - reported
                errors.append(exc)
                return
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in per_client]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"benchmark call failed: {errors[0]!r}")
    return len(latencies) / wall, statistics.median(latencies) * 1e3, percentile(latencies, 99) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--requests", type=int, default=32, help="requests per operation, per client count, per side"
    )
    ap.add_argument("--clients", default="1,4,16")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if not FACES.is_dir():
        raise SystemExit(f"bench photos missing: {FACES}")

    import boto3
    from botocore.config import Config

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Settings(data_dir=Path(tmp)))
        owner, secret = service.init_owner("bench", "research")
        principal = service.owner_principal()
        service.call("CreateCollection", {"CollectionId": "bench"}, principal)
        enrolled = 0
        for d in sorted(p for p in FACES.iterdir() if p.is_dir() and p.name not in ("group", "noface")):
            for photo in sorted(d.iterdir())[:2]:
                subject = f"{d.name}-{photo.stem}"
                service.call(
                    "GrantConsent",
                    {"Subject": subject, "CollectionId": "bench", "Evidence": "bench"},
                    principal,
                )
                try:
                    r = service.call(
                        "IndexFaces",
                        {
                            "CollectionId": "bench",
                            "Image": {"Bytes": small(photo, 480)},
                            "ExternalImageId": subject,
                            "MaxFaces": 1,
                        },
                        principal,
                    )
                    enrolled += len(r["FaceRecords"])
                except Exception as exc:  # noqa: BLE001 - a photo the detector misses at this size
                    print(f"  skipped {photo.name}: {exc}", file=sys.stderr)
        probe = small(FACES / "barack_obama" / "barack_obama_2.jpg")
        source = small(FACES / "barack_obama" / "barack_obama_1.jpg")
        requests = {
            "CompareFaces": {"SourceImage": {"Bytes": source}, "TargetImage": {"Bytes": probe}},
            "SearchFacesByImage": {"CollectionId": "bench", "Image": {"Bytes": probe}, "MaxFaces": 5},
        }
        app = create_app(service)
        rows = []
        with ServerThread(app) as url:

            def boto_call(op: str) -> Callable[[], Callable[[], Any]]:
                def make() -> Callable[[], Any]:
                    client = boto3.client(
                        "rekognition",
                        endpoint_url=url,
                        region_name="us-east-1",
                        aws_access_key_id=owner.key_id,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, max_pool_connections=4),
                    )
                    method = getattr(
                        client, "compare_faces" if op == "CompareFaces" else "search_faces_by_image"
                    )
                    return lambda: method(**requests[op])

                return make

            def local_call(op: str) -> Callable[[], Callable[[], Any]]:
                return lambda: lambda: service.call(op, requests[op], principal)

            for op in requests:
                boto_call(op)()()  # warm up: models loaded, connections made
                local_call(op)()()
                for clients in levels:
                    n = max(args.requests, clients * 2)
                    lr, lp50, lp99 = run(clients, n, local_call(op))
                    hr, hp50, hp99 = run(clients, n, boto_call(op))
                    rows.append(
                        [
                            op,
                            clients,
                            n,
                            round(lr, 1),
                            round(lp50, 1),
                            round(lp99, 1),
                            round(hr, 1),
                            round(hp50, 1),
                            round(hp99, 1),
                            round(hp50 / lp50, 2),
                            round(lr / hr, 2),
                        ]
                    )
                    print(f"  {op} x{clients}: done", file=sys.stderr, flush=True)
        service.close()
    print(
        f"gallery: {enrolled} faces; probe images {len(probe) // 1024} KiB JPEG; real engine on both sides\n"
    )
    print(
        table(
            [
                "operation",
                "clients",
                "requests",
                "local req/s",
                "local p50 ms",
                "local p99 ms",
                "http req/s",
                "http p50 ms",
                "http p99 ms",
                "p50 ratio",
                "throughput ratio",
            ],
            rows,
        )
    )
    print("\nratios: HTTP / in-process for p50 latency; in-process / HTTP for throughput (1.0 = no overhead)")


if __name__ == "__main__":
    main()

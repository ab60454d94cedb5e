"""Scale-out: 1, 2 and 4 `facewarden serve` processes on one PostgreSQL, driven over the wire.

    python bench/bench_scaleout.py [--procs 1,2,4] [--requests 96] [--clients 8] [--width 320]

A PostgreSQL server with pgvector (pgserver) on loopback; one data directory (the same key files)
and one database for every process, as compose.yaml runs them. For each process count the
processes start, answer /readyz, and a fixed, bounded mix is sent by ``--clients`` boto3 threads
spread round-robin over the processes (as the proxy does): 40% CompareFaces, 40%
SearchFacesByImage, 20% IndexFaces (consented subjects) on photos of ../shared/faces downscaled to
``--width`` pixels. Printed per process count: throughput, p50/p99 latency, errors, speed-up over
one process, how many cores the serve processes kept busy (their CPU time over the run's wall
time: on a machine of C cores no process count can go past C), their CPU time per request, and
the time their threads waited for a CPU while runnable (the scheduler's share of the latency on a
shared machine), and the cores the load generator itself used (it shares the machine). Then nothing may be lost: the collection holds exactly the faces indexed, the audit
log has one record per request and `audit verify` passes.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import photos, table  # noqa: E402
from facewarden.api.testing import start_serve_processes as start  # noqa: E402
from facewarden.api.testing import stop_serve_processes as stop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FW = str(Path(sys.executable).parent / "facewarden")


def jpeg(path: Path, width: int) -> bytes:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    img.thumbnail((width, width))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=88)
    return out.getvalue()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes so far (from /proc; 0 where it cannot be read)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def runqueue_seconds(pids: list[int]) -> float:
    """Seconds the processes' threads have waited for a CPU while runnable (/proc/PID/task/*/schedstat):
    on a shared machine, the part of the latency that is the scheduler's, not facewarden's."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def client(url: str, key: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "rekognition",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"max_attempts": 1}, read_timeout=300, max_pool_connections=64),
    )


def _client_part(
    job: tuple[list[str], dict[str, str], list[bytes], list[tuple[str, int, int, str]], int, int],
) -> list[Any]:
    """One client process: its share of the plan on ``threads`` threads, each with a client per
    server, taking the servers in turn (as the proxy does)."""
    urls, key, images, items, threads, first = job
    local = threading.local()
    counter = iter(range(first, 10**9))
    lock = threading.Lock()

    def one(item: tuple[str, int, int, str]) -> tuple[str, float, str | None, int]:
        op, a, b, subject = item
        if not hasattr(local, "clients"):
            with lock:
                local.next = next(counter)
            local.clients = [client(u, key) for u in urls]
        c = local.clients[local.next % len(urls)]
        local.next += 1
        t = time.perf_counter()
        indexed = 0
        try:
            if op == "CompareFaces":
                c.compare_faces(SourceImage={"Bytes": images[a]}, TargetImage={"Bytes": images[b]})
            elif op == "SearchFacesByImage":
                c.search_faces_by_image(CollectionId="bench", Image={"Bytes": images[a]}, MaxFaces=5)
            else:
                r = c.index_faces(
                    CollectionId="bench", Image={"Bytes": images[a]}, ExternalImageId=subject, MaxFaces=1
                )
                indexed = len(r["FaceRecords"])
            err = None
        except Exception as exc:  # noqa: BLE001 - counted
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            err = code or type(exc).__name__
            # a photo without a detectable face is the photo's answer, not a server error
            if code == "InvalidParameterException" and op != "IndexFaces":
                err = None
        return op, time.perf_counter() - t, err, indexed

    with cf.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, items))


def run_mix(
    urls: list[str],
    key: dict[str, str],
    images: list[bytes],
    requests: int,
    clients: int,
    client_procs: int,
    seed: int,
    tag: str,
) -> dict[str, Any]:
    """The mix, sent by ``clients`` threads in ``client_procs`` processes (one Python process
    cannot sign and parse fast enough for several servers: the GIL)."""
    import multiprocessing as mp

    rng = random.Random(seed)
    plan = []
    for i in range(requests):
        op = ("CompareFaces", "SearchFacesByImage")[i % 2] if i % 5 else "IndexFaces"
        plan.append((op, rng.randrange(len(images)), rng.randrange(len(images)), f"{tag}-{i}"))
    procs = max(1, min(client_procs, len(plan)))
    jobs = [(urls, key, images, plan[i::procs], max(1, clients // procs), i) for i in range(procs)]
    before = os.times()
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(procs) as pool:
        parts = pool.map(_client_part, jobs)
    wall = time.perf_counter() - t0
    after = os.times()
    results = [r for part in parts for r in part]
    lat = sorted(r[1] for r in results)
    errors = [r[2] for r in results if r[2]]
    return {
        "requests": len(results),
        "wall_s": wall,
        "throughput": len(results) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))],
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
        "indexed": sum(r[3] for r in results),
        "client_cores": (
            after.children_user + after.children_system - before.children_user - before.children_system
        )
        / wall,
    }


def audit_rate(data: Path, url: str, threads: int, seconds: float = 5.0) -> float:
    """Audit records appended per second by ``threads`` threads of one process: the chain is
    serialised by one lock, so this is the ceiling of audited requests per second of one database."""
    from facewarden.config import Settings
    from facewarden.service import Service

    svc = Service(Settings(data_dir=data, database_url=url), sweep_on_start=False)
    stop_at = time.perf_counter() + seconds
    counts = [0] * threads

    def work(i: int) -> None:
        while time.perf_counter() < stop_at:
            svc.audit.append({"operation": "BenchProbe", "decision": "recorded", "rule": "bench"})
            counts[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rate = sum(counts) / (time.perf_counter() - t0)
    svc.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--clients", type=int, default=8, help="client threads in all")
    ap.add_argument("--client-procs", type=int, default=2, help="processes the client threads run in")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    counts = [int(x) for x in args.procs.split(",")]

    import pgserver
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="fw-scaleout-"))
    server = pgserver.get_server(str(root / "pg"), cleanup_mode="delete")
    try:
        base = server.get_uri()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("CREATE DATABASE scaleout")
        head, _, query = base.partition("?")
        url = head.rsplit("/", 1)[0] + "/scaleout" + (f"?{query}" if query else "")
        data = root / "data"
        env = {**os.environ, "FACEWARDEN_DATA_DIR": str(data), "FACEWARDEN_DATABASE_URL": url}
        env.pop("FACEWARDEN_KEY", None)
        subprocess.run(
            [FW, "init", "--org", "bench", "--sector", "commercial"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        key = json.loads((data / "owner-key.json").read_text())
        images = [jpeg(p, args.width) for p in photos(("single",))][:40]
        # a gallery to search, and consent for every subject the mix will enrol
        from facewarden.config import Settings
        from facewarden.service import Service

        svc = Service(Settings(data_dir=data, database_url=url))
        owner = svc.owner_principal()
        svc.call("CreateCollection", {"CollectionId": "bench"}, owner)
        tags = [f"run{n}" for n in counts]
        subjects = [f"{t}-{i}" for t in tags for i in range(args.requests)] + [
            f"seed-{i}" for i in range(len(images))
        ]
        for s in subjects:
            svc.call("GrantConsent", {"Subject": s, "CollectionId": "bench", "Evidence": "bench"}, owner)
        for i, img in enumerate(images):
            try:
                svc.call(
                    "IndexFaces",
                    {
                        "CollectionId": "bench",
                        "Image": {"Bytes": img},
                        "ExternalImageId": f"seed-{i}",
                        "MaxFaces": 1,
                    },
                    owner,
                )
            except Exception:  # noqa: BLE001 - a photo without a face
                pass
        svc.close()

        rows, out = [], []
        base_tp = None
        for n, tag in zip(counts, tags):
            svc = Service(Settings(data_dir=data, database_url=url))
            faces_before = svc.store.count_faces("bench")
            audit_before = svc.audit.count()
            svc.close()
            procs = start(n, env, root)
            try:
                # warm-up: each operation once per process (/readyz loaded the embedder; this loads
                # the detector and each process's view of the collection)
                run_mix([u for _, u in procs], key, images, 5 * n, 1, 1, 0, f"warm{n}")
                svc = Service(Settings(data_dir=data, database_url=url))
                audit_mid = svc.audit.count()
                faces_mid = svc.store.count_faces("bench")
                svc.close()
                pids = [p.pid for p, _ in procs]
                cpu0, wait0 = cpu_seconds(pids), runqueue_seconds(pids)
                r = run_mix(
                    [u for _, u in procs],
                    key,
                    images,
                    args.requests,
                    args.clients,
                    args.client_procs,
                    42,
                    tag,
                )
                used = cpu_seconds(pids) - cpu0
                r["server_cores"] = used / r["wall_s"]
                r["server_cpu_ms"] = 1000 * used / r["requests"]
                r["server_wait_ms"] = 1000 * (runqueue_seconds(pids) - wait0) / r["requests"]
            finally:
                stop(procs)
            svc = Service(Settings(data_dir=data, database_url=url))
            faces_after = svc.store.count_faces("bench")
            audit_after = svc.audit.count()
            verify = svc.audit.verify()
            svc.close()
            r["faces_ok"] = faces_after - faces_mid == r["indexed"]
            # every request one record; the processes' start and shutdown checkpoints add none
            r["audit_records"] = audit_after - audit_mid
            r["audit_ok"] = verify.ok and audit_after - audit_mid >= r["requests"]
            base_tp = base_tp or r["throughput"]
            r["procs"], r["speedup"] = n, r["throughput"] / base_tp
            out.append(r)
            rows.append([n, r["requests"], r["throughput"], round(r["p50_ms"]), round(r["p99_ms"]), r["errors"],
                         f"{r['speedup']:.2f}x", f"{r['server_cores']:.2f}", round(r["server_cpu_ms"]), round(r["server_wait_ms"]),
                         f"{r['client_cores']:.2f}",
                         "yes" if r["faces_ok"] and r["audit_ok"] else "NO"])  # fmt: skip
            del faces_before, audit_before
        rates = {t: audit_rate(data, url, t) for t in (1, 4)}
        print(
            "audit appends/s on this PostgreSQL (the chain's lock is the one global serialisation point): "
            + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {r:.0f}" for t, r in rates.items())
        )
        print(
            f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), {args.clients} client threads in "
            f"{args.client_procs} processes, {args.requests} requests per run, photos at {args.width} px"
        )
        heads = ["procs", "requests", "req/s", "p50 ms", "p99 ms", "errors", "vs 1", "server cores",
                 "server CPU ms/req", "CPU wait ms/req", "client cores", "nothing lost"]  # fmt: skip
        print(table(heads, rows))
        if args.json:
            print(json.dumps(out))
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Health, readiness and Prometheus metrics over a real server (issue 19, item 1).

/metrics is scraped over HTTP and parsed with prometheus_client's own parser; the counts are
checked against the requests the test made (ok, denied by the moratorium, failed on bad input,
refused authentication), also while other threads keep requesting and scraping.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from facewarden.service.health import readiness
from tests.test_api_support import Harness, small_jpeg
from tests.test_api_support import harness_fixture  # noqa: F401  (the module's server)


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted label pairs -> value}, every sample of the exposition."""
    r = httpx.get(f"{url}/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(metrics: dict[str, Any], name: str, **labels: str) -> float:
    return metrics.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_healthz_and_readyz_need_no_key_and_reveal_nothing(harness: Harness) -> None:
    r = httpx.get(f"{harness.url}/healthz", timeout=60)
    assert r.status_code == 200 and r.json() == {"Status": "ok"}
    r = httpx.get(f"{harness.url}/readyz", timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"Status": "ready", "Checks": {"database": "ok", "models": "ok", "audit": "ok"}}


def test_readyz_names_the_failing_check_without_its_details(harness: Harness, tmp_path: Any) -> None:
    head = harness.service.audit.head_path
    saved = head.read_bytes() if head.exists() else None
    head.write_text("{not json")
    try:
        r = httpx.get(f"{harness.url}/readyz", timeout=120)
        assert r.status_code == 503
        assert r.json() == {
            "Status": "unavailable",
            "Checks": {"database": "ok", "models": "ok", "audit": "unavailable"},
        }
        assert "audit.head" not in r.text and str(head.parent) not in r.text
        assert readiness(harness.service)["audit"] and "audit.head" in str(
            readiness(harness.service)["audit"]
        )
    finally:
        if saved is None:
            head.unlink()
        else:
            head.write_bytes(saved)


def test_metrics_count_requests_outcomes_denials_and_latency(harness: Harness) -> None:
    before = scrape(harness.url)
    owner = harness.client(harness.owner_key)
    police = harness.client(harness.key("city-police", "law_enforcement", "investigation"))
    jpeg = small_jpeg()
    owner.detect_faces(Image={"Bytes": jpeg})
    owner.detect_faces(Image={"Bytes": jpeg})
    with pytest.raises(ClientError):
        owner.detect_faces(Image={"Bytes": b"not an image"})
    with pytest.raises(ClientError) as denied:
        police.compare_faces(SourceImage={"Bytes": jpeg}, TargetImage={"Bytes": jpeg})
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    forged = harness.client((harness.owner_key[0], "x" * 40))
    with pytest.raises(ClientError):
        forged.detect_faces(Image={"Bytes": jpeg})
    owner.create_collection(CollectionId="metrics-a")
    owner.create_collection(CollectionId="metrics-b")

    after = scrape(harness.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("facewarden_requests_total", operation="DetectFaces", kind="detect", outcome="ok") == 2
    assert delta("facewarden_requests_total", operation="DetectFaces", kind="detect", outcome="failed") == 1
    assert delta("facewarden_requests_total", operation="CompareFaces", kind="compare", outcome="denied") == 1
    assert delta("facewarden_denials_total", rule="moratorium") == 1
    assert delta("facewarden_denials_total", rule="authentication") == 1
    assert delta("facewarden_request_duration_seconds_count", operation="DetectFaces") == 3
    assert delta("facewarden_request_duration_seconds_sum", operation="DetectFaces") > 0
    inf = value(after, "facewarden_request_duration_seconds_bucket", operation="DetectFaces", le="+Inf")
    assert inf == value(after, "facewarden_request_duration_seconds_count", operation="DetectFaces")
    # every audit record this process appended is counted, by decision
    appended = sum(after["facewarden_audit_appends_total"].values()) - sum(
        before.get("facewarden_audit_appends_total", {}).values()
    )
    assert appended >= 7  # 6 calls + the refused authentication (+ key creation records)
    # gallery sizes without names; the engine and job queues are there, idle
    assert value(after, "facewarden_gallery_collections") >= 2
    assert value(after, "facewarden_gallery_collection_size_bucket", le="10") >= 2
    assert "facewarden_gallery_collection_faces" not in after
    assert "metrics-a" not in httpx.get(f"{harness.url}/metrics", timeout=30).text
    assert value(after, "facewarden_engine_queue_depth") == 0
    assert "facewarden_engine_busy" in after
    assert "process_cpu_seconds_total" in after


def test_collection_names_only_when_the_operator_enables_them(harness: Harness) -> None:
    from facewarden.api import create_app
    from fastapi.testclient import TestClient

    svc = harness.service
    named = svc.settings.replace(metrics_collection_names=True)
    saved = svc.settings
    svc.settings = named
    try:
        text = TestClient(create_app(svc)).get("/metrics").text
    finally:
        svc.settings = saved
    samples = {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "facewarden_gallery_collection_faces"
    }
    assert samples[(("collection", "metrics-a"),)] == 0


def test_job_queue_depth_and_age(harness: Harness) -> None:
    from facewarden.jobs import JobQueue

    clock = {"now": 1_000_000.0}
    queue = JobQueue(harness.service.db, clock=lambda: clock["now"])
    for _ in range(3):
        queue.enqueue("video-test", {"n": 1}, owner_org="operator", key_id="k")
    queue.claim("w1", ["video-test"])
    metrics = scrape(harness.url)
    assert value(metrics, "facewarden_job_queue_depth", kind="video-test", status="QUEUED") == 2
    assert value(metrics, "facewarden_job_queue_depth", kind="video-test", status="RUNNING") == 1
    assert value(metrics, "facewarden_job_oldest_queued_seconds", kind="video-test") > 0


def test_engine_queue_depth_counts_running_and_waiting_computations(harness: Harness) -> None:
    """The engine's compute slots taken (all of them) and two more callers waiting: /metrics shows
    them as busy and queued, then both back at 0 once they are done."""
    from facewarden.engine.loading import compute_slots

    slots = compute_slots(harness.service.settings.engine_concurrency)
    assert slots.depth() == (0, 0)
    release = threading.Event()
    holding = threading.Semaphore(0)

    def compute() -> None:
        with slots:
            holding.release()
            release.wait(timeout=120)

    threads = [threading.Thread(target=compute) for _ in range(slots.size + 2)]
    for t in threads:
        t.start()
    try:
        for _ in range(slots.size):
            assert holding.acquire(timeout=60)
        deadline = time.monotonic() + 60
        while slots.depth() != (slots.size, 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = scrape(harness.url)
        assert value(metrics, "facewarden_engine_busy") == slots.size
        assert value(metrics, "facewarden_engine_queue_depth") == 2
    finally:
        release.set()
        for t in threads:
            t.join(timeout=60)
    metrics = scrape(harness.url)
    assert value(metrics, "facewarden_engine_busy") == 0
    assert value(metrics, "facewarden_engine_queue_depth") == 0


def test_metrics_under_load_stay_parseable_and_lose_no_count(harness: Harness) -> None:
    owner_key = harness.owner_key
    jpeg = small_jpeg(width=160)
    before = scrape(harness.url)
    errors: list[BaseException] = []
    scrapes: list[int] = []
    done = threading.Event()

    def requester() -> None:
        client = harness.client(owner_key)
        try:
            for _ in range(8):
                client.detect_faces(Image={"Bytes": jpeg})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def scraper() -> None:
        while not done.is_set():
            try:
                scrape(harness.url)
                scrapes.append(1)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    workers = [threading.Thread(target=requester) for _ in range(4)]
    watcher = threading.Thread(target=scraper)
    watcher.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert scrapes
    after = scrape(harness.url)
    ok = value(after, "facewarden_requests_total", operation="DetectFaces", kind="detect", outcome="ok")
    assert (
        ok - value(before, "facewarden_requests_total", operation="DetectFaces", kind="detect", outcome="ok")
        == 32
    )

"""``GET /metrics``: Prometheus text format, through the official ``prometheus_client``.

Counted as they happen (the service's observer hooks, :mod:`facewarden.service.observe`):

* ``facewarden_requests_total{operation,kind,outcome}``: operations finished; outcome ``ok``,
  ``denied`` (policy or quota), ``failed`` (bad input) or ``error`` (internal);
* ``facewarden_request_duration_seconds{operation}``: their latency (a histogram);
* ``facewarden_denials_total{rule}``: denials by the rule that decided (``moratorium``,
  ``purpose``, ``quota_*``, ``authentication``...), from the audit records;
* ``facewarden_audit_appends_total{decision}``: audit records appended by this process.

Read at scrape time:

* ``facewarden_engine_busy`` / ``facewarden_engine_queue_depth``: detections and embeddings running
  now / waiting for a compute slot in this process;
* ``facewarden_job_queue_depth{kind,status}`` and ``facewarden_job_oldest_queued_seconds{kind}``:
  the durable job queue (video, redaction), shared by all processes;
* ``facewarden_gallery_collections``, ``facewarden_gallery_faces`` and
  ``facewarden_gallery_collection_size`` (a gauge histogram: how many collections hold up to 10,
  100, ... faces). Collection ids appear only in ``facewarden_gallery_collection_faces{collection}``
  when the operator enables ``FACEWARDEN_METRICS_COLLECTION_NAMES``.

Each ``serve`` process keeps its own registry and answers for itself (``serve`` forks no
workers): with several processes, scrape each one (compose.yaml shows how), and sum in queries.
``/metrics`` needs no key and names no data subject; expose it only to the monitoring network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..service import Service
from ..service.health import snapshot

log = logging.getLogger("facewarden.api")

#: Latency buckets (seconds): a cached detection takes milliseconds, a CNN detection on a large
#: photo seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upper bounds of the collection-size gauge histogram (faces).
SIZE_BUCKETS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)


class Metrics:
    """One process's registry, fed by the service's observer hooks."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facewarden_requests",
            "Operations finished, by operation, kind and outcome (ok, denied, failed, error).",
            ["operation", "kind", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "facewarden_request_duration_seconds",
            "Time from an operation's start to its result, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.denials = Counter(
            "facewarden_denials",
            "Requests denied, by the rule that decided (from the audit records).",
            ["rule"],
            registry=self.registry,
        )
        self.audit_appends = Counter(
            "facewarden_audit_appends",
            "Audit records appended by this process, by decision.",
            ["decision"],
            registry=self.registry,
        )
        self.registry.register(_Gauges(service))
        ProcessCollector(registry=self.registry)
        service.add_observer(self)

    # ---- the service's hooks -----------------------------------------------------------------
    def operation_finished(self, name: str, kind: str, outcome: str, seconds: float) -> None:
        self.requests.labels(name, kind, outcome).inc()
        self.latency.labels(name).observe(seconds)

    def audit_appended(self, record: Mapping[str, Any]) -> None:
        decision = str(record.get("decision") or "")
        self.audit_appends.labels(decision).inc()
        if decision == "denied":
            self.denials.labels(str(record.get("rule") or "")).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    """What is read when Prometheus scrapes: engine queue, job queue, gallery sizes."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        try:
            snap = snapshot(self.service)
        except Exception:  # noqa: BLE001 - a scrape reports what it can
            log.exception("metrics: could not read the gauges")
            return
        yield GaugeMetricFamily(
            "facewarden_engine_busy",
            "Detections and embeddings running now in this process.",
            snap.engine_busy,
        )
        yield GaugeMetricFamily(
            "facewarden_engine_queue_depth",
            "Detections and embeddings waiting for a compute slot in this process.",
            snap.engine_waiting,
        )
        depth = GaugeMetricFamily(
            "facewarden_job_queue_depth",
            "Unfinished durable jobs, by kind and status.",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(snap.jobs.depth.items()):
            depth.add_metric([kind, status], n)
        yield depth
        age = GaugeMetricFamily(
            "facewarden_job_oldest_queued_seconds",
            "How long the oldest queued job of each kind has waited.",
            labels=["kind"],
        )
        for kind, seconds in sorted(snap.jobs.oldest_queued_s.items()):
            age.add_metric([kind], seconds)
        yield age
        sizes = [c.faces for c in snap.collections]
        yield GaugeMetricFamily("facewarden_gallery_collections", "Collections in the gallery.", len(sizes))
        yield GaugeMetricFamily("facewarden_gallery_faces", "Faces in all collections.", sum(sizes))
        buckets = [(str(b), sum(1 for s in sizes if s <= b)) for b in SIZE_BUCKETS]
        buckets.append(("+Inf", len(sizes)))
        yield GaugeHistogramMetricFamily(
            "facewarden_gallery_collection_size",
            "Collections by their number of faces (cumulative: collections with at most le faces).",
            buckets=buckets,
            gsum_value=sum(sizes),
        )
        if self.service.settings.metrics_collection_names:
            named = GaugeMetricFamily(
                "facewarden_gallery_collection_faces",
                "Faces per collection (shown because FACEWARDEN_METRICS_COLLECTION_NAMES is on).",
                labels=["collection"],
            )
            for c in snap.collections:
                named.add_metric([c.collection_id], c.faces)
            yield named
        yield GaugeMetricFamily(
            "facewarden_metrics_read_seconds", "Time this scrape spent reading the gauges.", snap.seconds
        )


def mount(app: FastAPI, service: Service) -> Metrics:
    metrics = Metrics(service)

    @app.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics of this process",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return metrics

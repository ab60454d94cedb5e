"""Two `facewarden serve` processes on one PostgreSQL, over the wire (issue 19, item 5).

What bench/bench_scaleout.py measures for speed, checked here for correctness (no timing): the two
processes share one data directory and one database, as compose.yaml runs them; enrolments sent
through both at once all land, each process finds at once the faces the other enrolled, every
process counts its own requests in /metrics (an operator sums them), nothing is lost, the one audit
chain verifies, and both stop gracefully on SIGTERM.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from facewarden.api.testing import start_serve_processes, stop_serve_processes
from facewarden.config import Settings
from facewarden.service import Service
from tests.conftest import fresh_pg_database
from tests.test_api_support import small_jpeg

PEOPLE = ["barack_obama", "joe_biden", "angelina", "john_lennon", "eric_clapton", "amy_adams"]


def _client(url: str, key: tuple[str, str]) -> Any:
    return boto3.client(
        "rekognition",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def _requests_ok(url: str, operation: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=60).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "facewarden_requests_total"
        and s.labels.get("operation") == operation
        and s.labels.get("outcome") == "ok"
    )


def test_two_serve_processes_on_one_postgres_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    url = fresh_pg_database(pg_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    svc = Service(settings)
    owner, secret = svc.init_owner("operator", "commercial")
    svc.call("CreateCollection", {"CollectionId": "shared"}, owner)
    for person in PEOPLE:
        svc.call("GrantConsent", {"Subject": person, "CollectionId": "shared", "Evidence": "test"}, owner)
    audit_before = svc.audit.count()
    svc.close()
    photos = {p: small_jpeg(f"{p}/{p}_1.jpg", width=320) for p in PEOPLE}

    env = {**os.environ, "FACEWARDEN_DATA_DIR": str(settings.data_dir), "FACEWARDEN_DATABASE_URL": url}
    env.pop("FACEWARDEN_KEY", None)
    procs = start_serve_processes(2, env, tmp_path)
    try:
        urls = [u for _, u in procs]
        key = (owner.key_id, secret)
        # the people alternate between the two processes; both enrol at the same time
        via = {p: i % 2 for i, p in enumerate(PEOPLE)}

        def enrol(person: str) -> str:
            r = _client(urls[via[person]], key).index_faces(
                CollectionId="shared", Image={"Bytes": photos[person]}, ExternalImageId=person, MaxFaces=1
            )
            assert len(r["FaceRecords"]) == 1, person
            return str(r["FaceRecords"][0]["Face"]["FaceId"])

        with cf.ThreadPoolExecutor(len(PEOPLE)) as pool:
            face_ids = dict(zip(PEOPLE, pool.map(enrol, PEOPLE)))
        assert len(set(face_ids.values())) == len(PEOPLE)

        # each face is found at once through the process that did NOT enrol it
        def search(person: str) -> tuple[str, str]:
            r = _client(urls[1 - via[person]], key).search_faces_by_image(
                CollectionId="shared", Image={"Bytes": photos[person]}, MaxFaces=1
            )
            return str(r["FaceMatches"][0]["Face"]["FaceId"]), str(
                r["FaceMatches"][0]["Face"]["ExternalImageId"]
            )

        with cf.ThreadPoolExecutor(len(PEOPLE)) as pool:
            found = dict(zip(PEOPLE, pool.map(search, PEOPLE)))
        assert found == {p: (face_ids[p], p) for p in PEOPLE}

        # every process counts what it served, and only that
        for i, u in enumerate(urls):
            mine = sum(1 for p in PEOPLE if via[p] == i)
            assert _requests_ok(u, "IndexFaces") == mine
            assert _requests_ok(u, "SearchFacesByImage") == len(PEOPLE) - mine
    finally:
        codes = stop_serve_processes(procs)
    assert codes == [0, 0]  # a graceful stop on SIGTERM

    svc = Service(settings)
    try:
        assert svc.store.count_faces("shared") == len(PEOPLE)
        new = list(svc.audit.records())[audit_before:]
        ops = sorted(r["operation"] for r in new if r["decision"] == "allowed")
        assert ops.count("IndexFaces") == len(PEOPLE) and ops.count("SearchFacesByImage") == len(PEOPLE)
        result = svc.audit.verify()
        assert result.ok, result.problem
    finally:
        svc.close()

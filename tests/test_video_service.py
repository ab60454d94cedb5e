"""Video face detection and face search as an unmodified boto3 program runs them: Start*, Get*
(shapes checked against botocore's model, paging, SortBy), jobs run by the service's worker pool,
the moratorium before any decoding, quota units per person, bad files ending FAILED, S3Object
buckets, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from facewarden.media import video as media_video
from facewarden.service.jobs import worker_pool

from .conftest import SHARED_FACES, CachedEngine
from .test_api_rekognition import error_of
from .test_api_support import Harness, validate_output
from .videos import Actor, Scene, linear, pattern_frames, photo_face, write_video

PEOPLE = {
    "obama": ("barack_obama/barack_obama_1.jpg", "barack_obama/barack_obama_2.jpg"),
    "biden": ("joe_biden/joe_biden_1.jpg", "joe_biden/joe_biden_2.jpg"),
    "kit": ("kit_harington/kit_harington_1.jpg", "kit_harington/kit_harington_2.jpg"),
}


def scene(engine: Any) -> Scene:
    crops = {name: photo_face(engine, SHARED_FACES / clip) for name, (clip, _) in PEOPLE.items()}
    return Scene(
        seconds=4.0,
        actors=[
            Actor("obama", *crops["obama"], 0.0, 4.0, linear(110, 180, 530, 180)),
            Actor("biden", *crops["biden"], 0.0, 4.0, linear(530, 190, 110, 190)),  # they cross
            Actor("kit", *crops["kit"], 2.4, 4.0, linear(560, 90, 560, 100)),  # comes in later
        ],
    )


class World:
    def __init__(self, harness: Harness, buckets: Path) -> None:
        self.h = harness
        self.svc = harness.service
        self.buckets = buckets


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, engine_cache: Any) -> Iterator[World]:
    h = Harness(tmp_path_factory.mktemp("video-http"))  # the real engine: video frames are new pixels
    svc = h.service
    buckets = svc.settings.resolved_buckets_dir
    (buckets / "acme").mkdir(parents=True)
    scene(CachedEngine(engine_cache)).write(buckets / "acme" / "lobby.mp4")
    pool = worker_pool(svc, 1, poll_s=0.05).start()
    w = World(h, buckets)
    w.acme = h.key("acme", "commercial", "access_control")  # type: ignore[attr-defined]
    rek = h.client(w.acme)  # type: ignore[attr-defined]
    rek.create_collection(CollectionId="staff")
    acme = svc.principal_for_key(w.acme[0])  # type: ignore[attr-defined]
    for name in ("obama", "biden"):  # kit is not enrolled
        svc.call("GrantConsent", {"Subject": name, "CollectionId": "staff", "Evidence": "signed form"}, acme)
        photo = (SHARED_FACES / PEOPLE[name][1]).read_bytes()
        rek.index_faces(CollectionId="staff", Image={"Bytes": photo}, ExternalImageId=name, MaxFaces=1)
    try:
        yield w
    finally:
        pool.stop()
        h.close()


LOBBY = {"S3Object": {"Bucket": "acme", "Name": "lobby.mp4"}}


def wait(get: Any, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        r = get(JobId=job_id)
        if r["JobStatus"] != "IN_PROGRESS" or time.time() > deadline:
            return r
        time.sleep(0.2)


def pages(get: Any, job_id: str, key: str, size: int, **kw: Any) -> list[dict[str, Any]]:
    out, token = [], None
    while True:
        r = get(JobId=job_id, MaxResults=size, **({"NextToken": token} if token else {}), **kw)
        validate_output("GetFaceSearch" if key == "Persons" else "GetFaceDetection", r)
        assert len(r[key]) <= size
        out += r[key]
        token = r.get("NextToken")
        if not token:
            return out


def test_face_search_with_boto3_finds_each_enrolled_person_once(world: World) -> None:
    rek = world.h.client(world.acme)  # type: ignore[attr-defined]
    start = rek.start_face_search(
        Video=LOBBY, CollectionId="staff", ClientRequestToken="lobby-1", JobTag="lobby",
        NotificationChannel={"SNSTopicArn": "arn:aws:sns:us-east-1:1:t", "RoleArn": "arn:aws:iam::1:role/r"},
    )  # fmt: skip
    again = rek.start_face_search(
        Video=LOBBY, CollectionId="staff", ClientRequestToken="lobby-1", JobTag="lobby",
        NotificationChannel={"SNSTopicArn": "arn:aws:sns:us-east-1:1:t", "RoleArn": "arn:aws:iam::1:role/r"},
    )  # fmt: skip
    assert again["JobId"] == start["JobId"]  # the same token and parameters: the same job
    with pytest.raises(ClientError) as exc:
        rek.start_face_search(
            Video=LOBBY, CollectionId="staff", ClientRequestToken="lobby-1", FaceMatchThreshold=95
        )
    assert error_of(exc)[0] == "IdempotentParameterMismatchException"
    done = wait(rek.get_face_search, start["JobId"])
    validate_output("GetFaceSearch", done)
    assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
    assert done["JobTag"] == "lobby" and done["Video"] == LOBBY
    meta = done["VideoMetadata"]
    assert (meta["Codec"], meta["FrameWidth"], meta["FrameHeight"], meta["FrameRate"]) == (
        "h264",
        640,
        360,
        25.0,
    )
    assert abs(meta["DurationMillis"] - 4000) <= 80 and meta["Format"] == "QuickTime / MOV"
    persons = done["Persons"]
    by_index: dict[int, set[str]] = {}
    for p in persons:
        assert p["Timestamp"] % 200 == 0 and p["FaceMatches"]
        by_index.setdefault(p["Person"]["Index"], set()).add(p["FaceMatches"][0]["Face"]["ExternalImageId"])
        assert p["FaceMatches"][0]["Similarity"] >= 90  # access_control's floor
    # obama and biden, one index each, all the way through their crossing; kit is not enrolled
    assert sorted(tuple(v) for v in by_index.values()) == [("biden",), ("obama",)]
    assert len(persons) >= 30
    assert [p["Timestamp"] for p in persons] == sorted(p["Timestamp"] for p in persons)
    assert pages(rek.get_face_search, start["JobId"], "Persons", 7) == persons
    by_idx = pages(rek.get_face_search, start["JobId"], "Persons", 1000, SortBy="INDEX")
    assert [(p["Person"]["Index"], p["Timestamp"]) for p in by_idx] == sorted(
        (p["Person"]["Index"], p["Timestamp"]) for p in persons
    )
    job = world.svc.jobs.get(start["JobId"])
    assert job.summary["tracks"] == 3 and job.summary["quota_units"] == 3
    record = next(r for r in reversed(world.h.audit_records()) if r["operation"] == "FaceSearchJob")
    assert record["decision"] == "recorded" and record["counts"]["frames"] == 20
    assert record["counts"]["tracks"] == 3 and record["counts"]["matched_persons"] == 2
    assert "template" not in json.dumps(record).lower() and len(record["matched_face_ids"]) == 2


def test_face_detection_with_boto3(world: World) -> None:
    rek = world.h.client(world.acme)  # type: ignore[attr-defined]
    job_id = rek.start_face_detection(Video=LOBBY, FaceAttributes="ALL")["JobId"]
    done = wait(rek.get_face_detection, job_id)
    validate_output("GetFaceDetection", done)
    assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
    faces = pages(rek.get_face_detection, job_id, "Faces", 1000)
    stamps = [f["Timestamp"] for f in faces]
    assert stamps == sorted(stamps) and set(stamps) <= set(range(0, 4000, 200))
    assert len(faces) >= 40  # two people in every sampled frame, three in the last 1.6 s
    assert pages(rek.get_face_detection, job_id, "Faces", 9) == faces
    assert all(0 <= f["Face"]["BoundingBox"]["Left"] <= 1 and f["Face"]["Confidence"] > 50 for f in faces)
    with pytest.raises(ClientError) as exc:  # a detection job is no search job
        rek.get_face_search(JobId=job_id)
    assert error_of(exc)[0] == "ResourceNotFoundException"
    other = world.h.client(world.h.key("other-org", "commercial", "access_control"))
    with pytest.raises(ClientError) as exc:  # nor another organisation's
        other.get_face_detection(JobId=job_id)
    assert error_of(exc)[0] == "ResourceNotFoundException"


def test_the_moratorium_refuses_video_search_before_any_frame_is_decoded(
    world: World, monkeypatch: Any
) -> None:
    police_key = world.h.key("city-police", "law_enforcement", "access_control")
    (world.buckets / "city-police").mkdir(exist_ok=True)
    (world.buckets / "city-police" / "street.mp4").write_bytes(
        (world.buckets / "acme" / "lobby.mp4").read_bytes()
    )
    opened: list[Path] = []
    real = media_video.VideoReader.__init__

    def spy(self: Any, path: Any, limits: Any = None) -> None:
        opened.append(Path(path))
        real(self, path, limits)

    monkeypatch.setattr(media_video.VideoReader, "__init__", spy)
    rek = world.h.client(police_key)
    street = {"S3Object": {"Bucket": "city-police", "Name": "street.mp4"}}
    with pytest.raises(ClientError) as exc:
        rek.start_face_search(Video=street, CollectionId="staff")
    code, message, status = error_of(exc)
    assert (code, status) == ("AccessDeniedException", 403) and "moratorium" in message
    assert world.svc.jobs.list("city-police")[0] == [] and opened == []
    record = world.h.audit_records()[-1]
    assert (record["operation"], record["decision"], record["rule"]) == (
        "StartFaceSearch",
        "denied",
        "moratorium",
    )
    # detection protects privacy: open to the same key
    job_id = rek.start_face_detection(Video=street)["JobId"]
    assert wait(rek.get_face_detection, job_id)["JobStatus"] == "SUCCEEDED"
    assert opened  # (now the video was read, by the worker)


def test_a_video_search_costs_one_identification_per_person(world: World) -> None:
    svc = world.svc
    key = world.h.key("acme", "commercial", "access_control")
    rek = world.h.client(key)
    original = svc.policy_file.path.read_text()
    svc.apply_policy(original.replace("per_key_per_day = 1000", "per_key_per_day = 2", 1))
    try:
        job_id = rek.start_face_search(Video=LOBBY, CollectionId="staff")["JobId"]  # 1 unit at Start
        done = wait(rek.get_face_search, job_id)
    finally:
        svc.apply_policy(original)
    assert done["JobStatus"] == "FAILED" and done["Persons"] == []
    assert "shows 3 people" in done["StatusMessage"] and "none was searched" in done["StatusMessage"]
    assert svc.quotas.usage(key[0], svc.clock())["identification"] == 1  # nothing settled
    record = next(r for r in reversed(world.h.audit_records()) if r["operation"] == "FaceSearchJob")
    assert record["decision"] == "failed" and record["rule"] == "quota:identification"


def test_bad_files_end_the_job_failed_with_a_clear_message(world: World) -> None:
    rek = world.h.client(world.acme)  # type: ignore[attr-defined]
    folder = world.buckets / "acme"
    good = write_video(folder / "tone.mkv", pattern_frames(25), audio_codec="aac")
    data = good.read_bytes()
    (folder / "cut.mkv").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video\n" * 50)
    (folder / "photo.mp4").write_bytes((SHARED_FACES / PEOPLE["kit"][0]).read_bytes())
    cases = {
        "cut.mkv": "truncated",
        "empty.mp4": "empty",
        "notes.mp4": "not a video",
        "photo.mp4": "still image",
    }
    jobs = {
        name: rek.start_face_detection(Video={"S3Object": {"Bucket": "acme", "Name": name}})["JobId"]
        for name in cases
    }
    for name, says in cases.items():
        done = wait(rek.get_face_detection, jobs[name])
        assert done["JobStatus"] == "FAILED" and says in done["StatusMessage"], (name, done)
        validate_output("GetFaceDetection", done)
    failed = [
        r
        for r in world.h.audit_records()
        if r["operation"] == "FaceDetectionJob" and r["decision"] == "failed"
    ]
    assert len(failed) >= len(cases)
    # the worker survived them all
    ok = rek.start_face_detection(Video={"S3Object": {"Bucket": "acme", "Name": "tone.mkv"}})["JobId"]
    assert wait(rek.get_face_detection, ok)["JobStatus"] == "SUCCEEDED"


def test_s3_objects_stay_inside_the_callers_bucket(world: World) -> None:
    rek = world.h.client(world.acme)  # type: ignore[attr-defined]
    for video, code in [
        ({"S3Object": {"Bucket": "city-police", "Name": "street.mp4"}}, "AccessDeniedException"),
        ({"S3Object": {"Bucket": "acme", "Name": "../city-police/street.mp4"}}, "InvalidS3ObjectException"),
        ({"S3Object": {"Bucket": "acme", "Name": "missing.mp4"}}, "InvalidS3ObjectException"),
    ]:
        with pytest.raises(ClientError) as exc:
            rek.start_face_detection(Video=video)
        assert error_of(exc)[0] == code
    # images take S3Object too, through the same resolver and the same bucket rule
    (world.buckets / "acme" / "obama.jpg").write_bytes((SHARED_FACES / PEOPLE["obama"][1]).read_bytes())
    r = rek.detect_faces(Image={"S3Object": {"Bucket": "acme", "Name": "obama.jpg"}})
    assert len(r["FaceDetails"]) == 1


def test_jobs_are_listed_and_cancelled_per_organisation(world: World) -> None:
    svc, acme = world.svc, svc_principal(world)
    listed = svc.call("ListJobs", {"MaxResults": 2}, acme)
    assert len(listed["Jobs"]) == 2 and listed["NextToken"]
    rest = svc.call("ListJobs", {"MaxResults": 1000, "NextToken": listed["NextToken"]}, acme)
    ids = [j["JobId"] for j in listed["Jobs"] + rest["Jobs"]]
    assert len(ids) == len(set(ids)) and set(ids) == {j.job_id for j in svc.jobs.list("acme", limit=1000)[0]}
    done = listed["Jobs"][0]
    assert (
        svc.call("CancelJob", {"JobId": done["JobId"]}, acme)["Status"] == done["Status"]
    )  # finished: as it was
    police = svc.principal_for_key(world.h.key("city-police", "law_enforcement", "access_control")[0])
    from facewarden.errors import ResourceNotFound

    with pytest.raises(ResourceNotFound):
        svc.call("CancelJob", {"JobId": done["JobId"]}, police)


def svc_principal(world: World) -> Any:
    return world.svc.principal_for_key(world.acme[0])  # type: ignore[attr-defined]


# ---- the CLI ------------------------------------------------------------------------------------------
def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facewarden.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_video_search_detect_and_jobs(world: World, tmp_path: Path) -> None:
    d = tmp_path / "cli"
    assert cli(d, "init", "--org", "home", "--sector", "commercial").returncode == 0
    assert cli(d, "collection", "create", "family").returncode == 0
    for name in ("obama", "biden"):
        photo = SHARED_FACES / PEOPLE[name][1]
        r = cli(
            d, "consent", "grant", photo.parent.name, "--collection", "family", "--evidence", "signed form"
        )
        assert r.returncode == 0, r.stderr
        r = cli(d, "index", str(photo), "--collection", "family", "--external-id-from", "folder")
        assert r.returncode == 0, r.stderr
    clip = world.buckets / "acme" / "lobby.mp4"
    r = cli(d, "--json", "video", "search", str(clip), "--collection", "family")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    validate_output("GetFaceSearch", out)
    assert out["JobStatus"] == "SUCCEEDED"
    names = {p["FaceMatches"][0]["Face"]["ExternalImageId"] for p in out["Persons"]}
    assert names == {"barack_obama", "joe_biden"} and len(out["Persons"]) >= 30  # every page
    r = cli(d, "video", "search", str(clip), "--collection", "family")
    assert r.returncode == 0 and "2 matching people" in r.stdout, r.stdout + r.stderr
    r = cli(d, "--json", "video", "detect", str(world.buckets / "acme" / "cut.mkv"))
    assert r.returncode == 3 and json.loads(r.stdout)["JobStatus"] == "FAILED"
    r = cli(d, "video", "jobs")
    assert r.returncode == 0 and r.stdout.count("SUCCEEDED") == 2 and "FAILED" in r.stdout


def test_rest_upload_streams_into_the_callers_bucket(world: World, monkeypatch: Any) -> None:
    import httpx

    key_id, secret = world.acme  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {key_id}:{secret}"}
    clip = write_video(world.buckets / "tone-upload.mkv", pattern_frames(25)).read_bytes()
    r = httpx.post(
        f"{world.h.url}/v1/videos", params={"Name": "uploads/door.mkv"}, content=clip, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"S3Object": {"Bucket": "acme", "Name": "uploads/door.mkv"}, "Size": len(clip)}
    assert (world.buckets / "acme" / "uploads" / "door.mkv").read_bytes() == clip
    rek = world.h.client(world.acme)  # type: ignore[attr-defined]
    job = rek.start_face_detection(Video={"S3Object": r.json()["S3Object"]})["JobId"]
    assert wait(rek.get_face_detection, job)["JobStatus"] == "SUCCEEDED"
    monkeypatch.setattr(world.svc, "settings", world.svc.settings.replace(video_max_bytes=1000))
    r = httpx.post(f"{world.h.url}/v1/videos", params={"Name": "big.mkv"}, content=clip, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "VideoTooLargeException"
    r = httpx.post(f"{world.h.url}/v1/videos", params={"Name": "../escape.mkv"}, content=b"x", headers=auth)
    assert r.json()["error"] == "InvalidS3ObjectException"
    assert not (world.buckets / "acme" / "big.mkv").exists() and not (world.buckets / "escape.mkv").exists()
    assert list((world.buckets / ".incoming").iterdir()) == []
    r = httpx.post(f"{world.h.url}/v1/videos", params={"Name": "x.mkv"}, content=clip)
    assert r.status_code == 403  # no key, no upload


def test_the_readme_video_example_runs_as_written(world: World, monkeypatch: Any, capsys: Any) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- video-example -->")[1].split("<!-- /video-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    assert "start_face_search" in code and "get_face_search" in code
    key_id, secret = world.acme  # type: ignore[attr-defined]
    monkeypatch.setenv("FW_KEY_ID", key_id)
    monkeypatch.setenv("FW_SECRET", secret)
    code = code.replace("http://127.0.0.1:8750", world.h.url).replace('"my-organisation"', '"acme"')
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 30
    assert {line.split()[2] for line in lines} == {"obama", "biden"}

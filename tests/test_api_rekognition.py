"""The Rekognition wire protocol, end to end: an unmodified boto3 client against a real server.

Every operation facewarden offers runs through boto3 and each response is checked against
botocore's own output shape; SigV4 failures come back as AWS sends them, each with an audit
record; errors carry Rekognition's codes; the moratorium is enforced over the wire.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from unittest import mock

import httpx
import pytest
from botocore.exceptions import ClientError

from facewarden.api.wire import service_model
from facewarden.service import OPERATIONS
from tests.test_api_support import (
    Harness,
    face,
    grant_consent,
    harness_fixture,  # noqa: F401  (the module's server)
    signed_post,
    small_jpeg,
    validate_output,
)

OBAMA_1 = "barack_obama/barack_obama_1.jpg"
OBAMA_2 = "barack_obama/barack_obama_2.jpg"
BIDEN_1 = "joe_biden/joe_biden_1.jpg"


def error_of(exc_info: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc_info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def rek(harness: Harness) -> Any:
    return harness.client(harness.owner_key)


def test_every_offered_operation_over_boto3_matches_botocore_output_shapes(
    harness: Harness, rek: Any
) -> None:
    done: set[str] = set()

    def call(op: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(rek, service_model().operation_model(op).name and _snake(op))
        response = method(**kwargs)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert response["ResponseMetadata"]["RequestId"]
        validate_output(op, response)
        done.add(op)
        return response

    obama1, obama2, biden1 = face(OBAMA_1), face(OBAMA_2), face(BIDEN_1)

    r = call("DetectFaces", Image={"Bytes": obama1}, Attributes=["ALL"])
    assert len(r["FaceDetails"]) == 1 and r["FaceDetails"][0]["Confidence"] > 90
    r = call(
        "CompareFaces", SourceImage={"Bytes": obama1}, TargetImage={"Bytes": obama2}, SimilarityThreshold=80
    )
    assert r["FaceMatches"] and r["FaceMatches"][0]["Similarity"] >= 80
    # boto3 parses by Rekognition's output shape, so facewarden's AppliedThreshold extension is
    # dropped there (test_applied_threshold_extension_is_on_the_wire reads it raw)

    if "CreateCollection" not in OPERATIONS:
        pytest.skip("gallery operations not offered yet")
    call("CreateCollection", CollectionId="people", Tags={"team": "http"})
    call("DescribeCollection", CollectionId="people")
    r = call("ListCollections", MaxResults=10)
    assert "people" in r["CollectionIds"]
    grant_consent(harness, "people", "obama")
    grant_consent(harness, "people", "biden")
    grant_consent(harness, "people", "user-obama")
    r = call(
        "IndexFaces",
        CollectionId="people",
        Image={"Bytes": obama1},
        ExternalImageId="obama",
        MaxFaces=1,
        QualityFilter="AUTO",
        DetectionAttributes=["DEFAULT"],
    )
    obama_face = r["FaceRecords"][0]["Face"]["FaceId"]
    r = call("IndexFaces", CollectionId="people", Image={"Bytes": biden1}, ExternalImageId="biden")
    biden_face = r["FaceRecords"][0]["Face"]["FaceId"]
    r = call("ListFaces", CollectionId="people", MaxResults=10)
    assert {f["FaceId"] for f in r["Faces"]} == {obama_face, biden_face}
    r = call("SearchFaces", CollectionId="people", FaceId=obama_face, FaceMatchThreshold=0, MaxFaces=5)
    assert r["SearchedFaceId"] == obama_face
    r = call("SearchFacesByImage", CollectionId="people", Image={"Bytes": obama2}, MaxFaces=5)
    assert r["FaceMatches"][0]["Face"]["ExternalImageId"] == "obama"
    assert r["FaceMatches"][0]["Similarity"] >= 80

    call("CreateUser", CollectionId="people", UserId="user-obama", ClientRequestToken="tok-1")
    r = call("AssociateFaces", CollectionId="people", UserId="user-obama", FaceIds=[obama_face])
    assert [f["FaceId"] for f in r["AssociatedFaces"]] == [obama_face]
    r = call("ListUsers", CollectionId="people")
    assert [u["UserId"] for u in r["Users"]] == ["user-obama"]
    r = call("SearchUsers", CollectionId="people", FaceId=obama_face, UserMatchThreshold=0)
    r = call("SearchUsersByImage", CollectionId="people", Image={"Bytes": obama2})
    assert r["UserMatches"][0]["User"]["UserId"] == "user-obama"
    call("DisassociateFaces", CollectionId="people", UserId="user-obama", FaceIds=[obama_face])
    call("DeleteUser", CollectionId="people", UserId="user-obama")
    r = call("DeleteFaces", CollectionId="people", FaceIds=[biden_face])
    assert r["DeletedFaces"] == [biden_face]
    call("DeleteCollection", CollectionId="people")

    rekognition_ops = set(service_model().operation_names)
    offered = {op for op in OPERATIONS if op in rekognition_ops}
    missing = offered - done - VIDEO_AND_OTHER_TESTED_ELSEWHERE
    assert not missing, f"offered over the wire but not exercised by this test: {sorted(missing)}"


#: Operations whose wire test lives elsewhere (asynchronous video jobs need their own fixtures:
#: tests/test_video_service.py runs each through boto3 and checks it against botocore's shapes).
VIDEO_AND_OTHER_TESTED_ELSEWHERE: set[str] = {
    "StartFaceDetection",
    "GetFaceDetection",
    "StartFaceSearch",
    "GetFaceSearch",
}


def _snake(op: str) -> str:
    return "".join(("_" + c.lower()) if c.isupper() else c for c in op).lstrip("_")


def test_applied_threshold_extension_is_on_the_wire(harness: Harness) -> None:
    body = {
        "SourceImage": {"Bytes": _b64(small_jpeg())},
        "TargetImage": {"Bytes": _b64(small_jpeg())},
        "SimilarityThreshold": 85,
    }
    r = signed_post(harness.url, harness.key(), "CompareFaces", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["AppliedThreshold"]["Similarity"] == 85
    assert data["FaceMatches"][0]["Similarity"] >= 85
    assert r.headers["content-type"].startswith("application/x-amz-json-1.1")


# ---- errors as AWS sends them ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,kwargs,code",
    [
        ("DetectFaces", {"Image": {"Bytes": b"not an image at all"}}, "InvalidImageFormatException"),
        ("DetectFaces", {"Image": {"Bytes": b""}}, "InvalidImageFormatException"),
        ("DetectFaces", {"Image": {"Bytes": b"\xff" * (5 * 1024 * 1024 + 1)}}, "ImageTooLargeException"),
        (
            "DetectFaces",
            {"Image": {"S3Object": {"Bucket": "my-bucket", "Name": "me.jpg"}}},
            "InvalidS3ObjectException",
        ),
        ("DetectFaces", {"Image": {"Bytes": b"x"}, "Attributes": ["AGE_RANGE"]}, "AccessDeniedException"),
        (
            "CompareFaces",
            {"SourceImage": {"Bytes": b"x"}, "TargetImage": {"Bytes": b"x"}, "SimilarityThreshold": 101.0},
            "InvalidParameterException",
        ),
        ("DetectLabels", {"Image": {"Bytes": b"x"}}, "AccessDeniedException"),
        ("RecognizeCelebrities", {"Image": {"Bytes": b"x"}}, "AccessDeniedException"),
    ],
    ids=["garbage", "empty", "too-large", "s3", "age", "threshold", "labels", "celebrities"],
)
def test_errors_have_rekognition_codes_and_clear_messages(
    rek: Any, op: str, kwargs: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientError) as exc:
        getattr(rek, _snake(op))(**kwargs)
    got_code, message, status = error_of(exc)
    assert got_code == code, message
    assert status == (403 if code == "AccessDeniedException" else 400)
    assert len(message) > 20
    if op == "DetectLabels":  # refused on purpose, with the reason (not a bad parameter)
        assert "[not_face_recognition]" in message and op in message
    if op == "RecognizeCelebrities":
        assert "[celebrity_recognition]" in message and "consent" in message
    if "Attributes" in kwargs:
        assert "[no_demographic_inference]" in message
    if code == "InvalidS3ObjectException":  # the bucket folder does not exist
        assert "bucket" in message and "folder" in message


def test_resource_errors(rek: Any) -> None:
    if "CreateCollection" not in OPERATIONS:
        pytest.skip("gallery operations not offered yet")
    with pytest.raises(ClientError) as exc:
        rek.describe_collection(CollectionId="no-such-collection")
    assert error_of(exc)[0] == "ResourceNotFoundException"
    rek.create_collection(CollectionId="twice")
    with pytest.raises(ClientError) as exc:
        rek.create_collection(CollectionId="twice")
    assert error_of(exc)[0] == "ResourceAlreadyExistsException"
    rek.delete_collection(CollectionId="twice")


def test_error_body_and_headers_are_aws_json(harness: Harness) -> None:
    r = httpx.post(
        harness.url + "/",
        content=b"{}",
        headers={
            "X-Amz-Target": "RekognitionService.DetectFaces",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert r.headers["content-type"].startswith("application/x-amz-json-1.1")
    assert r.json() == {
        "__type": "MissingAuthenticationTokenException",
        "Message": "Missing Authentication Token",
    }


# ---- Signature Version 4 ---------------------------------------------------------------------------
def _audited_failure(harness: Harness, before: int, code: str) -> None:
    if not hasattr(harness.service, "audit"):
        pytest.skip("audit layer not integrated into the service yet")
    records = harness.audit_records()
    assert len(records) == before + 1, "an authentication failure must write exactly one audit record"
    rec = records[-1]
    assert rec["decision"] == "denied" and rec["rule"] == "authentication"
    assert code in json.dumps(rec)


def _count(harness: Harness) -> int:
    return len(harness.audit_records()) if hasattr(harness.service, "audit") else 0


def test_wrong_secret_is_invalid_signature(harness: Harness) -> None:
    key_id, _ = harness.key()
    before = _count(harness)
    with pytest.raises(ClientError) as exc:
        harness.client((key_id, "x" * 40)).detect_faces(Image={"Bytes": b"x"})
    code, message, status = error_of(exc)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert "signature we calculated does not match" in message
    _audited_failure(harness, before, "InvalidSignatureException")


def test_unknown_key_is_unrecognized_client(harness: Harness) -> None:
    before = _count(harness)
    with pytest.raises(ClientError) as exc:
        harness.client(("FWNOSUCHKEY0000000000", "y" * 40)).detect_faces(Image={"Bytes": b"x"})
    assert error_of(exc)[:1] == ("UnrecognizedClientException",)
    assert error_of(exc)[2] == 403
    _audited_failure(harness, before, "UnrecognizedClientException")


def test_tampered_body_is_invalid_signature(harness: Harness) -> None:
    client = harness.client(harness.key())

    def tamper(request: Any, **_: Any) -> None:  # after signing, before sending
        request.body = request.body.replace(b'"DEFAULT"', b'"ALL"    ')  # same length, valid JSON

    client.meta.events.register("before-send.rekognition.DetectFaces", tamper)
    before = _count(harness)
    with pytest.raises(ClientError) as exc:
        client.detect_faces(Image={"Bytes": small_jpeg()}, Attributes=["DEFAULT"])
    assert error_of(exc)[0] == "InvalidSignatureException"
    _audited_failure(harness, before, "InvalidSignatureException")


def test_missing_date_is_invalid_signature(harness: Harness) -> None:
    client = harness.client(harness.key())

    def drop_date(request: Any, **_: Any) -> None:
        del request.headers["X-Amz-Date"]

    client.meta.events.register("before-send.rekognition.DetectFaces", drop_date)
    before = _count(harness)
    with pytest.raises(ClientError) as exc:
        client.detect_faces(Image={"Bytes": b"x"})
    code, message, _ = error_of(exc)
    assert code == "InvalidSignatureException" and "X-Amz-Date" in message
    _audited_failure(harness, before, "InvalidSignatureException")


@pytest.mark.parametrize("minutes", [-6, 6])
def test_stale_or_future_date_is_invalid_signature(harness: Harness, minutes: int) -> None:
    client = harness.client(harness.key())
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    before = _count(harness)
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=skewed),
        pytest.raises(ClientError) as exc,
    ):
        client.detect_faces(Image={"Bytes": b"x"})
    code, message, _ = error_of(exc)
    assert code == "InvalidSignatureException"
    assert ("Signature expired" if minutes < 0 else "Signature not yet current") in message
    _audited_failure(harness, before, "InvalidSignatureException")


def test_date_within_five_minutes_is_accepted(harness: Harness) -> None:
    client = harness.client(harness.key())
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=4)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        r = client.detect_faces(Image={"Bytes": small_jpeg()})
    assert len(r["FaceDetails"]) == 1


def test_missing_authentication(harness: Harness) -> None:
    before = _count(harness)
    r = httpx.post(
        harness.url + "/",
        content=b'{"Image": {"Bytes": "eA=="}}',
        headers={
            "X-Amz-Target": "RekognitionService.DetectFaces",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert r.status_code == 403 and r.json()["__type"] == "MissingAuthenticationTokenException"
    _audited_failure(harness, before, "MissingAuthenticationTokenException")


def test_signature_for_another_service_is_refused(harness: Harness) -> None:
    key = harness.key()
    r = signed_post(harness.url, key, "DetectFaces", b"{}", service="s3")
    assert r.status_code == 403 and r.json()["__type"] == "InvalidSignatureException"


def test_any_region_is_accepted(harness: Harness) -> None:
    key = harness.key()
    r = signed_post(
        harness.url,
        key,
        "DetectFaces",
        json.dumps({"Image": {"Bytes": _b64(small_jpeg())}}).encode(),
        region="eu-west-3",
    )
    assert r.status_code == 200, r.text


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# ---- policy over the wire ------------------------------------------------------------------------
def test_moratorium_refuses_law_enforcement_search_with_its_reason(harness: Harness, rek: Any) -> None:
    if not hasattr(harness.service, "policy"):
        pytest.skip("policy not integrated into the service yet")
    rek.create_collection(CollectionId="morat")
    grant_consent(harness, "morat", "obama")
    rek.index_faces(CollectionId="morat", Image={"Bytes": face(OBAMA_1)}, ExternalImageId="obama")
    police = harness.client(harness.key("city-police", "law_enforcement", "access_control"))
    before = _count(harness)
    with pytest.raises(ClientError) as exc:
        police.search_faces_by_image(CollectionId="morat", Image={"Bytes": face(OBAMA_2)})
    code, message, status = error_of(exc)
    assert (code, status) == ("AccessDeniedException", 403)
    assert "law_enforcement" in message or "moratorium" in message.lower(), message
    rec = harness.audit_records()[-1]
    assert len(harness.audit_records()) == before + 1
    assert (
        rec["decision"] == "denied"
        and rec["operation"] == "SearchFacesByImage"
        and rec["rule"] == "moratorium"
    )
    # detection, which protects privacy, stays allowed
    assert police.detect_faces(Image={"Bytes": small_jpeg()})["FaceDetails"]

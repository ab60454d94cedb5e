"""The Rekognition wire measured against botocore's model and AWS's documented behaviour, with an
unmodified boto3 client: refusals that do not mislead retry handlers, idempotency tokens, opaque
NextTokens, ARNs, unknown operations and content types, and quota replies that are not retried."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from facewarden.api.wire import service_model
from facewarden.policy.rules import DEFAULT_POLICY_PATH
from facewarden.service import OPERATIONS
from facewarden.service.refusals import REFUSED_ATTRIBUTES, REFUSED_OPERATIONS
from tests.test_api_support import Harness, harness_fixture, signed_post, small_jpeg  # noqa: F401

README = Path(__file__).resolve().parents[1] / "README.md"


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def rek(harness: Harness) -> Any:
    return harness.client(harness.owner_key)


# ---- what facewarden refuses, and unknown operations ----------------------------------------------
def test_every_rekognition_operation_is_offered_or_refused_with_a_reason() -> None:
    rekognition = set(service_model().operation_names)
    undecided = rekognition - set(OPERATIONS) - set(REFUSED_OPERATIONS)
    assert not undecided, f"decide: offer or refuse (with a reason) {sorted(undecided)}"
    assert not set(REFUSED_OPERATIONS) - rekognition, "a refusal names no Rekognition operation"
    assert not set(REFUSED_OPERATIONS) & set(OPERATIONS), "an operation is offered and refused"
    for name, (rule, reason) in REFUSED_OPERATIONS.items():
        assert re.fullmatch(r"[a-z_]+", rule) and len(reason) > 40, name


@pytest.mark.parametrize(
    "op,kwargs,rule",
    [
        ("DetectText", {"Image": {"Bytes": b"x"}}, "not_face_recognition"),
        ("RecognizeCelebrities", {"Image": {"Bytes": b"x"}}, "celebrity_recognition"),
        (
            "StartPersonTracking",
            {"Video": {"S3Object": {"Bucket": "bucket", "Name": "v.mp4"}}},
            "person_tracking",
        ),
        ("ListStreamProcessors", {}, "live_face_search"),
    ],
)
def test_refused_operations_are_access_denied_with_the_reason_and_audited(
    harness: Harness, rek: Any, op: str, kwargs: dict[str, Any], rule: str
) -> None:
    before = len(harness.audit_records())
    with pytest.raises(ClientError) as exc:
        getattr(rek, _snake(op))(**kwargs)
    code, message, status = error_of(exc)
    assert (code, status) == ("AccessDeniedException", 403)
    assert f"[{rule}]" in message and op in message
    records = harness.audit_records()
    assert len(records) == before + 1
    assert (records[-1]["operation"], records[-1]["decision"], records[-1]["rule"]) == (op, "denied", rule)


def test_unknown_target_is_unknown_operation_as_aws_sends_it(harness: Harness) -> None:
    r = signed_post(harness.url, harness.owner_key, "DetectFacez", b"{}")
    assert r.status_code == 404, r.text
    assert r.json()["__type"] == "UnknownOperationException" == r.headers["x-amzn-ErrorType"]
    assert "DetectFacez" in r.json()["Message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_aws_json_is_refused_before_anything_runs(
    harness: Harness, content_type: str | None
) -> None:
    body = json.dumps({"Image": {"Bytes": __import__("base64").b64encode(small_jpeg()).decode()}}).encode()
    before = len(harness.audit_records())
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    r = signed_post(harness.url, harness.owner_key, "DetectFaces", body, headers=headers)
    assert r.status_code == 404 and r.json()["__type"] == "UnknownOperationException", r.text
    assert "application/x-amz-json-1.1" in r.json()["Message"]
    assert len(harness.audit_records()) == before  # nothing ran
    ok = signed_post(harness.url, harness.owner_key, "DetectFaces", body)  # the SDKs' type
    assert ok.status_code == 200, ok.text


# ---- attributes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attribute", ["EYEGLASSES", "SUNGLASSES", "EYES_OPEN", "MOUTH_OPEN", "FACE_OCCLUDED", "EYE_DIRECTION"]
)
def test_quality_attributes_are_refused_for_their_true_reason(rek: Any, attribute: str) -> None:
    with pytest.raises(ClientError) as exc:
        rek.detect_faces(Image={"Bytes": small_jpeg()}, Attributes=[attribute])
    code, message, status = error_of(exc)
    assert (code, status) == ("AccessDeniedException", 403)
    assert "[not_measured]" in message and attribute in message
    assert "no demographic inference" in message and "measured on labelled photos" in message


@pytest.mark.parametrize("attribute", ["GENDER", "AGE_RANGE", "EMOTIONS", "SMILE", "BEARD"])
def test_demographic_and_emotion_attributes_are_refused(rek: Any, attribute: str) -> None:
    with pytest.raises(ClientError) as exc:
        rek.detect_faces(Image={"Bytes": small_jpeg()}, Attributes=["DEFAULT", attribute])
    code, message, _ = error_of(exc)
    assert code == "AccessDeniedException"
    assert REFUSED_ATTRIBUTES[attribute][1][0] in message


def test_readme_names_the_landmark_types_all_returns(rek: Any, tmp_path: Path) -> None:
    face = rek.detect_faces(Image={"Bytes": small_jpeg()}, Attributes=["ALL"])["FaceDetails"][0]
    five = [lm["Type"] for lm in face["Landmarks"]]
    from facewarden.config import Settings
    from facewarden.service import Service

    svc = Service(Settings(data_dir=tmp_path, landmarks_68=True))
    try:
        owner = svc.init_owner("o", "commercial")[0]
        r = svc.call("DetectFaces", {"Image": {"Bytes": small_jpeg()}, "Attributes": ["ALL"]}, owner)
    finally:
        svc.close()
    all_types = [lm["Type"] for lm in r["FaceDetails"][0]["Landmarks"]]
    text = README.read_text()
    section = " ".join(text[text.index("Landmarks returned") :][:2500].split())
    assert ", ".join(f"`{t}`" for t in five) in section
    assert ", ".join(f"`{t}`" for t in all_types[len(five) :]) in section
    enum = set(service_model().shape_for("LandmarkType").enum)
    assert set(all_types) <= enum


# ---- daily quotas are not retried -----------------------------------------------------------------------
def test_a_used_up_daily_quota_makes_a_default_boto3_client_send_exactly_one_request(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    svc, owner = harness.service, harness.service.owner_principal()
    policy = DEFAULT_POLICY_PATH.read_text()
    svc.call(
        "ApplyPolicy", {"Policy": policy.replace("per_key_per_day = 1000", "per_key_per_day = 1")}, owner
    )
    try:
        for mode in (None, "standard", "adaptive"):  # boto3's default (legacy) and the other modes
            key = harness.key("bank", "commercial", "identity_verification")
            client = boto3.client(
                "rekognition",
                endpoint_url=harness.url,
                region_name="us-east-1",
                aws_access_key_id=key[0],
                aws_secret_access_key=key[1],
                **({"config": Config(retries={"mode": mode})} if mode else {}),
            )
            sent: list[int] = []
            client.meta.events.register(
                "before-send.rekognition.CompareFaces", lambda sent=sent, **kw: sent.append(1)
            )
            image = {"Bytes": small_jpeg()}
            client.compare_faces(SourceImage=image, TargetImage=image)  # the day's one comparison
            sent.clear()
            with pytest.raises(ClientError) as exc:
                client.compare_faces(SourceImage=image, TargetImage=image)
            code, message, status = error_of(exc)
            assert (code, status) == ("ServiceQuotaExceededException", 400), mode
            assert "[quota:comparison]" in message and re.search(
                r"resets at \d{4}-\d\d-\d\dT00:00:00Z", message
            )
            assert len(sent) == 1, f"retry mode {mode or 'default'}: {len(sent)} HTTP requests for one call"
            assert exc.value.response["ResponseMetadata"].get("RetryAttempts", 0) == 0
    finally:
        svc.call("ApplyPolicy", {"Policy": policy}, owner)


# ---- users and ClientRequestToken --------------------------------------------------------------------
def test_create_user_conflicts_and_client_request_tokens_are_idempotent(harness: Harness, rek: Any) -> None:
    rek.create_collection(CollectionId="tokens")
    rek.create_user(CollectionId="tokens", UserId="u1")
    with pytest.raises(ClientError) as exc:  # Rekognition: ConflictException, not a silent 200
        rek.create_user(CollectionId="tokens", UserId="u1")
    assert error_of(exc)[0] == "ConflictException" and "u1" in error_of(exc)[1]
    with pytest.raises(ClientError) as exc:  # a new token does not make an existing user new
        rek.create_user(CollectionId="tokens", UserId="u1", ClientRequestToken="fresh-token")
    assert error_of(exc)[0] == "ConflictException"

    # a retried request (same token, same parameters) gets the first response, and runs once
    rek.create_user(CollectionId="tokens", UserId="u2", ClientRequestToken="tok-u2")
    before = len(harness.audit_records())
    rek.create_user(CollectionId="tokens", UserId="u2", ClientRequestToken="tok-u2")
    replay = harness.audit_records()[-1]
    assert len(harness.audit_records()) == before + 1
    assert replay["decision"] == "allowed" and replay["details"].get("idempotent_replay") is True
    # the same token with other parameters: refused, nothing created
    with pytest.raises(ClientError) as exc:
        rek.create_user(CollectionId="tokens", UserId="u3", ClientRequestToken="tok-u2")
    assert error_of(exc)[0] == "IdempotentParameterMismatchException"
    assert [u["UserId"] for u in rek.list_users(CollectionId="tokens")["Users"]] == ["u1", "u2"]
    # tokens are per operation: DeleteUser may reuse it, and its own retry is answered the same
    rek.delete_user(CollectionId="tokens", UserId="u2", ClientRequestToken="tok-u2")
    rek.delete_user(CollectionId="tokens", UserId="u2", ClientRequestToken="tok-u2")
    with pytest.raises(ClientError) as exc:  # without a token, a second delete is what it is
        rek.delete_user(CollectionId="tokens", UserId="u2")
    assert error_of(exc)[0] == "ResourceNotFoundException"


# ---- NextToken ---------------------------------------------------------------------------------------------
def test_next_tokens_are_opaque_and_bound_to_operation_and_collection(rek: Any) -> None:
    for c in ("pages-a", "pages-b"):
        rek.create_collection(CollectionId=c)
        for u in ("x1", "x2", "x3"):
            rek.create_user(CollectionId=c, UserId=u)
    seen, token = [], None
    while True:  # paging works, each user once
        page = rek.list_users(CollectionId="pages-a", MaxResults=1, **({"NextToken": token} if token else {}))
        seen += [u["UserId"] for u in page["Users"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == ["x1", "x2", "x3"]
    first = rek.list_users(CollectionId="pages-a", MaxResults=1)["NextToken"]
    assert first != "x1"
    bad = [
        ("list_faces", {"CollectionId": "pages-a", "NextToken": "garbage"}),
        ("list_users", {"CollectionId": "pages-a", "NextToken": first[:-2] + "AA"}),  # tampered
        ("list_users", {"CollectionId": "pages-b", "NextToken": first}),  # another collection
        ("list_faces", {"CollectionId": "pages-a", "NextToken": first}),  # another operation
        ("list_collections", {"NextToken": first}),
    ]
    for method, kwargs in bad:
        with pytest.raises(ClientError) as exc:
            getattr(rek, method)(**kwargs)
        assert error_of(exc)[:1] == ("InvalidPaginationTokenException",), (method, kwargs)
    cols = rek.list_collections(MaxResults=1)
    more = rek.list_collections(MaxResults=1, NextToken=cols["NextToken"])
    assert more["CollectionIds"] and more["CollectionIds"] != cols["CollectionIds"]


# ---- ARNs ------------------------------------------------------------------------------------------------
def test_collection_arns_name_the_request_region_and_the_installation_account(harness: Harness) -> None:
    paris = boto3.client(
        "rekognition",
        endpoint_url=harness.url,
        region_name="eu-west-3",
        aws_access_key_id=harness.owner_key[0],
        aws_secret_access_key=harness.owner_key[1],
    )
    account = harness.service.account_id
    assert re.fullmatch(r"\d{12}", account)
    arn = paris.create_collection(CollectionId="arns")["CollectionArn"]
    assert arn == f"arn:aws:rekognition:eu-west-3:{account}:collection/arns"
    virginia = harness.client(harness.owner_key)
    described = virginia.describe_collection(CollectionId="arns")["CollectionARN"]
    assert described == f"arn:aws:rekognition:us-east-1:{account}:collection/arns"


def test_the_account_id_is_per_installation_and_stable(tmp_path: Path) -> None:
    from facewarden.service.tokens import account_id
    from facewarden.keyfiles import keys_dir

    ids = []
    for name in ("one", "two"):
        (keys_dir(tmp_path / name) / "secret.key").write_bytes(name.encode() * 8)
        ids.append(account_id(tmp_path / name))
    assert ids[0] != ids[1] and ids[0] == account_id(tmp_path / "one")


def _snake(op: str) -> str:
    return "".join(("_" + c.lower()) if c.isupper() else c for c in op).lstrip("_")


# ---- the same image twice -----------------------------------------------------------------------------
def test_indexfaces_of_an_image_already_enrolled_is_skipped_and_says_so(harness: Harness, rek: Any) -> None:
    from tests.test_api_support import face, grant_consent

    rek.create_collection(CollectionId="twice-indexed")
    grant_consent(harness, "twice-indexed", "obama")
    photo = face("barack_obama/barack_obama_1.jpg")
    first = rek.index_faces(CollectionId="twice-indexed", Image={"Bytes": photo}, ExternalImageId="obama")
    ids = [r["Face"]["FaceId"] for r in first["FaceRecords"]]
    assert len(ids) == 1
    # boto3: the faces enrolled from it before (a retried script goes on with the same FaceId) ...
    again = rek.index_faces(CollectionId="twice-indexed", Image={"Bytes": photo}, ExternalImageId="obama")
    assert [r["Face"]["FaceId"] for r in again["FaceRecords"]] == ids
    assert rek.describe_collection(CollectionId="twice-indexed")["FaceCount"] == 1
    record = harness.audit_records()[-2]  # (DescribeCollection's is the last)
    assert record["operation"] == "IndexFaces" and record["counts"]["skipped_known_image"] == 1
    # ... and on the wire, the response says so
    body = {"CollectionId": "twice-indexed", "Image": {"Bytes": _b64(photo)}, "ExternalImageId": "obama"}
    raw = signed_post(harness.url, harness.owner_key, "IndexFaces", json.dumps(body).encode()).json()
    assert raw["AlreadyIndexed"] is True and [r["Face"]["FaceId"] for r in raw["FaceRecords"]] == ids


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()

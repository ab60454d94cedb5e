"""Typed operations: requests parsed and checked in one place, results in Rekognition's shapes,
internal fields out of the wire's reach, and the typed path taking the same policy-first route."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest

from facewarden.config import Settings
from facewarden.errors import AccessDenied, InvalidInput, InvalidS3Object, NotOffered
from facewarden.policy import Kind
from facewarden.service import OPERATIONS, Service, params
from facewarden.service.admin import VerifyAuditResult
from facewarden.service.faces import AnalysedImage, ClusterFacesRequest, DetectFacesRequest, detect_faces
from facewarden.service.gallery import (
    DescribeCollectionResult,
    IndexFacesRequest,
    ListFacesRequest,
    SearchFacesByImageRequest,
    index_faces,
)
from facewarden.service.params import INTERNAL, NULLABLE, Image, Items, OneOf, Pattern, Range, Wire


@dataclass(frozen=True)
class Sample:
    collection_id: Annotated[str, Pattern(r"[a-z]{1,8}", "1-8 letters a-z")]
    max_results: Annotated[int, Range(1, 10)] = 5
    threshold: Annotated[float, Range(0, 100)] | None = None
    mode: Annotated[str, OneOf(("LOW", "HIGH"), upper=True)] = "LOW"
    face_ids: Annotated[list[str], Items("face ids", 1, 2)] | None = None
    flag: bool = False
    secret: Annotated[object | None, INTERNAL] = None


def test_wire_names_are_the_fields_in_camel_case() -> None:
    req = params.parse(Sample, {"CollectionId": "abc", "MaxResults": 7.0, "Mode": "high", "Flag": "true"})
    assert req == Sample("abc", 7, None, "HIGH", None, True)
    assert [p.wire for p in params.params_of(Sample)][:3] == ["CollectionId", "MaxResults", "Threshold"]
    assert params.camel("external_image_id") == "ExternalImageId"


@pytest.mark.parametrize(
    "data,message",
    [
        ({}, "CollectionId is required."),
        ({"CollectionId": "ABC"}, "CollectionId must be 1-8 letters a-z; got 'ABC'."),
        ({"CollectionId": "a", "MaxResults": 11}, "MaxResults must be between 1 and 10, not 11."),
        ({"CollectionId": "a", "MaxResults": 1.5}, "MaxResults must be a whole number between 1 and 10."),
        ({"CollectionId": "a", "MaxResults": True}, "MaxResults must be a whole number between 1 and 10."),
        ({"CollectionId": "a", "Threshold": "80"}, "Threshold must be a number between 0 and 100."),
        ({"CollectionId": "a", "Mode": "mid"}, "Mode must be one of LOW, HIGH; got 'mid'."),
        ({"CollectionId": "a", "FaceIds": []}, "FaceIds must be a list of 1 to 2 face ids."),
        ({"CollectionId": "a", "FaceIds": ["x", ""]}, "FaceIds must be a list of 1 to 2 face ids."),
        ({"CollectionId": "a", "Flag": "yes"}, "Flag must be true or false."),
    ],
)
def test_bad_members_get_a_clear_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        params.parse(Sample, data)
    assert info.value.message == message


def test_internal_fields_cannot_be_set_from_a_wire_dict() -> None:
    smuggled = {"CollectionId": "a", "Secret": 1, "secret": 1, "_Secret": 1}
    assert params.parse(Sample, smuggled).secret is None
    analysed = AnalysedImage("0" * 64, "m", [], __import__("numpy").zeros((0, 128)))
    for key in ("Analysed", "analysed", "_Analysed"):
        assert params.parse(IndexFacesRequest, {"CollectionId": "c", key: analysed}).analysed is None
        assert params.parse(ClusterFacesRequest, {key: [analysed]}).analysed is None
    # ... while a request built in Python keeps them through the check.
    req = IndexFacesRequest("c", analysed=analysed)
    assert params.validate(req).analysed is analysed


def test_images_and_the_shared_members() -> None:
    req = params.parse(
        SearchFacesByImageRequest,
        {"CollectionId": "c", "Image": {"Bytes": b"xy"}, "QualityFilter": "auto", "FaceMatchThreshold": 85},
    )
    assert req.image == Image(b"xy") and req.quality_filter == "AUTO" and req.face_match_threshold == 85.0
    s3 = params.parse(DetectFacesRequest, {"Image": {"S3Object": {"Bucket": "cams", "Name": "a/b.jpg"}}})
    assert s3.image == Image(b"", params.S3Object("cams", "a/b.jpg"))  # read by the service, not the parser
    with pytest.raises(InvalidInput, match="bucket name"):
        params.parse(DetectFacesRequest, {"Image": {"S3Object": {"Bucket": "../x", "Name": "n"}}})
    with pytest.raises(InvalidS3Object):
        params.parse(DetectFacesRequest, {"Image": {"S3Object": "s3://cams/a.jpg"}})
    with pytest.raises(InvalidInput, match="Image.Bytes is missing"):
        params.parse(DetectFacesRequest, {"Image": {}})
    with pytest.raises(NotOffered, match="does not infer gender"):
        params.parse(DetectFacesRequest, {"Image": {"Bytes": b"x"}, "Attributes": ["GENDER"]})
    assert (
        params.parse(DetectFacesRequest, {"Image": {"Bytes": b"x"}, "Attributes": ["ALL"]}).attributes
        == "ALL"
    )
    with pytest.raises(InvalidInput, match="FaceIds\\[0\\] must be a face id"):
        params.parse(ListFacesRequest, {"CollectionId": "c", "FaceIds": ["not-a-uuid"]})
    # Typed requests are checked the same way.
    with pytest.raises(InvalidInput, match="MaxFaces must be between 1 and 4096"):
        params.validate(SearchFacesByImageRequest("c", Image(b"x"), max_faces=0))


def test_results_in_rekognitions_shape() -> None:
    d = DescribeCollectionResult(1, 0, "m", "arn:x", 1.5)
    assert params.to_wire(d) == {
        "FaceCount": 1,
        "UserCount": 0,
        "FaceModelVersion": "m",
        "CollectionARN": "arn:x",  # a name that does not camelize: Wire("CollectionARN")
        "CreationTimestamp": 1.5,
    }
    v = params.to_wire(VerifyAuditResult(True, 3, 1, None, None, None, "", []))
    assert v["FirstBadSequence"] is None and "LastCheckpoint" in v  # NULLABLE: sent as null
    assert params.to_wire([d, {"As": "is"}]) == [params.to_wire(d), {"As": "is"}]

    @dataclass(frozen=True)
    class Page:
        items: list[int]
        next_token: str | None = None
        note: Annotated[str | None, NULLABLE, Wire("Remark")] = None

    assert params.to_wire(Page([1])) == {"Items": [1], "Remark": None}  # absent members left out


def test_every_operation_declares_its_types() -> None:
    for name, op in OPERATIONS.items():
        assert isinstance(op.kind, Kind)
        assert op.summary and op.summary != name, name
        params.params_of(op.request)  # every request type describes itself
        if op.rest is not None:
            for member in __import__("re").findall(r"{(\w+)}", op.rest.path):
                assert member in {p.wire for p in params.params_of(op.request)}, (name, member)


def test_the_typed_path_decides_first_and_audits(tmp_path: Path) -> None:
    svc = Service(Settings(data_dir=tmp_path / "d"))
    try:
        owner, _ = svc.init_owner("city-police", "law_enforcement")
        # A denied caller is refused before its request is even checked (an invalid one here).
        with pytest.raises(AccessDenied) as info:
            svc.execute(index_faces, IndexFacesRequest("NOT VALID!"), owner)
        assert info.value.rule == "moratorium"
        rec = svc.audit.last_record()
        assert (rec["operation"], rec["decision"], rec["collection"]) == (
            "IndexFaces",
            "denied",
            "NOT VALID!",
        )
        # An allowed one gets the check's message, audited as a failure.
        with pytest.raises(InvalidInput, match="Unknown attribute"):
            svc.execute(detect_faces, DetectFacesRequest(Image(b"x"), attributes=["SMILEY"]), owner)  # type: ignore[arg-type]
        assert svc.audit.last_record()["decision"] == "failed"
        with pytest.raises(InvalidInput, match="takes a DetectFacesRequest"):
            svc.execute(detect_faces, Sample("a"), owner)  # type: ignore[arg-type]
    finally:
        svc.close()


@dataclass(frozen=True)
class S3Object:
    bucket: str
    name: Annotated[str, Pattern(r"[^.][^\n]*", "a path in the bucket")]
    version: str | None = None


@dataclass(frozen=True)
class Video:
    s3_object: Annotated[S3Object, Wire("S3Object")]


@dataclass(frozen=True)
class StartSample:
    video: Video
    job_tag: str | None = None


def test_nested_structures_are_checked_member_by_member() -> None:
    from facewarden.api.openapi import param_schema

    req = params.parse(StartSample, {"Video": {"S3Object": {"Bucket": "cams", "Name": "door/1.mp4"}}})
    assert req.video.s3_object == S3Object("cams", "door/1.mp4")
    with pytest.raises(InvalidInput) as info:
        params.parse(StartSample, {"Video": {"S3Object": {"Name": "x.mp4"}}})
    assert info.value.message == "Video.S3Object.Bucket is required."
    with pytest.raises(InvalidInput, match="Video must be an object"):
        params.parse(StartSample, {"Video": "door.mp4"})
    with pytest.raises(InvalidInput, match="Video.S3Object.Name must be a path in the bucket"):
        params.validate(StartSample(Video(S3Object("cams", ".hidden"))))
    assert params.to_wire(req) == {"Video": {"S3Object": {"Bucket": "cams", "Name": "door/1.mp4"}}}
    schema = param_schema(params.params_of(StartSample)[0])
    assert schema["properties"]["S3Object"]["required"] == ["Bucket", "Name"]

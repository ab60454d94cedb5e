"""RedactFaces through every door (the service, the native REST API, the Rekognition wire, the CLI):
every face hidden, the consenting person of a keep collection left visible, and keeping people
visible refused as the identification it is — to police keys (the moratorium), to redaction keys
(their purpose) — before anything is decoded, with an audit record each time."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from facewarden.errors import AccessDenied, InvalidImage, InvalidInput, ResourceNotFound
from facewarden.media import images
from facewarden.redact import measure
from facewarden.service import redaction as ops

from .test_api_support import FACES, Harness, face, grant_consent, harness_fixture, signed_post  # noqa: F401

GROUP = "group/face_recognition_obama_and_biden.jpg"  # Biden, Obama and a girl, left to right


def group_photo() -> bytes:
    """The group photo at 1000 px wide (faces of 120-200 px), with GPS in its EXIF."""
    img = Image.open(io.BytesIO(face(GROUP))).convert("RGB")
    img.thumbnail((1000, 1000))
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 0.0)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def obama_box(result: Any, width: int) -> dict[str, float]:
    """The BoundingBox of Obama's face (the middle one of the three, left to right)."""
    boxes = sorted((f["BoundingBox"] for f in result["Faces"]), key=lambda b: b["Left"])
    return boxes[1]


def pixels_box(b: dict[str, float], w: int, h: int) -> Any:
    from facewarden.engine.faces import Box

    return Box(b["Left"] * w, b["Top"] * h, (b["Left"] + b["Width"]) * w, (b["Top"] + b["Height"]) * h)


def obama_consents(h: Harness, collection_id: str) -> None:
    """A consent collection of the owner's where Obama consented and is enrolled."""
    owner = h.service.owner_principal()
    h.service.call("CreateCollection", {"CollectionId": collection_id}, owner)
    grant_consent(h, collection_id, "obama")
    photo = face("barack_obama/barack_obama_2.jpg")
    request = {"CollectionId": collection_id, "Image": {"Bytes": photo}, "ExternalImageId": "obama"}
    h.service.call("IndexFaces", request, owner)


@pytest.fixture(scope="module")
def setup(harness: Harness) -> dict[str, Any]:
    """A commercial org with a consent collection where Obama consented; a police org; keys."""
    obama_consents(harness, "consenting")
    return {
        "owner": harness.owner_key,
        "police": harness.key("city-police", "law_enforcement", "redaction"),
        "redactor": harness.key("newsroom", "commercial", "redaction"),
        "photo": group_photo(),
    }


def records(h: Harness, operation: str) -> list[dict[str, Any]]:
    return [r for r in h.audit_records() if r.get("operation") == operation]


def rest(h: Harness, key: tuple[str, str], **kw: Any) -> httpx.Response:
    return httpx.post(
        h.url + "/v1/redact", headers={"Authorization": f"Bearer {key[0]}:{key[1]}"}, timeout=120, **kw
    )


def test_rest_multipart_hides_every_face_and_strips_exif(harness: Harness, setup: dict) -> None:
    r = rest(harness, setup["police"], files={"Image": ("g.jpg", setup["photo"], "image/jpeg")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["FacesFound"], out["FacesHidden"], out["FacesKept"]) == (3, 3, 0)
    data = base64.b64decode(out["Image"]["Bytes"])
    redacted = Image.open(io.BytesIO(data))
    assert out["Format"] == "JPEG" and redacted.format == "JPEG" and not redacted.getexif()
    before, after = images.decode(setup["photo"]), images.decode(data)
    w, h = redacted.size
    for f in out["Faces"]:
        assert not measure.unredacted(before, after, pixels_box(f["BoundingBox"], w, h))
    last = records(harness, "RedactFaces")[-1]
    assert (
        last["decision"] == "allowed" and last["counts"]["faces_hidden"] == 3 and last["org"] == "city-police"
    )


def test_rest_json_body_with_a_method_and_shape(harness: Harness, setup: dict) -> None:
    body = {"Image": {"Bytes": base64.b64encode(setup["photo"]).decode()}, "Method": "solid", "Shape": "box"}
    r = rest(harness, setup["redactor"], json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    after = images.decode(base64.b64decode(out["Image"]["Bytes"]))
    w, h = after.shape[1], after.shape[0]
    b = pixels_box(out["Faces"][0]["BoundingBox"], w, h)
    centre = after[int((b.top + b.bottom) / 2), int((b.left + b.right) / 2)]
    assert np.all(centre < 30)  # black, give or take JPEG
    bad = rest(harness, setup["redactor"], json={**body, "Method": "smudge"})
    assert bad.status_code == 400 and "blur, pixelate, solid" in bad.json()["message"]


def test_keep_collection_leaves_only_the_consenting_person_visible(harness: Harness, setup: dict) -> None:
    r = rest(
        harness,
        setup["owner"],
        files={"Image": ("g.jpg", setup["photo"], "image/jpeg")},
        data={"KeepCollectionId": "consenting"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["FacesFound"], out["FacesHidden"], out["FacesKept"]) == (3, 2, 1)
    before = images.decode(setup["photo"])
    after = images.decode(base64.b64decode(out["Image"]["Bytes"]))
    h, w = before.shape[:2]
    for f in out["Faces"]:
        visible = measure.unredacted(before, after, pixels_box(f["BoundingBox"], w, h))
        assert visible == f["Kept"]
    assert obama_box(out, w) == next(f["BoundingBox"] for f in out["Faces"] if f["Kept"])
    assert out["AppliedThreshold"]["Similarity"] >= 80
    rec = records(harness, "RedactFaces")[-1]
    assert rec["counts"]["faces_kept"] == 1 and rec["subjects"] and rec["collection"] == "consenting"
    assert rec["subjects"][0] != "obama"  # a pseudonym, never the subject id itself


def test_withdrawn_consent_hides_the_person_again(harness: Harness, setup: dict) -> None:
    svc = harness.service
    owner = svc.owner_principal()
    obama_consents(harness, "withdrawn")
    svc.call("WithdrawConsent", {"Subject": "obama", "CollectionId": "withdrawn"}, owner)
    req = ops.RedactFacesRequest(ops.Image(setup["photo"]), keep_collection_id="withdrawn")
    result = svc.execute(ops.redact_faces, req, owner)
    assert (result.faces_found, result.faces_kept) == (3, 0)


def test_moratorium_refuses_keep_collection_to_police_on_every_path(harness: Harness, setup: dict) -> None:
    """REST, the Rekognition wire and the service (the CLI: below) all refuse it, audited, and
    nothing is decoded: the same request with a corrupt image is refused the same way."""
    svc = harness.service
    police = setup["police"]
    before = len(records(harness, "RedactFaces"))
    r = rest(harness, police, files={"Image": ("x.jpg", b"not an image", "image/jpeg")},
             data={"KeepCollectionId": "consenting"})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"] == "AccessDeniedException"
    assert "moratorium" in r.json()["message"]
    body = json.dumps(
        {"Image": {"Bytes": base64.b64encode(setup["photo"]).decode()}, "KeepCollectionId": "consenting"}
    )
    w = signed_post(harness.url, police, "RedactFaces", body.encode())
    assert (
        w.status_code == 403
        and w.json()["__type"] == "AccessDeniedException"
        and "moratorium" in w.json()["Message"]
    )
    principal = svc.principal_for_key(police[0])
    with pytest.raises(AccessDenied) as exc:
        svc.execute(
            ops.redact_faces,
            ops.RedactFacesRequest(ops.Image(b"junk"), keep_collection_id="consenting"),
            principal,
        )
    assert exc.value.rule == "moratorium"
    denied = records(harness, "RedactFaces")[before:]
    assert len(denied) == 3 and all(d["decision"] == "denied" and d["rule"] == "moratorium" for d in denied)
    assert all(d["sector"] == "law_enforcement" for d in records(harness, "KeepConsentingFaces")[-3:])
    # the same police key may redact everyone
    assert rest(harness, police, files={"Image": ("g.jpg", setup["photo"], "image/jpeg")}).status_code == 200


def test_a_redaction_key_may_not_keep_anyone_and_may_not_identify(harness: Harness, setup: dict) -> None:
    svc = harness.service
    principal = svc.principal_for_key(setup["redactor"][0])
    req = ops.RedactFacesRequest(ops.Image(setup["photo"]), keep_collection_id="consenting")
    with pytest.raises(AccessDenied) as exc:
        svc.execute(ops.redact_faces, req, principal)
    assert exc.value.rule == "purpose"
    with pytest.raises(AccessDenied):
        svc.call(
            "SearchFacesByImage",
            {"CollectionId": "consenting", "Image": {"Bytes": setup["photo"]}},
            principal,
        )


def test_bad_images_and_parameters(harness: Harness, setup: dict) -> None:
    svc = harness.service
    owner = svc.owner_principal()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    for data, err, message in [
        (b"", InvalidImage, "empty"),
        (setup["photo"][:5000], InvalidImage, "corrupt or truncated"),
        (b"%PDF-1.4 not an image", InvalidImage, "not a recognised image"),
        (gif.getvalue(), InvalidImage, "animated"),
    ]:
        with pytest.raises(err, match=message):
            svc.execute(ops.redact_faces, ops.RedactFacesRequest(ops.Image(data)), owner)
    with pytest.raises(InvalidInput, match="corners of the face box"):
        svc.execute(ops.redact_faces, ops.RedactFacesRequest(ops.Image(setup["photo"]), margin=0.05), owner)
    with pytest.raises(ResourceNotFound, match="does not exist"):
        svc.execute(
            ops.redact_faces,
            ops.RedactFacesRequest(ops.Image(setup["photo"]), keep_collection_id="nope"),
            owner,
        )
    failed = [r for r in records(harness, "RedactFaces") if r["decision"] == "failed"]
    assert len(failed) >= 5


# ---- the CLI ----------------------------------------------------------------------------------------
def cli(data_dir: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env_key = ["--key", key] if key else []
    return subprocess.run(
        [sys.executable, "-m", "facewarden.cli", "--data-dir", str(data_dir), *env_key, *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def cli_installation(tmp_path: Path, owner: str, police: str, purpose: str) -> tuple[Path, str]:
    """A data directory initialised for the commercial ``owner``, with a law-enforcement org
    ``police`` and a key of ``purpose`` for it: (data dir, the police key's id)."""
    d = tmp_path / "data"
    assert cli(d, "init", "--org", owner, "--sector", "commercial").returncode == 0
    assert cli(d, "org", "create", police, "--sector", "law_enforcement").returncode == 0
    made = cli(d, "--json", "key", "create", "--org", police, "--purpose", purpose)
    assert made.returncode == 0, made.stderr
    return d, json.loads(made.stdout)["AccessKeyId"]


def test_cli_redacts_images_with_a_summary_and_refuses_keep_to_police(tmp_path: Path) -> None:
    d, police = cli_installation(tmp_path, "shop", "police", "redaction")
    photo = tmp_path / "in" / "group.jpg"
    photo.parent.mkdir()
    photo.write_bytes(group_photo())
    bad = tmp_path / "in" / "notes.jpg"
    bad.write_text("not a photo")
    r = cli(d, "--json", "redact", str(photo), str(bad), "--out", str(tmp_path / "out"), key=police)
    assert r.returncode == 3, r.stderr  # the bad file is reported, the good one redacted
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["FacesFound"] == 3 and lines[0]["FacesHidden"] == 3 and lines[0]["FacesKept"] == 0
    assert lines[1]["Error"]["Code"] == "InvalidImageFormatException" and lines[1]["Image"] == str(bad)
    out = Image.open(tmp_path / "out" / "group.jpg")
    assert out.format == "JPEG" and not out.getexif()
    r = cli(
        d, "redact", str(photo), "--out", str(tmp_path / "out2"), "--keep-collection", "staff", key=police
    )
    assert r.returncode == 4 and "moratorium" in r.stderr
    assert not (tmp_path / "out2" / "group.jpg").exists()
    r = cli(d, "redact", str(photo), "--out", str(photo.parent))
    assert r.returncode == 3 and "overwrite the original" in r.stderr

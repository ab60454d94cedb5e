"""Footage release end to end: a police organisation asks a shop for its camera footage; the shop
declines one request and releases redacted copies for another; the police download each copy once;
every step is audited and the transparency report counts it. Every bad input is refused clearly,
audited, and releases nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from facewarden.errors import InvalidImage, InvalidInput, InvalidVideo, ReleaseStateError, ResourceNotFound
from facewarden.media import images
from facewarden.redact import measure
from facewarden.service import release as ops

from .test_api_support import FACES, Harness, face, harness_fixture  # noqa: F401
from .test_redact_service import cli, cli_installation, group_photo, obama_consents

REQUEST = {
    "OwnerOrganization": "corner-shop",
    "TimeRange": {"Start": "2026-03-01T21:00:00Z", "End": "2026-03-01T23:00:00Z"},
    "Place": "12 High Street, door camera",
    "Reason": "burglary at number 14",
    "LegalBasis": "warrant",
    "Reference": "W-2026-0042",
}


def bearer(key: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key[0]}:{key[1]}"}


def call(h: Harness, key: tuple[str, str], method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, h.url + path, headers=bearer(key), timeout=120, **kw)


@pytest.fixture(scope="module")
def parties(harness: Harness) -> dict[str, Any]:
    shop = harness.key("corner-shop", "commercial", "footage_release")
    police = harness.key("city-police", "law_enforcement", "footage_release")
    other = harness.key("bank", "commercial", "footage_release")
    photo = group_photo()
    r = call(harness, shop, "POST", "/v1/releases/footage", files={"Image": ("door.jpg", photo, "image/jpeg")},
             data={"Name": "door-2026-03-01.jpg", "Place": "12 High Street"})  # fmt: skip
    assert r.status_code == 200, r.text
    theirs = call(
        harness, other, "POST", "/v1/releases/footage", files={"Image": ("atm.jpg", photo, "image/jpeg")}
    )
    return {"shop": shop, "police": police, "bank": other, "photo": photo, "footage": r.json()["FootageId"],
            "bank_footage": theirs.json()["FootageId"]}  # fmt: skip


def audited(h: Harness, operation: str) -> list[dict[str, Any]]:
    return [r for r in h.audit_records() if r.get("operation") == operation]


def test_request_release_download_once(harness: Harness, parties: dict) -> None:
    shop, police = parties["shop"], parties["police"]
    r = call(harness, police, "POST", "/v1/releases", json=REQUEST)
    assert r.status_code == 200, r.text
    req = r.json()
    rid = req["RequestId"]
    assert req["Status"] == "PENDING" and req["RequesterSector"] == "law_enforcement"
    # the owner sees it; a third organisation does not
    incoming = call(harness, shop, "GET", "/v1/releases", params={"Role": "owner"}).json()["ReleaseRequests"]
    assert [q["RequestId"] for q in incoming] == [rid]
    assert call(harness, parties["bank"], "GET", f"/v1/releases/{rid}").status_code == 400
    # nothing to download before the owner decides
    early = call(harness, police, "GET", f"/v1/releases/{rid}/items/itm-0000000000000000")
    assert early.status_code == 409 and "not been approved" in early.json()["message"]
    # only the owner decides
    assert (
        call(
            harness, police, "POST", f"/v1/releases/{rid}/release", json={"FootageIds": [parties["footage"]]}
        ).status_code
        == 400
    )
    done = call(
        harness,
        shop,
        "POST",
        f"/v1/releases/{rid}/release",
        json={"FootageIds": [parties["footage"]], "ExpiresInDays": 2},
    )
    assert done.status_code == 200, done.text
    item = done.json()["Items"][0]
    assert done.json()["Status"] == "RELEASED" and item["Status"] == "READY"
    assert (item["FacesFound"], item["FacesHidden"], item["FacesKept"]) == (3, 3, 0)
    # the requester downloads the redacted copy: every face hidden, no EXIF
    got = call(harness, police, "GET", f"/v1/releases/{rid}/items/{item['ItemId']}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert "redacted" in got.headers["content-disposition"]
    copy = Image.open(io.BytesIO(got.content))
    assert not copy.getexif()
    before, after = images.decode(parties["photo"]), images.decode(got.content)
    h, w = before.shape[:2]
    boxes = [f.box for f in harness.service.engine.detect(before)]
    assert len(boxes) == 3 and not any(measure.unredacted(before, after, b) for b in boxes)
    assert harness.service.engine.detect(after) == []
    # once: a second download is refused, and the copy is gone from the server
    again = call(harness, police, "GET", f"/v1/releases/{rid}/items/{item['ItemId']}")
    assert again.status_code == 409 and "already downloaded" in again.json()["message"]
    assert not list((harness.service.settings.data_dir / "releases" / rid).iterdir())
    # the owner's original is untouched and was never sent
    assert parties["photo"] != got.content
    shown = call(harness, police, "GET", f"/v1/releases/{rid}").json()
    assert shown["Items"][0]["Status"] == "DOWNLOADED" and "Path" not in json.dumps(shown)
    for op in ("CreateReleaseRequest", "ReleaseFootage", "GetReleasedFootage"):
        assert any(x["decision"] == "allowed" for x in audited(harness, op)), op


def test_decline_and_the_report(harness: Harness, parties: dict) -> None:
    shop, police = parties["shop"], parties["police"]
    rid = call(harness, police, "POST", "/v1/releases", json={**REQUEST, "Reason": "noise complaint"}).json()[
        "RequestId"
    ]
    d = call(harness, shop, "POST", f"/v1/releases/{rid}/decline", json={"Reason": "no legal basis for this"})
    assert d.status_code == 200 and d.json()["Status"] == "DECLINED" and d.json()["Items"] == []
    twice = call(
        harness, shop, "POST", f"/v1/releases/{rid}/release", json={"FootageIds": [parties["footage"]]}
    )
    assert twice.status_code == 409 and "decided once" in twice.json()["message"]
    before = harness.service.releases.report()
    granted = call(harness, police, "POST", "/v1/releases", json={**REQUEST, "Reason": "theft"}).json()[
        "RequestId"
    ]
    call(harness, shop, "POST", f"/v1/releases/{granted}/release", json={"FootageIds": [parties["footage"]]})
    report = harness.service.call("GetTransparencyReport", {}, harness.service.owner_principal())["Report"]
    fr = report["FootageRelease"]
    assert fr["RequestsByRequesterSector"]["law_enforcement"]["DECLINED"] >= 1
    assert fr["Decisions"]["Declined"] >= 1
    assert fr["Decisions"]["Released"] == before["Decisions"]["Released"] + 1
    assert fr["FacesRedacted"] == before["FacesRedacted"] + 3
    assert fr["ItemsReleased"] == before["ItemsReleased"] + 1


def test_keep_the_owners_consenting_people(harness: Harness, parties: dict) -> None:
    """The owner (an administration key of the installation's owner, which may identify) keeps
    Obama, who consented, visible in the released copy; the others are hidden."""
    svc = harness.service
    owner = svc.owner_principal()
    obama_consents(harness, "regulars")
    footage = svc.execute(ops.add_footage, ops.AddFootageRequest(ops.Image(parties["photo"])), owner)
    police = svc.principal_for_key(parties["police"][0])
    asked = svc.execute(ops.create_release_request, ops.CreateReleaseRequestRequest(
        owner.org, ops.TimeRange(ops.Time(1.0), ops.Time(2.0)), "lobby", "assault", "warrant"), police)  # fmt: skip
    released = svc.execute(ops.release_footage, ops.ReleaseFootageRequest(
        asked.request_id, [footage.footage_id], keep_collection_id="regulars"), owner)  # fmt: skip
    item = released.items[0]
    assert (item.faces_found, item.faces_hidden, item.faces_kept) == (3, 2, 1)
    file = svc.execute(
        ops.get_released_footage, ops.GetReleasedFootageRequest(asked.request_id, item.item_id), police
    )
    after = images.decode(file.read())
    file.done()
    before = images.decode(parties["photo"])
    visible = [measure.unredacted(before, after, f.box) for f in svc.engine.detect(before)]
    assert sorted(visible) == [False, False, True]


def test_bad_requests_are_refused_audited_and_release_nothing(
    harness: Harness, parties: dict, tmp_path: Path
) -> None:
    svc = harness.service
    shop = svc.principal_for_key(parties["shop"][0])
    police = svc.principal_for_key(parties["police"][0])
    # a request to an organisation that does not exist
    with pytest.raises(ResourceNotFound, match="no organisation 'nobody'"):
        svc.execute(ops.create_release_request, ops.CreateReleaseRequestRequest(
            "nobody", ops.TimeRange(ops.Time(1.0), ops.Time(2.0)), "x", "x", "x"), police)  # fmt: skip
    assert audited(harness, "CreateReleaseRequest")[-1]["decision"] == "failed"
    rid = svc.execute(ops.create_release_request, ops.CreateReleaseRequestRequest(
        "corner-shop", ops.TimeRange(ops.Time(1.0), ops.Time(2.0)), "x", "x", "x"), police).request_id  # fmt: skip
    # someone else's file
    with pytest.raises(ResourceNotFound, match="not in your organisation's footage library"):
        svc.execute(ops.release_footage, ops.ReleaseFootageRequest(rid, [parties["bank_footage"]]), shop)
    assert svc.execute(ops.describe_release_request, ops.ReleaseRequestRef(rid), police).status == "PENDING"
    # footage that is not what it claims, corrupt, empty, animated, or a video without a picture
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    gif = tmp_path / "loop.gif"
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.with_suffix(".jpg").write_bytes(b"")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(parties["photo"][:3000])
    from .videos import write_audio

    song = write_audio(tmp_path / "song.mp4")
    (tmp_path / "notes.txt").write_text("a note")
    for path, err, message in [
        (gif, InvalidImage, "animated"),
        (cut, InvalidImage, "corrupt or truncated"),
        (empty.with_suffix(".jpg"), InvalidImage, "empty"),
        (text, InvalidVideo, "not a video facewarden can read"),
        (song, InvalidVideo, "no video stream"),
        (tmp_path / "notes.txt", InvalidInput, "takes photos"),
    ]:
        with pytest.raises(err, match=message):
            svc.execute(ops.add_footage, ops.AddFootageRequest(path=str(path)), shop)
    failed = [r for r in audited(harness, "AddFootage") if r["decision"] == "failed"]
    assert len(failed) >= 6
    with pytest.raises(InvalidInput, match="one Image"):
        svc.execute(ops.add_footage, ops.AddFootageRequest(), shop)
    # a download after the expiry
    footage = svc.execute(ops.list_footage, ops.ListFootageRequest(), shop).footage[0].footage_id
    released = svc.execute(
        ops.release_footage, ops.ReleaseFootageRequest(rid, [footage], expires_in_days=0.01), shop
    )
    harness.service.clock = lambda: __import__("time").time() + 3600  # noqa: E731 - an hour later
    svc.releases.clock = harness.service.clock
    try:
        with pytest.raises(ReleaseStateError, match="expired"):
            svc.execute(
                ops.get_released_footage,
                ops.GetReleasedFootageRequest(rid, released.items[0].item_id),
                police,
            )
        svc.sweep()  # (the pipeline's hourly sweep may have run already, an hour having passed)
        assert audited(harness, "ReleaseExpired")[-1]["counts"]["copies_deleted"] == 1
    finally:
        import time

        harness.service.clock = time.time
        svc.releases.clock = time.time
    assert not any((harness.service.settings.data_dir / "releases" / rid).iterdir())
    denied = audited(harness, "GetReleasedFootage")[-1]
    assert denied["decision"] == "failed" and "ConflictException" in denied["reason"]


def test_a_video_is_released_as_a_redacted_copy(harness: Harness, parties: dict, tmp_path: Path) -> None:
    """A door camera's clip in the shop's library: released, every face hidden in every frame (by
    the measure of redact/measure.py), the audio identical; downloaded once by the police."""
    from facewarden.engine.faces import Box
    from facewarden.media import video as media_video

    from .conftest import SHARED_FACES
    from .videos import Actor, Scene, linear, photo_face

    svc = harness.service
    shop = svc.principal_for_key(parties["shop"][0])
    police = svc.principal_for_key(parties["police"][0])
    eng = svc.engine
    scene = Scene(width=320, height=240, seconds=1.6, actors=[
        Actor("obama", *photo_face(eng, SHARED_FACES / "barack_obama/barack_obama_1.jpg", size=60), 0, 1.6,
              linear(70, 110, 250, 120)),
        Actor("biden", *photo_face(eng, SHARED_FACES / "joe_biden/joe_biden_1.jpg", size=60), 0, 1.6,
              linear(250, 130, 90, 120)),
    ])  # fmt: skip
    clip = tmp_path / "door.mp4"
    truth = scene.write(clip, whole=True)
    added = svc.execute(ops.add_footage, ops.AddFootageRequest(path=str(clip), place="door"), shop)
    assert added.media == "video"
    rid = svc.execute(ops.create_release_request, ops.CreateReleaseRequestRequest(
        "corner-shop", ops.TimeRange(ops.Time(1.0), ops.Time(2.0)), "x", "robbery", "warrant"), police).request_id  # fmt: skip
    released = svc.execute(ops.release_footage, ops.ReleaseFootageRequest(rid, [added.footage_id]), shop)
    item = released.items[0]
    assert item.status == "READY" and item.faces_hidden >= 2 and item.faces_kept == 0
    got = call(harness, parties["police"], "GET", f"/v1/releases/{rid}/items/{item.item_id}")
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(got.content)
    before = [f.image for f in media_video.read_frames(clip, None)]
    after = [f.image for f in media_video.read_frames(copy, None)]
    boxes = [[Box(*b) for b in d.values()] for d in truth]
    visible, counted = measure.count_unredacted(before, before, boxes)
    assert visible == counted >= 70
    assert measure.count_unredacted(before, after, boxes)[0] == 0

    def audio(p: Path) -> list[bytes]:
        import av

        with av.open(str(p)) as c:
            return [bytes(x) for x in c.demux(c.streams.audio[0]) if x.size]

    assert audio(copy) == audio(clip)
    again = call(harness, parties["police"], "GET", f"/v1/releases/{rid}/items/{item.item_id}")
    assert again.status_code == 409


def test_a_redaction_key_cannot_take_part(harness: Harness, parties: dict) -> None:
    key = harness.key("newsroom", "commercial", "redaction")
    r = call(harness, key, "POST", "/v1/releases", json=REQUEST)
    assert r.status_code == 403 and r.json()["error"] == "AccessDeniedException"
    assert audited(harness, "CreateReleaseRequest")[-1]["rule"] == "purpose"


# ---- the CLI ----------------------------------------------------------------------------------------
def test_cli_workflow(tmp_path: Path) -> None:
    d, police_key = cli_installation(tmp_path, "corner-shop", "city-police", "footage_release")
    police = {"AccessKeyId": police_key}
    photo = tmp_path / "door.jpg"
    photo.write_bytes(group_photo())
    added = cli(d, "--json", "release", "footage", "add", str(photo), "--place", "High Street")
    assert added.returncode == 0, added.stderr
    footage_id = json.loads(added.stdout)["FootageId"]
    asked = cli(d, "--json", "release", "request", "--owner", "corner-shop", "--from", "2026-03-01T21:00:00Z",
                "--to", "2026-03-01T23:00:00Z", "--place", "High Street", "--reason", "burglary",
                "--legal-basis", "warrant", "--reference", "W-1", key=police["AccessKeyId"])  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    rid = json.loads(asked.stdout)["RequestId"]
    early = cli(
        d,
        "release",
        "download",
        rid,
        "itm-0000000000000000",
        "--out",
        str(tmp_path / "got"),
        key=police["AccessKeyId"],
    )
    assert early.returncode == 3 and "not been approved" in early.stderr
    listed = cli(d, "release", "list", "--role", "owner")
    assert rid in listed.stdout and "PENDING" in listed.stdout
    approved = cli(d, "release", "approve", rid, footage_id, "--expires-in-days", "1")
    assert approved.returncode == 0 and "READY" in approved.stdout, approved.stderr
    got = cli(
        d, "--json", "release", "download", rid, "--out", str(tmp_path / "got"), key=police["AccessKeyId"]
    )
    assert got.returncode == 0, got.stderr
    out = Path(json.loads(got.stdout)["Output"])
    assert out.name == "door.redacted.jpg" and Image.open(out).format == "JPEG"
    second = cli(d, "release", "download", rid, json.loads(got.stdout)["ItemId"], "--out", str(tmp_path / "again"),
                 key=police["AccessKeyId"])  # fmt: skip
    assert second.returncode == 3 and "already downloaded" in second.stderr

"""The console's Redact and Footage release tabs, end to end in headless Chromium: the police ask a
shop for its footage, the shop adds a photo to its library and releases it, the police download
the redacted copy once (every face hidden, checked by the unredacted face-frame measure), a second
request is declined; and a photo is redacted from the Redact tab. Screenshots of each step go to
the test's temporary folder."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facewarden.media import images
from facewarden.redact import measure
from tests.test_api_support import Harness, harness_fixture  # noqa: F401  (the module's server)
from tests.test_console import browser  # noqa: F401  (headless Chromium, or a skip saying why)
from tests.test_redact_service import group_photo

WIDTHS = (1280, 800)


def new_page(chromium: Any) -> tuple[Any, list[str]]:
    """A 1280x900 page that accepts downloads, and the list its JavaScript errors go to."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def sign_in(page: Any, url: str, key: tuple[str, str]) -> None:
    page.goto(url + "/console")
    page.evaluate("sessionStorage.clear()")
    page.goto(url + "/console")
    page.fill("input[name=key]", key[0])
    page.fill("input[name=secret]", key[1])
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#app-view:not([hidden])")


def ask(page: Any, owner: str, reason: str) -> None:
    form = "#release-request-form"
    for name, value in [
        ("OwnerOrganization", owner), ("Start", "2026-03-01T21:00"), ("End", "2026-03-01T23:00"),
        ("Place", "12 High Street"), ("Reason", reason), ("LegalBasis", "warrant"), ("Reference", "W-2026-0042"),
    ]:  # fmt: skip
        page.fill(f"{form} input[name={name}]", value)
    page.click(f"{form} button[type=submit]")


def open_release(page: Any) -> None:
    page.click("#tabs button[data-tab=release]")
    page.wait_for_selector("#outgoing > *")


def no_overflow(page: Any) -> None:
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the page is {scroll}px wide in a {width}px window"


def test_release_workflow_in_the_console(harness: Harness, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    shop = harness.key("corner-shop", "commercial", "footage_release")
    police = harness.key("city-police", "law_enforcement", "footage_release")
    photo = tmp_path / "door.jpg"
    photo.write_bytes(group_photo())
    page, errors = new_page(browser)
    try:
        # the police ask the shop for its footage, twice
        sign_in(page, harness.url, police)
        open_release(page)
        for reason in ("burglary at number 14", "noise complaint"):
            ask(page, "corner-shop", reason)
            page.wait_for_selector(f"#outgoing .request:has-text('{reason}')")
        assert page.locator("#outgoing .request[data-status=PENDING]").count() == 2
        # a request to an organisation that does not exist is refused, with the reason
        ask(page, "nobody-here", "theft")
        page.wait_for_selector("#flash.error:has-text('no organisation')")
        page.screenshot(path=str(tmp_path / "1-police-requests.png"), full_page=True)

        # the shop adds the photo to its library, releases it for one request, declines the other
        sign_in(page, harness.url, shop)
        open_release(page)
        page.set_input_files("#footage-form input[name=Image]", str(photo))
        page.fill("#footage-form input[name=Place]", "12 High Street")
        page.click("#footage-form button[type=submit]")
        page.wait_for_selector("#footage td:text-is('door.jpg')")
        wanted = page.locator("#incoming .request:has-text('burglary')")
        wanted.locator("input[name=FootageIds]").check()
        wanted.locator(".release-form button[type=submit]").click()
        page.wait_for_selector(
            "#incoming .request[data-status=RELEASED]:has-text('burglary')", timeout=60_000
        )
        released = page.locator("#incoming .request:has-text('burglary')").inner_text()
        assert "READY" in released and "Download (once)" not in released  # the owner does not download
        noise = page.locator("#incoming .request:has-text('noise complaint')")
        noise.locator(".decline-form input[name=Reason]").fill("no legal basis for this")
        noise.locator(".decline-form button[type=submit]").click()
        page.wait_for_selector("#incoming .request[data-status=DECLINED]")
        no_overflow(page)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(tmp_path / "2-shop-decides.png"), full_page=True)

        # the police download the redacted copy, once
        sign_in(page, harness.url, police)
        open_release(page)
        assert (
            "no legal basis for this" in page.locator("#outgoing .request[data-status=DECLINED]").inner_text()
        )
        card = page.locator("#outgoing .request[data-status=RELEASED]")
        with page.expect_download() as dl:
            card.locator("button.download").click()
        saved = tmp_path / dl.value.suggested_filename
        dl.value.save_as(saved)
        assert saved.name == "door.redacted.jpg"
        page.wait_for_selector("#outgoing .request:has-text('DOWNLOADED')")
        assert page.locator("#outgoing button.download").count() == 0  # nothing left to download
        before, after = images.decode(photo.read_bytes()), images.decode(saved.read_bytes())
        faces = harness.service.engine.detect(before)
        assert len(faces) == 3 and not any(measure.unredacted(before, after, f.box) for f in faces)
        assert not Image.open(io.BytesIO(saved.read_bytes())).getexif()
        no_overflow(page)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(tmp_path / "3-police-download.png"), full_page=True)

        # every step is in the audit log, and the transparency report counts it
        ops = [r.get("operation") for r in harness.audit_records()]
        for op in (
            "CreateReleaseRequest",
            "AddFootage",
            "ReleaseFootage",
            "DeclineReleaseRequest",
            "GetReleasedFootage",
        ):
            assert op in ops, op
        report = harness.service.call("GetTransparencyReport", {}, harness.service.owner_principal())[
            "Report"
        ]
        assert report["FootageRelease"]["RequestsByRequesterSector"]["law_enforcement"] == {
            "DECLINED": 1,
            "RELEASED": 1,
        }
    finally:
        page.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_redact_tab(harness: Harness, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    photo = tmp_path / "street.jpg"
    photo.write_bytes(group_photo())
    page, errors = new_page(browser)
    try:
        sign_in(page, harness.url, harness.key("newsroom", "commercial", "redaction"))
        page.click("#tabs button[data-tab=redact]")
        page.set_input_files("#redact-form input[name=Image]", str(photo))
        page.select_option("#redact-form select[name=Method]", "pixelate")
        page.click("#redact-form button[type=submit]")
        page.wait_for_selector("#redact-summary:has-text('3 of 3 face(s) hidden')", timeout=60_000)
        assert page.evaluate("document.querySelector('#redacted-image').naturalWidth") == 1000
        with page.expect_download() as dl:
            page.click("#redact-download")
        assert dl.value.suggested_filename == "street.redacted.jpg"
        no_overflow(page)
        page.screenshot(path=str(tmp_path / "redact.png"), full_page=True)
    finally:
        page.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_redact_tab_redacts_a_video(harness: Harness, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """A clip uploaded from the Redact tab: a progress bar, then the redacted copy to watch and
    download, every face hidden in every frame (the measure), the audio identical."""
    from facewarden.engine.faces import Box
    from facewarden.media import video as media_video

    from .conftest import SHARED_FACES
    from .videos import Actor, Scene, linear, photo_face

    eng = harness.service.engine
    scene = Scene(width=320, height=240, seconds=1.2, actors=[
        Actor("obama", *photo_face(eng, SHARED_FACES / "barack_obama/barack_obama_1.jpg", size=60), 0, 1.2,
              linear(80, 120, 240, 120)),
    ])  # fmt: skip
    clip = tmp_path / "hall way.mp4"
    truth = scene.write(clip, whole=True)
    from facewarden.service.jobs import worker_pool

    pool = worker_pool(harness.service, 1, poll_s=0.05).start()  # (serve runs one)
    page, errors = new_page(browser)
    try:
        sign_in(page, harness.url, harness.key("newsroom", "commercial", "redaction"))
        page.click("#tabs button[data-tab=redact]")
        page.set_input_files("#redact-video-form input[name=Video]", str(clip))
        page.click("#redact-video-form button[type=submit]")
        page.wait_for_selector("#redact-video-progress", state="attached")
        page.wait_for_selector("#redact-video-summary", timeout=180_000)
        assert "1 person hidden" in page.inner_text("#redact-video-summary")
        assert page.locator("#redacted-video").count() == 1
        with page.expect_download() as dl:
            page.click("#redact-video-download")
        assert dl.value.suggested_filename == "hall way.redacted.mp4"
        saved = tmp_path / "saved.mp4"
        dl.value.save_as(saved)
        before = [f.image for f in media_video.read_frames(clip, None)]
        after = [f.image for f in media_video.read_frames(saved, None)]
        boxes = [[Box(*b) for b in d.values()] for d in truth]
        visible, counted = measure.count_unredacted(before, before, boxes)
        assert visible == counted >= 25 and measure.count_unredacted(before, after, boxes)[0] == 0
        no_overflow(page)
        page.screenshot(path=str(tmp_path / "redact-video.png"), full_page=True)
    finally:
        page.close()
        pool.stop()
    assert not errors, f"JavaScript errors: {errors}"
    ops = [r.get("operation") for r in harness.audit_records()]
    assert {"PutVideo", "StartFaceRedaction", "FaceRedactionJob", "GetRedactedVideo"} <= set(ops)


@pytest.mark.parametrize("asset", ["release.js"])
def test_the_tabs_fetch_nothing_from_elsewhere(harness: Harness, asset: str) -> None:
    import httpx

    body = httpx.get(f"{harness.url}/console/static/{asset}").text
    assert "http://" not in body and "https://" not in body

"""The web console end to end in headless Chromium (Debian's, driven by Playwright): sign in,
create a collection, enrol a photo with its consent record, search by photo, read the audit log."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_api_support import (
    FACES,
    Harness,
    face,
    harness_fixture,  # noqa: F401  (the module's server)
)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} is missing: install Debian's chromium (`make browser`) to run the console test"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_console_sign_in_enrol_with_consent_search_and_audit(
    harness: Harness, browser: Any, tmp_path: Path
) -> None:
    key_id, secret = harness.owner_key
    obama_1, obama_2 = FACES / "barack_obama/barack_obama_1.jpg", FACES / "barack_obama/barack_obama_2.jpg"
    (
        face("barack_obama/barack_obama_1.jpg"),
        face("barack_obama/barack_obama_2.jpg"),
    )  # fail clearly if missing
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests_elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(harness.url) else requests_elsewhere.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(harness.url + "/console")
        # a wrong secret is refused with the server's message
        page.fill("input[name=key]", key_id)
        page.fill("input[name=secret]", "wrong-secret")
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#signin-error:has-text('InvalidSignatureException')")
        # sign in
        page.fill("input[name=secret]", secret)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#app-view:not([hidden])")
        assert key_id in page.inner_text("#who")
        assert page.evaluate("sessionStorage.getItem('fw.key')") == key_id

        # create a collection
        page.fill("#create-collection input[name=CollectionId]", "staff")
        page.click("#create-collection button[type=submit]")
        page.wait_for_selector("#collections td:text-is('staff')")

        # enrol with a consent record
        page.click("#tabs button[data-tab=enrol]")
        page.wait_for_selector("#enrol-form select[name=CollectionId] option[value=staff]", state="attached")
        page.select_option("#enrol-form select[name=CollectionId]", "staff")
        page.fill("#enrol-form input[name=ExternalImageId]", "obama")
        page.fill("#enrol-form input[name=Evidence]", "signed consent form #1")
        page.set_input_files("#enrol-form input[name=Image]", str(obama_1))
        page.click("#enrol-form button[type=submit]")
        page.wait_for_selector("#enrol-result :text('Enrolled obama')", timeout=60_000)
        assert "Consent recorded" in page.inner_text("#enrol-result")

        # search by another photo of the same person
        page.click("#tabs button[data-tab=search]")
        page.wait_for_selector("#search-form select[name=CollectionId] option[value=staff]", state="attached")
        page.select_option("#search-form select[name=CollectionId]", "staff")
        page.set_input_files("#search-form input[name=Image]", str(obama_2))
        page.click("#search-form button[type=submit]")
        page.wait_for_selector("#matches", timeout=60_000)
        assert page.inner_text("#matches tbody tr td:first-child") == "obama"
        similarity = float(page.inner_text("#matches td.similarity"))
        threshold_text = page.inner_text("#threshold")
        assert "Threshold applied" in threshold_text
        applied = float(threshold_text.split("≥")[1].split()[0])
        assert similarity >= applied >= 80
        page.screenshot(path=str(tmp_path / "console-search.png"), full_page=True)

        # the consent register shows the record
        page.click("#tabs button[data-tab=consent]")
        page.wait_for_selector("#consent td:text-is('obama')")

        # the audit log shows the enrolment and search, and the chain verifies
        page.click("#tabs button[data-tab=audit]")
        page.wait_for_selector("#audit td.operation:text-is('IndexFaces')")
        page.wait_for_selector("#audit td.operation:text-is('SearchFacesByImage')")
        assert "Audit chain verified" in page.inner_text("#audit-verify")

        # the policy in force and the transparency report
        page.click("#tabs button[data-tab=policy]")
        page.wait_for_selector("#policy:has-text('moratorium')")
        page.click("#tabs button[data-tab=report]")
        page.wait_for_selector("#report h2")

        page.click("#tabs button[data-tab=audit]")
        page.wait_for_selector("#audit td.operation:text-is('GetTransparencyReport')")
        shot = tmp_path / "console-audit.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(tmp_path / "console-search.png", "/tmp/console.png")
        shutil.copy(shot, "/tmp/console-audit.png")
    finally:
        page.close()
    assert not errors, f"JavaScript errors: {errors}"
    assert not requests_elsewhere, f"the console fetched from elsewhere: {requests_elsewhere}"


def test_console_is_self_contained(harness: Harness) -> None:
    import httpx

    r = httpx.get(harness.url + "/console")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("console.js", "console.css"):
        body = httpx.get(f"{harness.url}/console/static/{asset}").text
        assert "http://" not in body and "https://" not in body, f"{asset} refers to another site"
    assert "http://" not in r.text and "https://" not in r.text

"""The web console end to end in headless Chromium (Debian's, driven by Playwright): sign in,
create a collection, enrol with consent, search by photo (the face boxed on the photo), the consent
register (grant, withdraw: the faces are gone), the audit log (server-side filters, paging, a
record's detail), the transparency report (figures, matrices, charts, exports), every tab within
the page at 1280 and 800 px, and a key that may see only part of it. Screenshots of every tab are
written to the test's temporary folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facewarden.audit.log import AuditFilter
from facewarden.errors import AccessDenied, ResourceNotFound
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
TABS = ("collections", "enrol", "search", "consent", "audit", "policy", "report")
#: Every tab, in their order on the page (the Redact and Footage release tabs are tested in
#: tests/test_console_release.py; a redaction key may use the Redact tab).
ALL_TABS = (*TABS, "redact", "release")
OBAMA_1, OBAMA_2 = FACES / "barack_obama/barack_obama_1.jpg", FACES / "barack_obama/barack_obama_2.jpg"
BIDEN_1 = FACES / "joe_biden/joe_biden_1.jpg"
LONG = 90_000  # ms: a search or an enrolment on a loaded machine


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


class Page:
    """A browser page on the console that records JavaScript errors and requests elsewhere."""

    def __init__(self, browser: Any, harness: Harness, width: int = 1280) -> None:
        self.harness = harness
        self.page = browser.new_page(viewport={"width": width, "height": 900}, accept_downloads=True)
        self.errors: list[str] = []
        self.elsewhere: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        here = (harness.url, f"blob:{harness.url}/", "data:")  # the server; the chosen photo, the charts
        self.page.on("request", lambda r: None if r.url.startswith(here) else self.elsewhere.append(r.url))

    def sign_in(self, key: tuple[str, str]) -> Any:
        p = self.page
        p.goto(self.harness.url + "/console")
        p.fill("input[name=key]", key[0])
        p.fill("input[name=secret]", key[1])
        p.click("#signin-form button[type=submit]")
        p.wait_for_selector("#app-view:not([hidden])")
        p.wait_for_selector("#collections tbody tr, #tab-collections .tab-error", state="attached")
        return p

    def tab(self, name: str) -> None:
        self.page.click(f"#tabs [data-tab={name}]")
        self.page.wait_for_selector(f"#tab-{name}:not([hidden])")

    def close(self) -> None:
        self.page.close()
        assert not self.errors, f"JavaScript errors: {self.errors}"
        assert not self.elsewhere, f"the console fetched from elsewhere: {self.elsewhere}"


@pytest.fixture
def console(browser: Any, harness: Harness) -> Iterator[Any]:
    pages: list[Page] = []

    def open_page(width: int = 1280) -> Page:
        pages.append(Page(browser, harness, width))
        return pages[-1]

    yield open_page
    for p in pages:
        p.close()


def until(page: Any, expression: str, timeout_s: float = 60) -> None:
    """Wait until the JavaScript ``expression`` is true in the page (polled from here: the page's
    Content-Security-Policy forbids the eval that Playwright's wait_for_function uses)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)


def fits(page: Any) -> tuple[int, int]:
    """(document width, viewport width): the page must not scroll sideways."""
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def records(harness: Harness, **where: Any) -> list[int]:
    """Sequence numbers of the records an audit filter selects, newest first."""
    return [seq for seq, _ in harness.service.audit.export(where=AuditFilter(**where), before=2**62)]


# ---- sign in, enrol, search: the face boxed on the photo -------------------------------------------
def test_console_sign_in_enrol_with_consent_and_search_shows_the_face(
    harness: Harness, console: Any, tmp_path: Path
) -> None:
    (
        face("barack_obama/barack_obama_1.jpg"),
        face("barack_obama/barack_obama_2.jpg"),
    )  # fail clearly if missing
    key_id, secret = harness.owner_key
    c = console()
    page = c.page
    page.goto(harness.url + "/console")
    # a wrong secret is refused with the server's message
    page.fill("input[name=key]", key_id)
    page.fill("input[name=secret]", "wrong-secret")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:has-text('InvalidSignatureException')")
    c.sign_in(harness.owner_key)
    assert key_id in page.inner_text("#who")
    assert page.evaluate("sessionStorage.getItem('fw.key')") == key_id

    # create a collection: its model, consent mode, size, retention and creation date are listed
    page.fill("#create-collection input[name=CollectionId]", "staff")
    page.fill("#create-collection input[name=RetentionDays]", "90")
    page.click("#create-collection button[type=submit]")
    page.wait_for_selector("#collections tr[data-collection=staff]")
    staff = page.inner_text("#collections tr[data-collection=staff]")
    assert "90 days" in staff and "Consent per face" in staff
    assert harness.service.store.get_collection("staff").model_version in staff

    # a person's own photo library is marked as a household collection (seen by its owner's keys only)
    home = console()
    home.sign_in(harness.key("the-smiths", "individual", "photo_organisation"))
    home.page.fill("#create-collection input[name=CollectionId]", "family")
    home.page.check("#create-collection input[name=Household]")
    home.page.click("#create-collection button[type=submit]")
    home.page.wait_for_selector("#collections tr[data-collection=family] .badge.household")
    assert page.locator("#collections tr[data-collection=family]").count() == 0

    # enrol with a consent record
    c.tab("enrol")
    page.wait_for_selector("#enrol-form select[name=CollectionId] option[value=staff]", state="attached")
    page.select_option("#enrol-form select[name=CollectionId]", "staff")
    page.fill("#enrol-form input[name=ExternalImageId]", "obama")
    page.fill("#enrol-form input[name=Evidence]", "signed consent form #1")
    page.set_input_files("#enrol-form input[name=Image]", str(OBAMA_1))
    page.click("#enrol-form button[type=submit]")
    page.wait_for_selector("#enrol-result :text('Enrolled obama')", timeout=LONG)
    assert "Consent recorded" in page.inner_text("#enrol-result")
    page.wait_for_selector("#collections tr[data-collection=staff]", state="attached")

    # search by another photo of the same person: the photo, the face boxed, the match
    c.tab("search")
    page.wait_for_selector("#search-form select[name=CollectionId] option[value=staff]", state="attached")
    page.select_option("#search-form select[name=CollectionId]", "staff")
    page.set_input_files("#search-form input[name=Image]", str(OBAMA_2))
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#matches", timeout=LONG)
    assert page.inner_text("#matches tbody tr td:first-child") == "obama"
    similarity = float(page.inner_text("#matches .similarity"))
    threshold = page.inner_text("#threshold")
    applied = float(threshold.split("≥")[1].split(",")[0])
    assert similarity >= applied >= 80
    assert (
        "set by the threshold asked for" in threshold
        and "false match rate at this threshold 1.0e-3" in threshold
    )
    until(page, "document.querySelector('#search-photo').naturalWidth > 0")
    img, box = page.locator("#search-photo").bounding_box(), page.locator("#search-box").bounding_box()
    assert box is not None and img is not None
    # the box lies on the face the server found: same ratios of the photo as SearchedFaceBoundingBox
    found = harness.service.call(
        "SearchFacesByImage", {"CollectionId": "staff", "Image": {"Bytes": OBAMA_2.read_bytes()}}, harness.service.owner_principal()
    )  # fmt: skip
    # the number of candidates the gallery-size cap withheld (a count: never who they are)
    assert page.inner_text("#withheld").startswith(f"{found['AppliedThreshold']['WithheldByCap']} match(es)")
    found = found["SearchedFaceBoundingBox"]
    for axis, size, key in (("x", "width", "Left"), ("y", "height", "Top")):
        assert abs((box[axis] - img[axis]) / img[size] - found[key]) < 0.01, (axis, box, img, found)
    assert abs(box["width"] / img["width"] - found["Width"]) < 0.01
    assert img["x"] <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 1
    # everything but the face is dimmed (the box's shadow), and no enrolled image is shown: only ids
    assert "rgba(0, 0, 0" in page.eval_on_selector("#search-box", "b => getComputedStyle(b).boxShadow")
    assert page.locator("#search-result img").count() == 1
    page.screenshot(path=str(tmp_path / "console-search.png"), full_page=True)


# ---- the consent register ----------------------------------------------------------------------------
def test_console_consent_grant_search_and_withdraw_erases_the_faces(
    harness: Harness, console: Any, tmp_path: Path
) -> None:
    svc, owner = harness.service, harness.service.owner_principal()
    svc.call("CreateCollection", {"CollectionId": "members"}, owner)
    c = console()
    page = c.sign_in(harness.owner_key)
    c.tab("consent")
    # grant from the page, with the evidence reference
    page.click("#grant-card summary")
    page.fill("#grant-form input[name=Subject]", "biden")
    page.select_option("#grant-form select[name=CollectionId]", "members")
    page.fill("#grant-form input[name=Evidence]", "form B-7, signed 2026-11-30")
    page.fill("#grant-form input[name=ExpiresAt]", "2099-12-31")
    page.click("#grant-form button[type=submit]")
    row = "#consent tr[data-subject=biden]"
    page.wait_for_selector(f"{row} .badge.active")
    text = page.inner_text(row)
    assert "form B-7" in text and "31 Dec 2099" in text and "members" in text
    # ... which the register holds, so that enrolment works
    svc.call("IndexFaces", {"CollectionId": "members", "Image": {"Bytes": BIDEN_1.read_bytes()},
                            "ExternalImageId": "biden"}, owner)  # fmt: skip
    assert [
        f["ExternalImageId"] for f in svc.call("ListFaces", {"CollectionId": "members"}, owner)["Faces"]
    ] == ["biden"]

    # an expired consent is marked as such; search by subject narrows the register
    svc.consents.grant(owner.org, "expired-one", "members", "old form", expires_at=svc.clock() + 86400)
    with svc.db.transaction() as tx:  # a year later, as it were
        tx.execute("UPDATE policy_consents SET granted_at = granted_at - 366 * 86400,"
                   " expires_at = expires_at - 366 * 86400 WHERE subject = 'expired-one'")  # fmt: skip
    page.click("#consent-search button[type=reset]")
    page.wait_for_selector("#consent tr[data-subject=expired-one] .badge.ended:has-text('Expired')")
    page.fill("#consent-search input[name=Subject]", "biden")
    page.click("#consent-search button[type=submit]")
    until(
        page,
        "Array.from(document.querySelectorAll('#consent tbody tr')).map(r => r.dataset.subject).join() === 'biden'",
    )
    page.screenshot(path=str(tmp_path / "console-consent.png"), full_page=True)

    # withdraw: the page asks first, saying it erases the faces; dismissing changes nothing
    messages: list[str] = []

    def answer(accept: bool) -> None:
        page.once("dialog", lambda d: (messages.append(d.message), d.accept() if accept else d.dismiss()))

    answer(False)
    page.click(f"{row} button.withdraw")
    page.wait_for_timeout(300)
    assert messages and "erases biden's faces" in messages[0] and "cannot be undone" in messages[0]
    assert svc.call("ListFaces", {"CollectionId": "members"}, owner)["Faces"]
    answer(True)
    page.click(f"{row} button.withdraw")
    page.wait_for_selector(f"{row} .badge.ended:has-text('Withdrawn')")
    assert "1 face(s) of biden erased" in page.inner_text("#flash")
    assert svc.call("ListFaces", {"CollectionId": "members"}, owner)["Faces"] == []
    assert page.locator(f"{row} button.withdraw").count() == 0


# ---- the audit log --------------------------------------------------------------------------------------
def test_console_audit_log_filters_pages_and_details(harness: Harness, console: Any, tmp_path: Path) -> None:
    svc = harness.service
    police = svc.principal_for_key(harness.key("city-police", "law_enforcement", "access_control")[0])
    shop = svc.principal_for_key(harness.key("corner-shop", "commercial", "access_control")[0])
    for _ in range(2):  # refused by the moratorium
        with pytest.raises(AccessDenied):
            svc.call("SearchFacesByImage", {"CollectionId": "staff", "Image": {"Bytes": b"x"}}, police)
    with pytest.raises(ResourceNotFound):  # failed
        svc.call("DescribeCollection", {"CollectionId": "no-such-collection"}, shop)
    for _ in range(55):  # a long run of one key's calls, to page through
        svc.call("ListCollections", {}, shop)
    svc.call("ExportAudit", {"Subject": "someone-looked-up"}, svc.owner_principal())

    c = console()
    page = c.sign_in(harness.owner_key)
    c.tab("audit")
    page.wait_for_selector("#audit-verify:has-text('Audit chain verified')")
    page.wait_for_selector("#audit tr.record")

    def shown() -> list[int]:
        page.wait_for_selector("#audit tbody tr", state="attached")
        return [
            int(s) for s in page.eval_on_selector_all("#audit tr.record", "rs => rs.map(r => r.dataset.seq)")
        ]

    def loaded(action: Any) -> list[int]:
        """Run ``action`` (which loads a page of the log) and wait for that page."""
        before = int(page.get_attribute("#audit", "data-generation") or 0)
        action()
        until(page, f"Number(document.querySelector('#audit').dataset.generation) > {before}")
        return shown()

    def apply(**fields: str) -> list[int]:
        for name in (
            "Since",
            "Until",
            "Rule",
            "Operation",
            "Organization",
            "AccessKeyId",
            "Collection",
            "Subject",
        ):
            page.fill(f"#audit-filters input[name={name}]", fields.get(name, ""))
        page.select_option("#audit-filters select[name=Decision]", fields.get("Decision", ""))
        return loaded(lambda: page.click("#audit-filters button[type=submit]"))

    # by default the console's own reads are hidden; the newest first
    default = shown()
    assert default == records(harness, hide_console_reads=True)[:50]
    console_reads = records(harness, operation="ListCollections")
    assert not set(default) & set(records(harness, hide_console_reads=False)) - set(
        records(harness, hide_console_reads=True)
    )
    assert console_reads  # the console listed collections as it signed in
    # each filter narrows the log to the right records
    assert apply(Decision="denied") == records(harness, decision="denied", hide_console_reads=True)
    assert apply(Decision="denied", Rule="moratorium", Organization="city-police") == records(
        harness, decision="denied", rule="moratorium", org="city-police", hide_console_reads=True
    )
    assert len(apply(Organization="city-police")) == 2
    assert apply(Decision="failed", Operation="DescribeCollection") == records(
        harness, decision="failed", operation="DescribeCollection", hide_console_reads=True
    )
    assert apply(AccessKeyId=police.key_id) == records(harness, key=police.key_id)
    assert apply(Collection="members") == records(harness, collection="members", hide_console_reads=True)
    ref = svc.audit.subject_ref("someone-looked-up")
    assert apply(Subject="someone-looked-up") == records(harness, subject_ref=ref, hide_console_reads=True)
    assert apply(Subject=ref) == records(harness, subject_ref=ref, hide_console_reads=True)
    # a time range: nothing before the log began, everything since
    assert apply(Until="2000-01-01T00:00") == []
    assert page.is_visible("#audit-empty")

    # paging through one key's 55 calls (51 and more: two pages of 50)
    first = apply(Organization="corner-shop")
    assert len(first) == 50 and "Page 1" in page.inner_text("#audit-page")
    second = loaded(lambda: page.click("#audit-older"))
    assert "Page 2" in page.inner_text("#audit-page")
    assert first + second == records(harness, org="corner-shop", hide_console_reads=True)
    assert "the end of the log" in page.inner_text("#audit-page") and page.is_disabled("#audit-older")
    assert loaded(lambda: page.click("#audit-newer")) == first

    # the console's own reads, when asked for, are marked
    page.check("#audit-filters input[name=ShowConsoleReads]")
    everything = apply()
    assert everything == list(range(everything[0], everything[0] - len(everything), -1))  # nothing left out
    assert page.locator("#audit td.operation:has-text('console read')").count() > 0
    page.uncheck("#audit-filters input[name=ShowConsoleReads]")

    # a record's full detail, by click and by keyboard, in words (no JSON)
    denied_seq = records(harness, decision="denied")[0]
    apply(Decision="denied")
    row = page.locator(f"#audit tr.record[data-seq='{denied_seq}']")
    row.click()
    detail = page.locator(f"#audit tr.record[data-seq='{denied_seq}'] ~ tr.detail-row")
    text = detail.inner_text()
    assert (
        "moratorium" in text and "Record hash" in text and "Signature" in text and "law_enforcement" in text
    )
    assert "{" not in text
    row.click()
    assert detail.count() == 0
    row.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#audit tr.record[data-seq='{denied_seq}'] ~ tr.detail-row")
    page.screenshot(path=str(tmp_path / "console-audit.png"), full_page=True)


# ---- the transparency report ---------------------------------------------------------------------------
def test_console_transparency_report_figures_matrices_charts_and_exports(
    harness: Harness, console: Any, tmp_path: Path
) -> None:
    svc = harness.service
    police = svc.principal_for_key(harness.key("metro-police", "law_enforcement", "access_control")[0])
    with pytest.raises(AccessDenied):
        svc.call("CompareFaces", {"SourceImage": {"Bytes": b"x"}, "TargetImage": {"Bytes": b"y"}}, police)
    with pytest.raises(ResourceNotFound):
        svc.call("DescribeCollection", {"CollectionId": "nothing-here"}, svc.owner_principal())
    shop = svc.principal_for_key(harness.key("gate-shop", "commercial", "access_control")[0])
    svc.call("ListCollections", {}, shop)  # allowed, for the purpose access_control
    # a force that redeclares itself out of the moratorium's sectors (refused no more: marked here)
    svc.call(
        "SetOrganizationSector", {"Name": "metro-police", "Sector": "private_security"}, svc.owner_principal()
    )
    expected = svc.call("GetTransparencyReport", {}, svc.owner_principal())["Report"]
    assert {"allowed", "denied", "failed"} <= set(expected["Decisions"])

    c = console()
    page = c.sign_in(harness.owner_key)
    c.tab("report")
    page.wait_for_selector("#headline")
    figure = lambda name: int(page.inner_text(f"#fig-{name} .n"))  # noqa: E731
    assert figure("allowed") >= expected["Decisions"]["allowed"]
    assert figure("denied") == expected["Decisions"]["denied"] and figure("denied") >= 1
    assert figure("failed") == expected["Decisions"]["failed"] and figure("failed") >= 1
    assert figure("policy") == len(expected["PolicyChanges"]) >= 1
    assert figure("sector-moves") == len(expected["EnforcementSectorChanges"]) >= 1
    assert "alert" in (page.get_attribute("#fig-sector-moves", "class") or "")
    moved = page.locator(
        "#sector-changes tbody tr", has=page.locator("td:text-is('metro-police')")
    ).inner_text()
    assert "law_enforcement" in moved and "private_security" in moved and "left moratorium" in moved
    # the charts are drawn (SVG images that loaded) and the matrices are tables of numbers
    for chart in ("#chart-decisions", "#chart-denials"):
        until(
            page,
            f"document.querySelector('{chart}').complete && document.querySelector('{chart}').naturalWidth > 0",
        )
    moratorium = page.locator("#denials-by-sector tbody tr", has=page.locator("th:text-is('moratorium')"))
    headers = page.eval_on_selector_all("#denials-by-sector thead th", "hs => hs.map(h => h.textContent)")
    cells = moratorium.locator("td").all_inner_texts()
    assert (
        int(cells[headers.index("law_enforcement") - 1])
        == expected["DenialsBySector"]["law_enforcement"]["moratorium"]
    )
    rows = page.eval_on_selector_all("#ops-by-sector tbody th", "hs => hs.map(h => h.textContent)")
    assert {op for ops in expected["OperationsBySector"].values() for op in ops} <= set(rows)
    assert "SetOrganizationSector" in rows
    assert page.locator("#ops-by-purpose thead th:text-is('access_control')").count() == 1
    assert page.locator("#ops-by-org thead th:text-is('operator')").count() == 1
    assert "{" not in page.inner_text("#report")  # no JSON for a person to read
    # the moratorium built into the code is shown in force; collections are counted by consent mode
    assert "moratorium (in force, indefinite)" in page.inner_text("#built-in")
    household = expected["Collections"]["Household"]
    assert page.inner_text("#collections-by-consent tr[data-mode=Household]").split()[-2:] == [
        str(household["Collections"]), str(household["Faces"]),
    ]  # fmt: skip
    page.screenshot(path=str(tmp_path / "console-report.png"), full_page=True)

    # the exports for a regulator: a CSV of every figure, a self-contained HTML page with the charts
    with page.expect_download() as d:
        page.click("#report-csv")
    csv_text = Path(d.value.path()).read_text()
    assert csv_text.startswith("Section,Row,Column,Value")
    assert (
        f"DenialsBySector,law_enforcement,moratorium,{expected['DenialsBySector']['law_enforcement']['moratorium']}"
        in csv_text
    )
    with page.expect_download() as d:
        page.click("#report-html")
    html_text = Path(d.value.path()).read_text()
    assert d.value.suggested_filename.endswith(".html")
    assert html_text.count("<svg") == 2 and "<script" not in html_text and "Denials by rule" in html_text
    assert "moratorium (in force, indefinite)" in html_text and "Collections by consent mode" in html_text
    assert (
        "BuiltInSafeguards,moratorium,," in csv_text
        and "CollectionsByConsentMode,Household,Faces," in csv_text
    )
    # Since narrows the report: nothing counted from far in the future
    page.fill("#report-form input[name=Since]", "2999-01-01")
    page.click("#report-form button[type=submit]")
    page.wait_for_selector("#fig-allowed .n:text-is('0')")
    # the policy tab shows the built-in rules above the file
    c.tab("policy")
    page.wait_for_selector("#policy:has-text('moratorium (in force, indefinite)')")


# ---- every tab fits the page, at 1280 and 800 px; screenshots ------------------------------------------------
@pytest.mark.parametrize("width", [1280, 800])
def test_console_tabs_fit_the_page(harness: Harness, console: Any, tmp_path: Path, width: int) -> None:
    svc, owner = harness.service, harness.service.owner_principal()
    if "staff" not in svc.call("ListCollections", {}, owner)["CollectionIds"]:
        svc.call("CreateCollection", {"CollectionId": "staff"}, owner)
    # the widest consent rows: a long subject id and evidence, one of them withdrawn
    listed = {c["Subject"] for c in svc.call("ListConsents", {}, owner)["Consents"]}
    for subject in {"staff-member-with-a-long-identifier-0042", "staff-member-who-left-0043"} - listed:
        evidence = (
            "signed consent form 2026-11-30, scanned copy in the HR file cabinet, drawer 4, folder " + subject
        )
        svc.call("GrantConsent", {"Subject": subject, "CollectionId": "staff", "Evidence": evidence}, owner)
    if "staff-member-who-left-0043" not in listed:
        svc.call("WithdrawConsent", {"Subject": "staff-member-who-left-0043", "CollectionId": "staff"}, owner)
    c = console(width)
    page = c.sign_in(harness.owner_key)
    for name in ALL_TABS:
        c.tab(name)
        if name == "search":  # the widest result: the photo beside the matches
            page.wait_for_selector(
                "#search-form select[name=CollectionId] option[value=staff]", state="attached"
            )
            page.select_option("#search-form select[name=CollectionId]", "staff")
            page.set_input_files("#search-form input[name=Image]", str(OBAMA_2))
            page.click("#search-form button[type=submit]")
            page.wait_for_selector("#search-figure", timeout=LONG)
        if name == "consent":
            page.wait_for_selector("#consent tr[data-subject=staff-member-who-left-0043] .badge.ended")
        if name == "audit":
            page.wait_for_selector("#audit tr.record")
            page.click("#audit tr.record")  # an open record's detail must fit too
        if name == "report":
            page.wait_for_selector("#chart-denials")
        page.wait_for_timeout(200)
        assert not page.locator(f"#tab-{name} .tab-error").count(), page.inner_text(f"#tab-{name} .tab-error")
        page.screenshot(path=str(tmp_path / f"console-{name}-{width}.png"), full_page=True)
        doc, viewport = fits(page)
        assert doc <= viewport, f"the {name} tab is {doc} px wide in a {viewport} px window"
        # nor does a table scroll sideways inside its own box (what the page's width cannot show)
        inner = page.eval_on_selector_all(
            f"#tab-{name} .scroll",
            "bs => bs.filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1)"
            "  .map(b => [b.firstElementChild.id, b.scrollWidth, b.clientWidth])",
        )
        assert not inner, f"the {name} tab's tables scroll sideways at {width} px: {inner}"


# ---- a key that may see only part of the console ---------------------------------------------------------
def test_console_tabs_say_why_a_key_may_not_see_them(harness: Harness, console: Any, tmp_path: Path) -> None:
    c = console(800)
    page = c.sign_in(harness.key("blur-shop", "commercial", "redaction"))  # detect and redact only
    for name in TABS:
        c.tab(name)
        page.wait_for_selector(f"#tab-{name} .tab-error", timeout=20_000)
        text = page.inner_text(f"#tab-{name} .tab-error")
        assert "AccessDeniedException" in text and "redaction" in text, (name, text)
        assert fits(page)[0] <= fits(page)[1]
    page.screenshot(path=str(tmp_path / "console-denied.png"), full_page=True)
    # a key of another organisation sees its collections and consents, and is told why not the log
    c2 = console()
    page = c2.sign_in(harness.key("gym", "commercial", "access_control"))
    c2.tab("consent")
    page.wait_for_selector("#consent-list p, #consent")
    assert not page.locator("#tab-consent .tab-error").count()
    c2.tab("audit")
    page.wait_for_selector("#tab-audit .tab-error")
    assert "access_control" in page.inner_text("#tab-audit .tab-error")


def test_console_is_self_contained(harness: Harness) -> None:
    import httpx

    r = httpx.get(harness.url + "/console")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    scripts = [s.split('"')[0] for s in r.text.split('<script src="/console/static/')[1:]]
    assert "console.js" in scripts and len(scripts) >= 5
    for asset in ["console.css", *scripts]:
        body = httpx.get(f"{harness.url}/console/static/{asset}")
        assert body.status_code == 200, asset
        assert "http://" not in body.text and "https://" not in body.text, f"{asset} refers to another site"
    assert "http://" not in r.text and "https://" not in r.text


def test_console_reads_are_marked_only_for_declared_reads(harness: Harness) -> None:
    """The console's header marks the record of a read; it cannot hide a search, an enrolment or a refusal."""
    import httpx

    key_id, secret = harness.owner_key
    headers = {"Authorization": f"Bearer {key_id}:{secret}", "X-Facewarden-Console-Read": "1"}
    r = httpx.get(f"{harness.url}/v1/collections", headers=headers)
    assert r.status_code == 200
    assert harness.service.audit.last_record()["details"].get("console_read") is True
    for method, path, body in (
        ("POST", "/v1/collections", {"CollectionId": "marked-or-not"}),
        ("POST", "/v1/faces/compare", {"SourceImage": {"Bytes": "eA=="}, "TargetImage": {"Bytes": "eA=="}}),
    ):
        httpx.request(method, harness.url + path, headers=headers, json=body)
        last = harness.service.audit.last_record()
        assert "console_read" not in last["details"], (path, last)
    police = harness.key("county-police", "law_enforcement", "access_control")
    r = httpx.get(
        f"{harness.url}/v1/admin/audit",
        headers={**headers, "Authorization": f"Bearer {police[0]}:{police[1]}"},
    )
    assert r.status_code == 403
    last = harness.service.audit.last_record()
    assert last["decision"] == "denied" and last["details"].get("console_read") is True
    assert last["seq"] in records(harness, hide_console_reads=True)  # a refused read is never hidden
    assert json.loads(httpx.get(f"{harness.url}/v1/admin/audit?MaxResults=1&NewestFirst=true&HideConsoleReads=true",
                                headers=headers).text)["Lines"]  # fmt: skip


# ---- keyboard and labels ----------------------------------------------------------------------------------
#: [the number of visible controls, those without an accessible name (a label, aria-label or text)]
UNLABELLED = """() => {
  const shown = Array.from(document.querySelectorAll('#app-view input, #app-view select, #app-view textarea, #app-view button'))
    .filter(e => e.offsetParent !== null && e.type !== 'hidden');
  return [shown.length, shown
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby')
                 && !(e.tagName === 'BUTTON' && e.textContent.trim()))
    .map(e => e.outerHTML.slice(0, 120))];
}"""


def test_console_tabs_by_keyboard_and_every_control_labelled(harness: Harness, console: Any) -> None:
    c = console()
    page = c.sign_in(harness.owner_key)
    page.focus("#tabs [data-tab=collections]")
    for name in ALL_TABS[1:]:  # the arrow keys move through the tabs, each shown and announced as selected
        page.keyboard.press("ArrowRight")
        page.wait_for_selector(f"#tab-{name}:not([hidden])")
        assert page.evaluate("document.activeElement.dataset.tab") == name
        assert page.get_attribute(f"#tabs [data-tab={name}]", "aria-selected") == "true"
        if name == "consent":  # the register drawn (its rows' withdraw buttons are controls too)
            page.wait_for_selector("#consent-list > *")
        if name == "audit":
            page.wait_for_selector("#audit tr.record")
            assert page.get_attribute("#audit tr.record", "tabindex") == "0"  # records reachable by Tab
        if name == "report":
            page.wait_for_selector("#headline")
        shown, unlabelled = page.evaluate(UNLABELLED)
        assert shown >= len(ALL_TABS) and unlabelled == [], (name, unlabelled)
    page.keyboard.press("Home")
    page.wait_for_selector("#tab-collections:not([hidden])")
    page.keyboard.press("ArrowLeft")  # round to the last tab (whichever tabs this key is offered)
    last = page.evaluate(
        "Array.from(document.querySelectorAll('#tabs [role=tab]')).filter(b => !b.hidden).pop().dataset.tab"
    )
    page.wait_for_selector(f"#tab-{last}:not([hidden])")
    assert page.evaluate("document.activeElement.dataset.tab") == last != "collections"

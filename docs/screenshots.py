"""Draw the README's screenshot of the console's transparency report (docs/console-transparency.png).

A demo installation in a temporary folder lives through two weeks on a simulated clock: a gym
enrols its consenting members and lets them in by face, a university lab measures accuracy, a
police force's searches are refused by the moratorium, a crowd-monitoring key is refused by the
surveillance rule, some calls fail on bad input, a member withdraws consent, the policy is applied
once more, and the gym releases a redacted copy of its door camera's footage to the police once
and declines two requests. Then the console (served on loopback) is opened in headless Chromium and the
Transparency tab is photographed. Nothing is fetched from elsewhere; the photos are ../shared's.

    .venv/bin/python docs/screenshots.py [--out docs/console-transparency.png]
"""

from __future__ import annotations

import argparse
import datetime as dt
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facewarden.api import create_app  # noqa: E402
from facewarden.api.testing import ServerThread, make_key  # noqa: E402
from facewarden.config import Settings  # noqa: E402
from facewarden.errors import FacewardenError  # noqa: E402
from facewarden.service import Service  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"
DAY = 86400.0
START = dt.datetime(2026, 11, 16, tzinfo=dt.UTC).timestamp()  # a Monday (any fixed time will do)
MEMBERS = ("barack_obama", "joe_biden")


def photo(name: str, i: int = 1) -> dict[str, bytes]:
    return {"Bytes": (FACES / name / f"{name}_{i}.jpg").read_bytes()}


def live_two_weeks(svc: Service, now: list[float]) -> None:
    owner = svc.owner_principal()

    orgs: set[str] = set()

    def key(org: str, sector: str, purpose: str) -> object:
        """A key for ``org`` (made once, with its sector), as the owner makes them."""
        if org not in orgs:
            orgs.add(org)
            return svc.principal_for_key(make_key(svc, org, sector, purpose)[0])
        made = svc.call("CreateKey", {"Organization": org, "Purpose": purpose}, owner)["AccessKey"]
        return svc.principal_for_key(made["AccessKeyId"])

    gym = key("riverside-gym", "commercial", "access_control")
    lab = key("uni-lab", "research", "research_audit")
    police = key("city-police", "law_enforcement", "access_control")
    crowd = key("stadium-ops", "private_security", "crowd_monitoring")
    # footage release: the gym keeps its door camera's photos; the police and a newspaper ask for them
    gym_footage = key("riverside-gym", "commercial", "footage_release")
    police_footage = key("city-police", "law_enforcement", "footage_release")
    news = key("daily-news", "media", "footage_release")
    door = svc.call("AddFootage", {"Image": photo("barack_obama", 4), "Place": "front door"}, gym_footage)
    svc.call("CreateCollection", {"CollectionId": "members", "RetentionDays": 365}, gym)
    for m in MEMBERS:
        svc.call("GrantConsent", {"Subject": m, "CollectionId": "members", "Evidence": f"form {m}"}, gym)
        svc.call("IndexFaces", {"CollectionId": "members", "Image": photo(m), "ExternalImageId": m}, gym)

    def attempt(name: str, request: dict[str, object], who: object) -> None:
        with contextlib.suppress(FacewardenError):
            svc.call(name, request, who)

    for day in range(14):
        now[0] = START + day * DAY + 8 * 3600
        weekend = day % 7 in (5, 6)
        for visit in range(1 if weekend else 3):  # members at the door
            now[0] += 1800
            attempt(
                "SearchFacesByImage", {"CollectionId": "members", "Image": photo(MEMBERS[visit % 2], 2)}, gym
            )
        attempt("DetectFaces", {"Image": photo("joe_biden", 2)}, lab)
        if day % 3 == 0:
            attempt(
                "CompareFaces", {"SourceImage": photo("barack_obama"), "TargetImage": photo("joe_biden")}, lab
            )
        for _ in range(day % 4):  # the police try to identify people: refused before any image is read
            attempt("SearchFacesByImage", {"CollectionId": "members", "Image": {"Bytes": b"-"}}, police)
        attempt("DetectFaces", {"Image": photo("barack_obama", 3)}, police)  # detection stays open to them
        if day in (4, 5, 9):
            attempt("SearchFacesByImage", {"CollectionId": "members", "Image": {"Bytes": b"-"}}, crowd)
        if day in (2, 11):  # a corrupt upload fails
            bad = {"Bytes": b"not an image"}
            attempt(
                "IndexFaces", {"CollectionId": "members", "Image": bad, "ExternalImageId": MEMBERS[0]}, gym
            )
        if day == 6:
            attempt("DescribeCollection", {"CollectionId": "visitors"}, gym)
        if day in (3, 8, 9):  # requests for footage: released (a redacted copy), declined, declined
            asker = news if day == 9 else police_footage
            request = {"OwnerOrganization": "riverside-gym", "TimeRange": {"Start": now[0] - DAY, "End": now[0]},
                       "Place": "front door", "Reason": "a theft reported at the gym" if day != 9 else "a story",
                       "LegalBasis": "warrant" if day != 9 else "public interest"}  # fmt: skip
            rid = svc.call("CreateReleaseRequest", request, asker)["RequestId"]
            now[0] += 3600
            if day == 3:
                svc.call("ReleaseFootage", {"RequestId": rid, "FootageIds": [door["FootageId"]]}, gym_footage)
            else:
                svc.call(
                    "DeclineReleaseRequest", {"RequestId": rid, "Reason": "no legal basis shown"}, gym_footage
                )
        if day == 10:  # a member leaves: consent withdrawn, their face erased
            attempt("WithdrawConsent", {"Subject": "joe_biden", "CollectionId": "members"}, gym)
        if day == 12:
            text = svc.policy.text.replace(
                "max_expected_false_matches = 0.01", "max_expected_false_matches = 0.005"
            )
            attempt("ApplyPolicy", {"Policy": text}, owner)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "console-transparency.png")
    out = ap.parse_args().out
    from playwright.sync_api import sync_playwright

    now = [START]
    with tempfile.TemporaryDirectory() as d:
        svc = Service(Settings(data_dir=Path(d)), clock=lambda: now[0])
        owner, secret = svc.init_owner("operator", "commercial")
        live_two_weeks(svc, now)
        now[0] = START + 14 * DAY
        server = ServerThread(create_app(svc))
        url = server.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/console")
                page.fill("input[name=key]", owner.key_id)
                page.fill("input[name=secret]", secret)
                page.click("#signin-form button[type=submit]")
                page.wait_for_selector("#app-view:not([hidden])")
                page.click("#tabs [data-tab=report]")
                page.wait_for_selector("#chart-denials")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            server.stop()
            svc.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Safeguards that cannot be sidestepped (issue 12), each tried as an attacker would, on SQLite and on
PostgreSQL (searched with HNSW and with the in-process index): the household exemption kept to a
natural person's own library; expired or withdrawn consent and passed retention hidden from every
read at once; consent before pixels in bulk work; one consent, one face; users that stand for one
subject; and the moratorium as an invariant of the code that no policy file can weaken.

Every refusal is checked for its rule, its reason and its audit record; every test ends with an
intact audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewarden.config import Settings
from facewarden.errors import (
    AccessDenied,
    ConsentRequired,
    PolicyWeakening,
    ResourceNotFound,
    ServiceQuotaExceeded,
)
from facewarden.policy.rules import DEFAULT_POLICY_PATH
from facewarden.service import Service
from tests.conftest import CachedEngine, assert_shape, capped_policy, near, new_faces, unit

FACES = Path(__file__).resolve().parent.parent.parent / "shared" / "faces"
CORRUPT = {"Bytes": b"\xff\xd8\xff\xe0 not a JPEG"}
MODEL = "dlib-resnet-v1"  # (of collections made here with synthetic templates)


# ---- helpers ---------------------------------------------------------------------------------------
def image(rel: str) -> dict[str, bytes]:
    return {"Bytes": (FACES / rel).read_bytes()}


def key(svc: Any, org: str, sector: str, purpose: str) -> Any:
    """The principal of a new key of ``org`` (created with ``sector`` if new), made by the owner."""
    owner = svc.owner_principal()
    if org not in {o["Name"] for o in svc.principals.list_orgs()}:
        svc.call("CreateOrganization", {"Name": org, "Sector": sector}, owner)
    k = svc.call("CreateKey", {"Organization": org, "Purpose": purpose}, owner)["AccessKey"]
    return svc.principal_for_key(k["AccessKeyId"])


def denied(
    svc: Any, op: str, req: dict[str, Any], principal: Any, rule: str, *words: str, records: int = 1
) -> dict[str, Any]:
    """Call; expect AccessDenied naming ``rule`` with ``words`` in its reason and exactly ``records``
    new audit records, the last that of the refusal; return it."""
    before = svc.audit.count()
    with pytest.raises(AccessDenied) as info:
        svc.call(op, req, principal)
    exc = info.value
    assert exc.rule == rule, exc
    for w in words:
        assert w in exc.reason, (w, exc.reason)
    assert svc.audit.count() == before + records
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["rule"], rec["reason"]) == (op, "denied", rule, exc.reason)
    return rec


def staff(svc: Any, collection: str = "staff", **kw: Any) -> Any:
    """A research-audit key of a company (floor 50: it may enrol, search and record consent) and
    its consent collection."""
    p = key(svc, "acme", "commercial", "research_audit")
    svc.call("CreateCollection", {"CollectionId": collection, **kw}, p)
    return p


def grant(svc: Any, p: Any, subject: str, collection: str = "staff", **kw: Any) -> None:
    svc.call("GrantConsent", {"Subject": subject, "CollectionId": collection, "Evidence": "form 1", **kw}, p)


def enrol(svc: Any, p: Any, rel: str, subject: str, collection: str = "staff") -> str:
    out = svc.call(
        "IndexFaces", {"CollectionId": collection, "Image": image(rel), "ExternalImageId": subject}, p
    )
    assert len(out["FaceRecords"]) == 1, out
    return str(out["FaceRecords"][0]["Face"]["FaceId"])


def reopen(svc: Any) -> Any:
    """A fresh service process on the same data directory and database."""
    other = Service(svc.settings)
    other.engine = svc.engine
    return other


def intact(svc: Any) -> None:
    assert svc.audit.verify().ok, svc.audit.verify()
    assert svc.call("VerifyAudit", {}, svc.owner_principal())["Ok"]


def searched(svc: Any, p: Any, rel: str, collection: str = "staff", **kw: Any) -> list[str]:
    out = svc.call("SearchFacesByImage", {"CollectionId": collection, "Image": image(rel), **kw}, p)
    return [m["Face"].get("ExternalImageId") for m in out["FaceMatches"]]


# ---- 6. the moratorium and the surveillance rule are built in ------------------------------------
DEFAULT = DEFAULT_POLICY_PATH.read_text()
YESTERDAY = (dt.date.today() - dt.timedelta(days=1)).isoformat()
MORATORIUM_BLOCK = DEFAULT[
    DEFAULT.index('[[deny]]\nid = "moratorium"') : DEFAULT.index('[[deny]]\nid = "surveillance"')
]
SURVEILLANCE_BLOCK = DEFAULT[
    DEFAULT.index('[[deny]]\nid = "surveillance"') : DEFAULT.index("# ---- purposes")
]

#: name -> (the weakened file, the built-in it weakens, a word of the reason)
WEAKENINGS = {
    "delete the moratorium": (DEFAULT.replace(MORATORIUM_BLOCK, ""), "moratorium", "deletes"),
    "remove a sector": (
        DEFAULT.replace('sectors = ["law_enforcement", "immigration_enforcement"]', 'sectors = ["law_enforcement"]'),
        "moratorium", "immigration_enforcement",
    ),
    "until yesterday": (
        DEFAULT.replace('operations = ["compare", "enrol", "identify", "cluster"]',
                        f'operations = ["compare", "enrol", "identify", "cluster"]\nuntil = {YESTERDAY}', 1),
        "moratorium", "until",
    ),
    "an exemption for the police": (
        DEFAULT.replace('  name = "child_safety_nonprofit"\n  sectors = ["nonprofit"]',
                        '  name = "child_safety_nonprofit"\n  sectors = ["nonprofit", "law_enforcement"]'),
        "moratorium", "exemption",
    ),
    "drop identify from the moratorium": (
        DEFAULT.replace('operations = ["compare", "enrol", "identify", "cluster"]',
                        'operations = ["compare", "enrol", "cluster"]', 1),
        "moratorium", "identify",
    ),
    "only some purposes": (
        DEFAULT.replace('sectors = ["law_enforcement", "immigration_enforcement"]',
                        'sectors = ["law_enforcement", "immigration_enforcement"]\npurposes = ["access_control"]'),
        "moratorium", "purpose",
    ),
    "delete the surveillance rule": (DEFAULT.replace(SURVEILLANCE_BLOCK, ""), "surveillance", "deletes"),
    "narrow the surveillance rule": (DEFAULT.replace('"crowd_monitoring", ', ""), "surveillance", "crowd_monitoring"),
    "lower a floor": (
        DEFAULT.replace("operations = [\"detect\", \"compare\"]\nmin_similarity = 90",
                        "operations = [\"detect\", \"compare\"]\nmin_similarity = 60"),
        "floor", "identity_verification",
    ),
    "a new purpose with no floor": (
        DEFAULT + '\n[purposes.shop_floor]\noperations = ["identify"]\nmin_similarity = 10\n', "floor", "shop_floor",
    ),
    "raise a quota": (DEFAULT.replace("per_key_per_day = 1000", "per_key_per_day = 1000000", 1),
                      "quota:identification", "1000000"),
    "delete a quota": (DEFAULT[: DEFAULT.index('[[quotas]]\nid = "comparison"')]
                       + DEFAULT[DEFAULT.index("# ---- collections"):], "quota:comparison", "deletes"),
    "raise the cap": (DEFAULT.replace("max_expected_false_matches = 0.01", "max_expected_false_matches = 50"),
                      "max_expected_false_matches", "ceiling"),
    "raise a purpose's cap": (DEFAULT.replace("max_expected_false_matches = 0.02", "max_expected_false_matches = 5", 1),
                              "max_expected_false_matches", "photo_organisation"),
    "household for door keys": (
        DEFAULT.replace('household_purposes = ["photo_organisation"]',
                        'household_purposes = ["photo_organisation", "access_control"]'),
        "household", "access_control",
    ),
    "huge households": (DEFAULT.replace("household_max_faces = 100000", "household_max_faces = 5000000"),
                        "household", "5000000"),
}  # fmt: skip

#: Files that add restrictions: accepted.
TIGHTENINGS = {
    "more sectors": DEFAULT.replace(
        'sectors = ["law_enforcement", "immigration_enforcement"]',
        'sectors = ["law_enforcement", "immigration_enforcement", "military", "private_security"]',
    ),
    "a higher floor, a lower quota, a lower cap, smaller households": DEFAULT.replace(
        'operations = ["detect", "compare"]\nmin_similarity = 90',
        'operations = ["detect", "compare"]\nmin_similarity = 95',
    )
    .replace("per_key_per_day = 1000", "per_key_per_day = 10")
    .replace("max_expected_false_matches = 0.01", "max_expected_false_matches = 0.001")
    .replace("household_max_faces = 100000", "household_max_faces = 500"),
    "a rule of its own, with an until": DEFAULT
    + f'\n[[deny]]\nid = "pause"\nreason = "r"\nsectors = ["media"]\noperations = ["compare"]\nuntil = {YESTERDAY}\n',
}


def test_the_default_policy_keeps_every_built_in() -> None:
    from facewarden.policy import Policy

    policy = Policy.default()  # parses: the shipped file weakens nothing
    assert [r.id for r in policy.deny_rules[:2]] == ["moratorium", "surveillance"]
    for name, (text, _, _) in WEAKENINGS.items():
        assert text != DEFAULT, name  # each mutation really changed the file
        with pytest.raises(PolicyWeakening):
            Policy.parse(text)


def test_a_policy_file_cannot_weaken_a_built_in(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    police = key(svc, "agency", "law_enforcement", "access_control")
    in_force = svc.policy.sha256
    for name, (text, builtin, word) in WEAKENINGS.items():
        for op in ("ApplyPolicy", "CheckPolicy"):
            rec = denied(svc, op, {"Policy": text}, owner, f"builtin:{builtin}", word, "stays in force")
            assert rec["policy_hash"] == in_force, name
        assert svc.policy.sha256 == in_force, name
    # The moratorium still holds.
    denied(svc, "SearchFaces", {"CollectionId": "c", "FaceId": "f"}, police, "moratorium")
    rep = svc.call("GetTransparencyReport", {}, owner)["Report"]
    assert rep["DenialsByRule"]["builtin:moratorium"] >= 2 * 6
    for name, text in TIGHTENINGS.items():
        assert svc.call("CheckPolicy", {"Policy": text}, owner)["Valid"], name
    svc.call("ApplyPolicy", {"Policy": TIGHTENINGS["more sectors"]}, owner)
    guard = key(svc, "guards", "private_security", "access_control")
    denied(svc, "CompareFaces", {"SourceImage": CORRUPT, "TargetImage": CORRUPT}, guard, "moratorium")
    intact(svc)


def test_a_hand_edited_file_is_refused_by_a_running_and_a_fresh_process(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    police = key(svc, "agency", "law_enforcement", "access_control")
    in_force = svc.policy.sha256
    path = svc.settings.data_dir / "policy.toml"
    path.write_text(WEAKENINGS["delete the moratorium"][0])
    # The running process notices the edit before its next call, refuses it (audited once) and keeps
    # the policy in force: the police key is still refused.
    denied(
        svc, "CompareFaces", {"SourceImage": CORRUPT, "TargetImage": CORRUPT}, police, "moratorium", records=2
    )
    refused = list(svc.audit.records_of("PolicyRefused"))
    assert len(refused) == 1 and refused[0]["rule"] == "builtin:moratorium"
    assert refused[0]["details"]["why"] == "file changed" and refused[0]["decision"] == "denied"
    assert svc.policy.sha256 == in_force
    denied(svc, "CompareFaces", {"SourceImage": CORRUPT, "TargetImage": CORRUPT}, police, "moratorium")
    assert len(list(svc.audit.records_of("PolicyRefused"))) == 1  # once per change, not per call
    # A fresh process does not start on it, and says why (audited too).
    with pytest.raises(PolicyWeakening, match="moratorium"):
        reopen(svc)
    path.write_text(capped_policy(DEFAULT, 1.0))
    fresh = reopen(svc)
    try:
        whys = [r["details"]["why"] for r in fresh.audit.records_of("PolicyRefused")]
        assert whys == ["file changed", "startup"]
        denied(fresh, "CompareFaces", {"SourceImage": CORRUPT, "TargetImage": CORRUPT}, police, "moratorium")
        # The console and the transparency report show the built-ins in force.
        shown = fresh.call("DescribePolicy", {}, owner)["Policy"]["BuiltIn"]
        assert [r["Id"] for r in shown["Rules"]] == ["moratorium", "surveillance"]
        rep = fresh.call("GetTransparencyReport", {}, owner)["Report"]
        assert rep["BuiltInSafeguards"]["InForce"] and rep["BuiltInSafeguards"]["Rules"][0]["Until"] is None
        assert rep["DenialsByRule"]["builtin:moratorium"] == 2
        intact(fresh)
    finally:
        fresh.close()


# ---- 1. the household exemption is a natural person's own library -------------------------------
def test_household_collections_are_for_natural_persons(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    shop = key(svc, "test-org", "commercial", "photo_organisation")
    for p in (shop, owner):
        denied(svc, "CreateCollection", {"CollectionId": "shoppers", "ConsentMode": "household"}, p,
               "household", "individual", "consent collection")  # fmt: skip
    with pytest.raises(ResourceNotFound):
        svc.store.get_collection("shoppers")
    # A natural person's own library: allowed, and it keeps every face of a photo.
    me = svc.test_principal  # organisation test-family, sector individual
    svc.call("CreateCollection", {"CollectionId": "album", "ConsentMode": "household"}, me)
    out = svc.call("IndexFaces", {"CollectionId": "album", "Image": image("group/faceapi_bbt4.jpg")}, me)
    assert len(out["FaceRecords"]) == 6
    assert searched(svc, me, "group/faceapi_bbt4.jpg", "album")
    # Nobody else: not the company, not the operator, not another person, not the family's door key,
    # not even with cross_organisation switched on.
    svc.call(
        "ApplyPolicy",
        {"Policy": DEFAULT.replace("cross_organisation = false", "cross_organisation = true")},
        owner,
    )
    neighbour = key(svc, "neighbour", "individual", "photo_organisation")
    door = key(svc, "test-family", "individual", "access_control")
    for p in (shop, owner, neighbour, door):
        denied(svc, "SearchFacesByImage", {"CollectionId": "album", "Image": CORRUPT}, p, "household")
        denied(svc, "ListFaces", {"CollectionId": "album"}, p, "household")
        assert "album" not in svc.call("ListCollections", {}, p)["CollectionIds"]
    # ... and never exported: the operator's subject export skips household libraries.
    svc.call(
        "IndexFaces", {"CollectionId": "album", "Image": image("amy/amy_1.png"), "ExternalImageId": "amy"}, me
    )
    assert svc.call("ExportSubject", {"Subject": "amy", "IncludeTemplates": True}, owner)["Faces"] == []
    # The transparency report counts household libraries apart.
    rep = svc.call("GetTransparencyReport", {}, owner)["Report"]["Collections"]
    assert rep["Household"] == {"Collections": 1, "Faces": 7} and rep["Consent"]["Collections"] == 0
    # The family's organisation declared a company now: its library is refused until converted.
    svc.call("SetOrganizationSector", {"Name": "test-family", "Sector": "commercial"}, owner)
    now_a_company = svc.principal_for_key(me.key_id)
    denied(
        svc, "ListFaces", {"CollectionId": "album"}, now_a_company, "household", "collection convert album"
    )
    rep = svc.call("GetTransparencyReport", {}, owner)["Report"]["Collections"]
    assert rep["HouseholdRefused"] == {"Collections": 1, "Faces": 7}
    intact(svc)


def test_household_size_is_capped(service: Any) -> None:
    svc, owner, me = service, service.owner_principal(), service.test_principal
    svc.call(
        "ApplyPolicy",
        {"Policy": DEFAULT.replace("household_max_faces = 100000", "household_max_faces = 4")},
        owner,
    )
    svc.call("CreateCollection", {"CollectionId": "album", "ConsentMode": "household"}, me)
    # Six faces would not fit: nothing is stored.
    with pytest.raises(ServiceQuotaExceeded, match="limit of 4"):
        svc.call("IndexFaces", {"CollectionId": "album", "Image": image("group/faceapi_bbt4.jpg")}, me)
    assert svc.store.count_faces("album") == 0
    assert svc.audit.last_record()["decision"] == "failed"
    for rel in ("amy/amy_1.png", "penny/penny_1.png", "sheldon/sheldon_1.png", "leonard/leonard_1.png"):
        svc.call("IndexFaces", {"CollectionId": "album", "Image": image(rel)}, me)
    # Full: refused before the image is even decoded (a corrupt one gets the limit, not a format error).
    with pytest.raises(ServiceQuotaExceeded, match="household_max_faces = 4"):
        svc.call("IndexFaces", {"CollectionId": "album", "Image": CORRUPT}, me)
    assert svc.store.count_faces("album") == 4
    intact(svc)


def test_a_companys_household_collection_is_refused_until_converted(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    # Made before the household rule existed: the company test-org's "household" library.
    store = svc.store
    store.create_collection("shoppers", MODEL, 128, consent_mode="household", owner_org="test-org")
    rng = np.random.default_rng(7)
    t = unit(rng, 5)
    for i, subject in enumerate(["alice", "alice", "bob", None, "carol"]):
        store.add_faces("shoppers", new_faces(t[i : i + 1], subject), MODEL)
    shop = key(svc, "test-org", "commercial", "photo_organisation")
    grant(svc, owner, "alice", "shoppers")
    svc.consents.grant("test-org", "carol", "shoppers", "form 9", expires_at=svc.clock() + 0.5)
    time.sleep(0.6)  # carol's consent has expired: it does not count
    # Start-up finds it, logs it and audits it once (not at every start).
    for _ in range(2):
        reopen(svc).close()
    found = [r for r in svc.audit.records_of("HouseholdRefused") if r["collection"] == "shoppers"]
    assert len(found) == 1 and found[0]["details"]["owner_sector"] == "commercial"
    assert found[0]["counts"] == {"faces": 5}
    # Every call on it is refused, saying how to convert it.
    for op, req in (("ListFaces", {}), ("SearchFacesByImage", {"Image": CORRUPT}), ("DeleteCollection", {})):
        denied(svc, op, {"CollectionId": "shoppers", **req}, shop, "household", "collection convert shoppers")
    rep = svc.call("GetTransparencyReport", {}, owner)["Report"]["Collections"]
    assert rep["HouseholdRefused"] == {"Collections": 1, "Faces": 5}
    # The operator converts it: the faces without an active consent record are erased (audited).
    out = svc.call("ConvertCollection", {"CollectionId": "shoppers", "ConsentMode": "required"}, owner)
    assert (out["FacesErased"], out["FacesKept"]) == (3, 2)
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["counts"]) == (
        "ConvertCollection", "allowed", {"faces_erased": 3, "faces_kept": 2},
    )  # fmt: skip
    assert store.get_collection("shoppers").consent_mode == "required" and store.count_faces("shoppers") == 2
    door = key(svc, "test-org", "commercial", "access_control")
    listed = svc.call("ListFaces", {"CollectionId": "shoppers"}, door)["Faces"]
    assert {f["ExternalImageId"] for f in listed} == {"alice"} and len(listed) == 2
    with pytest.raises(AccessDenied):  # a company's key may not convert (the operator's)
        svc.call("ConvertCollection", {"CollectionId": "shoppers"}, door)
    intact(svc)


# ---- 2. expired or withdrawn consent and passed retention bite at query time -----------------------
def test_expired_consent_hides_faces_before_any_sweep(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    p = staff(svc)
    # The issue's case is ExpiresAt = now + 2 s and a sleep of 3 s; the window is wider here so that
    # the checks before expiry fit in it on a busy machine.
    expires = time.time() + 8
    grant(svc, p, "amy", ExpiresAt=expires)
    grant(svc, p, "penny")
    amy = enrol(svc, p, "amy/amy_1.png", "amy")
    enrol(svc, p, "penny/penny_1.png", "penny")
    svc.call("CreateUser", {"CollectionId": "staff", "UserId": "u-amy"}, p)
    svc.call("AssociateFaces", {"CollectionId": "staff", "UserId": "u-amy", "FaceIds": [amy]}, p)
    assert searched(svc, p, "amy/amy_2.png") == ["amy"]
    assert time.time() < expires, "the machine was too slow for the window"
    time.sleep(max(0.0, expires + 1 - time.time()))
    # No sweep has run: the face is still stored ...
    assert svc.store.count_faces("staff") == 2 and not list(svc.audit.records_of("ConsentExpired"))
    # ... but no read returns it.
    assert "amy" not in searched(svc, p, "amy/amy_2.png")
    listed = svc.call("ListFaces", {"CollectionId": "staff"}, p)["Faces"]
    assert [f["ExternalImageId"] for f in listed] == ["penny"]
    assert svc.call("ListFaces", {"CollectionId": "staff", "UserId": "u-amy"}, p)["Faces"] == []
    with pytest.raises(ResourceNotFound):
        svc.call("SearchFaces", {"CollectionId": "staff", "FaceId": amy}, p)
    with pytest.raises(ResourceNotFound):
        svc.call("SearchUsers", {"CollectionId": "staff", "FaceId": amy}, p)
    out = svc.call("SearchUsersByImage", {"CollectionId": "staff", "Image": image("amy/amy_2.png")}, p)
    assert out["UserMatches"] == []
    assert svc.call("SearchUsers", {"CollectionId": "staff", "UserId": "u-amy"}, p)["UserMatches"] == []
    exported = svc.call("ExportSubject", {"Subject": "amy", "IncludeTemplates": True}, owner)
    assert exported["Faces"] == [] and exported["Templates"] == {} and exported["FacesPendingErasure"] == 1
    # The sweep still erases it physically.
    assert svc.call("RunRetentionSweep", {}, owner)["Sweep"]["faces_erased"] == 1
    assert svc.store.count_faces("staff") == 1
    intact(svc)


def test_passed_retention_hides_faces_before_any_sweep(service: Any) -> None:
    svc, owner = service, service.owner_principal()
    p = staff(svc, RetentionDays=1)
    grant(svc, p, "amy")
    amy = enrol(svc, p, "amy/amy_1.png", "amy")
    with svc.db.transaction() as tx:  # indexed two days ago
        tx.execute("UPDATE gallery_faces SET indexed_at = indexed_at - 172800 WHERE face_id = ?", (amy,))
    assert searched(svc, p, "amy/amy_2.png") == []
    assert svc.call("ListFaces", {"CollectionId": "staff"}, p)["Faces"] == []
    assert svc.store.count_faces("staff") == 1
    assert svc.call("RunRetentionSweep", {}, owner)["Sweep"]["faces_purged"] == 1
    assert svc.store.count_faces("staff") == 0
    intact(svc)


def test_hidden_faces_never_come_back_on_the_approximate_path(service: Any) -> None:
    """Enough faces for the approximate index (FAISS IVF in-process, pgvector's HNSW): the nearest
    faces of a probe are a lapsed subject's, and the search still finds the visible ones behind."""
    svc = service
    p = staff(svc)
    store = svc.store
    for attr in ("index_ann_threshold", "ann_threshold"):  # approximate from 64 faces on
        if hasattr(store, attr):
            setattr(store, attr, 64)
    rng = np.random.default_rng(3)
    col = store.get_collection("staff")  # (templates of its model's size)
    base = unit(rng, 1, col.dim)[0]
    crowd = unit(rng, 300, col.dim)
    subjects = [f"s{i}" for i in range(300)]
    for s in subjects + ["adam", "abel", "eve"]:
        svc.consents.grant("acme", s, "staff", "form")
    faces = [f for i, s in enumerate(subjects) for f in new_faces(crowd[i : i + 1], s)]
    faces += new_faces(base[None, :], "adam") + new_faces(near(rng, base, 5, 0.01), "eve")
    faces += new_faces(near(rng, base, 1, 0.03), "abel")
    store.add_faces("staff", faces, col.model_version)
    adam = next(f.face_id for f in store.list_faces("staff", limit=400) if f.external_image_id == "adam")

    def found(n: int) -> list[str]:
        out = svc.call("SearchFaces", {"CollectionId": "staff", "FaceId": adam, "MaxFaces": n,
                                       "FaceMatchThreshold": 60}, p)  # fmt: skip
        return [m["Face"]["ExternalImageId"] for m in out["FaceMatches"]]

    assert found(3) == ["eve"] * 3
    with svc.db.transaction() as tx:  # eve's consent expired a second ago; no sweep has run
        tx.execute("UPDATE policy_consents SET expires_at = ? WHERE subject = 'eve'", (svc.clock() - 1,))
    assert found(3) == ["abel"]
    assert store.count_faces("staff") == 307
    assert search_mode(store, "staff") in ("hnsw", "ivf")
    intact(svc)


def search_mode(store: Any, collection_id: str) -> str:
    """How the store answered the last search of the collection: exact, ivf (FAISS) or hnsw."""
    from facewarden.gallery.localindex import LocalIndexStore

    if isinstance(store, LocalIndexStore):
        return str(store._index(store.get_collection(collection_id)).mode)
    return str(store.index_info(collection_id)["mode"])


def test_withdrawal_while_searches_run(service: Any) -> None:
    svc = service
    p = staff(svc)
    grant(svc, p, "amy")
    enrol(svc, p, "amy/amy_1.png", "amy")
    probe = {"CollectionId": "staff", "Image": image("amy/amy_2.png")}
    results: list[tuple[float, bool]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                out = svc.call("SearchFacesByImage", probe, p)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            results.append(
                (started, any(m["Face"].get("ExternalImageId") == "amy" for m in out["FaceMatches"]))
            )

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    while len(results) < 3 and not errors:
        time.sleep(0.01)
    svc.call("WithdrawConsent", {"Subject": "amy", "CollectionId": "staff"}, p)
    withdrawn = time.monotonic()
    while sum(1 for s, _ in results if s > withdrawn) < 3 and not errors:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert any(hit for s, hit in results if s < withdrawn)
    assert not any(hit for s, hit in results if s > withdrawn)
    assert svc.store.count_faces("staff") == 0
    intact(svc)


# ---- 3. consent before pixels in bulk work ---------------------------------------------------------
@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A folder per subject (copies of the shared photos, outside the repository)."""
    root = tmp_path / "library"
    for rel in ("amy/amy_1.png", "amy/amy_2.png", "penny/penny_1.png", "sheldon/sheldon_1.png",
                "leonard/leonard_1.png", "howard/howard_1.png"):  # fmt: skip
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FACES / rel, dest)
    return root


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[Path]]:
    """Every image the decoder sees (SHA-256 of its bytes), and every image file read."""
    from facewarden.media import images

    seen: list[str] = []
    read: list[Path] = []
    decode, read_bytes = images.decode, Path.read_bytes

    def spy_decode(data: bytes, *a: Any, **kw: Any) -> Any:
        seen.append(hashlib.sha256(data).hexdigest())
        return decode(data, *a, **kw)

    def spy_read(self: Path) -> bytes:
        if self.suffix in (".png", ".jpg"):
            read.append(self)
        return read_bytes(self)

    monkeypatch.setattr(images, "decode", spy_decode)
    monkeypatch.setattr(Path, "read_bytes", spy_read)
    return seen, read


def _sha(path: Path) -> str:
    return hashlib.sha256(path.open("rb").read()).hexdigest()


def test_bulk_index_decides_consent_before_reading_a_file(service: Any, library: Path, decoded: Any) -> None:
    from facewarden.service.bulk import index_paths

    svc = service
    p = staff(svc)
    grant(svc, p, "amy")
    grant(svc, p, "penny")
    seen, read = decoded
    before = svc.audit.last_record()["seq"]
    summary = index_paths(svc, [library], "staff", "folder", workers=1, progress=False, principal=p)
    refused = {Path(r["path"]).parent.name: r for r in summary["refused"]}
    assert set(refused) == {"sheldon", "leonard", "howard"}
    assert {r["rule"] for r in refused.values()} == {"consent"}
    assert summary["faces_indexed"] == 3 and summary["indexed_images"] == 3 and not summary["errors"]
    # The refused half was never read, let alone decoded.
    assert {q.parent.name for q in read} == {"amy", "penny"}
    refused_shas = {_sha(Path(r["path"])) for r in refused.values()}
    assert refused_shas.isdisjoint(seen) and len(seen) == 3
    # Each refusal is audited, naming the subject (by pseudonym).
    denials = [r for r in svc.audit.records(after_seq=before) if r["decision"] == "denied"]
    assert sorted(d["subjects"][0] for d in denials) == sorted(svc.audit.subject_ref(s) for s in refused)
    assert {(d["operation"], d["rule"]) for d in denials} == {("IndexFaces", "consent")}
    intact(svc)


def test_bulk_cluster_into_a_collection_refuses_before_reading(
    service: Any, library: Path, decoded: Any
) -> None:
    from facewarden.service.bulk import cluster_paths

    svc = service
    p = key(svc, "acme", "commercial", "photo_organisation")  # (its purpose may cluster)
    svc.call("CreateCollection", {"CollectionId": "staff"}, p)
    grant(svc, p, "amy")
    seen, read = decoded
    out = cluster_paths(svc, [library], workers=1, progress=False, principal=p, collection_id="staff",
                        create_users=True, external_id_from="folder")  # fmt: skip
    assert {Path(r["path"]).parent.name for r in out["refused"]} == {"penny", "sheldon", "leonard", "howard"}
    assert {q.parent.name for q in read} == {"amy"} and len(seen) == 2
    assert out["users"] == [{"UserId": "person-0001", "faces": 2}]
    faces = svc.store.list_faces("staff", user_id="person-0001")
    assert {f.external_image_id for f in faces} == {"amy"} and len(faces) == 2
    intact(svc)


# ---- 4. one consent, one face --------------------------------------------------------------------
def test_one_consent_enrols_one_face(service: Any) -> None:
    svc = service
    p = staff(svc)
    grant(svc, p, "barack_obama")
    before = svc.store.count_faces("staff")
    # AWS's example: a family photo under one ExternalImageId, MaxFaces=10.
    req = {"CollectionId": "staff", "Image": image("group/face_recognition_obama_and_biden.jpg"),
           "ExternalImageId": "barack_obama", "MaxFaces": 10}  # fmt: skip
    rec = denied(svc, "IndexFaces", req, p, "one_face", "largest", "consent")
    assert rec["subjects"] == [svc.audit.subject_ref("barack_obama")]
    assert svc.store.count_faces("staff") == before
    # A portrait with a stranger far behind: the subject's face only; the other never stored.
    grant(svc, p, "p2")
    out = svc.call("IndexFaces", {"CollectionId": "staff", "Image": image("deepface_person_02/deepface_person_02_4.jpg"),
                                  "ExternalImageId": "p2", "MaxFaces": 10}, p)  # fmt: skip
    assert_shape("IndexFaces", out)
    assert len(out["FaceRecords"]) == 1
    assert [u["Reasons"] for u in out["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]] * 3
    assert svc.store.count_faces("staff") == before + 1
    # A household library keeps today's behaviour (a person's own photos).
    me = svc.test_principal
    svc.call("CreateCollection", {"CollectionId": "album", "ConsentMode": "household"}, me)
    out = svc.call("IndexFaces", {"CollectionId": "album", "Image": req["Image"], "MaxFaces": 10}, me)
    assert len(out["FaceRecords"]) == 3
    intact(svc)


def test_the_margin_measured_on_the_shared_photos(engine_cache: Any) -> None:
    """ONE_FACE_MARGIN against ../shared/faces with the default detector: every group photo is
    ambiguous, and every single-person photo names its subject (three show a second, smaller face)."""
    from facewarden.media import images
    from facewarden.service.faces import select_subject_face

    engine = CachedEngine(engine_cache)
    ambiguous: list[str] = []
    several = 0
    photos = sorted(
        p for p in FACES.rglob("*") if p.suffix.lower() in (".jpg", ".png") and "noface" not in p.parts
    )
    for path in photos:
        faces = engine.detect(images.decode(path.read_bytes()))
        several += len(faces) > 1 and path.parent.name != "group"
        try:
            select_subject_face(faces, "NONE")
        except AccessDenied:
            ambiguous.append(str(path.relative_to(FACES)))
    group = sorted(str(p.relative_to(FACES)) for p in photos if p.parent.name == "group")
    assert len(group) == 15 and sorted(ambiguous) == group
    assert several >= 3  # single-person photos with a background face: enrolled all the same


# ---- 5. AssociateFaces: a user stands for one consented subject ----------------------------------
def test_a_user_holds_one_subjects_faces(service: Any) -> None:
    svc = service
    p = staff(svc)
    grant(svc, p, "amy")
    grant(svc, p, "penny")
    amy1, amy2 = enrol(svc, p, "amy/amy_1.png", "amy"), enrol(svc, p, "amy/amy_2.png", "amy")
    penny = enrol(svc, p, "penny/penny_1.png", "penny")
    for user in ("u-amy", "u-mixed"):
        svc.call("CreateUser", {"CollectionId": "staff", "UserId": user}, p)
    # The user's subject is its first face's: no consent record for the name "u-amy" is needed.
    out = svc.call("AssociateFaces", {"CollectionId": "staff", "UserId": "u-amy", "FaceIds": [amy1]}, p)
    assert [f["FaceId"] for f in out["AssociatedFaces"]] == [amy1]
    assert svc.audit.last_record()["subjects"][-1] == svc.audit.subject_ref("amy")
    # Another subject's face may not join it, alone or in company; nothing is associated.
    denied(svc, "AssociateFaces", {"CollectionId": "staff", "UserId": "u-amy", "FaceIds": [penny]}, p,
           "user_subject", penny, "one consented subject")  # fmt: skip
    denied(svc, "AssociateFaces", {"CollectionId": "staff", "UserId": "u-amy", "FaceIds": [amy2, penny]}, p,
           "user_subject", penny)  # fmt: skip
    denied(svc, "AssociateFaces", {"CollectionId": "staff", "UserId": "u-mixed", "FaceIds": [amy2, penny]}, p,
           "user_subject", penny)  # fmt: skip
    assert {f.face_id for f in svc.store.list_faces("staff", user_id="u-amy")} == {amy1}
    assert svc.store.list_faces("staff", user_id="u-mixed") == []
    out = svc.call("AssociateFaces", {"CollectionId": "staff", "UserId": "u-amy", "FaceIds": [amy2]}, p)
    assert [f["FaceId"] for f in out["AssociatedFaces"]] == [amy2]
    # The store checks it again in the transaction that associates (no race past the service).
    with pytest.raises(AccessDenied, match="one subject"):
        svc.store.associate_faces("staff", "u-amy", [penny], subject="amy")
    # A withdrawn consent: the subject's faces are gone, and so is the association.
    svc.call("WithdrawConsent", {"Subject": "amy", "CollectionId": "staff"}, p)
    with pytest.raises(ResourceNotFound):
        svc.call("SearchUsers", {"CollectionId": "staff", "UserId": "u-amy"}, p)
    intact(svc)


def test_consent_is_checked_for_the_faces_subject(service: Any) -> None:
    svc = service
    p = staff(svc)
    expires = time.time() + 6
    grant(svc, p, "amy", ExpiresAt=expires)
    amy = enrol(svc, p, "amy/amy_1.png", "amy")
    svc.call("CreateUser", {"CollectionId": "staff", "UserId": "amy"}, p)
    assert time.time() < expires, "the machine was too slow for the window"
    time.sleep(max(0.0, expires + 0.5 - time.time()))
    out = svc.call("AssociateFaces", {"CollectionId": "staff", "UserId": "amy", "FaceIds": [amy]}, p)
    assert out["AssociatedFaces"] == [] and out["UnsuccessfulFaceAssociations"][0]["Reasons"] == [
        "FACE_NOT_FOUND"
    ]
    with pytest.raises(ConsentRequired):
        svc.call(
            "IndexFaces",
            {"CollectionId": "staff", "Image": image("amy/amy_2.png"), "ExternalImageId": "amy"},
            p,
        )
    intact(svc)


# ---- over the wire: a running server, boto3 and the REST API ----------------------------------------
def test_over_the_wire(gallery_settings: Settings, engine_cache: Any) -> None:
    import boto3
    import httpx
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from facewarden.api import create_app
    from facewarden.api.testing import ServerThread, make_key

    svc = Service(gallery_settings)
    svc.engine = CachedEngine(engine_cache)  # type: ignore[assignment]
    svc.init_owner("operator", "commercial")
    server = ServerThread(create_app(svc))
    url = server.start()
    try:

        def rekognition(k: tuple[str, str]) -> Any:
            return boto3.client("rekognition", endpoint_url=url, region_name="us-east-1", aws_access_key_id=k[0],
                                aws_secret_access_key=k[1], config=Config(retries={"max_attempts": 1}))  # fmt: skip

        def rest(k: tuple[str, str]) -> httpx.Client:
            return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {k[0]}:{k[1]}"}, timeout=60)

        door = make_key(svc, "acme", "commercial", "access_control")
        shop = make_key(svc, "acme", "commercial", "photo_organisation")
        police = make_key(svc, "agency", "law_enforcement", "access_control")
        rek = rekognition(door)
        rek.create_collection(CollectionId="staff")
        svc.call("GrantConsent", {"Subject": "barack_obama", "CollectionId": "staff", "Evidence": "f"},
                 svc.principal_for_key(door[0]))  # fmt: skip
        # AWS's own example, unchanged: a family photo under one ExternalImageId, MaxFaces=10.
        with pytest.raises(ClientError) as info:
            rek.index_faces(CollectionId="staff", Image={"Bytes": image("group/face_recognition_obama_and_biden.jpg")["Bytes"]},
                            ExternalImageId="barack_obama", MaxFaces=10)  # fmt: skip
        assert info.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "[one_face]" in info.value.response["Error"]["Message"]
        # ... and over REST, the photo uploaded as a file: refused, nothing stored.
        group = image("group/face_recognition_obama_and_biden.jpg")["Bytes"]
        r = rest(door).post("/v1/collections/staff/faces", files={"Image": ("family.jpg", group)},
                            data={"ExternalImageId": "barack_obama", "MaxFaces": "10"})  # fmt: skip
        assert r.status_code == 403 and "[one_face]" in r.text, r.text
        assert svc.store.count_faces("staff") == 0
        # A company's household library over REST: refused.
        r = rest(shop).post("/v1/collections", json={"CollectionId": "shoppers", "ConsentMode": "household"})
        assert r.status_code == 403 and "[household]" in r.text and "individual" in r.text
        # Weakening the policy over REST: refused; by hand on disk: refused by the running server.
        r = rest(svc_owner_key(svc)).put(
            "/v1/admin/policy", json={"Policy": WEAKENINGS["until yesterday"][0]}
        )
        assert r.status_code == 403 and "builtin:moratorium" in r.text
        (svc.settings.data_dir / "policy.toml").write_text(WEAKENINGS["delete the moratorium"][0])
        with pytest.raises(ClientError) as info:
            rekognition(police).search_faces_by_image(CollectionId="staff", Image=CORRUPT)
        assert "[moratorium]" in info.value.response["Error"]["Message"]
        assert [r["rule"] for r in svc.audit.records_of("PolicyRefused")] == ["builtin:moratorium"]
        intact(svc)
    finally:
        server.stop()
        svc.close()


def svc_owner_key(svc: Any) -> tuple[str, str]:
    """A fresh administration key of the owner organisation (its secret: shown once, here)."""
    from facewarden.api.testing import make_key

    return make_key(svc, svc.owner_principal().org, "commercial", "administration")


# ---- video: the same rules for stored footage ----------------------------------------------------
def test_video_face_search_keeps_the_moratorium_and_hides_lapsed_matches(service: Any) -> None:
    from facewarden.service.video import _still_visible

    svc = service
    p = staff(svc)
    grant(svc, p, "amy")
    amy = enrol(svc, p, "amy/amy_1.png", "amy")
    # Decided before any footage is read, even with the moratorium deleted from the file on disk.
    (svc.settings.data_dir / "policy.toml").write_text(WEAKENINGS["delete the moratorium"][0])
    police = key(svc, "agency", "law_enforcement", "access_control")
    request = {"CollectionId": "staff", "Video": {"S3Object": {"Bucket": "b", "Name": "v.mp4"}}}
    denied(svc, "StartFaceSearch", request, police, "moratorium")
    # Stored results are read like the gallery: a match whose consent has lapsed since is gone.
    page = [
        {"Timestamp": 0, "FaceMatches": [{"Similarity": 99.0, "Face": {"FaceId": amy}}]},
        {"Timestamp": 1},
    ]
    assert _still_visible(svc, "staff", page) == page
    with svc.db.transaction() as tx:
        tx.execute("UPDATE policy_consents SET expires_at = ? WHERE subject = 'amy'", (svc.clock() - 1,))
    assert _still_visible(svc, "staff", page) == [{"Timestamp": 0, "FaceMatches": []}, {"Timestamp": 1}]
    intact(svc)


# ---- the sweep on a schedule, and a conversion a restore cannot undo ---------------------------------
def test_a_serving_process_sweeps_on_its_own_schedule(service: Any) -> None:
    """``serve`` runs the retention sweep on a timer: a lapsed consent's faces are erased from
    storage with no call and no sweep asked for (they were hidden from reads already)."""
    svc = service
    p = staff(svc)
    grant(svc, p, "amy")
    enrol(svc, p, "amy/amy_1.png", "amy")
    with svc.db.transaction() as tx:  # amy's consent expired a second ago
        tx.execute("UPDATE policy_consents SET expires_at = ? WHERE subject = 'amy'", (svc.clock() - 1,))
    assert svc.store.count_faces("staff") == 1
    svc.duties["retention"].start(0.2)
    try:
        deadline = time.monotonic() + 60
        while svc.store.count_faces("staff") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        svc.duties["retention"].stop()
    assert svc.store.count_faces("staff") == 0
    assert [r["counts"].get("faces_erased") for r in svc.audit.records_of("ConsentExpired")] == [1]
    intact(svc)


@pytest.mark.parametrize("gallery_settings", ["sqlite"], indirect=True)
def test_a_restored_backup_does_not_undo_a_conversion(service: Any, tmp_path: Path) -> None:
    """A backup taken before ConvertCollection, restored: the conversion is replayed from the
    erasure journal, and the faces it erased (no consent) stay erased."""
    from facewarden.service.recovery import backup, restore

    svc, owner = service, service.owner_principal()
    svc.store.create_collection("shoppers", MODEL, 128, consent_mode="household", owner_org="test-org")
    t = unit(np.random.default_rng(11), 3)
    for i, subject in enumerate(["alice", "bob", "carol"]):
        svc.store.add_faces("shoppers", new_faces(t[i : i + 1], subject), MODEL)
    grant(svc, owner, "alice", "shoppers")
    dest = tmp_path / "before.fwbackup"
    backup(svc, owner, dest, "a passphrase long enough")
    out = svc.call("ConvertCollection", {"CollectionId": "shoppers"}, owner)
    assert (out["FacesErased"], out["FacesKept"]) == (2, 1)
    settings = svc.settings
    journal = tmp_path / "erasures.jsonl"  # (kept on another volume, as the README advises)
    shutil.copyfile(settings.erasure_journal_path, journal)
    svc.store.close()
    svc.close()
    shutil.rmtree(settings.data_dir)  # the disaster: the data directory and its database are gone
    (tmp_path / "gallery.sqlite3").unlink()

    res = restore(settings, dest, "a passphrase long enough", [journal])
    assert [(r["operation"], r["faces_erased"]) for r in res.replay.replayed] == [("ConvertCollection", 2)]
    again = reopen(svc)
    try:
        col = again.store.get_collection("shoppers")
        assert col.consent_mode == "required" and again.store.count_faces("shoppers") == 1
        assert {f.external_image_id for f in again.store.list_faces("shoppers")} == {"alice"}
        intact(again)
    finally:
        again.close()

"""Policy before pixels: the moratorium and its safeguards, each misuse refused, with its reason, and audited.

Every misuse case checks three things: the error (AccessDenied / QuotaExceeded with the rule id),
the reason a person can act on, and the audit record of the denial.
"""

from __future__ import annotations

import json

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from facewarden.config import Settings
from facewarden.errors import AccessDenied, ConsentRequired, InvalidImage, QuotaExceeded
from facewarden.policy import Kind, Policy
from facewarden.policy.rules import DEFAULT_POLICY_PATH
from facewarden.service import OPERATIONS, Service, operation

CORRUPT = {"Bytes": b"\xff\xd8\xff\xe0 this is not a JPEG at all"}
TEMPLATE_OPS = {
    "SearchFacesByImage": {"CollectionId": "staff", "Image": CORRUPT},
    "SearchUsersByImage": {"CollectionId": "staff", "Image": CORRUPT},
    "CompareFaces": {"SourceImage": CORRUPT, "TargetImage": CORRUPT},
    "IndexFaces": {"CollectionId": "staff", "Image": CORRUPT, "ExternalImageId": "someone"},
}


class Clock:
    def __init__(self, t: float = 1_750_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock, engine_cache: Any) -> Any:
    from tests.conftest import CachedEngine

    s = Service(Settings(data_dir=tmp_path / "data"), clock=clock)
    s.engine = CachedEngine(engine_cache)  # type: ignore[assignment]
    s.owner, s.owner_secret = s.init_owner("operator", "commercial")
    yield s
    s.close()


def key(svc: Any, org: str, sector: str, purpose: str, **kw: Any) -> Any:
    """A principal of a new key of ``org`` (created, with ``sector``, if needed)."""
    if org not in {o["Name"] for o in svc.principals.list_orgs()}:
        svc.call("CreateOrganization", {"Name": org, "Sector": sector}, svc.owner)
    req = {"Organization": org, "Purpose": purpose, **kw}
    k = svc.call("CreateKey", req, svc.owner)["AccessKey"]
    return svc.principal_for_key(k["AccessKeyId"])


def photo(faces_dir: Path, name: str) -> dict[str, bytes]:
    ident = name.rsplit("_", 1)[0]
    return {"Bytes": (faces_dir / ident / f"{name}.png").read_bytes()}


def denied(svc: Any, op: str, req: dict[str, Any], principal: Any, rule: str, *words: str) -> dict[str, Any]:
    """Call, expect AccessDenied with ``rule`` and ``words`` in its reason; return the audit record."""
    before = svc.audit.count()
    with pytest.raises(AccessDenied) as info:
        svc.call(op, req, principal)
    exc = info.value
    assert exc.rule == rule, exc
    assert f"[{rule}]" in str(exc)
    for w in words:
        assert w in exc.reason, (w, exc.reason)
    assert svc.audit.count() == before + 1  # exactly one record, for the denial
    rec = svc.audit.last_record()
    assert rec["operation"] == op and rec["decision"] == "denied" and rec["rule"] == rule
    assert rec["reason"] == exc.reason
    if principal is not None:
        assert (rec["org"], rec["sector"], rec["key"], rec["purpose"]) == (
            principal.org,
            principal.sector,
            principal.key_id,
            principal.purpose,
        )
    return rec


# ---- the moratorium ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sector", ["law_enforcement", "immigration_enforcement"])
@pytest.mark.parametrize("op", sorted(TEMPLATE_OPS))
def test_moratorium_denies_every_template_operation(svc: Any, sector: str, op: str) -> None:
    p = key(svc, "agency", sector, "access_control")
    rec = denied(svc, op, TEMPLATE_OPS[op], p, "moratorium", "moratorium", f"sector {sector}")
    assert rec["policy_hash"] == svc.policy.sha256


@pytest.mark.parametrize("sector", ["law_enforcement", "immigration_enforcement"])
def test_moratorium_leaves_detection_allowed(svc: Any, sector: str, faces_dir: Path) -> None:
    p = key(svc, "agency", sector, "access_control")
    out = svc.call("DetectFaces", {"Image": photo(faces_dir, "amy_1")}, p)
    assert len(out["FaceDetails"]) == 1
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["sector"]) == ("DetectFaces", "allowed", sector)
    assert rec["counts"] == {"faces": 1}


def test_moratorium_covers_users_and_even_the_owner(tmp_path: Path, clock: Clock) -> None:
    s = Service(Settings(data_dir=tmp_path / "d"), clock=clock)
    try:
        owner, _ = s.init_owner("city-police", "law_enforcement")  # the CLI's own principal
        for op, req in [("CreateUser", {"CollectionId": "c", "UserId": "u"}),
                        ("AssociateFaces", {"CollectionId": "c", "UserId": "u", "FaceIds": ["f"]}),
                        ("SearchUsers", {"CollectionId": "c", "UserId": "u"}),
                        ("SearchFaces", {"CollectionId": "c", "FaceId": "f"}),
                        ("StartFaceSearch", {"CollectionId": "c"})]:  # fmt: skip
            if op in OPERATIONS:
                denied(s, op, req, owner, "moratorium")
        assert s.policy.decide(owner, "StartFaceSearch", Kind.IDENTIFY, now=clock()).rule_id == "moratorium"
        assert s.policy.decide(owner, "DetectFaces", Kind.DETECT, now=clock()).allowed
    finally:
        s.close()


def test_policy_before_pixels_corrupt_image_gets_the_access_error(svc: Any, monkeypatch: Any) -> None:
    p = key(svc, "agency", "law_enforcement", "access_control")

    def no_decoding(*a: Any, **k: Any) -> Any:
        raise AssertionError("an image was decoded for a denied request")

    monkeypatch.setattr(svc, "decode_image", no_decoding)
    monkeypatch.setattr("facewarden.media.images.decode", no_decoding)
    denied(svc, "CompareFaces", TEMPLATE_OPS["CompareFaces"], p, "moratorium")
    # The same corrupt image from an allowed principal reaches the decoder (and fails there).
    monkeypatch.undo()
    with pytest.raises(InvalidImage):
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], svc.owner)
    rec = svc.audit.last_record()
    assert rec["decision"] == "failed" and "InvalidImageFormatException" in rec["reason"]


def test_until_date_and_named_exemption(svc: Any, clock: Clock) -> None:
    text = DEFAULT_POLICY_PATH.read_text()
    # A rule of the file's own ends at its `until` date (the built-in rules have none: see
    # tests/test_safeguards.py for a file that tries to give them one).
    media = key(svc, "press", "media", "identity_verification")
    own = text + (
        '\n[[deny]]\nid = "press_pause"\nreason = "paused for the press"\nsectors = ["media"]\n'
        'operations = ["compare"]\nuntil = 2025-07-01\n'
    )
    svc.call("ApplyPolicy", {"Policy": own}, svc.owner)
    denied(svc, "CompareFaces", TEMPLATE_OPS["CompareFaces"], media, "press_pause", "paused")
    clock.advance(30 * 86400)  # 2025-07-15: past the rule's `until`
    with pytest.raises(InvalidImage):  # allowed: reaches the decoder
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], media)
    # The moratorium's one exemption, built in: child-safety nonprofits, and nobody else.
    thorn = key(svc, "thorn", "nonprofit", "child_safety")
    with pytest.raises(InvalidImage):
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], thorn)
    police = key(svc, "agency", "law_enforcement", "child_safety")
    denied(svc, "CompareFaces", TEMPLATE_OPS["CompareFaces"], police, "moratorium")
    # The shipped default has no `until` on any rule: indefinite.
    default = Policy.default()
    assert all(r.until is None for r in default.deny_rules)
    assert [e.name for e in default.deny_rules[0].exemptions] == ["child_safety_nonprofit"]


# ---- purposes, keys, scopes -------------------------------------------------------------------------
def test_surveillance_purpose_may_not_identify(svc: Any) -> None:
    p = key(svc, "shopwatch", "commercial", "crowd_monitoring")
    denied(svc, "SearchFacesByImage", TEMPLATE_OPS["SearchFacesByImage"], p, "surveillance", "surveillance")
    denied(svc, "SearchUsersByImage", TEMPLATE_OPS["SearchUsersByImage"], p, "surveillance")
    # ... and it is no purpose the policy knows, so it may do nothing else either.
    denied(svc, "CompareFaces", TEMPLATE_OPS["CompareFaces"], p, "purpose", "crowd_monitoring")


def test_identity_verification_may_compare_but_not_search(svc: Any) -> None:
    p = key(svc, "bank", "commercial", "identity_verification")
    denied(
        svc, "SearchFacesByImage", TEMPLATE_OPS["SearchFacesByImage"], p, "purpose", "identity_verification"
    )
    denied(svc, "IndexFaces", TEMPLATE_OPS["IndexFaces"], p, "purpose")
    with pytest.raises(InvalidImage):
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], p)


def test_key_scoped_to_collections(svc: Any) -> None:
    p = key(svc, "gym", "commercial", "access_control", Collections=["members"])
    assert p.collections == ("members",)
    rec = denied(svc, "SearchFacesByImage", {"CollectionId": "staff", "Image": CORRUPT}, p,
                 "collection_scope", "members", "staff")  # fmt: skip
    assert rec["collection"] == "staff"
    assert svc.policy.decide(
        p, "SearchFacesByImage", Kind.IDENTIFY, collection_id="members", now=svc.clock()
    ).allowed


def test_revoked_key(svc: Any, faces_dir: Path) -> None:
    p = key(svc, "shop", "commercial", "photo_organisation")
    svc.call("RevokeKey", {"AccessKeyId": p.key_id}, svc.owner)
    p = svc.principal_for_key(p.key_id)
    denied(svc, "DetectFaces", {"Image": photo(faces_dir, "amy_1")}, p, "key_revoked", p.key_id, "revoked")


def test_expired_key(svc: Any, clock: Clock, faces_dir: Path) -> None:
    p = key(svc, "shop", "commercial", "photo_organisation", ExpiresAt=clock() + 3600)
    clock.advance(3601)
    denied(svc, "DetectFaces", {"Image": photo(faces_dir, "amy_1")}, p, "key_expired", "expired")


def test_admin_operations_are_the_owners(svc: Any) -> None:
    p = key(svc, "other", "commercial", "administration")
    denied(svc, "CreateKey", {"Organization": "other", "Purpose": "administration"}, p, "admin_owner")
    denied(svc, "VerifyAudit", {}, p, "admin_owner")


def test_no_principal_no_bypass(svc: Any) -> None:
    denied(svc, "DetectFaces", {"Image": CORRUPT}, None, "principal")
    assert svc.owner_principal() == svc.owner


def test_unclassified_operation_is_denied(svc: Any) -> None:
    # An operation cannot be declared without a kind ...
    with pytest.raises(TypeError):
        operation("FrobnicateFaces")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        operation("FrobnicateFaces", kind="identify")  # type: ignore[arg-type]
    assert "FrobnicateFaces" not in OPERATIONS
    # ... and work that declares none is refused by policy (and audited).
    before = svc.audit.count()
    with pytest.raises(AccessDenied) as info:
        svc.authorize(svc.owner, "FrobnicateFaces")
    assert info.value.rule == "unclassified" and "FrobnicateFaces" in info.value.reason
    assert svc.audit.count() == before + 1
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["rule"]) == ("FrobnicateFaces", "denied", "unclassified")


def test_every_operation_declares_a_kind_that_some_purpose_allows() -> None:
    policy = Policy.default()
    allowed = {k for spec in policy.purposes.values() for k in spec["operations"]}
    for name, op in OPERATIONS.items():
        assert isinstance(op.kind, Kind), name
        assert op.kind.value in allowed, name


def test_a_policy_file_cannot_reclassify_an_operation(svc: Any) -> None:
    from facewarden.errors import InvalidInput

    text = DEFAULT_POLICY_PATH.read_text()
    assert "[classes]" not in text  # kinds are declared in code
    # Older installations' files carry a [classes] table: accepted while it agrees with the code ...
    legacy = text.replace(
        "# ---- deny rules",
        '[classes]\nidentify = ["SearchFaces", "SearchFacesByImage", "Search*", "StartFaceSearch"]\n'
        'cluster = ["ClusterFaces", "Cluster*"]\nevaluate = ["Evaluate*"]\n\n# ---- deny rules',
    )
    assert svc.call("ApplyPolicy", {"Policy": legacy}, svc.owner)["Changed"]
    # ... refused when it moves an operation to another kind, or names a class that is no kind.
    for table in ('manage = ["SearchFacesByImage"]', 'detect = ["Cluster*"]', 'watching = ["SearchFaces"]',
                  'evaluate = ["EvaluatePairs"]'):  # fmt: skip
        bad = text.replace("# ---- deny rules", f"[classes]\n{table}\n\n# ---- deny rules")
        with pytest.raises(InvalidInput, match="classes"):
            svc.call("ApplyPolicy", {"Policy": bad}, svc.owner)
        assert svc.policy.text == legacy
    # A file edited by hand the same way is refused when it is reloaded; the policy in force stays.
    path = svc.settings.data_dir / "policy.toml"
    path.write_text(
        text.replace("# ---- deny rules", '[classes]\nmanage = ["SearchFaces"]\n# ---- deny rules')
    )
    p = key(svc, "agency", "law_enforcement", "access_control")
    denied(svc, "SearchFaces", {"CollectionId": "c", "FaceId": "f"}, p, "moratorium")
    assert svc.policy.text == legacy


# ---- quotas ---------------------------------------------------------------------------------------------
def _small_quotas(svc: Any, n: int) -> None:
    text = DEFAULT_POLICY_PATH.read_text().replace("per_key_per_day = 1000", f"per_key_per_day = {n}")
    svc.call("ApplyPolicy", {"Policy": text}, svc.owner)


def test_daily_comparison_quota(svc: Any, clock: Clock) -> None:
    _small_quotas(svc, 2)
    p = key(svc, "bank", "commercial", "identity_verification")
    for _ in range(2):  # counted at decision time: even a failing comparison uses the quota
        with pytest.raises(InvalidImage):
            svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], p)
    with pytest.raises(QuotaExceeded) as info:
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], p)
    # not ThrottlingException: the SDKs retry that, and a daily quota does not come back in seconds
    assert info.value.aws_code == "ServiceQuotaExceededException" and info.value.rule == "quota:comparison"
    assert "resets at" in info.value.message and "T00:00:00Z" in info.value.message
    rec = svc.audit.last_record()
    assert (rec["decision"], rec["rule"], rec["key"]) == ("denied", "quota:comparison", p.key_id)
    clock.advance(86400)  # a new UTC day
    with pytest.raises(InvalidImage):
        svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], p)


def test_daily_identification_quota(svc: Any) -> None:
    _small_quotas(svc, 1)
    p = key(svc, "gym", "commercial", "access_control")
    svc.call("CreateCollection", {"CollectionId": "members"}, p)
    with pytest.raises(InvalidImage):
        svc.call("SearchFacesByImage", {"CollectionId": "members", "Image": CORRUPT}, p)
    with pytest.raises(QuotaExceeded):
        svc.call("SearchFacesByImage", {"CollectionId": "members", "Image": CORRUPT}, p)
    assert svc.audit.last_record()["rule"] == "quota:identification"


def _consume(args: tuple[str, str, int]) -> int:
    data_dir, key_id, n = args
    from facewarden.db import Database
    from facewarden.errors import QuotaExceeded as QE
    from facewarden.policy.principals import Principals
    from facewarden.policy.quota import Quotas

    db = Database(f"sqlite:///{data_dir}/gallery.sqlite3")
    p = Principals(db, Path(data_dir), lambda: 1_750_000_000.0).principal_for_key(key_id)
    policy = Policy.load(Path(data_dir) / "policy.toml")
    q, ok = Quotas(db), 0
    for _ in range(n):
        try:
            q.consume(policy, p, "CompareFaces", Kind.COMPARE, 1_750_000_000.0)
            ok += 1
        except QE:
            pass
    db.close()
    return ok


def test_quota_holds_across_processes(svc: Any) -> None:
    import multiprocessing as mp

    _small_quotas(svc, 15)
    p = key(svc, "bank", "commercial", "identity_verification")
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(_consume, [(str(svc.settings.data_dir), p.key_id, 12)] * 2)
    assert sum(got) == 15


# ---- thresholds ---------------------------------------------------------------------------------------
def test_purpose_floor_raises_a_low_request(svc: Any) -> None:
    from facewarden.service import Context

    p = key(svc, "bank", "commercial", "identity_verification")
    ctx = Context("CompareFaces", Kind.COMPARE, p)
    t = svc.effective_threshold(ctx, 60.0, 1)
    assert t["Similarity"] == 90.0 and t["Source"] == "floor"
    assert ctx.applied_threshold == t
    assert svc.effective_threshold(ctx, 95.0, 1)["Source"] == "requested"


def test_gallery_size_raises_the_threshold(svc: Any) -> None:
    from facewarden.service import Context

    ctx = Context("SearchFacesByImage", Kind.IDENTIFY, key(svc, "lib", "commercial", "photo_organisation"))
    cap = svc.policy.cap_for("photo_organisation")
    cal = svc.engine.calibration
    small = svc.effective_threshold(ctx, 80.0, round(cap * 1e4), counted="subjects", faces=5000)
    large = svc.effective_threshold(ctx, 80.0, 10**9, counted="subjects")
    assert small["Similarity"] == pytest.approx(90.0) and small["Source"] == "gallery_size"
    assert small["GallerySizeCounts"] == "subjects" and small["GalleryFaces"] == 5000
    assert small["MaxExpectedFalseMatches"] == cap
    # A billion people need an FMR of cap / 1e9: the fine tail above 99 still has it.
    assert 99 < large["Similarity"] < 100 and large["CapMet"] and large["Source"] == "gallery_size"
    for t, n in ((small, round(cap * 1e4)), (large, 10**9)):
        assert t["ExpectedFalseMatches"] == pytest.approx(n * t["FalseMatchRate"])
        assert t["ExpectedFalseMatches"] <= cap * (1 + 1e-6)
        assert t["FalseMatchRate"] == pytest.approx(cal.fmr(t["Similarity"]))
    # Beyond what the model's scale can serve (FMR at 100), it says so.
    beyond = svc.effective_threshold(ctx, 80.0, int(cap / cal.fmr_at_100 * 10))
    assert beyond["Similarity"] == 100.0 and not beyond["CapMet"]
    mid = svc.effective_threshold(ctx, 80.0, 300_000)
    assert small["Similarity"] < mid["Similarity"] < large["Similarity"] and mid["CapMet"]
    assert svc.effective_threshold(ctx, 80.0, 1)["Similarity"] == 80.0  # 1:1 needs far less


# ---- household collections ---------------------------------------------------------------------------
def test_household_collection_serves_only_its_owner(svc: Any) -> None:
    mine = key(svc, "family", "individual", "photo_organisation")
    svc.call("CreateCollection", {"CollectionId": "albums", "ConsentMode": "household"}, mine)
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["collection"]) == ("CreateCollection", "allowed", "albums")
    svc.call("ListFaces", {"CollectionId": "albums"}, mine)
    # Another organisation's photo-organisation key, and the same family's other purposes: refused.
    other = key(svc, "neighbour", "individual", "photo_organisation")
    denied(svc, "SearchFacesByImage", {"CollectionId": "albums", "Image": CORRUPT}, other, "household")
    denied(svc, "ListFaces", {"CollectionId": "albums"}, other, "household")
    door = key(svc, "family", "individual", "access_control")
    denied(svc, "SearchFacesByImage", {"CollectionId": "albums", "Image": CORRUPT}, door, "household")
    denied(svc, "DescribeCollection", {"CollectionId": "albums"}, svc.owner, "household")
    # Only household purposes may create one.
    denied(svc, "CreateCollection", {"CollectionId": "h2", "ConsentMode": "household"}, door, "household")
    from facewarden.service import Context

    assert not svc.visible_collection(Context("ListCollections", Kind.MANAGE, other), "albums")
    assert svc.visible_collection(Context("ListCollections", Kind.MANAGE, mine), "albums")


def test_other_organisations_collections_are_off_limits(svc: Any) -> None:
    a = key(svc, "a-corp", "commercial", "access_control")
    b = key(svc, "b-corp", "commercial", "access_control")
    svc.call("CreateCollection", {"CollectionId": "a-staff"}, a)
    denied(svc, "ListFaces", {"CollectionId": "a-staff"}, b, "collection_owner")


# ---- principals and secrets ----------------------------------------------------------------------------
def test_secrets_are_encrypted_at_rest(svc: Any) -> None:
    p, secret = svc.owner, svc.owner_secret
    assert p.key_id.startswith("FW") and len(p.key_id) == 20 and len(secret) == 40
    assert svc.lookup_secret(p.key_id) == (p, secret)
    assert svc.key_secret(p.key_id) == secret and svc.key_secret("FWNOSUCHKEY000000000") is None
    assert svc.principal_for_key("FWNOSUCHKEY000000000") is None
    db_bytes = b"".join(f.read_bytes() for f in svc.settings.data_dir.glob("gallery.sqlite3*"))
    assert secret.encode() not in db_bytes
    keyfile = svc.settings.data_dir / "keys" / "secret.key"
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    out = svc.call("ListKeys", {}, svc.owner)
    assert all("SecretAccessKey" not in k for k in out["Keys"])
    assert secret not in (svc.settings.data_dir / "gallery.sqlite3").read_bytes().decode("latin-1")
    assert all(secret not in line for line in svc.call("ExportAudit", {}, svc.owner)["Lines"])


def test_audit_export_pages(svc: Any) -> None:
    from facewarden.errors import InvalidInput

    svc.audit.scan_batch = 4
    for _ in range(12):
        svc.call("ListCollections", {}, svc.owner)
    every = [json.loads(line)["record"]["seq"] for _, line in svc.audit.export()]
    assert every == list(range(1, len(every) + 1)) and len(every) >= 13

    def pages(req: dict[str, Any]) -> list[list[int]]:
        out, req = [], dict(req)
        while True:
            page = svc.call("ExportAudit", req, svc.owner)
            out.append([json.loads(line)["record"]["seq"] for line in page["Lines"]])
            if "NextToken" not in page:
                return out
            req["NextToken"] = page["NextToken"]

    forward = pages({"MaxResults": 5})
    assert all(len(p) == 5 for p in forward[:-1]) and [s for p in forward for s in p][: len(every)] == every
    backward = pages({"MaxResults": 5, "NewestFirst": True})
    seen = [s for p in backward for s in p]
    assert seen == sorted(seen, reverse=True) and seen[-len(every) :] == every[::-1]
    newest = svc.call("ExportAudit", {"MaxResults": 1, "NewestFirst": True}, svc.owner)
    assert json.loads(newest["Lines"][0])["record"]["seq"] >= every[-1] and "NextToken" in newest
    for bad in ({"MaxResults": 0}, {"MaxResults": 10_001}, {"NextToken": "abc"}, {"NewestFirst": "yes"}):
        with pytest.raises(InvalidInput):
            svc.call("ExportAudit", bad, svc.owner)


def test_unknown_sector_is_refused(svc: Any) -> None:
    from facewarden.errors import InvalidInput

    with pytest.raises(InvalidInput, match="Unknown sector"):
        svc.call("CreateOrganization", {"Name": "x", "Sector": "law-enforcement"}, svc.owner)


# ---- policy changes are logged ------------------------------------------------------------------------
def test_policy_change_shows_up_in_the_log(svc: Any, tmp_path: Path, clock: Clock) -> None:
    first = svc.audit.last_record("PolicyChanged")
    assert first["policy_hash"] == svc.policy.sha256 == Policy.default().sha256
    text = DEFAULT_POLICY_PATH.read_text().replace("max_expected_false_matches = 0.01",
                                                    "max_expected_false_matches = 0.001")  # fmt: skip
    out = svc.call("ApplyPolicy", {"Policy": text}, svc.owner)
    assert out["Changed"]
    rec = svc.audit.last_record("PolicyChanged")
    assert rec["policy_hash"] == svc.policy.sha256 != first["policy_hash"]
    assert svc.audit.last_record()["policy_hash"] == svc.policy.sha256  # the ApplyPolicy record itself
    # An edit of the file while the service is down is recorded at the next start, once.
    svc.close()
    path = svc.settings.data_dir / "policy.toml"
    path.write_text(text.replace("version = 1\n", "version = 1\n# edited by hand\n"))
    s2 = Service(Settings(data_dir=svc.settings.data_dir), clock=clock)
    n = s2.audit.count()
    assert s2.audit.last_record("PolicyChanged")["policy_hash"] == s2.policy.sha256 != rec["policy_hash"]
    s2.close()
    s3 = Service(Settings(data_dir=svc.settings.data_dir), clock=clock)
    assert s3.audit.count() == n  # unchanged: not recorded again
    assert s3.audit.verify().ok
    s3.close()


def test_invalid_policy_is_rejected(svc: Any) -> None:
    from facewarden.errors import InvalidInput

    with pytest.raises(InvalidInput, match="version"):
        svc.call("ApplyPolicy", {"Policy": "name = 'no version'\n"}, svc.owner)
    assert svc.policy.sha256 == Policy.default().sha256


# ---- consent, withdrawal, expiry, erasure, retention (with the gallery) -------------------------------
def _staff(svc: Any, **kw: Any) -> Any:
    p = key(svc, "acme", "commercial", "access_control")
    svc.call("CreateCollection", {"CollectionId": "staff", **kw}, p)
    return p


def _no_trace(svc: Any, p: Any, faces_dir: Path, subject: str) -> None:
    store = svc.store
    out = svc.call("SearchFacesByImage", {"CollectionId": "staff", "Image": photo(faces_dir, "amy_2")}, p)
    assert out["FaceMatches"] == []
    assert store.count_faces("staff") == 0
    assert store.index_face_ids("staff") == set()
    assert [f for f in store.list_faces("staff") if subject in (f.external_image_id, f.user_id)] == []


def _enrol(svc: Any, p: Any, faces_dir: Path, subject: str = "amy-farrah-fowler") -> str:
    out = svc.call("IndexFaces", {"CollectionId": "staff", "Image": photo(faces_dir, "amy_1"),
                                  "ExternalImageId": subject}, p)  # fmt: skip
    assert len(out["FaceRecords"]) == 1
    found = svc.call("SearchFacesByImage", {"CollectionId": "staff", "Image": photo(faces_dir, "amy_2")}, p)
    assert [m["Face"]["ExternalImageId"] for m in found["FaceMatches"]] == [subject]
    return str(out["FaceRecords"][0]["Face"]["FaceId"])


def test_index_without_consent_is_refused_and_stores_nothing(
    svc: Any, faces_dir: Path, monkeypatch: Any
) -> None:
    p = _staff(svc)
    req = {
        "CollectionId": "staff",
        "Image": photo(faces_dir, "amy_1"),
        "ExternalImageId": "amy-farrah-fowler",
    }
    with pytest.raises(ConsentRequired) as info:
        svc.call("IndexFaces", req, p)
    assert info.value.rule == "consent" and "GrantConsent" in info.value.reason
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["rule"]) == ("IndexFaces", "denied", "consent")
    assert rec["subjects"] == [svc.audit.subject_ref("amy-farrah-fowler")]
    assert svc.store.count_faces("staff") == 0 and svc.store.index_face_ids("staff") == set()
    # Without a named subject, too.
    with pytest.raises(ConsentRequired):
        svc.call("IndexFaces", {"CollectionId": "staff", "Image": photo(faces_dir, "amy_1")}, p)
    # A withdrawn or expired consent does not count either; an active one does.
    svc.call("GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 17",
                              "ExpiresAt": svc.clock() + 60}, p)  # fmt: skip
    svc.clock.advance(61)
    with pytest.raises(ConsentRequired):
        svc.call("IndexFaces", req, p)
    svc.call(
        "GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 18"}, p
    )
    assert svc.call("IndexFaces", req, p)["FaceRecords"]


def test_withdrawal_erases_the_subject(svc: Any, faces_dir: Path) -> None:
    p = _staff(svc)
    svc.call(
        "GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 17"}, p
    )
    _enrol(svc, p, faces_dir)
    out = svc.call("WithdrawConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler"}, p)
    assert out == {"ConsentsWithdrawn": 1, "FacesErased": 1}
    rec = svc.audit.last_record()
    assert (rec["operation"], rec["decision"], rec["counts"]["faces_erased"]) == (
        "WithdrawConsent",
        "allowed",
        1,
    )
    _no_trace(svc, p, faces_dir, "amy-farrah-fowler")


def test_expired_consent_is_treated_as_withdrawn(svc: Any, faces_dir: Path, clock: Clock) -> None:
    p = _staff(svc)
    svc.call("GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 17",
                              "ExpiresAt": clock() + 7 * 86400}, p)  # fmt: skip
    _enrol(svc, p, faces_dir)
    clock.advance(8 * 86400)
    result = svc.sweep()
    assert result["consents_expired"] == 1 and result["faces_erased"] == 1
    rec = svc.audit.last_record("ConsentExpired")
    assert rec["counts"]["faces_erased"] == 1
    _no_trace(svc, p, faces_dir, "amy-farrah-fowler")


def test_subject_erasure_leaves_only_a_tombstone(svc: Any, faces_dir: Path) -> None:
    subject = "amy-farrah-fowler-7731"
    p = _staff(svc)
    svc.call("GrantConsent", {"CollectionId": "staff", "Subject": subject, "Evidence": "form 17"}, p)
    _enrol(svc, p, faces_dir, subject)
    out = svc.call("EraseSubject", {"Subject": subject}, svc.owner)
    assert out["FacesErased"] == 1 and out["ConsentsErased"] == 1
    tomb = svc.audit.last_record()
    assert (tomb["operation"], tomb["decision"]) == ("EraseSubject", "allowed")
    assert tomb["subjects"] == [svc.audit.subject_ref(subject)] and tomb["counts"]["faces_erased"] == 1
    _no_trace(svc, p, faces_dir, subject)
    assert svc.consents.list(subject=subject) == []
    # The log names the subject only by pseudonym, and holds no template.
    with svc.db.read() as tx:
        text = "\n".join(r[0] for r in tx.all("SELECT record FROM audit_log"))
    assert subject not in text and "Templates" not in text
    assert svc.audit.verify().ok


def test_subject_export_templates_only_on_request(svc: Any, faces_dir: Path) -> None:
    subject = "amy-farrah-fowler"
    p = _staff(svc)
    svc.call("GrantConsent", {"CollectionId": "staff", "Subject": subject, "Evidence": "form 17"}, p)
    face_id = _enrol(svc, p, faces_dir, subject)
    out = svc.call("ExportSubject", {"Subject": subject}, svc.owner)
    assert [f["FaceId"] for f in out["Faces"]] == [face_id]
    assert len(out["Consents"]) == 1 and "Templates" not in out
    assert {r["operation"] for r in out["AuditRecords"]} >= {"GrantConsent", "IndexFaces"}
    assert svc.audit.last_record()["details"]["include_templates"] is False
    out = svc.call("ExportSubject", {"Subject": subject, "IncludeTemplates": True}, svc.owner)
    assert len(out["Templates"][face_id]) == 128
    rec = svc.audit.last_record()
    assert rec["operation"] == "ExportSubject" and rec["details"]["include_templates"] is True
    assert "Templates" not in str(rec) and str(out["Templates"][face_id][0]) not in str(rec["details"])


def test_retention_purges_old_templates(svc: Any, faces_dir: Path, clock: Clock) -> None:
    p = _staff(svc, RetentionDays=30)
    svc.call(
        "GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 17"}, p
    )
    _enrol(svc, p, faces_dir)
    clock.advance(29 * 86400)
    assert svc.sweep()["faces_purged"] == 0
    clock.advance(2 * 86400)
    assert svc.sweep()["faces_purged"] == 1
    rec = svc.audit.last_record("RetentionSweep")
    assert rec["collection"] == "staff" and rec["counts"] == {"faces_erased": 1}
    _no_trace(svc, p, faces_dir, "amy-farrah-fowler")


def test_retention_sweep_runs_by_itself(svc: Any, faces_dir: Path, clock: Clock) -> None:
    p = _staff(svc, RetentionDays=1)
    svc.call(
        "GrantConsent", {"CollectionId": "staff", "Subject": "amy-farrah-fowler", "Evidence": "form 17"}, p
    )
    _enrol(svc, p, faces_dir)
    clock.advance(2 * 86400)  # past the period and the sweep interval: the next call sweeps first
    _no_trace(svc, p, faces_dir, "amy-farrah-fowler")


def test_transparency_report(svc: Any) -> None:
    police = key(svc, "agency", "law_enforcement", "access_control")
    for _ in range(2):
        with pytest.raises(AccessDenied):
            svc.call("CompareFaces", TEMPLATE_OPS["CompareFaces"], police)
    rep = svc.call("GetTransparencyReport", {}, svc.owner)["Report"]
    assert rep["DenialsByRule"]["moratorium"] == 2
    assert rep["DenialsBySector"]["law_enforcement"]["moratorium"] == 2
    assert rep["OperationsByPurpose"]["administration"]["CreateKey"] == 1
    assert rep["PolicyChanges"][0]["PolicyHash"] == svc.policy.sha256
    later = svc.call("GetTransparencyReport", {"Since": svc.clock() + 10}, svc.owner)["Report"]
    assert later["DenialsByRule"] == {}

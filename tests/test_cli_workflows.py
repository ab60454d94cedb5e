"""The CLI's administrative and gallery commands as the README shows them, in one process."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from click.testing import CliRunner

from facewarden.cli import main

from .data import faces_dir


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    data = tmp_path_factory.mktemp("cliflow")
    runner = CliRunner()

    def run(*args: str, code: int = 0, key: str | None = None) -> str:
        prefix = ["--data-dir", str(data)] + (["--key", key] if key else [])
        r = runner.invoke(main, [*prefix, *args], catch_exceptions=False)
        assert r.exit_code == code, f"{args}: exit {r.exit_code}\n{r.output}"
        return r.output

    run.data = data  # type: ignore[attr-defined]
    run("init", "--org-name", "acme", "--sector", "commercial")
    return run


def photo(rel: str) -> str:
    return str(faces_dir() / rel)


def test_organisations_keys_and_the_moratorium(fw):
    fw("org", "create", "city-police", "--sector", "law_enforcement")
    assert "law_enforcement" in fw("org", "list")
    key = json.loads(fw("--json", "key", "create", "--org", "city-police", "--purpose", "access_control"))
    assert set(key) == {"AccessKeyId", "SecretAccessKey"} and len(key["SecretAccessKey"]) == 40
    out = fw(
        "compare",
        photo("barack_obama/barack_obama_1.jpg"),
        photo("barack_obama/barack_obama_2.jpg"),
        code=4,
        key=key["AccessKeyId"],
    )
    assert "[moratorium]" in out and "law-enforcement" in out
    # Detection, which protects privacy, stays allowed.
    assert "1 face" in fw("detect", photo("barack_obama/barack_obama_1.jpg"), key=key["AccessKeyId"])
    listed = fw("key", "list")
    assert key["AccessKeyId"] in listed and key["SecretAccessKey"] not in listed
    fw("key", "revoke", key["AccessKeyId"])
    assert "key_revoked" in fw(
        "detect", photo("barack_obama/barack_obama_1.jpg"), code=4, key=key["AccessKeyId"]
    )


def test_consent_index_search_users_and_erasure(fw):
    fw("collection", "create", "staff")
    # No consent yet: refused, nothing stored.
    refused = json.loads(
        fw("--json", "index", photo("joe_biden/joe_biden_1.jpg"), "--collection", "staff", code=4)
    )
    assert refused["faces_indexed"] == 0 and refused["refused"][0]["rule"] == "consent"
    # ... and said on stderr, file by file, without --json.
    assert "refused: " in fw("index", photo("joe_biden/joe_biden_1.jpg"), "--collection", "staff", code=4)
    assert json.loads(fw("--json", "collection", "describe", "staff"))["FaceCount"] == 0
    fw("consent", "grant", "joe_biden", "--collection", "staff", "--evidence", "form 7")
    fw("consent", "grant", "barack_obama", "--collection", "staff", "--evidence", "form 8")
    assert "form 7" in fw("consent", "list", "--collection", "staff")
    summary = json.loads(
        fw(
            "--json",
            "index",
            photo("joe_biden"),
            photo("barack_obama"),
            "--collection",
            "staff",
            "--external-id-from",
            "folder",
        )
    )
    assert summary["faces_indexed"] == 6 and not summary["errors"]
    again = json.loads(
        fw("--json", "index", photo("joe_biden"), "--collection", "staff", "--external-id-from", "folder")
    )
    assert again["skipped_known"] == 2 and again["faces_indexed"] == 0  # resumable: known images skipped
    found = [
        json.loads(line)
        for line in fw(
            "--json",
            "search",
            photo("joe_biden/joe_biden_2.jpg"),
            photo("group/face_recognition_two_people.jpg"),
            "--collection",
            "staff",
        ).splitlines()
    ]
    assert len(found) == 2
    assert {m["Face"]["ExternalImageId"] for m in found[0]["FaceMatches"]} == {"joe_biden"}
    assert found[0]["AppliedThreshold"]["Similarity"] >= 80
    faces = json.loads(fw("--json", "faces", "list", "--collection", "staff"))["Faces"]
    biden = [f["FaceId"] for f in faces if f["ExternalImageId"] == "joe_biden"]
    fw("consent", "grant", "joe", "--collection", "staff", "--evidence", "form 9")
    fw("users", "create", "joe", "--collection", "staff")
    fw("users", "associate", "joe", *biden, "--collection", "staff")
    assert "joe" in fw("users", "list", "--collection", "staff")
    users = json.loads(
        fw(
            "--json",
            "users",
            "search",
            "--collection",
            "staff",
            "--image",
            photo("joe_biden/joe_biden_1.jpg"),
        )
    )
    assert users["UserMatches"][0]["User"]["UserId"] == "joe"
    exported = json.loads(fw("--json", "subject", "export", "barack_obama"))
    assert "barack_obama" in json.dumps(exported) and "Template" not in json.dumps(exported)
    fw("consent", "withdraw", "barack_obama", "--collection", "staff")
    left = json.loads(fw("--json", "faces", "list", "--collection", "staff"))["Faces"]
    assert {f["ExternalImageId"] for f in left} == {"joe_biden"}
    fw("subject", "erase", "joe_biden")
    assert json.loads(fw("--json", "faces", "list", "--collection", "staff"))["Faces"] == []


def test_cluster_csv(fw):
    out = fw("cluster", photo("sheldon"), photo("penny"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["path"].split("/")[-2])
    assert sorted(sorted(v) for k, v in groups.items() if k) == [["penny"], ["sheldon"]]


def test_policy_audit_and_transparency(fw, tmp_path):
    shown = json.loads(fw("--json", "policy", "show"))
    assert shown["Version"] >= 1 and "moratorium" in shown["Text"]
    changed = tmp_path / "policy.toml"
    changed.write_text(
        shown["Text"].replace("max_expected_false_matches = 0.01", "max_expected_false_matches = 0.001")
    )
    assert "valid" in fw("policy", "check", str(changed))
    broken = tmp_path / "broken.toml"
    broken.write_text("version = [")
    fw("policy", "check", str(broken), code=3)
    assert "applied" in fw("policy", "apply", str(changed))
    report = json.loads(fw("--json", "report", "transparency"))
    assert report["DenialsByRule"].get("moratorium", 0) >= 1
    assert "intact" in fw("audit", "verify")
    lines = fw("audit", "export").splitlines()
    records = [json.loads(line)["record"] for line in lines]
    applied = [r for r in records if r["operation"] == "ApplyPolicy"]
    assert applied and applied[-1]["policy_hash"] != shown["Sha256"]  # the change is in the log
    # the export's filters: the same records the full export holds, selected by the server
    denied = [
        json.loads(line)["record"]
        for line in fw("audit", "export", "--decision", "denied", "--rule", "moratorium").splitlines()
    ]
    assert denied and [r["seq"] for r in denied] == [
        r["seq"] for r in records if r["decision"] == "denied" and r["rule"] == "moratorium"
    ]
    assert fw("audit", "export", "--until", "2000-01-01") == ""
    # the report for a regulator: CSV on stdout, a printable HTML page with its charts in a file
    csv_text = fw("report", "transparency", "--format", "csv")
    assert csv_text.startswith("Section,Row,Column,Value") and "DenialsByRule,moratorium," in csv_text
    fw("report", "transparency", "--format", "html", "--out", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 2 and "Denials by rule" in page and "<script" not in page
    # Edit one stored record behind facewarden's back: verify names it and exits 1.
    db = sqlite3.connect(fw.data / "gallery.sqlite3")
    db.execute("UPDATE audit_log SET record = replace(record, '\"allowed\"', '\"denied\"') WHERE seq = 3")
    db.commit()
    db.close()
    out = fw("audit", "verify", code=1)
    assert "BROKEN at sequence 3" in out


def test_denied_bulk_work_computes_no_template(fw, monkeypatch):
    """Policy before pixels also for bulk indexing and clustering, whose workers run outside call()."""
    fw("org", "create", "border-agency", "--sector", "immigration_enforcement")
    key = json.loads(fw("--json", "key", "create", "--org", "border-agency", "--purpose", "access_control"))
    from facewarden.engine import Engine

    def forbidden(*a, **k):
        raise AssertionError("a template was computed for a denied request")

    monkeypatch.setattr(Engine, "embed", forbidden)
    for args in (["index", photo("sheldon"), "--collection", "staff"], ["cluster", photo("sheldon")]):
        out = fw(*args, code=4, key=key["AccessKeyId"])
        assert "[moratorium]" in out
    # An accuracy audit compares faces: the moratorium refuses it even to a research_audit key
    # (before, kind evaluate, it computed every pair's templates and wrote their scores).
    audit_key = json.loads(
        fw("--json", "key", "create", "--org", "border-agency", "--purpose", "research_audit")
    )
    for k in (key, audit_key):
        for args in (["pairs", str(faces_dir() / "pairs.tsv"), "--images", str(faces_dir())],
                     ["gallery", "--gallery", photo("sheldon"), "--probes", photo("penny")]):  # fmt: skip
            out = fw("evaluate", *args, code=4, key=k["AccessKeyId"])
            assert "[moratorium]" in out, out


def test_acting_as_a_key_from_the_environment(fw):
    """The README's photo-library walk-through: FACEWARDEN_KEY names a photo_organisation key of a
    natural person (sector individual); a company's photo_organisation key gets no household."""
    shop = json.loads(fw("--json", "key", "create", "--org", "acme", "--purpose", "photo_organisation"))
    runner = CliRunner()
    base = ["--data-dir", str(fw.data)]
    r = runner.invoke(
        main, [*base, "collection", "create", "shoppers", "--consent", "household"],
        env={"FACEWARDEN_KEY": shop["AccessKeyId"]},
    )  # fmt: skip
    assert r.exit_code == 4 and "[household]" in r.output and "individual" in r.output, r.output
    fw("org", "create", "me", "--sector", "individual")
    key = json.loads(fw("--json", "key", "create", "--org", "me", "--purpose", "photo_organisation"))[
        "AccessKeyId"
    ]
    r = runner.invoke(
        main, [*base, "collection", "create", "album", "--consent", "household"], env={"FACEWARDEN_KEY": key}
    )
    assert r.exit_code == 0, r.output
    # The owner's administration key may not use a household library; the photo_organisation key may.
    assert "[household]" in fw("faces", "list", "--collection", "album", code=4)
    r = runner.invoke(main, [*base, "faces", "list", "--collection", "album"], env={"FACEWARDEN_KEY": key})
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, [*base, "collection", "list"], env={"FACEWARDEN_KEY": "FWUNKNOWN"})
    assert r.exit_code == 4 and "Unknown access key FWUNKNOWN" in r.output


def test_operations_and_their_kinds(fw):
    rows = json.loads(fw("--json", "operations"))["Operations"]
    kinds = {r["Operation"]: r["Kind"] for r in rows}
    assert kinds["SearchFacesByImage"] == "identify" and kinds["DetectFaces"] == "detect"
    assert kinds["ClusterFaces"] == "cluster" and kinds["GrantConsent"] == "consent"
    routes = {r["Operation"]: r["Route"] for r in rows}
    assert routes["ListCollections"] == "GET /v1/collections"
    assert "identify" in fw("operations")


def test_policy_check_refuses_a_reclassification(fw, tmp_path):
    from facewarden.policy.rules import DEFAULT_POLICY_PATH

    bad = tmp_path / "bad.toml"
    bad.write_text(
        DEFAULT_POLICY_PATH.read_text().replace(
            "# ---- deny rules", '[classes]\nmanage = ["SearchFacesByImage"]\n# ---- deny rules'
        )
    )
    out = fw("policy", "check", str(bad), code=3)
    assert "SearchFacesByImage" in out and "identify" in out


def test_policy_files_cannot_weaken_the_built_ins(fw, tmp_path):
    from facewarden.policy.rules import DEFAULT_POLICY_PATH

    weak = tmp_path / "weak.toml"
    weak.write_text(
        DEFAULT_POLICY_PATH.read_text().replace(
            'sectors = ["law_enforcement", "immigration_enforcement"]', 'sectors = ["law_enforcement"]'
        )
    )
    for command in ("check", "apply"):
        out = fw("policy", command, str(weak), code=4)
        assert "[builtin:moratorium]" in out and "immigration_enforcement" in out
    shown = fw("policy", "show")
    assert (
        "Built into facewarden" in shown
        and "moratorium: cluster, compare, enrol, identify denied to law_enforcement" in shown
    )
    assert set(json.loads(fw("--json", "retention", "sweep"))["Sweep"]) >= {
        "faces_purged", "consents_expired", "faces_erased",
    }  # fmt: skip


def test_converting_a_companys_household_collection(fw):
    import numpy as np

    from facewarden.config import Settings
    from facewarden.gallery import NewFace
    from facewarden.service import Service

    svc = Service(Settings(data_dir=fw.data))  # a library made before households were a person's alone
    try:
        svc.store.create_collection(
            "legacy", "dlib-resnet-v1", 128, consent_mode="household", owner_org="acme"
        )
        t = np.ones(128, np.float32) / np.sqrt(128)
        box = {"Width": 0.2, "Height": 0.3, "Left": 0.1, "Top": 0.1}
        svc.store.add_faces("legacy", [NewFace(t, box, 99.0, external_image_id="IMG_0001")], "dlib-resnet-v1")
    finally:
        svc.close()
    assert "collection convert legacy" in fw("faces", "list", "--collection", "legacy", code=4)
    from tests.test_cli_dayone import _serve, _stop

    p, printed, _ = _serve(str(fw.data))  # serve says so as it starts
    _stop(p)
    assert "refused: household collection legacy belongs to acme (sector commercial)" in printed
    assert "facewarden collection convert legacy --consent required" in printed
    out = fw("collection", "convert", "legacy", "--consent", "required")
    assert "1 face(s) without consent erased, 0 kept" in out
    assert json.loads(fw("--json", "faces", "list", "--collection", "legacy"))["Faces"] == []


def test_one_consent_enrols_one_face_from_the_command_line(fw):
    """A group photo indexed under one subject's consent: refused as ambiguous (rule one_face),
    reported file by file, nothing stored."""
    fw("collection", "create", "family")
    subject = "face_recognition_obama_and_biden"  # (--external-id-from filename)
    fw("consent", "grant", subject, "--collection", "family", "--evidence", "form 9")
    out = json.loads(
        fw("--json", "index", photo(f"group/{subject}.jpg"), "--collection", "family",
           "--external-id-from", "filename", code=4)
    )  # fmt: skip
    assert out["faces_indexed"] == 0 and [r["rule"] for r in out["refused"]] == ["one_face"]
    assert "largest" in out["refused"][0]["reason"]
    assert json.loads(fw("--json", "collection", "describe", "family"))["FaceCount"] == 0

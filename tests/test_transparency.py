"""The transparency report as people read it (charts, HTML and CSV for a regulator), the audit
export's filters as operations, and the console's reads marked only where an operation is a read."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from facewarden.audit import transparency_report
from facewarden.config import Settings
from facewarden.errors import AccessDenied, InvalidInput
from facewarden.service import OPERATIONS, Service
from facewarden.service import transparency

JUNK = {"Bytes": b"not an image"}


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    s = Service(Settings(data_dir=tmp_path / "data"))
    s.owner, _ = s.init_owner("operator", "commercial")
    s.call("CreateOrganization", {"Name": "police", "Sector": "law_enforcement"}, s.owner)
    k = s.call("CreateKey", {"Organization": "police", "Purpose": "access_control"}, s.owner)["AccessKey"]
    s.police = s.principal_for_key(k["AccessKeyId"])
    yield s
    s.close()


def refuse(svc: Any, n: int = 2) -> None:
    for _ in range(n):
        with pytest.raises(AccessDenied):
            svc.call("CompareFaces", {"SourceImage": JUNK, "TargetImage": JUNK}, svc.police)


def test_charts_are_svg_with_their_series(svc: Any) -> None:
    refuse(svc)
    r = svc.call("GetTransparencyReport", {"Charts": True}, svc.owner)
    assert set(r["Charts"]) == set(transparency.CHARTS)
    for name, svg in r["Charts"].items():
        root = ET.fromstring(svg)  # well-formed, embeddable SVG
        assert root.tag.endswith("svg"), name
        assert "<script" not in svg
    texts = r["Charts"]["DenialsPerDay"]
    assert "moratorium" in texts and "Denials per day" in texts  # the legend and title are text
    assert "allowed" in r["Charts"]["DecisionsPerDay"] and "denied" in r["Charts"]["DecisionsPerDay"]
    assert "Charts" not in svc.call("GetTransparencyReport", {}, svc.owner)


def test_an_empty_period_draws_empty_charts(svc: Any) -> None:
    r = svc.call("GetTransparencyReport", {"Since": 4e9, "Charts": True}, svc.owner)
    assert r["Report"]["DecisionsPerDay"] == {} and "nothing in this period" in r["Charts"]["DecisionsPerDay"]


def test_csv_holds_every_figure_of_the_report(svc: Any) -> None:
    refuse(svc, 3)
    svc.call("ListCollections", {}, svc.owner)
    report = transparency_report(svc.audit)  # what the export counts (before its own record)
    doc = svc.call("ExportTransparencyReport", {"Format": "csv"}, svc.owner)
    assert doc["MediaType"] == "text/csv" and doc["FileName"].endswith(".csv")
    rows = list(csv.reader(io.StringIO(doc["Document"])))
    assert rows[0] == ["Section", "Row", "Column", "Value"]
    cells = {(s, r, c): v for s, r, c, v in rows[1:]}
    for section in ("OperationsByPurpose", "OperationsBySector", "OperationsByOrganization", "DenialsBySector",
                    "DecisionsPerDay", "DenialsPerDay"):  # fmt: skip
        for row, counts in report[section].items():
            for column, n in counts.items():
                assert cells[(section, row, column)] == str(n), (section, row, column)
    assert cells[("DenialsByRule", "moratorium", "")] == "3"
    assert cells[("Headline", "Decisions denied", "")] == str(report["Decisions"]["denied"])


def test_html_is_one_printable_page_with_the_charts(svc: Any) -> None:
    refuse(svc)
    doc = svc.call("ExportTransparencyReport", {"Format": "html"}, svc.owner)
    page = doc["Document"]
    assert doc["MediaType"] == "text/html" and page.startswith("<!doctype html>")
    assert (
        page.count("<svg") == 2
        and "<script" not in page
        and "http://" not in page.replace("http://www.w3.org", "")
    )
    assert svc.policy.sha256 in page and "moratorium" in page and "law_enforcement" in page
    with pytest.raises(InvalidInput, match="html' or 'csv"):
        svc.call("ExportTransparencyReport", {"Format": "pdf"}, svc.owner)
    assert svc.audit.last_record()["decision"] == "failed"


def test_audit_export_filters_are_checked_and_recorded(svc: Any) -> None:
    refuse(svc)
    page = svc.call(
        "ExportAudit", {"Decision": "denied", "Organization": "police", "Subject": "alice"}, svc.owner
    )
    assert page["Lines"] == []  # nothing about alice
    last = svc.audit.last_record()
    assert last["details"]["filters"] == {"decision": "denied", "org": "police"}
    assert last["subjects"] == [svc.audit.subject_ref("alice")]  # whom the reader looked up, as a pseudonym
    denied = svc.call("ExportAudit", {"Decision": "denied", "Rule": "moratorium"}, svc.owner)["Lines"]
    assert [json.loads(x)["record"]["org"] for x in denied] == ["police", "police"]
    for bad in ({"Decision": "maybe"}, {"SubjectRef": "alice"}, {"Until": "yesterday-ish"}):
        with pytest.raises(InvalidInput):
            svc.call("ExportAudit", bad, svc.owner)


def test_console_reads_are_marked_only_on_declared_reads(svc: Any) -> None:
    reads = {name for name, op in OPERATIONS.items() if op.reads}
    assert {"ListCollections", "DescribeCollection", "ListConsents", "ExportAudit", "VerifyAudit",
            "DescribePolicy", "GetTransparencyReport"} <= reads  # fmt: skip
    assert not reads & {"SearchFacesByImage", "IndexFaces", "CompareFaces", "EraseSubject", "WithdrawConsent",
                        "ExportSubject", "ExportTransparencyReport", "CreateKey"}  # fmt: skip
    svc.call("ListCollections", {}, svc.owner, console_read=True)
    assert svc.audit.last_record()["details"]["console_read"] is True
    svc.call("CreateCollection", {"CollectionId": "c"}, svc.owner, console_read=True)
    assert "console_read" not in svc.audit.last_record()["details"]
    svc.call("ListCollections", {}, svc.owner)
    assert "console_read" not in svc.audit.last_record()["details"]
    report = svc.call("GetTransparencyReport", {}, svc.owner)["Report"]
    assert (
        report["ConsoleReads"] == 1
        and report["OperationsByPurpose"]["administration"]["ListCollections"] == 1
    )


def test_sector_changes_are_in_every_form_of_the_report(svc: Any) -> None:
    """An organisation that leaves the moratorium's sectors is what a regulator must see first."""
    svc.call("SetOrganizationSector", {"Name": "police", "Sector": "commercial"}, svc.owner)
    report = svc.call("GetTransparencyReport", {}, svc.owner)["Report"]
    assert [c["DenyRulesLeft"] for c in report["EnforcementSectorChanges"]] == [["moratorium"]]
    assert ("Organisations moved into or out of a deny rule's sectors", 1) in transparency.headline(report)
    rows = list(
        csv.reader(
            io.StringIO(svc.call("ExportTransparencyReport", {"Format": "csv"}, svc.owner)["Document"])
        )
    )
    moved = {(c, v) for s, _, c, v in rows[1:] if s == "SectorChanges"}
    assert {("Organization", "police"), ("From", "law_enforcement"), ("To", "commercial"),
            ("DenyRulesLeft", "moratorium")} <= moved  # fmt: skip
    page = svc.call("ExportTransparencyReport", {"Format": "html"}, svc.owner)["Document"]
    assert "<h2>Sector changes</h2>" in page and "left moratorium" in page


def test_bookkeeping_records_are_not_decisions(svc: Any) -> None:
    """A record of decision "recorded" (a job's completion, a key rotation) under an operation's
    name is counted neither as a decision nor as an operation."""
    from facewarden.audit.entry import AuditEntry

    before = transparency_report(svc.audit)
    svc.audit.append(AuditEntry("StartFaceSearch", "recorded", "job", "job done", svc.policy.sha256).record())
    after = transparency_report(svc.audit)
    assert (
        after["Decisions"] == before["Decisions"]
        and after["OperationsByPurpose"] == before["OperationsByPurpose"]
    )

"""The audit log cannot be quietly rewritten: every kind of tampering is caught, at the first bad record."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facewarden.audit import AuditLog, transparency_report
from facewarden.audit.log import COLUMNS, _record_message, canonical, chain_hash, columns_of, digests_of
from facewarden.db import Database

N = 8


def open_log(data_dir: Path, every: int = 100, url: str | None = None) -> AuditLog:
    db = Database(url or f"sqlite:///{data_dir}/gallery.sqlite3")
    a = AuditLog(db, data_dir, lambda: 1_750_000_000.0, checkpoint_every=every)
    a.scan_batch = 3  # so that every check below also runs across the batches the log is read in
    return a


def entry(i: int, decision: str = "allowed") -> dict[str, Any]:
    return {
        "org": "acme",
        "sector": "commercial",
        "key": "FWKEY",
        "purpose": "access_control",
        "operation": "SearchFacesByImage" if i % 2 else "CompareFaces",
        "collection": "staff",
        "decision": decision,
        "rule": "purpose",
        "reason": f"call {i}",
        "counts": {"matches": i},
        "matched_face_ids": [f"face-{i}"],
        "applied_threshold": {"Similarity": 90.0, "Source": "floor"},
        "policy_hash": "ab" * 32,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database: the migrations that upgrade a log are written once for both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gallery.sqlite3"
    from tests.conftest import fresh_pg_database

    return fresh_pg_database(request.getfixturevalue("pg_url"))


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    a = open_log(tmp_path)
    for i in range(1, N + 1):
        a.append(entry(i, "denied" if i == 3 else "allowed"))
    assert a.verify().ok
    return a


def sql(a: AuditLog, statement: str, params: tuple = ()) -> None:
    with a.db.transaction() as tx:
        tx.execute(statement, params)


def row(a: AuditLog, seq: int) -> tuple:
    with a.db.read() as tx:
        r = tx.one("SELECT seq, ts, operation, decision, org, record, digests, prev_hash, hash, sig FROM audit_log"
                   " WHERE seq = ?", (seq,))  # fmt: skip
    assert r is not None
    return r


def test_intact_log_verifies(log: AuditLog) -> None:
    res = log.verify()
    assert res.ok and res.records == N and res.first_bad_seq is None
    rec = log.last_record()
    assert rec["seq"] == N and set(rec) >= {"time", "org", "sector", "key", "purpose", "operation", "collection",
                                            "decision", "rule", "reason", "counts", "matched_face_ids",
                                            "applied_threshold", "policy_hash"}  # fmt: skip


def test_edited_field_is_named(log: AuditLog) -> None:
    r = row(log, 3)
    record = json.loads(r[5])
    assert record["decision"] == "denied"
    record["decision"] = "allowed"  # make a denial look allowed
    sql(log, "UPDATE audit_log SET record = ?, decision = 'allowed' WHERE seq = 3", (canonical(record),))
    res = log.verify()
    assert not res.ok and res.first_bad_seq == 3 and res.kind == "edited" and res.fields == ["decision"]
    assert "decision" in res.problem


def test_edited_column_is_caught(log: AuditLog) -> None:
    sql(log, "UPDATE audit_log SET org = 'someone-else' WHERE seq = 5")
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind, res.fields) == (False, 5, "edited", ["org"])


def test_edited_report_column_is_caught(log: AuditLog) -> None:
    """The transparency report counts columns; an edit there to hide a denial is caught."""
    sql(log, "UPDATE audit_log SET rule = NULL, faces_erased = 9 WHERE seq = 3")
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind, res.fields) == (False, 3, "edited", ["rule", "faces_erased"])


def test_upgrade_backfills_the_report_columns(tmp_path: Path, db_url: str) -> None:
    a = open_log(tmp_path, url=db_url)
    for i in range(1, 13):
        a.append({**entry(i, "denied" if i % 4 == 0 else "allowed"), "counts": {"faces_erased": i % 3}})
    with a.db.transaction() as tx:  # back to the schema before the columns existed
        tx.execute("DROP INDEX audit_log_counts")  # (the later migration's index over these columns)
        for c in ("purpose", "sector", "rule", "faces_erased"):
            tx.execute(f"ALTER TABLE audit_log DROP COLUMN {c}")
        tx.execute("DELETE FROM schema_migrations WHERE component = 'audit' AND version = 2")
    upgraded = open_log(tmp_path, url=db_url)
    assert upgraded.verify().ok
    assert transparency_report(upgraded) == _reference_report(upgraded)
    assert transparency_report(upgraded)["FacesErased"] == sum(i % 3 for i in range(1, 13) if i % 4)


def test_edit_with_recomputed_digests_and_hash_is_caught(log: AuditLog) -> None:
    r = row(log, 4)
    record = json.loads(r[5])
    record["reason"] = "nothing to see"
    digests = canonical(digests_of(record))
    h = chain_hash(r[7], digests)
    sql(
        log,
        "UPDATE audit_log SET record = ?, digests = ?, hash = ? WHERE seq = 4",
        (canonical(record), digests, h),
    )
    res = log.verify()
    assert not res.ok and res.first_bad_seq == 4 and res.kind == "forged"


def test_deleted_record(log: AuditLog) -> None:
    sql(log, "DELETE FROM audit_log WHERE seq = 3")
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, 3, "deleted")
    assert "missing" in res.problem


def test_swapped_records(log: AuditLog) -> None:
    r4, r5 = row(log, 4), row(log, 5)
    with log.db.transaction() as tx:
        for target, src in ((4, r5), (5, r4)):
            tx.execute("UPDATE audit_log SET ts = ?, operation = ?, decision = ?, org = ?, record = ?, digests = ?,"
                       " prev_hash = ?, hash = ?, sig = ? WHERE seq = ?", (*src[1:], target))  # fmt: skip
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, 4, "reordered")


def _forge(log: AuditLog, seq: int, prev: str, key: Ed25519PrivateKey | None) -> None:
    record = {**{k: None for k in ("seq", "time")}, **entry(seq)}
    record.update(seq=seq, time="2025-06-15T15:06:40.000Z", details={}, subjects=[])
    digests = canonical(digests_of(record))
    h = chain_hash(prev, digests)
    sig = (key or Ed25519PrivateKey.generate()).sign(_record_message(h)).hex()
    cols = columns_of(record)  # a forger with database access writes columns that agree with the record
    sql(log, f"INSERT INTO audit_log (seq, ts, record, digests, prev_hash, hash, sig, {', '.join(COLUMNS)})"
             f" VALUES (?, ?, ?, ?, ?, ?, ?{', ?' * len(COLUMNS)})",
        (seq, 1.0, canonical(record), digests, prev, h, sig, *(cols[c] for c in COLUMNS)))  # fmt: skip


def test_forged_appended_record_with_a_perfect_chain(log: AuditLog) -> None:
    # The forger has write access to the database and computes the chain right, but has no key.
    _forge(log, N + 1, row(log, N)[8], None)
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, N + 1, "forged")


def test_forged_appended_record_off_the_chain(log: AuditLog) -> None:
    _forge(log, N + 1, "f" * 64, log._key)  # even correctly signed, it does not follow record N
    res = log.verify()
    assert (res.ok, res.first_bad_seq) == (False, N + 1) and res.kind in ("deleted", "reordered")


def test_inserted_record(log: AuditLog) -> None:
    with log.db.transaction() as tx:  # make room after record 2, renumbering the rest
        for s in range(N, 2, -1):
            tx.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (s + 1, s))
    _forge(log, 3, row(log, 2)[8], None)
    res = log.verify()
    assert not res.ok and res.first_bad_seq == 3 and res.kind == "forged"


def test_truncated_tail(log: AuditLog) -> None:
    cp = log.checkpoint()
    assert cp is not None and cp["seq"] == N
    sql(log, "DELETE FROM audit_log WHERE seq > ?", (N - 2,))
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, N - 1, "truncated")
    # Deleting the checkpoints too does not help: audit.head (outside the database) still says N.
    sql(log, "DELETE FROM audit_checkpoints")
    res = log.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, N - 1, "truncated")
    assert "audit.head" in res.problem


def test_forged_checkpoint(log: AuditLog) -> None:
    log.checkpoint()
    sql(log, "UPDATE audit_checkpoints SET seq = ? WHERE seq = ?", (N + 5, N))
    res = log.verify()
    assert not res.ok and res.kind == "checkpoint"


def test_checkpoints_every_n_records(tmp_path: Path) -> None:
    a = open_log(tmp_path, every=5)
    for i in range(12):
        a.append(entry(i))
    with a.db.read() as tx:
        assert [r[0] for r in tx.all("SELECT seq FROM audit_checkpoints ORDER BY seq")] == [5, 10]
    res = a.verify()
    assert res.ok and res.last_checkpoint == 10


def test_subjects_are_pseudonymous(tmp_path: Path) -> None:
    a = open_log(tmp_path)
    ref = a.subject_ref("Jane Doe")
    assert ref == a.subject_ref("Jane Doe") != a.subject_ref("John Doe") and "Jane" not in ref
    a.append({**entry(1), "subjects": [ref]})
    assert [json.loads(line)["record"]["seq"] for _, line in a.export(subject="Jane Doe")] == [1]
    assert list(a.export(subject="John Doe")) == []


def test_subject_index(tmp_path: Path) -> None:
    """A subject's records come from the subject index (in order, across scan batches); rows
    deleted from or added to the index are caught by verify, naming the record."""
    a = open_log(tmp_path)
    jane, john = a.subject_ref("Jane Doe"), a.subject_ref("John Doe")
    for i in range(1, 13):
        a.append({**entry(i), "subjects": [jane, jane] if i % 3 == 0 else [john] if i % 4 == 0 else []})
    assert [r["seq"] for r in a.records(subject="Jane Doe")] == [3, 6, 9, 12]
    assert [s for s, _ in a.export(subject="John Doe")] == [4, 8]
    assert [s for s, _ in a.export(subject="Jane Doe", before=10**9)] == [12, 9, 6, 3]
    assert a.verify().ok
    sql(a, "DELETE FROM audit_subjects WHERE seq = 6")  # hide a record from Jane's access request
    res = a.verify()
    assert (res.ok, res.first_bad_seq, res.kind) == (False, 6, "edited") and "subject index" in res.problem
    sql(a, "INSERT INTO audit_subjects (ref, seq) VALUES (?, 6)", (jane,))
    assert a.verify().ok
    sql(a, "INSERT INTO audit_subjects (ref, seq) VALUES (?, 2)", (john,))  # implicate someone
    assert (a.verify().first_bad_seq, a.verify().kind) == (2, "edited")


def test_upgrade_backfills_the_subject_index(tmp_path: Path, db_url: str) -> None:
    a = open_log(tmp_path, url=db_url)
    ref = a.subject_ref("Jane Doe")
    for i in range(1, 8):
        a.append({**entry(i), "subjects": [ref] if i % 2 else []})
    with a.db.transaction() as tx:  # back to the schema before the index existed
        tx.execute("DROP TABLE audit_subjects")
        tx.execute("DELETE FROM schema_migrations WHERE component = 'audit' AND version = 3")
    upgraded = open_log(tmp_path, url=db_url)
    assert upgraded.verify().ok and [r["seq"] for r in upgraded.records(subject="Jane Doe")] == [1, 3, 5, 7]


def test_no_image_or_template_fields(tmp_path: Path) -> None:
    a = open_log(tmp_path)
    with pytest.raises(ValueError):
        a.append({**entry(1), "template": [0.1] * 128})


def _append_many(args: tuple[str, int, int]) -> None:
    data_dir, worker, n = args
    a = open_log(Path(data_dir), every=7)
    for i in range(n):
        a.append({**entry(i), "reason": f"worker {worker} call {i}"})
    a.db.close()


def test_two_processes_append_at_once(tmp_path: Path) -> None:
    open_log(tmp_path).db.close()  # keys and tables exist before the race
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_append_many, [(str(tmp_path), w, 40) for w in range(2)])
    a = open_log(tmp_path)
    res = a.verify()
    assert res.ok, res.problem
    assert res.records == 80 and res.last_checkpoint == 77
    reasons = [r["reason"] for r in a.records()]
    assert sorted(reasons) == sorted(f"worker {w} call {i}" for w in range(2) for i in range(40))


def test_postgres_log_and_service_pipeline(pg_url: str, tmp_path: Path) -> None:
    """The same log, tamper detection and policy pipeline on the shared PostgreSQL backend."""
    from facewarden.config import Settings
    from facewarden.errors import AccessDenied
    from facewarden.service import Service
    from tests.conftest import fresh_pg_database

    url = fresh_pg_database(pg_url)
    s = Service(Settings(data_dir=tmp_path / "data", database_url=url))
    try:
        owner, _ = s.init_owner("operator", "commercial")
        s.call("CreateOrganization", {"Name": "agency", "Sector": "immigration_enforcement"}, owner)
        k = s.call("CreateKey", {"Organization": "agency", "Purpose": "access_control"}, owner)["AccessKey"]
        p = s.principal_for_key(k["AccessKeyId"])
        with pytest.raises(AccessDenied) as info:
            s.call("SearchFacesByImage", {"CollectionId": "c", "Image": {"Bytes": b"junk"}}, p)
        assert info.value.rule == "moratorium"
        assert s.audit.last_record()["rule"] == "moratorium"
        s.call("GrantConsent", {"Subject": "x", "Evidence": "form"}, owner)
        assert s.lookup_secret(p.key_id)[1] == k["SecretAccessKey"]
        assert s.audit.verify().ok
        assert transparency_report(s.audit) == _reference_report(s.audit)  # the SQL on PostgreSQL
        s.audit.checkpoint()
        with s.db.transaction() as tx:
            tx.execute("DELETE FROM audit_log WHERE seq = 2")
        res = s.audit.verify()
        assert (res.ok, res.first_bad_seq, res.kind) == (False, 2, "deleted")
    finally:
        s.close()


def _reference_report(audit: AuditLog, since: float | None = None) -> dict[str, Any]:
    """The transparency report computed record by record in Python: what the SQL must agree with."""
    import datetime as dt
    from collections import Counter, defaultdict

    from facewarden.audit.log import is_console_read, iso
    from facewarden.audit.report import _INTERNAL

    by_purpose: dict = defaultdict(Counter)
    by_sector: dict = defaultdict(Counter)
    by_org: dict = defaultdict(Counter)
    by_rule: Counter = Counter()
    denials_by_sector: dict = defaultdict(Counter)
    decisions: Counter = Counter()
    per_day: dict = defaultdict(Counter)
    denials_per_day: dict = defaultdict(Counter)
    changes, sectors, erased, subjects, searches, times, console = [], [], 0, 0, 0, [], 0
    for r in audit.records(since=since):
        times.append(r["time"])
        op = r.get("operation") or ""
        if op == "PolicyChanged":
            changes.append(
                {"Time": r["time"], "PolicyHash": r.get("policy_hash"), **(r.get("details") or {})}
            )
        if op == "SetOrganizationSector" and r.get("decision") == "allowed":
            d = r.get("details") or {}
            sectors.append(
                {
                    "Time": r["time"],
                    "Organization": d.get("organization"),
                    "From": d.get("previous_sector"),
                    "To": d.get("sector"),
                    "DenyRulesEntered": d.get("deny_rules_entered") or [],
                    "DenyRulesLeft": d.get("deny_rules_left") or [],
                }
            )
        if op in _INTERNAL or r.get("decision") == "recorded":
            erased += int((r.get("counts") or {}).get("faces_erased", 0))
            continue
        if is_console_read(r):
            console += 1
            continue
        decision = r.get("decision") or ""
        decisions[decision] += 1
        day = dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).date().isoformat()
        per_day[day][decision] += 1
        org, purpose, sector, rule = (r.get(k) or "(none)" for k in ("org", "purpose", "sector", "rule"))
        if decision == "denied":
            by_rule[rule] += 1
            denials_by_sector[sector][rule] += 1
            denials_per_day[day][rule] += 1
            continue
        by_purpose[purpose][op] += 1
        by_sector[sector][op] += 1
        by_org[org][op] += 1
        searches += op.startswith("Search") and decision == "allowed"
        erased += int((r.get("counts") or {}).get("faces_erased", 0))
        subjects += op in ("EraseSubject", "WithdrawConsent") and decision == "allowed"

    def nested(d: dict) -> dict:
        return {k: dict(v) for k, v in sorted(d.items())}

    return {
        "Since": iso(since) if since is not None else None,
        "From": times[0] if times else None,
        "To": times[-1] if times else None,
        "Decisions": dict(decisions),
        "OperationsByPurpose": nested(by_purpose),
        "OperationsBySector": nested(by_sector),
        "OperationsByOrganization": nested(by_org),
        "DenialsByRule": dict(by_rule.most_common()),
        "DenialsBySector": nested(denials_by_sector),
        "IdentificationSearches": searches,
        "SubjectsErasedOrWithdrawn": subjects,
        "FacesErased": erased,
        "PolicyChanges": changes,
        "ConsoleReads": console,
        "DecisionsPerDay": nested(per_day),
        "DenialsPerDay": nested(denials_per_day),
        "SectorChanges": sectors,
        "EnforcementSectorChanges": [c for c in sectors if c["DenyRulesEntered"] or c["DenyRulesLeft"]],
    }


def test_transparency_report_is_counted_by_the_database(tmp_path: Path) -> None:
    t = [1_750_000_000.0]
    db = Database(f"sqlite:///{tmp_path}/gallery.sqlite3")
    a = AuditLog(db, tmp_path, lambda: t[0])
    a.scan_batch = 7
    ops = ["SearchFacesByImage", "CompareFaces", "EraseSubject", "WithdrawConsent", "RetentionSweep",
           "PolicyChanged", "IndexFaces", "SearchUsers", "ListCollections"]  # fmt: skip
    for i in range(90):
        t[0] += 3 * 3600  # eight records a day: the daily series spans 11 days
        # "recorded": bookkeeping under an operation's name (a job's completion, a key rotation)
        e = entry(i, ["allowed", "denied", "allowed", "failed", "allowed", "recorded", "allowed"][i % 7])
        e.update(operation=ops[i % len(ops)], purpose=[None, "access_control", ""][i % 3],
                 org=["acme", "police", None][i % 3], sector=["commercial", "law_enforcement"][i % 2],
                 rule=[None, "moratorium", "purpose"][i % 3],
                 counts={"faces_erased": i % 4} if i % 2 else {},
                 details={"version": i, **({"console_read": True} if i % 9 == 8 else {})})  # fmt: skip
        a.append(e)
    moves = [("government", "law_enforcement", ["moratorium"], []), ("law_enforcement", "education", [], ["moratorium"]),
             ("education", "research", [], [])]  # fmt: skip
    for i, (old, new, entered, left) in enumerate(moves):
        t[0] += 60
        e = entry(100 + i, "allowed")
        e.update(operation="SetOrganizationSector", details={
            "organization": "council", "previous_sector": old, "sector": new,
            "deny_rules_entered": entered, "deny_rules_left": left})  # fmt: skip
        a.append(e)
    for since in (None, 1_750_000_000.0 + 3 * 3600 * 31):
        ours, reference = transparency_report(a, since), _reference_report(a, since)
        assert ours == reference
        # the per-day series add up to the totals
        by_day = {d: sum(v.values()) for d, v in ours["DecisionsPerDay"].items()}
        assert sum(by_day.values()) == sum(ours["Decisions"].values())
        assert sum(sum(v.values()) for v in ours["DenialsPerDay"].values()) == ours["Decisions"]["denied"]
    assert ours["FacesErased"] > 0 and ours["PolicyChanges"] and ours["DenialsByRule"]
    assert ours["ConsoleReads"] > 0 and len(ours["DecisionsPerDay"]) >= 7
    assert "recorded" not in ours["Decisions"] and all(
        "recorded" not in d for d in ours["DecisionsPerDay"].values()
    )
    assert set(ours["OperationsByOrganization"]) == {"acme", "police", "(none)"}
    assert [(c["From"], c["To"]) for c in ours["SectorChanges"]] == [(o, n) for o, n, _, _ in moves]
    assert len(ours["EnforcementSectorChanges"]) == 2
    assert transparency_report(a, 2e9) == _reference_report(a, 2e9)  # nothing that late


def test_export_filters_select_by_the_columns(tmp_path: Path, db_url: str) -> None:
    """Every filter of the export, alone and combined, newest or oldest first and across pages,
    returns exactly the records the same conditions select in Python."""
    from facewarden.audit.log import AuditFilter

    t = [1_750_000_000.0]
    a = AuditLog(Database(db_url), tmp_path, lambda: t[0])
    a.scan_batch = 4
    alice, bob = a.subject_ref("alice"), a.subject_ref("bob")
    for i in range(40):
        t[0] += 600
        e = entry(i, ["allowed", "denied", "failed", "allowed"][i % 4])
        e.update(key=["K1", "K2", None][i % 3], collection=["staff", "visitors", None][i % 3 - 1],
                 org=["acme", "police"][i % 2], rule=["purpose", "moratorium"][i % 4 == 1],
                 operation=["ListCollections", "SearchFacesByImage", "IndexFaces"][i % 3],
                 subjects=[[alice], [bob], [alice, bob], []][i % 4],
                 details={"console_read": True} if i % 3 == 0 else {})  # fmt: skip
        a.append(e)
    records = {r["seq"]: r for r in a.records()}
    times = {seq: 1_750_000_000.0 + 600 * seq for seq in records}
    filters = [
        AuditFilter(),
        AuditFilter(decision="denied"),
        AuditFilter(decision="denied", rule="moratorium"),
        AuditFilter(operation="SearchFacesByImage", org="police"),
        AuditFilter(key="K2"),
        AuditFilter(collection="visitors", decision="allowed"),
        AuditFilter(subject_ref=alice),
        AuditFilter(subject_ref=bob, key="K1"),
        AuditFilter(since=times[10], until=times[30]),
        AuditFilter(hide_console_reads=True),
        AuditFilter(hide_console_reads=True, since=times[5], org="acme"),
    ]
    for f in filters:
        want = [s for s, r in records.items() if f.matches(r, times[s])]
        assert want, f  # every filter selects something, and not everything but the first
        assert (f == AuditFilter()) == (len(want) == len(records)), f
        got = [seq for seq, _ in a.export(where=f)]
        assert got == want, f
        assert [seq for seq, _ in a.export(where=f, before=2**62)] == want[::-1], f
        assert [seq for seq, _ in a.export(where=f, after=want[0])] == want[1:], f
    hidden = [s for s, r in records.items() if r["details"].get("console_read")]
    shown = [seq for seq, _ in a.export(where=AuditFilter(hide_console_reads=True))]
    assert {s for s in hidden if records[s]["decision"] == "allowed"}.isdisjoint(shown)
    assert {s for s in hidden if records[s]["decision"] != "allowed"} <= set(shown)  # refusals stay
    assert a.verify().ok


def test_upgrade_backfills_the_filter_columns(tmp_path: Path, db_url: str) -> None:
    a = open_log(tmp_path, url=db_url)
    for i in range(1, 8):
        a.append({**entry(i), "key": f"K{i % 2}", "collection": None if i == 3 else "staff"})
    with a.db.transaction() as tx:  # back to the schema before the columns existed
        for index in ("key", "collection", "org", "decision", "ts", "counts"):
            tx.execute(f"DROP INDEX audit_log_{index}")
        tx.execute(
            "CREATE INDEX audit_log_report ON audit_log (operation, decision, purpose, sector, rule, faces_erased, ts)"
        )
        for c in ("key_id", "collection", "console_read"):
            tx.execute(f"ALTER TABLE audit_log DROP COLUMN {c}")
        tx.execute("DELETE FROM schema_migrations WHERE component = 'audit' AND version = 4")
    from facewarden.audit.log import AuditFilter

    upgraded = open_log(tmp_path, url=db_url)
    assert upgraded.verify().ok
    assert [s for s, _ in upgraded.export(where=AuditFilter(key="K1"))] == [1, 3, 5, 7]
    assert [s for s, _ in upgraded.export(where=AuditFilter(collection="staff"))] == [1, 2, 4, 5, 6, 7]

"""The transparency report: what the service did, for whom, and what it refused, from the audit log."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .log import AuditLog, iso

#: Bookkeeping records that are not requests.
_INTERNAL = {"PolicyChanged", "Init", "RetentionSweep", "ConsentExpired", "Checkpoint"}


def transparency_report(audit: AuditLog, since: float | None = None) -> dict[str, Any]:
    ops_by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    ops_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    denials_by_rule: Counter[str] = Counter()
    denials_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    decisions: Counter[str] = Counter()
    policy_changes: list[dict[str, Any]] = []
    faces_erased = subjects_erased = searches = 0
    first = last = None
    for r in audit.records(since=since):
        first = first or r["time"]
        last = r["time"]
        op = r.get("operation") or ""
        if op == "PolicyChanged":
            policy_changes.append(
                {"Time": r["time"], "PolicyHash": r.get("policy_hash"), **(r.get("details") or {})}
            )
        if op in _INTERNAL:
            faces_erased += int((r.get("counts") or {}).get("faces_erased", 0))
            continue
        decision = r.get("decision") or ""
        decisions[decision] += 1
        purpose, sector = r.get("purpose") or "(none)", r.get("sector") or "(none)"
        if decision == "denied":
            denials_by_rule[r.get("rule") or "(none)"] += 1
            denials_by_sector[sector][r.get("rule") or "(none)"] += 1
            continue
        ops_by_purpose[purpose][op] += 1
        ops_by_sector[sector][op] += 1
        if op.startswith("Search") and decision == "allowed":
            searches += 1
        counts = r.get("counts") or {}
        faces_erased += int(counts.get("faces_erased", 0))
        if op in ("EraseSubject", "WithdrawConsent") and decision == "allowed":
            subjects_erased += 1
    return {
        "Since": iso(since) if since is not None else None,
        "From": first,
        "To": last,
        "Decisions": dict(decisions),
        "OperationsByPurpose": {k: dict(v) for k, v in sorted(ops_by_purpose.items())},
        "OperationsBySector": {k: dict(v) for k, v in sorted(ops_by_sector.items())},
        "DenialsByRule": dict(denials_by_rule.most_common()),
        "DenialsBySector": {k: dict(v) for k, v in sorted(denials_by_sector.items())},
        "IdentificationSearches": searches,
        "SubjectsErasedOrWithdrawn": subjects_erased,
        "FacesErased": faces_erased,
        "PolicyChanges": policy_changes,
    }

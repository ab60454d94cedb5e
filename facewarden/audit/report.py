"""The transparency report: what the service did, for whom, and what it refused, from the audit log."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .log import AuditLog, iso

#: Bookkeeping records that are not requests.
_INTERNAL = {"PolicyChanged", "Init", "RetentionSweep", "ConsentExpired", "Checkpoint"}


def transparency_report(audit: AuditLog, since: float | None = None) -> dict[str, Any]:
    """Counts by purpose, sector, decision and rule, aggregated by the database (a log of millions
    of records is never read into Python), plus the policy changes."""
    ops_by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    ops_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    denials_by_rule: Counter[str] = Counter()
    denials_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    decisions: Counter[str] = Counter()
    faces_erased = subjects_erased = searches = 0
    for op, decision, purpose, sector, rule, n, erased in audit.tally(since):
        if op in _INTERNAL:
            faces_erased += erased
            continue
        decisions[decision] += n
        purpose, sector, rule = purpose or "(none)", sector or "(none)", rule or "(none)"
        if decision == "denied":
            denials_by_rule[rule] += n
            denials_by_sector[sector][rule] += n
            continue
        ops_by_purpose[purpose][op] += n
        ops_by_sector[sector][op] += n
        faces_erased += erased
        if op.startswith("Search") and decision == "allowed":
            searches += n
        if op in ("EraseSubject", "WithdrawConsent") and decision == "allowed":
            subjects_erased += n
    first, last = audit.span(since)
    policy_changes = [
        {"Time": r["time"], "PolicyHash": r.get("policy_hash"), **(r.get("details") or {})}
        for r in audit.records_of("PolicyChanged", since)
    ]
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

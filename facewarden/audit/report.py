"""The transparency report: what the service did, for whom, and what it refused, from the audit log.

Everything is counted by the database from the log's columns (a log of millions of records is
never read into Python): decisions by outcome, operations by purpose, sector and organisation,
denials by rule and sector, and the same per UTC day. The console's own allowed reads (listings,
the log, this report; records marked ``console_read``) are counted apart, in ``ConsoleReads``, so
that they do not bury the decisions that matter. Bookkeeping records (decision ``recorded``: policy
changes, sweeps and expiries, restores, key rotations, a job's completion after its allowed start)
are no decisions either, but the faces they erased are counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .log import AuditLog, iso

#: Bookkeeping records that are not requests (whatever their decision; every record whose decision
#: is "recorded" is bookkeeping too).
_INTERNAL = {"PolicyChanged", "Init", "RetentionSweep", "ConsentExpired", "Checkpoint"}
RECORDED = "recorded"
#: The operations of a 1:N identification search (counted in IdentificationSearches when allowed).
_SEARCH_PREFIX = "Search"
#: The operations that erase a data subject (counted in SubjectsErasedOrWithdrawn when allowed).
_ERASURES = ("EraseSubject", "WithdrawConsent")
NONE = "(none)"


def _nested(counts: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {k: dict(v) for k, v in sorted(counts.items())}


def transparency_report(audit: AuditLog, since: float | None = None) -> dict[str, Any]:
    """The report as plain data (see the module docstring); ``since``: from that time on."""
    ops_by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    ops_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    ops_by_org: dict[str, Counter[str]] = defaultdict(Counter)
    denials_by_rule: Counter[str] = Counter()
    denials_by_sector: dict[str, Counter[str]] = defaultdict(Counter)
    decisions: Counter[str] = Counter()
    faces_erased = subjects_erased = searches = console_reads = 0
    for op, decision, org, purpose, sector, rule, console_read, n, erased in audit.tally(since):
        if op in _INTERNAL or decision == RECORDED:
            faces_erased += erased
            continue
        if console_read and decision == "allowed":
            console_reads += n
            continue
        decisions[decision] += n
        org, purpose, sector, rule = org or NONE, purpose or NONE, sector or NONE, rule or NONE
        if decision == "denied":
            denials_by_rule[rule] += n
            denials_by_sector[sector][rule] += n
            continue
        ops_by_purpose[purpose][op] += n
        ops_by_sector[sector][op] += n
        ops_by_org[org][op] += n
        faces_erased += erased
        if op.startswith(_SEARCH_PREFIX) and decision == "allowed":
            searches += n
        if op in _ERASURES and decision == "allowed":
            subjects_erased += n
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    denials_per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for day, decision, rule, n in audit.daily(since, leave_out=tuple(sorted(_INTERNAL))):
        per_day[day][decision] += n
        if decision == "denied":
            denials_per_day[day][rule or NONE] += n
    first, last = audit.span(since)
    policy_changes = [
        {"Time": r["time"], "PolicyHash": r.get("policy_hash"), **(r.get("details") or {})}
        for r in audit.records_of("PolicyChanged", since)
    ]
    # Every change of a declared sector, and prominently those into or out of a deny rule's
    # sectors (the moratorium's law_enforcement, immigration_enforcement).
    sector_changes = [
        {
            "Time": r["time"],
            "Organization": d.get("organization"),
            "From": d.get("previous_sector"),
            "To": d.get("sector"),
            "DenyRulesEntered": d.get("deny_rules_entered") or [],
            "DenyRulesLeft": d.get("deny_rules_left") or [],
        }
        for r in audit.records_of("SetOrganizationSector", since)
        if r.get("decision") == "allowed"
        for d in [r.get("details") or {}]
    ]
    return {
        "Since": iso(since) if since is not None else None,
        "From": first,
        "To": last,
        "Decisions": dict(decisions),
        "OperationsByPurpose": _nested(ops_by_purpose),
        "OperationsBySector": _nested(ops_by_sector),
        "OperationsByOrganization": _nested(ops_by_org),
        "DenialsByRule": dict(denials_by_rule.most_common()),
        "DenialsBySector": _nested(denials_by_sector),
        "IdentificationSearches": searches,
        "SubjectsErasedOrWithdrawn": subjects_erased,
        "FacesErased": faces_erased,
        "PolicyChanges": policy_changes,
        "ConsoleReads": console_reads,
        "DecisionsPerDay": _nested(per_day),
        "DenialsPerDay": _nested(denials_per_day),
        "SectorChanges": sector_changes,
        "EnforcementSectorChanges": [
            c for c in sector_changes if c["DenyRulesEntered"] or c["DenyRulesLeft"]
        ],
    }

"""One audit entry: what the service writes to the log for a call, a refusal or its own work.

The service builds every record it writes as an :class:`AuditEntry` (decisions on calls, refused
authentications, policy changes, sweeps) and appends :meth:`AuditEntry.record`; the log adds the
sequence number, time, hash chain and signature. Subjects are pseudonyms
(:meth:`~facewarden.audit.log.AuditLog.subject_ref`), never the ids themselves; no image or
template ever goes into an entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

#: allowed / denied / failed: a decision on a call; recorded: something the service did or noted.
Outcome = Literal["allowed", "denied", "failed", "recorded"]


class Caller(Protocol):
    """Who acted, as the log names them (a policy principal)."""

    @property
    def org(self) -> str: ...
    @property
    def sector(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def purpose(self) -> str: ...


class Who(TypedDict):
    """The fields of an entry that name who acted."""

    org: str | None
    sector: str | None
    key: str | None
    purpose: str | None


@dataclass(frozen=True)
class AuditEntry:
    operation: str
    decision: Outcome
    #: The policy rule that decided (``moratorium``, ``purpose``, ``authentication``, ``system``...).
    rule: str
    #: Why, in words a person can act on.
    reason: str
    #: SHA-256 of the policy file in force.
    policy_hash: str
    org: str | None = None
    sector: str | None = None
    key: str | None = None
    purpose: str | None = None
    collection: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    matched_face_ids: Sequence[str] = ()
    applied_threshold: Mapping[str, Any] | None = None
    #: Data subjects the entry is about, as pseudonyms.
    subjects: Sequence[str] = ()
    #: Other facts (never images or templates).
    details: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def caller(who: Caller | None) -> Who:
        """The org, sector, key and purpose fields of an entry about ``who`` (all None if nobody)."""
        if who is None:
            return {"org": None, "sector": None, "key": None, "purpose": None}
        return {"org": who.org, "sector": who.sector, "key": who.key_id, "purpose": who.purpose}

    def record(self) -> dict[str, Any]:
        """The entry as :meth:`~facewarden.audit.log.AuditLog.append` takes it."""
        return {
            "org": self.org,
            "sector": self.sector,
            "key": self.key,
            "purpose": self.purpose,
            "operation": self.operation,
            "collection": self.collection,
            "decision": self.decision,
            "rule": self.rule,
            "reason": self.reason,
            "counts": {k: int(v) for k, v in self.counts.items()},
            "matched_face_ids": [str(f) for f in self.matched_face_ids],
            "applied_threshold": dict(self.applied_threshold) if self.applied_threshold is not None else None,
            "subjects": list(self.subjects),
            "details": dict(self.details),
            "policy_hash": self.policy_hash,
        }

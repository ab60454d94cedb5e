"""Administrative operations: organisations, keys, policy, data-subject rights, the audit log.

They take the same path as every other operation: decided by policy (the ``admin`` kind is
reserved to the owner organisation's keys), then audited. Secrets are returned once, by
CreateKey, and never logged. (The consent register's operations are in
:mod:`facewarden.service.consent`, the retention sweep's in :mod:`facewarden.service.retention`.)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from ..audit import transparency_report
from ..audit.log import DECISIONS, AuditFilter, iso
from ..errors import InvalidInput
from ..gallery import Collection, Face
from ..policy.consent import erase_subject_consents
from ..policy.kinds import Kind
from ..policy.principals import SECTORS, Principal
from ..policy.rules import BUILT_IN
from . import household, transparency, visible
from .consent import sync_index
from .core import Service
from .registry import Context, Rest, operation
from .params import NULLABLE, Check, Empty, Items, OneOf, Range, Time

log = logging.getLogger("facewarden.service")

A = "/v1/admin"
TAG = "administration"


# ---- organisations and keys ------------------------------------------------------------------------
@dataclass(frozen=True)
class CreateOrganizationRequest:
    name: str
    sector: Annotated[str, OneOf(SECTORS, "Unknown sector {value!r}; declare one of: {choices}.")]
    description: str = ""


@dataclass(frozen=True)
class CreateOrganizationResult:
    organization: dict[str, Any]


@operation("CreateOrganization", kind=Kind.ADMIN, rest=Rest("POST", f"{A}/organizations", TAG))
def create_organization(
    svc: Service, ctx: Context, req: CreateOrganizationRequest
) -> CreateOrganizationResult:
    """Create an organisation: Name, Sector (declared), Description"""
    org = svc.principals.create_org(req.name, req.sector, description=req.description)
    ctx.details.update(organization=org["Name"], sector=org["Sector"])
    return CreateOrganizationResult(org)


@dataclass(frozen=True)
class SetOrganizationSectorRequest:
    name: str
    sector: Annotated[str, OneOf(SECTORS, "Unknown sector {value!r}; declare one of: {choices}.")]


@dataclass(frozen=True)
class SetOrganizationSectorResult:
    organization: dict[str, Any]
    previous_sector: str
    #: The sector-based deny rules (e.g. the moratorium) the organisation now falls under and no
    #: longer falls under; a change of either is flagged in the audit record and the report.
    rules_entered: list[str]
    rules_left: list[str]


@operation(
    "SetOrganizationSector", kind=Kind.ADMIN, rest=Rest("PUT", f"{A}/organizations/{{Name}}/sector", TAG)
)
def set_organization_sector(
    svc: Service, ctx: Context, req: SetOrganizationSectorRequest
) -> SetOrganizationSectorResult:
    """Change an organisation's declared sector: Name, Sector (audited; a move into or out of a sector a
    deny rule names, such as the moratorium's law_enforcement, is flagged)"""
    before = svc.principals.get_org(req.name)["Sector"]

    def rules(sector: str) -> set[str]:
        return {r.id for r in svc.policy.deny_rules if r.sectors is not None and sector in r.sectors}

    entered, left = sorted(rules(req.sector) - rules(before)), sorted(rules(before) - rules(req.sector))
    org = svc.principals.set_sector(req.name, req.sector)
    ctx.details.update(
        organization=req.name,
        previous_sector=before,
        sector=req.sector,
        deny_rules_entered=entered,
        deny_rules_left=left,
        deny_rules_changed=bool(entered or left),
    )
    return SetOrganizationSectorResult(org, before, entered, left)


@dataclass(frozen=True)
class ListOrganizationsResult:
    organizations: list[dict[str, Any]]


@operation("ListOrganizations", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/organizations", TAG), reads=True)
def list_organizations(svc: Service, ctx: Context, req: Empty) -> ListOrganizationsResult:
    """List organisations"""
    orgs = svc.principals.list_orgs()
    ctx.counts["organizations"] = len(orgs)
    return ListOrganizationsResult(orgs)


def _key_view(p: Principal, secret: str | None = None) -> dict[str, Any]:
    out = {
        "AccessKeyId": p.key_id,
        "Organization": p.org,
        "Sector": p.sector,
        "Purpose": p.purpose,
        "Collections": list(p.collections) if p.collections is not None else None,
        "ExpiresAt": p.expires_at,
        "Status": "Revoked" if p.revoked_at is not None else "Active",
    }
    if secret is not None:
        out["SecretAccessKey"] = secret
    return out


@dataclass(frozen=True)
class CreateKeyRequest:
    organization: str
    purpose: str
    #: The collections the key is limited to (none: every collection of its organisation).
    collections: Annotated[list[str], Items("collection ids")] | None = None
    expires_at: Time | None = None
    description: str = ""


@dataclass(frozen=True)
class CreateKeyResult:
    #: With the SecretAccessKey, shown this once.
    access_key: dict[str, Any]


@operation("CreateKey", kind=Kind.ADMIN, rest=Rest("POST", f"{A}/keys", TAG))
def create_key(svc: Service, ctx: Context, req: CreateKeyRequest) -> CreateKeyResult:
    """Create an access key: Organization, Purpose, Collections, ExpiresAt; the secret is shown once"""
    principal, secret = svc.principals.create_key(
        req.organization,
        req.purpose,
        collections=req.collections,
        expires_at=req.expires_at,
        description=req.description,
    )
    ctx.details.update(new_key=principal.key_id, organization=principal.org, purpose=principal.purpose,
                       collections=list(principal.collections) if principal.collections is not None else None)  # fmt: skip
    return CreateKeyResult(_key_view(principal, secret))


@dataclass(frozen=True)
class ListKeysRequest:
    organization: str | None = None


@dataclass(frozen=True)
class ListKeysResult:
    keys: list[dict[str, Any]]


@operation("ListKeys", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/keys", TAG), reads=True)
def list_keys(svc: Service, ctx: Context, req: ListKeysRequest) -> ListKeysResult:
    """List access keys (optionally of one Organization)"""
    keys = svc.principals.list_keys(req.organization)
    ctx.counts["keys"] = len(keys)
    return ListKeysResult([_key_view(k) for k in keys])


@dataclass(frozen=True)
class RevokeKeyRequest:
    access_key_id: str


@dataclass(frozen=True)
class RevokeKeyResult:
    key: dict[str, Any]


@operation("RevokeKey", kind=Kind.ADMIN, rest=Rest("DELETE", f"{A}/keys/{{AccessKeyId}}", TAG))
def revoke_key(svc: Service, ctx: Context, req: RevokeKeyRequest) -> RevokeKeyResult:
    """Revoke an access key"""
    p = svc.principals.revoke_key(req.access_key_id)
    ctx.details["revoked_key"] = p.key_id
    return RevokeKeyResult(_key_view(p))


# ---- policy -----------------------------------------------------------------------------------------
def _policy_view(svc: Service) -> dict[str, Any]:
    p = svc.policy
    return {
        "Version": p.version,
        "Name": p.name,
        "Sha256": p.sha256,
        "Source": p.source,
        "Text": p.text,
        # In force whatever the file says (the file may only tighten them).
        "BuiltIn": BUILT_IN.describe(),
    }


@dataclass(frozen=True)
class DescribePolicyResult:
    policy: dict[str, Any]


@operation("DescribePolicy", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/policy", TAG), reads=True)
def describe_policy(svc: Service, ctx: Context, req: Empty) -> DescribePolicyResult:
    """The policy in force (its text and SHA-256)"""
    return DescribePolicyResult(_policy_view(svc))


@dataclass(frozen=True)
class ApplyPolicyRequest:
    #: The policy file's text (TOML).
    policy: str


@dataclass(frozen=True)
class ApplyPolicyResult:
    policy: dict[str, Any]
    changed: bool


@operation("ApplyPolicy", kind=Kind.ADMIN, rest=Rest("PUT", f"{A}/policy", TAG))
def apply_policy(svc: Service, ctx: Context, req: ApplyPolicyRequest) -> ApplyPolicyResult:
    """Apply a new policy (TOML text in Policy); its hash is audited"""
    old = svc.policy.sha256
    policy = svc.apply_policy(req.policy, ctx.principal)
    ctx.details.update(previous_policy_hash=old, new_policy_hash=policy.sha256, version=policy.version)
    return ApplyPolicyResult(_policy_view(svc), old != policy.sha256)


@dataclass(frozen=True)
class CheckPolicyRequest:
    #: The policy file's text (TOML).
    policy: str
    #: What to call it in messages (e.g. its file name).
    name: str = "(checked policy)"


@dataclass(frozen=True)
class CheckPolicyResult:
    valid: bool
    version: int
    sha256: str


@operation("CheckPolicy", kind=Kind.ADMIN, rest=Rest("POST", f"{A}/policy/check", TAG))
def check_policy(svc: Service, ctx: Context, req: CheckPolicyRequest) -> CheckPolicyResult:
    """Validate a policy (TOML text in Policy) without applying it"""
    # A file that would weaken a built-in safeguard is refused (PolicyWeakening) and audited.
    policy = svc.policy_file.parse(req.policy, source=req.name[:200])
    ctx.details.update(checked_policy_hash=policy.sha256, version=policy.version)
    return CheckPolicyResult(True, policy.version, policy.sha256)


# ---- data-subject rights ----------------------------------------------------------------------------
def _subject_faces(svc: Service, subject: str) -> dict[str, tuple[Collection, list[Face]]]:
    """Every stored face enrolled under ``subject`` (as ExternalImageId or UserId), by collection."""
    out: dict[str, tuple[Collection, list[Face]]] = {}
    for col in svc.collections():
        mine = [f for f in svc.faces(col.collection_id) if subject in (f.external_image_id, f.user_id)]
        if mine:
            out[col.collection_id] = (col, mine)
    return out


@dataclass(frozen=True)
class ExportSubjectRequest:
    subject: str
    #: Also export the biometric templates (audited).
    include_templates: bool = False


@dataclass(frozen=True)
class ExportSubjectResult:
    subject: str
    subject_ref: str
    faces: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    audit_records: list[dict[str, Any]]
    #: Faces whose consent lapsed or whose retention passed: no longer returned by any read, and
    #: erased by the next retention sweep (not exported).
    faces_pending_erasure: int = 0
    templates: dict[str, list[float]] | None = None


@operation("ExportSubject", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/subjects/{{Subject}}", TAG))
def export_subject(svc: Service, ctx: Context, req: ExportSubjectRequest) -> ExportSubjectResult:
    """Everything held about a data subject"""
    # Faces of household collections (a person's own photo library, named by its files) are never
    # exported; faces hidden by a lapsed consent or a passed retention are counted, not exported.
    subject = req.subject
    ctx.subjects.append(subject)
    faces: list[Face] = []
    pending = 0
    for col, held in _subject_faces(svc, subject).values():
        if col.consent_mode == "household":
            continue
        shown = visible.Visibility.of(svc, col).keep(held)
        pending += len(held) - len(shown)
        faces.extend(shown)
    out = ExportSubjectResult(
        subject,
        svc.audit.subject_ref(subject),
        [{**f.to_rekognition(), "CollectionId": f.collection_id, "IndexedAt": f.indexed_at} for f in faces],
        svc.consents.list(subject=subject),
        list(svc.audit.records(subject=subject)),
        pending,
    )
    if req.include_templates:
        templates: dict[str, list[float]] = {}
        by_col: dict[str, list[str]] = {}
        for f in faces:
            by_col.setdefault(f.collection_id, []).append(f.face_id)
        for cid, ids in by_col.items():
            for fid, t in svc.store.templates(cid, ids).items():
                templates[fid] = [float(x) for x in t]
        out = dataclasses.replace(out, templates=templates)
    ctx.counts.update(faces=len(faces), consents=len(out.consents), audit_records=len(out.audit_records),
                      faces_pending_erasure=pending)  # fmt: skip
    ctx.details["include_templates"] = req.include_templates
    return out


@dataclass(frozen=True)
class EraseSubjectRequest:
    subject: str


@dataclass(frozen=True)
class EraseSubjectResult:
    subject: str
    faces_erased: int
    consents_erased: int


@operation("EraseSubject", kind=Kind.ADMIN, rest=Rest("DELETE", f"{A}/subjects/{{Subject}}", TAG))
def erase_subject(svc: Service, ctx: Context, req: EraseSubjectRequest) -> EraseSubjectResult:
    """Erase a data subject everywhere"""
    # Faces, templates, user records, consents. The audit log keeps a tombstone (this call's
    # record: a pseudonym and counts, no biometric data).
    subject = req.subject
    ctx.subjects.append(subject)
    collections = sorted(_subject_faces(svc, subject))
    with svc.db.transaction(lock="consent") as tx:
        removed = svc.store.erase_faces(None, external_image_id=subject, user_id=subject, tx=tx)
        consents = erase_subject_consents(tx, subject)
        ctx.counts.update(faces_erased=len(removed), consents_erased=consents)
        ctx.details["tombstone"] = True
        svc.audit_now(ctx, tx)
    for cid in collections:
        sync_index(svc, cid)
    return EraseSubjectResult(subject, len(removed), consents)


# ---- audit ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyAuditResult:
    ok: bool
    records: int
    checkpoints: int
    last_checkpoint: Annotated[int | None, NULLABLE]
    #: The first sequence number that is wrong (missing, edited, out of place, forged, cut off).
    first_bad_sequence: Annotated[int | None, NULLABLE]
    #: edited | deleted | inserted | reordered | forged | truncated | checkpoint
    kind: Annotated[str | None, NULLABLE]
    problem: str
    fields: list[str]


@operation("VerifyAudit", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/audit/verify", TAG), reads=True)
def verify_audit(svc: Service, ctx: Context, req: Empty) -> VerifyAuditResult:
    """Verify the audit log's hash chain and signatures"""
    r = svc.audit.verify()
    ctx.details.update(ok=r.ok, first_bad_seq=r.first_bad_seq, kind=r.kind)
    return VerifyAuditResult(
        r.ok, r.records, r.checkpoints, r.last_checkpoint, r.first_bad_seq, r.kind, r.problem, r.fields
    )


def _sequence_token(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.isdigit():
        raise InvalidInput(f"{name} must be the NextToken string of the previous response.")
    return value


def _subject_ref(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("subj-"):
        raise InvalidInput(f"{name} must be a subject's pseudonym as the log writes it (subj-...).")
    return value


@dataclass(frozen=True)
class ExportAuditRequest:
    #: From this time on (inclusive).
    since: Time | None = None
    #: A data subject's id (ExternalImageId / UserId): the records about them.
    subject: str | None = None
    max_results: Annotated[int, Range(1, 10_000)] = 1000
    next_token: Annotated[str, Check(_sequence_token)] | None = None
    newest_first: bool = False
    #: Before this time (exclusive).
    until: Time | None = None
    decision: Annotated[str, OneOf(DECISIONS)] | None = None
    #: The rule that decided (moratorium, purpose, quota, consent...).
    rule: str | None = None
    operation: str | None = None
    organization: str | None = None
    access_key_id: str | None = None
    collection: str | None = None
    #: A data subject's pseudonym as the records write it (subj-...).
    subject_ref: Annotated[str, Check(_subject_ref)] | None = None
    #: Leave out the web console's own allowed reads (records marked console_read).
    hide_console_reads: bool = False


@dataclass(frozen=True)
class ExportAuditResult:
    #: The records as JSON lines, as ``facewarden audit export`` prints them.
    lines: list[str]
    next_token: str | None = None


@operation("ExportAudit", kind=Kind.ADMIN, rest=Rest("GET", f"{A}/audit", TAG), reads=True)
def export_audit(svc: Service, ctx: Context, req: ExportAuditRequest) -> ExportAuditResult:
    """The audit log as JSON lines, a page at a time, filtered by time, decision, rule, operation, organisation, key, collection or subject"""
    # Oldest first, or newest first with NewestFirst; NextToken continues where a page ended.
    if req.subject:
        ctx.subjects.append(req.subject)
    where = AuditFilter(
        since=req.since,
        until=req.until,
        decision=req.decision,
        rule=req.rule,
        operation=req.operation,
        org=req.organization,
        key=req.access_key_id,
        collection=req.collection,
        subject_ref=svc.audit.subject_ref(req.subject) if req.subject else req.subject_ref,
        hide_console_reads=req.hide_console_reads,
    )
    # what was looked for is part of the record (a subject only as the pseudonym, in subjects)
    ctx.details["filters"] = {
        k: v for k, v in dataclasses.asdict(where).items() if v not in (None, False) and k != "subject_ref"
    }
    if req.subject_ref and not req.subject:
        ctx.details["subject_ref"] = req.subject_ref
    limit, token = req.max_results, req.next_token
    if req.newest_first:
        page = svc.audit.export(where=where, before=int(token) if token else 2**62)
    else:
        page = svc.audit.export(where=where, after=int(token) if token else 0)
    rows = list(itertools.islice(page, limit + 1))  # one more than a page: is there a next one?
    ctx.counts["records"] = min(len(rows), limit)
    return ExportAuditResult(
        [line for _, line in rows[:limit]], str(rows[limit - 1][0]) if len(rows) > limit else None
    )


def _report(svc: Service, since: float | None) -> dict[str, Any]:
    """The transparency report's data (see :func:`facewarden.audit.transparency_report`), with the
    footage-release counts (requests by requester sector, decisions, faces redacted)."""
    report = transparency_report(svc.audit, since=since)
    report["FootageRelease"] = svc.releases.report(since)
    # Now, not since: the safeguards built into the code (in force whatever the policy file says)
    # and the collections by consent mode (household libraries counted apart).
    report["BuiltInSafeguards"] = {"InForce": True, **BUILT_IN.describe()}
    report["Collections"] = household.census(svc)
    return report


@dataclass(frozen=True)
class TransparencyReportRequest:
    since: Time | None = None
    #: Also draw the charts (per day: decisions by outcome, denials by rule) as SVG.
    charts: bool = False


@dataclass(frozen=True)
class TransparencyReportResult:
    report: dict[str, Any]
    #: SVG text by chart name (DecisionsPerDay, DenialsPerDay), when asked for.
    charts: dict[str, str] | None = None


@operation(
    "GetTransparencyReport",
    kind=Kind.ADMIN,
    rest=Rest("GET", f"{A}/transparency-report", TAG),
    reads=True,
)
def get_transparency_report(
    svc: Service, ctx: Context, req: TransparencyReportRequest
) -> TransparencyReportResult:
    """The transparency report (optionally Since a time; Charts=true adds the charts as SVG)"""
    report = _report(svc, req.since)
    return TransparencyReportResult(report, transparency.charts(report) if req.charts else None)


@dataclass(frozen=True)
class ExportTransparencyReportRequest:
    format: Annotated[str, OneOf(("html", "csv"), "Format must be 'html' or 'csv'.")] = "html"
    since: Time | None = None


@dataclass(frozen=True)
class ExportTransparencyReportResult:
    #: The HTML page (self-contained, printable) or the CSV table (Section, Row, Column, Value).
    document: str
    media_type: str
    file_name: str


@operation(
    "ExportTransparencyReport",
    kind=Kind.ADMIN,
    rest=Rest("GET", f"{A}/transparency-report/export", TAG),
)
def export_transparency_report(
    svc: Service, ctx: Context, req: ExportTransparencyReportRequest
) -> ExportTransparencyReportResult:
    """The transparency report for a regulator: Format html (a printable page with its charts) or csv"""
    report = _report(svc, req.since)
    now = svc.clock()
    stamp = iso(now)
    name = f"facewarden-transparency-{stamp[:10]}.{req.format}"
    ctx.details["format"] = req.format
    if req.format == "csv":
        return ExportTransparencyReportResult(transparency.report_csv(report), "text/csv", name)
    page = transparency.report_html(
        report, transparency.charts(report), generated=stamp, policy_hash=svc.policy.sha256
    )
    return ExportTransparencyReportResult(page, "text/html", name)

"""Administrative operations: organisations, keys, policy, consent, data-subject rights, the audit log.

They take the same path as every other operation (:meth:`Service.call`): decided by policy (the
``admin`` class is reserved to the owner organisation's keys; the ``consent`` class to purposes
that enrol), then audited. Secrets are returned once, by CreateKey, and never logged.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from typing import Any

from ..audit import transparency_report
from ..errors import InvalidInput
from ..policy import consent as consent_mod
from .core import Context, Service, integer, operation

log = logging.getLogger("facewarden.service")


def _text(req: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = req.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required.")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string.")
    return value


def _time(value: Any, name: str) -> float | None:
    """A Unix time, or an ISO 8601 date/time string (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a Unix time or an ISO 8601 date.")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, str)):
        try:
            d = value if isinstance(value, (dt.date, dt.datetime)) else dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{name} must be a Unix time or an ISO 8601 date such as 2025-01-31."
            ) from None
        if not isinstance(d, dt.datetime):
            d = dt.datetime(d.year, d.month, d.day)
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        return d.timestamp()
    raise InvalidInput(f"{name} must be a Unix time or an ISO 8601 date.")


def _key_view(p: Any, secret: str | None = None) -> dict[str, Any]:
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


# ---- organisations and keys ------------------------------------------------------------------------
@operation("CreateOrganization")
def create_organization(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    org = self.principals.create_org(
        _text(req, "Name") or "",
        _text(req, "Sector") or "",
        description=_text(req, "Description", required=False) or "",
    )
    ctx.details.update(organization=org["Name"], sector=org["Sector"])
    return {"Organization": org}


@operation("ListOrganizations")
def list_organizations(self: Service, ctx: Context) -> dict[str, Any]:
    orgs = self.principals.list_orgs()
    ctx.counts["organizations"] = len(orgs)
    return {"Organizations": orgs}


@operation("CreateKey")
def create_key(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    collections = req.get("Collections")
    principal, secret = self.principals.create_key(
        _text(req, "Organization") or "",
        _text(req, "Purpose") or "",
        collections=collections,
        expires_at=_time(req.get("ExpiresAt"), "ExpiresAt"),
        description=_text(req, "Description", required=False) or "",
    )
    ctx.details.update(new_key=principal.key_id, organization=principal.org, purpose=principal.purpose,
                       collections=list(principal.collections) if principal.collections is not None else None)  # fmt: skip
    return {"AccessKey": _key_view(principal, secret)}


@operation("ListKeys")
def list_keys(self: Service, ctx: Context) -> dict[str, Any]:
    keys = self.principals.list_keys(_text(ctx.request, "Organization", required=False))
    ctx.counts["keys"] = len(keys)
    return {"Keys": [_key_view(k) for k in keys]}


@operation("RevokeKey")
def revoke_key(self: Service, ctx: Context) -> dict[str, Any]:
    p = self.principals.revoke_key(_text(ctx.request, "AccessKeyId") or "")
    ctx.details["revoked_key"] = p.key_id
    return {"Key": _key_view(p)}


# ---- policy -----------------------------------------------------------------------------------------
def _policy_view(self: Service) -> dict[str, Any]:
    p = self.policy
    return {"Version": p.version, "Name": p.name, "Sha256": p.sha256, "Source": p.source, "Text": p.text}


@operation("DescribePolicy")
def describe_policy(self: Service, ctx: Context) -> dict[str, Any]:
    return {"Policy": _policy_view(self)}


@operation("ApplyPolicy")
def apply_policy(self: Service, ctx: Context) -> dict[str, Any]:
    text = _text(ctx.request, "Policy") or ""
    old = self.policy.sha256
    policy = self.apply_policy(text, ctx.principal)
    ctx.details.update(previous_policy_hash=old, new_policy_hash=policy.sha256, version=policy.version)
    return {"Policy": _policy_view(self), "Changed": old != policy.sha256}


# ---- consent ----------------------------------------------------------------------------------------
def _consent_org(self: Service, ctx: Context) -> str:
    """Consent is recorded for the caller's organisation; the owner may act for another."""
    org = _text(ctx.request, "Organization", required=False)
    if org and org != ctx.principal.org:
        if not ctx.principal.owner:
            raise InvalidInput("Only the owner organization may manage another organization's consents.")
        self.principals.get_org(org)
        return org
    return str(ctx.principal.org)


@operation("GrantConsent")
def grant_consent(self: Service, ctx: Context) -> dict[str, Any]:
    req = ctx.request
    subject = _text(req, "Subject") or ""
    if ctx.principal.collections is not None and not ctx.collection_id:
        raise InvalidInput(
            "This key is limited to some collections: name the CollectionId the consent is for."
        )
    ctx.subjects.append(subject)
    record = self.consents.grant(
        _consent_org(self, ctx),
        subject,
        ctx.collection_id,
        _text(req, "Evidence") or "",
        expires_at=_time(req.get("ExpiresAt"), "ExpiresAt"),
    )
    ctx.details.update(consent_id=record["ConsentId"], expires_at=record["ExpiresAt"])
    return {"Consent": record}


@operation("ListConsents")
def list_consents(self: Service, ctx: Context) -> dict[str, Any]:
    subject = _text(ctx.request, "Subject", required=False)
    org = None if ctx.principal.owner and not ctx.request.get("Organization") else _consent_org(self, ctx)
    if subject:
        ctx.subjects.append(subject)
    records = self.consents.list(subject=subject, org=org, collection_id=ctx.collection_id)
    now = self.clock()
    for r in records:
        r["Active"] = r["WithdrawnAt"] is None and (r["ExpiresAt"] is None or r["ExpiresAt"] > now)
    ctx.counts["consents"] = len(records)
    return {"Consents": records}


@operation("WithdrawConsent")
def withdraw_consent(self: Service, ctx: Context) -> dict[str, Any]:
    subject = _text(ctx.request, "Subject") or ""
    return consent_mod.withdraw(self, ctx, _consent_org(self, ctx), subject, ctx.collection_id)


# ---- data-subject rights ----------------------------------------------------------------------------
def _subject_faces(self: Service, subject: str) -> list[Any]:
    """Every stored face enrolled under ``subject`` (as ExternalImageId or UserId), all collections."""
    store = self.store
    out: list[Any] = []
    after_c = None
    while True:
        cols = store.list_collections(after=after_c, limit=500)
        if not cols:
            return out
        for col in cols:
            after_f = None
            while True:
                faces = store.list_faces(col.collection_id, after=after_f, limit=1000)
                if not faces:
                    break
                out.extend(f for f in faces if subject in (f.external_image_id, f.user_id))
                after_f = faces[-1].face_id
        after_c = cols[-1].collection_id


@operation("ExportSubject")
def export_subject(self: Service, ctx: Context) -> dict[str, Any]:
    """Everything facewarden holds about a data subject; templates only with IncludeTemplates."""
    subject = _text(ctx.request, "Subject") or ""
    include = ctx.request.get("IncludeTemplates", False)
    if isinstance(include, str) and include.lower() in ("true", "false"):  # a query parameter
        include = include.lower() == "true"
    if not isinstance(include, bool):
        raise InvalidInput("IncludeTemplates must be true or false.")
    ctx.subjects.append(subject)
    faces = _subject_faces(self, subject)
    out: dict[str, Any] = {
        "Subject": subject,
        "SubjectRef": self.audit.subject_ref(subject),
        "Faces": [
            {**f.to_rekognition(), "CollectionId": f.collection_id, "IndexedAt": f.indexed_at} for f in faces
        ],
        "Consents": self.consents.list(subject=subject),
        "AuditRecords": list(self.audit.records(subject=subject)),
    }
    if include:
        templates: dict[str, list[float]] = {}
        by_col: dict[str, list[str]] = {}
        for f in faces:
            by_col.setdefault(f.collection_id, []).append(f.face_id)
        for cid, ids in by_col.items():
            for fid, t in self.store.templates(cid, ids).items():
                templates[fid] = [float(x) for x in t]
        out["Templates"] = templates
    ctx.counts.update(faces=len(faces), consents=len(out["Consents"]), audit_records=len(out["AuditRecords"]))
    ctx.details["include_templates"] = include
    return out


@operation("EraseSubject")
def erase_subject(self: Service, ctx: Context) -> dict[str, Any]:
    """Erase a data subject everywhere: faces, templates, user records, consents. The audit log
    keeps a tombstone (this call's record: a pseudonym and counts, no biometric data)."""
    subject = _text(ctx.request, "Subject") or ""
    ctx.subjects.append(subject)
    collections = sorted({f.collection_id for f in _subject_faces(self, subject)})
    with self.db.transaction(lock="consent") as tx:
        removed = self.store.erase_faces(None, external_image_id=subject, user_id=subject, tx=tx)
        consents = consent_mod.erase_subject_consents(tx, subject)
        ctx.counts.update(faces_erased=len(removed), consents_erased=consents)
        ctx.details["tombstone"] = True
        self.audit_now(ctx, tx)
    for cid in collections:
        try:
            self.store.sync_index(cid)
        except Exception:
            log.warning("could not sync the index of collection %s after an erasure", cid, exc_info=True)
    return {"Subject": subject, "FacesErased": len(removed), "ConsentsErased": consents}


# ---- audit ------------------------------------------------------------------------------------------
@operation("VerifyAudit")
def verify_audit(self: Service, ctx: Context) -> dict[str, Any]:
    result = self.audit.verify()
    ctx.details.update(ok=result.ok, first_bad_seq=result.first_bad_seq, kind=result.kind)
    return result.as_dict()


@operation("ExportAudit")
def export_audit(self: Service, ctx: Context) -> dict[str, Any]:
    """The audit log as JSON lines (optionally from a date on, or naming one subject), a page at a
    time: oldest first, or newest first with NewestFirst. NextToken continues where a page ended."""
    req = ctx.request
    subject = _text(req, "Subject", required=False)
    if subject:
        ctx.subjects.append(subject)
    limit = integer(req, "MaxResults", 1, 10_000, 1000)
    newest = req.get("NewestFirst", False)
    if not isinstance(newest, bool):
        raise InvalidInput("NewestFirst must be true or false.")
    token = _text(req, "NextToken", required=False)
    if token is not None and not token.isdigit():
        raise InvalidInput("NextToken must be the NextToken string of the previous response.")
    since = _time(req.get("Since"), "Since")
    if newest:
        page = self.audit.export(since=since, subject=subject, before=int(token) if token else 2**62)
    else:
        page = self.audit.export(since=since, subject=subject, after=int(token) if token else 0)
    rows = list(itertools.islice(page, limit + 1))  # one more than a page: is there a next one?
    ctx.counts["records"] = min(len(rows), limit)
    out: dict[str, Any] = {"Lines": [line for _, line in rows[:limit]]}
    if len(rows) > limit:
        out["NextToken"] = str(rows[limit - 1][0])
    return out


@operation("GetTransparencyReport")
def get_transparency_report(self: Service, ctx: Context) -> dict[str, Any]:
    return {"Report": transparency_report(self.audit, since=_time(ctx.request.get("Since"), "Since"))}


@operation("RunRetentionSweep")
def run_retention_sweep(self: Service, ctx: Context) -> dict[str, Any]:
    result = self.sweep()
    ctx.counts.update(result)
    return {"Sweep": result}

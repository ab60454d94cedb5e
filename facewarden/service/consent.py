"""Consent: enrolment needs it, withdrawal and expiry erase what it covered; the consent operations.

IndexFaces and AssociateFaces in a collection whose consent mode is ``required`` (the default)
call :func:`require_consent` before they compute anything. Withdrawal (:func:`withdraw`), and
expiry (treated as withdrawal by the retention sweep, :func:`expire`), erase the subject's faces
from every collection the consent covered and no other active consent still covers, in one
transaction with the consent's update and its audit record. The records themselves live in the
consent register (:class:`facewarden.policy.consent.Consents`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..db import Tx
from ..errors import ConsentRequired, InvalidInput, ResourceNotFound
from ..policy.consent import ANY_COLLECTION
from ..policy.kinds import Kind
from .core import Service
from .registry import Context, Rest, operation
from .params import Time

log = logging.getLogger("facewarden.service")

ADMIN_TAG = "administration"


# ---- consent in the gallery ----------------------------------------------------------------------
def require_consent(service: Service, ctx: Context, collection_id: str, subject: str | None) -> None:
    """Raise ConsentRequired unless ``subject`` may be enrolled in ``collection_id`` now.

    Household collections need no per-face consent (policy already limits them to their owner, a
    natural person, and its photo-organisation keys). Elsewhere the subject must be named and hold
    an active consent. Call it in IndexFaces (subject = ExternalImageId) and AssociateFaces
    (subject = the user's subject, the ExternalImageId of its faces) after the request is
    validated and before any image is decoded; bulk indexing calls it per file, from the path.
    """
    info = service.collection_info(collection_id)
    if info is not None and info.consent_mode == "household":
        return
    if not subject:
        raise ConsentRequired(
            f"Collection {collection_id} requires consent for every enrolled face: name the subject "
            "(ExternalImageId for IndexFaces; AssociateFaces takes the faces' ExternalImageId) and record their consent with "
            "GrantConsent first."
        )
    if subject not in ctx.subjects:
        ctx.subjects.append(subject)
    owner = info.owner_org if info is not None else None
    if not service.consents.active(subject, collection_id, owner, service.clock()):
        raise ConsentRequired(
            f"No active consent covers this subject in collection {collection_id}: record it with "
            "GrantConsent (subject, collection, evidence) before enrolling; expired or withdrawn "
            "consent does not count."
        )


def erase_uncovered(
    service: Service, tx: Tx, subject: str, collections: list[str], now: float
) -> tuple[list[str], list[str]]:
    """Erase ``subject``'s faces from each of ``collections`` no active consent covers any more.

    Runs inside ``tx``; returns (removed face ids, collections touched). Household collections
    are not consent-based and are left alone.
    """
    store = service.store
    removed: list[str] = []
    touched: list[str] = []
    for cid in collections:
        info = service.collection_info(cid, tx=tx)
        if info is None or info.consent_mode == "household":
            continue
        if service.consents.active(subject, cid, info.owner_org, now, tx=tx):
            continue
        faces = store.erase_faces(cid, external_image_id=subject, user_id=subject, tx=tx)
        if faces:
            removed.extend(faces)
            touched.append(cid)
    return removed, touched


def collections_in_scope(service: Service, scope: str, org: str) -> list[str]:
    """The collections a consent scope covers: one collection, or all the organisation's."""
    if scope != ANY_COLLECTION:
        return [scope]
    return [c.collection_id for c in service.collections() if c.owner_org in (org, None)]


@dataclass(frozen=True)
class Withdrawal:
    consents_withdrawn: int
    faces_erased: int


def withdraw(
    service: Service,
    ctx: Context | None,
    org: str,
    subject: str,
    collection_id: str | None,
    *,
    reason: str = "withdrawn",
    now: float | None = None,
    consent_ids: list[str] | None = None,
) -> Withdrawal:
    """Withdraw ``subject``'s consents (one scope, or all of ``org``'s) and erase what they covered.

    The consent update, the erasure of templates and (with ``ctx``) the audit record of the call
    commit in one transaction; without ``ctx`` (expiry) the service records it itself.
    """
    now = service.clock() if now is None else now
    if consent_ids is not None and not consent_ids:
        return Withdrawal(0, 0)
    consents = service.consents
    # The collections in scope are listed before the write transaction (the store reads on its own).
    with service.db.read() as rtx:
        rows = consents.withdrawable(rtx, subject, org, collection_id, consent_ids)
    scopes = sorted({scope for _, scope in rows} | ({collection_id} if collection_id else set()))
    collections: list[str] = []
    for scope in scopes:
        for cid in collections_in_scope(service, scope, org):
            if cid not in collections:
                collections.append(cid)
    with service.db.transaction(lock="consent") as tx:
        rows = consents.withdrawable(tx, subject, org, collection_id, consent_ids)
        if not rows and consent_ids is None:
            raise ResourceNotFound(
                "No active consent of this subject" + (f" for collection {collection_id}" if collection_id else "")
                + " to withdraw."
            )  # fmt: skip
        consents.mark_withdrawn(tx, [consent_id for consent_id, _ in rows], now, reason)
        removed, touched = erase_uncovered(service, tx, subject, collections, now)
        if ctx is not None:
            ctx.counts.update(consents_withdrawn=len(rows), faces_erased=len(removed))
            if subject not in ctx.subjects:
                ctx.subjects.append(subject)
            service.audit_now(ctx, tx)
        else:
            service.audit_system(
                "ConsentExpired" if reason == "expired" else "ConsentWithdrawn",
                counts={"consents_withdrawn": len(rows), "faces_erased": len(removed)},
                subjects=[subject],
                details={"reason": reason, "collections": touched},
                org=org,
                tx=tx,
            )
    for cid in touched:
        sync_index(service, cid)
    return Withdrawal(len(rows), len(removed))


def expire(service: Service, now: float) -> dict[str, int]:
    """Treat every consent past its expiry as withdrawn: erase what it alone covered."""
    consents = faces = 0
    for consent_id, org, subject, scope in service.consents.expired(now):
        r = withdraw(service, None, org, subject, scope, reason="expired", now=now, consent_ids=[consent_id])
        consents += r.consents_withdrawn
        faces += r.faces_erased
    return {"consents_expired": consents, "faces_erased": faces}


def sync_index(service: Service, collection_id: str) -> None:
    """Bring a collection's search index up to date after an erasure (a failure is logged: the
    index also catches up before the next search)."""
    try:
        service.store.sync_index(collection_id)
    except Exception:
        log.warning(
            "could not sync the index of collection %s after an erasure", collection_id, exc_info=True
        )


# ---- the consent operations ---------------------------------------------------------------------------
def _consent_org(service: Service, ctx: Context, organization: str | None) -> str:
    """Consent is recorded for the caller's organisation; the owner may act for another."""
    caller = ctx.caller
    if organization and organization != caller.org:
        if not caller.owner:
            raise InvalidInput("Only the owner organization may manage another organization's consents.")
        service.principals.get_org(organization)
        return organization
    return caller.org


@dataclass(frozen=True)
class GrantConsentRequest:
    subject: str
    evidence: str
    collection_id: str | None = None
    expires_at: Time | None = None
    organization: str | None = None


@dataclass(frozen=True)
class GrantConsentResult:
    consent: dict[str, Any]


@operation("GrantConsent", kind=Kind.CONSENT, rest=Rest("POST", "/v1/admin/consents", ADMIN_TAG))
def grant_consent(svc: Service, ctx: Context, req: GrantConsentRequest) -> GrantConsentResult:
    """Record a subject's consent: Subject, CollectionId, Evidence, ExpiresAt"""
    if ctx.caller.collections is not None and not req.collection_id:
        raise InvalidInput(
            "This key is limited to some collections: name the CollectionId the consent is for."
        )
    ctx.subjects.append(req.subject)
    record = svc.consents.grant(
        _consent_org(svc, ctx, req.organization),
        req.subject,
        req.collection_id,
        req.evidence,
        expires_at=req.expires_at,
    )
    ctx.details.update(consent_id=record["ConsentId"], expires_at=record["ExpiresAt"])
    return GrantConsentResult(record)


@dataclass(frozen=True)
class ListConsentsRequest:
    subject: str | None = None
    collection_id: str | None = None
    organization: str | None = None


@dataclass(frozen=True)
class ListConsentsResult:
    consents: list[dict[str, Any]]


@operation("ListConsents", kind=Kind.CONSENT, rest=Rest("GET", "/v1/admin/consents", ADMIN_TAG), reads=True)
def list_consents(svc: Service, ctx: Context, req: ListConsentsRequest) -> ListConsentsResult:
    """The consent register"""
    org = None if ctx.caller.owner and not req.organization else _consent_org(svc, ctx, req.organization)
    if req.subject:
        ctx.subjects.append(req.subject)
    records = svc.consents.list(subject=req.subject, org=org, collection_id=req.collection_id)
    now = svc.clock()
    for r in records:
        r["Active"] = r["WithdrawnAt"] is None and (r["ExpiresAt"] is None or r["ExpiresAt"] > now)
    ctx.counts["consents"] = len(records)
    return ListConsentsResult(records)


@dataclass(frozen=True)
class WithdrawConsentRequest:
    subject: str
    collection_id: str | None = None
    organization: str | None = None


@operation("WithdrawConsent", kind=Kind.CONSENT, rest=Rest("DELETE", "/v1/admin/consents", ADMIN_TAG))
def withdraw_consent(svc: Service, ctx: Context, req: WithdrawConsentRequest) -> Withdrawal:
    """Withdraw a subject's consent (erases the subject's templates)"""
    return withdraw(svc, ctx, _consent_org(svc, ctx, req.organization), req.subject, req.collection_id)

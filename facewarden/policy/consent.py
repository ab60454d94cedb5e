"""Consent records: enrolment needs one, withdrawal (or expiry) erases the subject's templates.

A consent names a data subject (the ``ExternalImageId`` or ``UserId`` the faces are enrolled
under), its scope (one collection, or ``*`` = every collection of the granting organisation), a
reference to the evidence (a signed form's id, a consent receipt; never the form itself), when it
was granted and when it expires. IndexFaces and AssociateFaces in a collection whose consent mode
is ``required`` (the default) call :func:`require_consent` before they compute anything.
Withdrawal, and expiry (treated as withdrawal by the sweep), erase the subject's faces from every
collection the consent covered and no other active consent still covers, in one transaction.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..db import Database, Tx
from ..errors import ConsentRequired, InvalidInput, ResourceNotFound

if TYPE_CHECKING:  # pragma: no cover
    from ..service.core import Context, Service

ANY_COLLECTION = "*"
log = logging.getLogger("facewarden.policy")

MIGRATIONS = [
    """
    CREATE TABLE policy_consents (
        consent_id TEXT PRIMARY KEY,
        org TEXT NOT NULL,
        subject TEXT NOT NULL,
        collection_id TEXT NOT NULL,
        evidence TEXT NOT NULL,
        granted_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        withdrawn_at DOUBLE PRECISION,
        withdrawn_reason TEXT
    );
    CREATE INDEX policy_consents_subject ON policy_consents(subject, collection_id)
    """,
]

_COLS = "consent_id, org, subject, collection_id, evidence, granted_at, expires_at, withdrawn_at, withdrawn_reason"


def _row(r: tuple) -> dict[str, Any]:
    return {
        "ConsentId": r[0],
        "Organization": r[1],
        "Subject": r[2],
        "CollectionId": r[3],
        "Evidence": r[4],
        "GrantedAt": r[5],
        "ExpiresAt": r[6],
        "WithdrawnAt": r[7],
        "WithdrawnReason": r[8],
    }


class Consents:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        db.migrate("policy_consent", MIGRATIONS)

    def grant(
        self,
        org: str,
        subject: str,
        collection_id: str | None,
        evidence: str,
        *,
        expires_at: float | None = None,
        granted_at: float | None = None,
    ) -> dict[str, Any]:
        if not isinstance(subject, str) or not subject:
            raise InvalidInput("Subject must name the data subject (the ExternalImageId or UserId to enrol).")
        if not isinstance(evidence, str) or not evidence.strip():
            raise InvalidInput(
                "Evidence must reference the consent's proof (e.g. the id of a signed form); consent "
                "without evidence is not recorded."
            )
        now = self.clock()
        granted = now if granted_at is None else float(granted_at)
        if expires_at is not None:
            if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
                raise InvalidInput("ExpiresAt must be a Unix time in seconds.")
            if expires_at <= granted:
                raise InvalidInput("ExpiresAt must be later than the time consent is granted.")
        cid = "consent-" + secrets.token_hex(8)
        with self.db.transaction(lock="consent") as tx:
            tx.execute(
                f"INSERT INTO policy_consents ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (cid, org, subject, collection_id or ANY_COLLECTION, evidence.strip(), granted,
                 None if expires_at is None else float(expires_at)),
            )  # fmt: skip
            row = tx.one(f"SELECT {_COLS} FROM policy_consents WHERE consent_id = ?", (cid,))
        assert row is not None
        return _row(row)

    def list(
        self, *, subject: str | None = None, org: str | None = None, collection_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for col, val in (("subject", subject), ("org", org), ("collection_id", collection_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = f"SELECT {_COLS} FROM policy_consents" + (" WHERE " + " AND ".join(where) if where else "")
        with self.db.read() as tx:
            rows = tx.all(sql + " ORDER BY granted_at, consent_id", params)
        return [_row(r) for r in rows]

    def active(
        self, subject: str, collection_id: str, owner_org: str | None, now: float, tx: Tx | None = None
    ) -> bool:
        """Is there an active consent of ``subject`` covering ``collection_id``?"""
        sql = (
            "SELECT 1 FROM policy_consents WHERE subject = ? AND withdrawn_at IS NULL AND granted_at <= ?"
            " AND (expires_at IS NULL OR expires_at > ?) AND (collection_id = ? OR (collection_id = ?"
            + (" AND org = ?))" if owner_org is not None else "))")
        )
        params: tuple[Any, ...] = (subject, now, now, collection_id, ANY_COLLECTION)
        if owner_org is not None:
            params += (owner_org,)
        if tx is not None:
            return tx.one(sql, params) is not None
        with self.db.read() as rtx:
            return rtx.one(sql, params) is not None


# ---- used by the service's gallery operations ---------------------------------------------------
def require_consent(service: Service, ctx: Context, collection_id: str, subject: str | None) -> None:
    """Raise ConsentRequired unless ``subject`` may be enrolled in ``collection_id`` now.

    Household collections need no per-face consent (policy already limits them to their owner's
    photo-organisation keys). Elsewhere the subject must be named and hold an active consent.
    Call it in IndexFaces (subject = ExternalImageId) and AssociateFaces (subject = UserId) after
    the request is validated and before any image is decoded.
    """
    info = service.collection_info(collection_id)
    if info is not None and info.consent_mode == "household":
        return
    if not subject:
        raise ConsentRequired(
            f"Collection {collection_id} requires consent for every enrolled face: name the subject "
            "(ExternalImageId for IndexFaces, UserId for AssociateFaces) and record their consent with "
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
    out: list[str] = []
    after = None
    while True:
        page = service.store.list_collections(after=after, limit=1000)
        if not page:
            return out
        out.extend(c.collection_id for c in page if c.owner_org in (org, None))
        after = page[-1].collection_id


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
) -> dict[str, Any]:
    """Withdraw ``subject``'s consents (one scope, or all of ``org``'s) and erase what they covered.

    The consent update, the erasure of templates and (with ``ctx``) the audit record of the call
    commit in one transaction.
    """
    now = service.clock() if now is None else now
    where = ["subject = ?", "org = ?", "withdrawn_at IS NULL"]
    params: list[Any] = [subject, org]
    if consent_ids is not None:
        if not consent_ids:
            return {"ConsentsWithdrawn": 0, "FacesErased": 0}
        where.append(f"consent_id IN ({', '.join('?' * len(consent_ids))})")
        params.extend(consent_ids)
    elif collection_id is not None:
        where.append("collection_id = ?")
        params.append(collection_id)
    select = f"SELECT consent_id, collection_id FROM policy_consents WHERE {' AND '.join(where)}"
    # The collections in scope are listed before the write transaction (the store reads on its own).
    with service.db.read() as rtx:
        scopes = sorted(
            {r[1] for r in rtx.all(select, params)} | ({collection_id} if collection_id else set())
        )
    collections: list[str] = []
    for scope in scopes:
        for cid in collections_in_scope(service, scope, org):
            if cid not in collections:
                collections.append(cid)
    with service.db.transaction(lock="consent") as tx:
        rows = tx.all(select, params)
        if not rows and consent_ids is None:
            raise ResourceNotFound(
                "No active consent of this subject" + (f" for collection {collection_id}" if collection_id else "")
                + " to withdraw."
            )  # fmt: skip
        for consent_id, _ in rows:
            tx.execute(
                "UPDATE policy_consents SET withdrawn_at = ?, withdrawn_reason = ? WHERE consent_id = ?",
                (min(now, _expiry(tx, consent_id) or now), reason, consent_id),
            )
        removed, touched = erase_uncovered(service, tx, subject, collections, now)
        result = {"ConsentsWithdrawn": len(rows), "FacesErased": len(removed)}
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
        _sync(service, cid)
    return result


def _expiry(tx: Tx, consent_id: str) -> float | None:
    return tx.scalar("SELECT expires_at FROM policy_consents WHERE consent_id = ?", (consent_id,))


def _sync(service: Service, collection_id: str) -> None:
    try:
        service.store.sync_index(collection_id)
    except Exception:
        log.warning(
            "could not sync the index of collection %s after an erasure", collection_id, exc_info=True
        )


def expire(service: Service, now: float) -> dict[str, int]:
    """Treat every consent past its expiry as withdrawn: erase what it alone covered."""
    with service.db.read() as tx:
        rows = tx.all(
            "SELECT consent_id, org, subject, collection_id FROM policy_consents"
            " WHERE withdrawn_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?",
            (now,),
        )
    consents = faces = 0
    for consent_id, org, subject, collection_id in rows:
        r = withdraw(
            service, None, org, subject, collection_id, reason="expired", now=now, consent_ids=[consent_id]
        )
        consents += r["ConsentsWithdrawn"]
        faces += r["FacesErased"]
    return {"consents_expired": consents, "faces_erased": faces}


def erase_subject_consents(tx: Tx, subject: str) -> int:
    """Delete every consent record of ``subject`` (data-subject erasure)."""
    return tx.execute("DELETE FROM policy_consents WHERE subject = ?", (subject,)).rowcount

"""The consent register: who consented to enrolment where, on what evidence, until when.

A consent names a data subject (the ``ExternalImageId`` or ``UserId`` the faces are enrolled
under), its scope (one collection, or ``*`` = every collection of the granting organisation), a
reference to the evidence (a signed form's id, a consent receipt; never the form itself), when it
was granted and when it expires. This module only keeps the records; what consent means for the
gallery (enrolment needs it, withdrawal and expiry erase what it covered) is the service's
(:mod:`facewarden.service.consent`).
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from ..db import Database, Tx
from ..errors import InvalidInput

ANY_COLLECTION = "*"

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


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
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
        return subject in self.active_subjects([subject], collection_id, owner_org, now, tx)

    def active_subjects(
        self,
        subjects: Iterable[str],
        collection_id: str,
        owner_org: str | None,
        now: float,
        tx: Tx | None = None,
    ) -> set[str]:
        """Those of ``subjects`` with an active consent covering ``collection_id`` at ``now`` (one
        query per 500 subjects: what a search or a listing asks of every face it would return)."""
        wanted = sorted({s for s in subjects if s})
        if not wanted:
            return set()
        scope = " AND org = ?" if owner_org is not None else ""
        tail: tuple[Any, ...] = (now, now, collection_id, ANY_COLLECTION) + (
            (owner_org,) if owner_org is not None else ()
        )
        out: set[str] = set()

        def run(t: Tx) -> None:
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                rows = t.all(
                    f"SELECT DISTINCT subject FROM policy_consents WHERE subject IN ({', '.join('?' * len(part))})"
                    " AND withdrawn_at IS NULL AND granted_at <= ? AND (expires_at IS NULL OR expires_at > ?)"
                    f" AND (collection_id = ? OR (collection_id = ?{scope}))",
                    (*part, *tail),
                )
                out.update(str(r[0]) for r in rows)

        if tx is not None:
            run(tx)
        else:
            with self.db.read() as rtx:
                run(rtx)
        return out

    def withdrawable(
        self,
        tx: Tx,
        subject: str,
        org: str,
        collection_id: str | None = None,
        consent_ids: builtins.list[str] | None = None,
    ) -> builtins.list[tuple[str, str]]:
        """(consent id, scope) of ``subject``'s active consents recorded by ``org``: those of one
        scope (``collection_id``), the ones named (``consent_ids``), or all of them."""
        where = ["subject = ?", "org = ?", "withdrawn_at IS NULL"]
        params: list[Any] = [subject, org]
        if consent_ids is not None:
            if not consent_ids:
                return []
            where.append(f"consent_id IN ({', '.join('?' * len(consent_ids))})")
            params.extend(consent_ids)
        elif collection_id is not None:
            where.append("collection_id = ?")
            params.append(collection_id)
        rows = tx.all(
            f"SELECT consent_id, collection_id FROM policy_consents WHERE {' AND '.join(where)}", params
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def mark_withdrawn(self, tx: Tx, consent_ids: builtins.list[str], now: float, reason: str) -> None:
        """Record the consents as withdrawn at ``now`` (an expired one: at its expiry)."""
        for consent_id in consent_ids:
            expiry = tx.scalar("SELECT expires_at FROM policy_consents WHERE consent_id = ?", (consent_id,))
            tx.execute(
                "UPDATE policy_consents SET withdrawn_at = ?, withdrawn_reason = ? WHERE consent_id = ?",
                (min(now, expiry or now), reason, consent_id),
            )

    def expired(self, now: float) -> builtins.list[tuple[str, str, str, str]]:
        """(consent id, org, subject, scope) of consents past their expiry not yet withdrawn."""
        with self.db.read() as tx:
            rows = tx.all(
                "SELECT consent_id, org, subject, collection_id FROM policy_consents"
                " WHERE withdrawn_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def erase_subject_consents(tx: Tx, subject: str) -> int:
    """Delete every consent record of ``subject`` (data-subject erasure)."""
    return int(tx.execute("DELETE FROM policy_consents WHERE subject = ?", (subject,)).rowcount)

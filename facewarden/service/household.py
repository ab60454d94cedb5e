"""The household exemption: a natural person's own photo library, without a consent record per face.

Policy decides who may use one (:meth:`facewarden.policy.rules.Policy.decide`, rule ``household``):
only an organisation of sector ``individual`` may create or use a household collection, and only
with its own household-purpose keys; nobody else may search, list or export it. This module holds
the rest:

* the size cap (``[collections] household_max_faces``, built-in ceiling 100,000), which IndexFaces
  asks of the store, checked in the same transaction as the insert;
* the start-up check (:func:`check_at_start`): household collections of organisations of another
  sector (made before the rule existed) are refused by policy on every call until the operator
  converts them; the service logs each and audits it once (``HouseholdRefused``);
* ``ConvertCollection`` (``facewarden collection convert NAME --consent required``): the collection
  becomes a consent collection, and every face without an active consent record for its subject
  (its ExternalImageId) is erased, in one transaction with the audit record;
* :func:`census`: collections and faces by consent mode, for the transparency report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any

from ..db import Tx
from ..errors import InvalidInput, ResourceNotFound
from ..gallery import Collection, Face
from ..policy.builtin import HOUSEHOLD_SECTOR
from ..policy.kinds import Kind
from .consent import sync_index
from .core import Service
from .gallery import COLLECTION, collection
from .params import CollectionId, OneOf
from .registry import Context, Rest, at_start, operation

log = logging.getLogger("facewarden.service")

HOUSEHOLD = "household"


def is_household(col: Collection) -> bool:
    return col.consent_mode == HOUSEHOLD


def _sector(svc: Service, org: str | None) -> str | None:
    if org is None:
        return None
    try:
        return str(svc.principals.get_org(org)["Sector"])
    except ResourceNotFound:
        return None


def misplaced(svc: Service) -> list[tuple[Collection, str | None]]:
    """Household collections whose owner is not an organisation of sector ``individual``, with
    the owner's sector (None: no owner, or an owner that no longer exists)."""
    out = []
    sectors: dict[str | None, str | None] = {}
    for col in svc.collections():
        if not is_household(col):
            continue
        if col.owner_org not in sectors:
            sectors[col.owner_org] = _sector(svc, col.owner_org)
        if sectors[col.owner_org] != HOUSEHOLD_SECTOR:
            out.append((col, sectors[col.owner_org]))
    return out


@at_start
def check_at_start(svc: Service) -> list[str]:
    """Find household collections policy now refuses (their owner is no natural person), log each
    and audit it once (per collection); returns their ids. They stay refused on every call (rule
    ``household``) until the operator converts them with ConvertCollection."""
    found = misplaced(svc)
    if not found:
        return []
    done = {
        (r.get("collection"), (r.get("details") or {}).get("uid"))
        for r in svc.audit.records_of("HouseholdRefused")
    }
    for col, sector in found:
        log.warning(
            "household collection %s belongs to %s (sector %s), not to an organisation of sector %s: every "
            "call on it is refused until the operator runs `facewarden collection convert %s --consent required` "
            "(which erases every face without a consent record)",
            col.collection_id, col.owner_org, sector, HOUSEHOLD_SECTOR, col.collection_id,
        )  # fmt: skip
        if (col.collection_id, col.uid) in done:
            continue
        svc.audit_system(
            "HouseholdRefused",
            counts={"faces": col.face_count},
            details={"uid": col.uid, "owner_sector": sector, "convert_with": "ConvertCollection"},
            org=col.owner_org,
            collection=col.collection_id,
        )
    return [c.collection_id for c, _ in found]


def census(svc: Service) -> dict[str, Any]:
    """Collections and faces by consent mode; household collections refused service counted apart."""
    out: dict[str, Any] = {
        "Consent": {"Collections": 0, "Faces": 0},
        "Household": {"Collections": 0, "Faces": 0},
        "HouseholdRefused": {"Collections": 0, "Faces": 0},
    }
    refused = {c.collection_id for c, _ in misplaced(svc)}
    for col in svc.collections():
        group = "Household" if is_household(col) else "Consent"
        if col.collection_id in refused:
            group = "HouseholdRefused"
        out[group]["Collections"] += 1
        out[group]["Faces"] += col.face_count
    return out


# ---- ConvertCollection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertCollectionRequest:
    collection_id: CollectionId
    consent_mode: Annotated[
        str, OneOf(("required",), "A household collection converts to ConsentMode 'required' only.")
    ] = "required"


@dataclass(frozen=True)
class ConvertCollectionResult:
    collection_id: str
    consent_mode: str
    faces_erased: int
    faces_kept: int


@operation("ConvertCollection", kind=Kind.ADMIN, rest=Rest("POST", f"{COLLECTION}/convert", "collections"))
def convert_collection(svc: Service, ctx: Context, req: ConvertCollectionRequest) -> ConvertCollectionResult:
    """Turn a household collection into a consent collection (erases faces without consent)"""
    # The operator's: household collections of organisations that are no natural person are
    # refused service until converted. Every face whose subject (ExternalImageId) has no active
    # consent for the collection is erased with the conversion, in one transaction with the record.
    store, col = collection(svc, ctx, req.collection_id)
    if not is_household(col):
        raise InvalidInput(f"Collection {col.collection_id} already requires consent for every face.")

    def record(tx: Tx, erased: list[str], kept: list[Face]) -> None:
        ctx.counts.update(faces_erased=len(erased), faces_kept=len(kept))
        ctx.details.update(previous_consent_mode=col.consent_mode, consent_mode=req.consent_mode)
        svc.audit_now(ctx, tx)

    erased, kept = _convert(svc, col, req.consent_mode, record)
    return ConvertCollectionResult(col.collection_id, req.consent_mode, len(erased), len(kept))


def _convert(
    svc: Service, col: Collection, consent_mode: str, record: Callable[[Tx, list[str], list[Face]], None]
) -> tuple[list[str], list[Face]]:
    """Make ``col`` a consent collection, erasing every face whose subject (its ExternalImageId)
    has no active consent for it, in one transaction with ``record(tx, erased ids, kept faces)``."""
    faces = list(svc.faces(col.collection_id))
    consented = svc.consents.active_subjects(
        (f.external_image_id for f in faces if f.external_image_id),
        col.collection_id,
        col.owner_org,
        svc.clock(),
    )
    doomed = [f.face_id for f in faces if f.external_image_id not in consented]
    kept = [f for f in faces if f.external_image_id in consented]
    with svc.db.transaction() as tx:  # (the store takes the collection's lock inside it)
        svc.store.set_consent_mode(col.collection_id, consent_mode, tx=tx)
        erased, _ = svc.store.delete_faces(col.collection_id, doomed, force=True, tx=tx)
        record(tx, erased, kept)
    sync_index(svc, col.collection_id)
    _split_mixed_users(svc, col.collection_id, kept)
    return erased, kept


def convert_again(svc: Service, collection_id: str) -> dict[str, int]:
    """Replay a ConvertCollection on a restored backup taken before it (service/recovery.py): if
    the collection is a household collection again, convert it again, erasing the faces without
    an active consent record now (what the restored register holds: fail closed)."""
    try:
        col = svc.store.get_collection(collection_id)
    except ResourceNotFound:
        return {"faces_erased": 0}
    if not is_household(col):
        return {"faces_erased": 0}
    erased, _ = _convert(svc, col, "required", lambda tx, erased, kept: None)
    return {"faces_erased": len(erased)}


def _split_mixed_users(svc: Service, collection_id: str, kept: list[Face]) -> None:
    """In a consent collection a user stands for one subject: a user left holding faces of several
    subjects loses them (they stay in the collection, unassociated)."""
    by_user: dict[str, list[Face]] = {}
    for f in kept:
        if f.user_id:
            by_user.setdefault(f.user_id, []).append(f)
    for user_id, faces in by_user.items():
        if len({f.external_image_id for f in faces}) > 1:
            svc.store.disassociate_faces(collection_id, user_id, [f.face_id for f in faces])

"""Footage-release requests, their decisions and their redacted copies, as rows of the shared database.

A **request** goes from a requester organisation to a footage owner::

    PENDING --decline--> DECLINED
    PENDING --release--> RELEASED --expiry--> EXPIRED

Released, it holds **items**, one per chosen file of the owner's footage library, each a redacted
copy (never the file itself)::

    PREPARING --> READY --download--> DOWNLOADED
             \\-> FAILED    READY --expiry--> EXPIRED

One download: an item is handed over once. The download marks it DOWNLOADED in the same
transaction that finds it READY (so two concurrent downloads cannot both succeed), and its copy is
deleted as soon as it has been sent: the requester keeps what it received, the server keeps
nothing (the copies of an expired release are deleted by the service's sweep). A second download, one before the release or after its expiry, is refused. Every state
change is made here, under the request's lock, and every caller (the service) writes the audit
record of the operation that made it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..db import Database, Tx
from ..errors import InvalidInput, ReleaseStateError, ResourceNotFound

PENDING, DECLINED, RELEASED, EXPIRED = "PENDING", "DECLINED", "RELEASED", "EXPIRED"
PREPARING, READY, FAILED, DOWNLOADED = "PREPARING", "READY", "FAILED", "DOWNLOADED"
IMAGE, VIDEO = "image", "video"
#: How long a release may be downloaded unless the owner says otherwise, and at most.
DEFAULT_EXPIRY_DAYS = 7
MAX_EXPIRY_DAYS = 30

MIGRATIONS = [
    """
    CREATE TABLE footage (
        footage_id TEXT PRIMARY KEY,
        owner_org TEXT NOT NULL,
        name TEXT NOT NULL,
        media TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        recorded_at DOUBLE PRECISION,
        place TEXT,
        added_by TEXT NOT NULL,
        added_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX footage_owner ON footage (owner_org, added_at);
    CREATE TABLE release_requests (
        request_id TEXT PRIMARY KEY,
        requester_org TEXT NOT NULL,
        requester_sector TEXT,
        requester_key TEXT NOT NULL,
        owner_org TEXT NOT NULL,
        time_from DOUBLE PRECISION NOT NULL,
        time_to DOUBLE PRECISION NOT NULL,
        place TEXT NOT NULL,
        reason TEXT NOT NULL,
        legal_basis TEXT NOT NULL,
        reference TEXT,
        status TEXT NOT NULL,
        decision_reason TEXT,
        decided_by TEXT,
        decided_at DOUBLE PRECISION,
        keep_collection TEXT,
        expires_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX release_requests_owner ON release_requests (owner_org, created_at);
    CREATE INDEX release_requests_requester ON release_requests (requester_org, created_at);
    CREATE TABLE release_items (
        item_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        footage_id TEXT NOT NULL,
        name TEXT NOT NULL,
        media TEXT NOT NULL,
        status TEXT NOT NULL,
        copy_path TEXT,
        job_id TEXT,
        faces_found INTEGER NOT NULL DEFAULT 0,
        faces_hidden INTEGER NOT NULL DEFAULT 0,
        faces_kept INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        downloaded_by TEXT,
        downloaded_at DOUBLE PRECISION
    );
    CREATE INDEX release_items_request ON release_items (request_id)
    """,
]


@dataclass(frozen=True)
class Footage:
    """A file of an owner's footage library (kept under the data directory, never released as is)."""

    footage_id: str
    owner_org: str
    name: str
    media: str
    path: str
    sha256: str
    size_bytes: int
    recorded_at: float | None
    place: str | None
    added_by: str
    added_at: float


@dataclass(frozen=True)
class Item:
    """One released file: the redacted copy of one footage file."""

    item_id: str
    request_id: str
    footage_id: str
    name: str
    media: str
    status: str
    copy_path: str | None
    job_id: str | None
    faces_found: int
    faces_hidden: int
    faces_kept: int
    message: str | None
    downloaded_by: str | None
    downloaded_at: float | None


@dataclass(frozen=True)
class Request:
    request_id: str
    requester_org: str
    requester_sector: str | None
    requester_key: str
    owner_org: str
    time_from: float
    time_to: float
    place: str
    reason: str
    legal_basis: str
    reference: str | None
    status: str
    decision_reason: str | None
    decided_by: str | None
    decided_at: float | None
    keep_collection: str | None
    expires_at: float | None
    created_at: float
    items: list[Item] = field(default_factory=list)


_FOOTAGE = (
    "footage_id, owner_org, name, media, path, sha256, size_bytes, recorded_at, place, added_by, added_at"
)
_REQUEST = (
    "request_id, requester_org, requester_sector, requester_key, owner_org, time_from, time_to, place, "
    "reason, legal_basis, reference, status, decision_reason, decided_by, decided_at, keep_collection, "
    "expires_at, created_at"
)
_ITEM = (
    "item_id, request_id, footage_id, name, media, status, copy_path, job_id, faces_found, faces_hidden, "
    "faces_kept, message, downloaded_by, downloaded_at"
)


class Releases:
    """The footage library and the release requests of one database."""

    def __init__(self, db: Database, clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.clock = clock or time.time
        db.migrate("release", MIGRATIONS)

    # ---- the owner's footage -------------------------------------------------------------------
    def add_footage(
        self,
        *,
        owner_org: str,
        name: str,
        media: str,
        path: str,
        sha256: str,
        size_bytes: int,
        added_by: str,
        recorded_at: float | None = None,
        place: str | None = None,
    ) -> Footage:
        footage = Footage(
            "ftg-" + uuid.uuid4().hex[:16], owner_org, name, media, path, sha256, int(size_bytes),
            recorded_at, place, added_by, self.clock(),
        )  # fmt: skip
        with self.db.transaction() as tx:
            tx.execute(
                f"INSERT INTO footage ({_FOOTAGE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (footage.footage_id, footage.owner_org, footage.name, footage.media, footage.path,
                 footage.sha256, footage.size_bytes, footage.recorded_at, footage.place, footage.added_by,
                 footage.added_at),
            )  # fmt: skip
        return footage

    def set_footage_path(self, footage_id: str, path: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE footage SET path = ? WHERE footage_id = ?", (path, footage_id))

    def footage(self, owner_org: str, limit: int = 1000) -> list[Footage]:
        with self.db.read() as tx:
            rows = tx.all(
                f"SELECT {_FOOTAGE} FROM footage WHERE owner_org = ? ORDER BY added_at DESC, footage_id LIMIT ?",
                (owner_org, limit),
            )
        return [Footage(*r) for r in rows]

    def owned_footage(self, tx: Tx, owner_org: str, footage_id: str) -> Footage:
        """The owner's footage file, or ResourceNotFound (also for another organisation's file, whose
        existence is not disclosed)."""
        row = tx.one(f"SELECT {_FOOTAGE} FROM footage WHERE footage_id = ?", (footage_id,))
        if row is None or row[1] != owner_org:
            raise ResourceNotFound(
                f"Footage {footage_id!r} is not in your organisation's footage library: an owner releases "
                "only its own files (`facewarden release footage list`)."
            )
        return Footage(*row)

    # ---- requests --------------------------------------------------------------------------------
    def create(
        self,
        *,
        requester_org: str,
        requester_sector: str | None,
        requester_key: str,
        owner_org: str,
        time_from: float,
        time_to: float,
        place: str,
        reason: str,
        legal_basis: str,
        reference: str | None,
    ) -> Request:
        if time_to <= time_from:
            raise InvalidInput(
                "The requested time range must end after it starts (TimeRange.From < TimeRange.To)."
            )
        if requester_org == owner_org:
            raise InvalidInput(
                "An organisation cannot request footage from itself; it already holds its footage."
            )
        request_id = "rel-" + uuid.uuid4().hex[:16]
        now = self.clock()
        with self.db.transaction() as tx:
            tx.execute(
                f"INSERT INTO release_requests ({_REQUEST}) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, ?)",
                (request_id, requester_org, requester_sector, requester_key, owner_org, float(time_from),
                 float(time_to), place, reason, legal_basis, reference, PENDING, now),
            )  # fmt: skip
            return self._get(tx, request_id)

    def get(self, request_id: str, org: str) -> Request:
        """The request, seen by its requester or its owner (anyone else: not found); a release past
        its expiry is expired first."""
        with self.db.transaction() as tx:
            self._expire(tx)
            return self._visible(tx, request_id, org)

    def requests(
        self, org: str, role: str = "any", status: str | None = None, limit: int = 100
    ) -> list[Request]:
        """Requests the organisation made (``requester``), received (``owner``) or both, newest first."""
        if role not in ("any", "requester", "owner"):
            raise InvalidInput(f"Role must be requester, owner or any, not {role!r}.")
        where = {
            "any": "(requester_org = ? OR owner_org = ?)",
            "requester": "requester_org = ?",
            "owner": "owner_org = ?",
        }[role]
        params: list[Any] = [org, org] if role == "any" else [org]
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        with self.db.transaction() as tx:
            self._expire(tx)
            rows = tx.all(
                f"SELECT {_REQUEST} FROM release_requests WHERE {where} ORDER BY created_at DESC, request_id LIMIT ?",
                (*params, limit),
            )
            return [self._with_items(tx, Request(*r)) for r in rows]

    def decline(self, request_id: str, owner_org: str, key_id: str, reason: str) -> Request:
        with self.db.transaction(lock=f"release:{request_id}") as tx:
            req = self._as_owner(tx, request_id, owner_org)
            self._require(req, PENDING, "declined")
            tx.execute(
                "UPDATE release_requests SET status = ?, decision_reason = ?, decided_by = ?, decided_at = ?"
                " WHERE request_id = ?",
                (DECLINED, reason, key_id, self.clock(), request_id),
            )
            return self._get(tx, request_id)

    def release(
        self,
        request_id: str,
        owner_org: str,
        key_id: str,
        footage_ids: list[str],
        *,
        expires_in_days: float = DEFAULT_EXPIRY_DAYS,
        keep_collection: str | None = None,
        reason: str | None = None,
    ) -> tuple[Request, list[tuple[Item, Footage]]]:
        """Release the chosen files of the owner's library: the request becomes RELEASED and each
        file an item PREPARING its redacted copy. Returns the request and (item, footage) pairs."""
        if not footage_ids:
            raise InvalidInput("Choose at least one file of your footage library to release (FootageIds).")
        if len(set(footage_ids)) != len(footage_ids):
            raise InvalidInput("FootageIds lists a file twice.")
        if not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"ExpiresInDays must be above 0 and at most {MAX_EXPIRY_DAYS}.")
        now = self.clock()
        with self.db.transaction(lock=f"release:{request_id}") as tx:
            req = self._as_owner(tx, request_id, owner_org)
            self._require(req, PENDING, "released")
            chosen = [self.owned_footage(tx, owner_org, f) for f in footage_ids]
            tx.execute(
                "UPDATE release_requests SET status = ?, decision_reason = ?, decided_by = ?, decided_at = ?,"
                " keep_collection = ?, expires_at = ? WHERE request_id = ?",
                (RELEASED, reason, key_id, now, keep_collection, now + expires_in_days * 86400.0, request_id),
            )
            pairs = []
            for f in chosen:
                item_id = "itm-" + uuid.uuid4().hex[:16]
                tx.execute(
                    f"INSERT INTO release_items ({_ITEM}) VALUES"
                    " (?, ?, ?, ?, ?, ?, NULL, NULL, 0, 0, 0, NULL, NULL, NULL)",
                    (item_id, request_id, f.footage_id, f.name, f.media, PREPARING),
                )
                pairs.append((self._item(tx, item_id), f))
            return self._get(tx, request_id), pairs

    # ---- items -------------------------------------------------------------------------------------
    def set_item(self, item_id: str, **values: Any) -> Item:
        """Record an item's progress (its job, its copy, its counts, READY or FAILED)."""
        allowed = {"status", "copy_path", "job_id", "faces_found", "faces_hidden", "faces_kept", "message"}
        if not values or set(values) - allowed:
            raise ValueError(f"cannot set {sorted(set(values) - allowed)} on a release item")
        with self.db.transaction() as tx:
            sets = ", ".join(f"{k} = ?" for k in values)
            tx.execute(
                f"UPDATE release_items SET {sets} WHERE item_id = ? AND status = ?",
                (*values.values(), item_id, PREPARING),
            )
            return self._item(tx, item_id)

    def take(self, request_id: str, item_id: str, requester_org: str, key_id: str) -> Item:
        """Hand an item over, once: it must be READY in a RELEASED request of the requester's that
        has not expired. Marks it DOWNLOADED and returns it (its copy is the caller's to send and
        then delete with :meth:`forget_copy`)."""
        with self.db.transaction(lock=f"release:{request_id}") as tx:
            self._expire(tx)
            req = self._visible(tx, request_id, requester_org)
            if req.requester_org != requester_org:
                raise ResourceNotFound(
                    f"No release request {request_id!r} of your organisation: only the requester downloads "
                    "a release (the owner keeps the originals)."
                )
            if req.status == PENDING:
                raise ReleaseStateError(
                    f"Release request {request_id} has not been approved yet: the owner has not released "
                    "any footage. Wait for the decision."
                )
            if req.status == DECLINED:
                raise ReleaseStateError(
                    f"Release request {request_id} was declined by the owner; nothing was released."
                )
            if req.status == EXPIRED:
                raise ReleaseStateError(
                    f"Release request {request_id} expired at {_iso(req.expires_at)}; its copies were deleted. "
                    "Ask the owner for a new release."
                )
            item = next((i for i in req.items if i.item_id == item_id), None)
            if item is None:
                raise ResourceNotFound(f"Release request {request_id} has no item {item_id!r}.")
            if item.status == DOWNLOADED:
                raise ReleaseStateError(
                    f"Item {item_id} was already downloaded at {_iso(item.downloaded_at)}: a released copy is "
                    "handed over once and then deleted. Ask the owner to release it again if it was lost."
                )
            if item.status == PREPARING:
                raise ReleaseStateError(f"Item {item_id} is still being redacted; try again shortly.")
            if item.status != READY:
                raise ReleaseStateError(
                    f"Item {item_id} cannot be downloaded: it is {item.status} ({item.message})."
                )
            tx.execute(
                "UPDATE release_items SET status = ?, downloaded_by = ?, downloaded_at = ? WHERE item_id = ?",
                (DOWNLOADED, key_id, self.clock(), item_id),
            )
            return item

    def forget_copy(self, item_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE release_items SET copy_path = NULL WHERE item_id = ?", (item_id,))

    def expired_copies(self) -> list[str]:
        """Expire every release past its date; returns the copies (paths) left of expired releases,
        now forgotten, for the caller to delete."""
        with self.db.transaction() as tx:
            self._expire(tx)
            rows = tx.all(
                "SELECT i.item_id, i.copy_path FROM release_items i JOIN release_requests r"
                " ON r.request_id = i.request_id WHERE r.status = ? AND i.copy_path IS NOT NULL",
                (EXPIRED,),
            )
            for item_id, _ in rows:
                tx.execute("UPDATE release_items SET copy_path = NULL WHERE item_id = ?", (item_id,))
            return [path for _, path in rows]

    # ---- the transparency report ----------------------------------------------------------------------
    def report(self, since: float | None = None) -> dict[str, Any]:
        """Requests by the requester's sector and by outcome, items released and downloaded, faces
        hidden and kept in released copies (requests made from ``since`` on)."""
        where, params = ("WHERE created_at >= ?", (since,)) if since is not None else ("", ())
        with self.db.read() as tx:
            by_sector = tx.all(
                f"SELECT COALESCE(requester_sector, '(none)'), status, COUNT(*) FROM release_requests {where}"
                " GROUP BY requester_sector, status",
                params,
            )
            items = tx.all(
                "SELECT i.status, COUNT(*), COALESCE(SUM(i.faces_hidden), 0), COALESCE(SUM(i.faces_kept), 0)"
                " FROM release_items i JOIN release_requests r ON r.request_id = i.request_id"
                f" {where.replace('created_at', 'r.created_at')} GROUP BY i.status",
                params,
            )
        sectors: dict[str, dict[str, int]] = {}
        outcomes: dict[str, int] = {}
        for sector, status, n in by_sector:
            sectors.setdefault(sector, {})[status] = sectors.get(sector, {}).get(status, 0) + int(n)
            outcomes[status] = outcomes.get(status, 0) + int(n)
        return {
            "Requests": sum(outcomes.values()),
            "RequestsByRequesterSector": {k: dict(sorted(v.items())) for k, v in sorted(sectors.items())},
            "Decisions": {
                "Pending": outcomes.get(PENDING, 0),
                "Declined": outcomes.get(DECLINED, 0),
                "Released": outcomes.get(RELEASED, 0) + outcomes.get(EXPIRED, 0),
            },
            "ItemsReleased": sum(int(n) for _, n, _, _ in items),
            "ItemsDownloaded": sum(int(n) for s, n, _, _ in items if s == DOWNLOADED),
            "FacesRedacted": sum(int(h) for _, _, h, _ in items),
            "FacesKeptVisible": sum(int(k) for _, _, _, k in items),
        }

    # ---- internals -------------------------------------------------------------------------------------
    def _expire(self, tx: Tx) -> None:
        """Every RELEASED request past its expiry becomes EXPIRED, its undelivered items too."""
        now = self.clock()
        for (rid,) in tx.all(
            "SELECT request_id FROM release_requests WHERE status = ? AND expires_at <= ?", (RELEASED, now)
        ):
            tx.execute(
                "UPDATE release_items SET status = ? WHERE request_id = ? AND status IN (?, ?)",
                (EXPIRED, rid, READY, PREPARING),
            )
            tx.execute("UPDATE release_requests SET status = ? WHERE request_id = ?", (EXPIRED, rid))

    def _get(self, tx: Tx, request_id: str) -> Request:
        row = tx.one(f"SELECT {_REQUEST} FROM release_requests WHERE request_id = ?", (request_id,))
        if row is None:
            raise ResourceNotFound(f"No release request {request_id!r}.")
        return self._with_items(tx, Request(*row))

    def _with_items(self, tx: Tx, req: Request) -> Request:
        rows = tx.all(
            f"SELECT {_ITEM} FROM release_items WHERE request_id = ? ORDER BY name, item_id",
            (req.request_id,),
        )
        req.items.extend(Item(*r) for r in rows)
        return req

    def _item(self, tx: Tx, item_id: str) -> Item:
        row = tx.one(f"SELECT {_ITEM} FROM release_items WHERE item_id = ?", (item_id,))
        if row is None:
            raise ResourceNotFound(f"No release item {item_id!r}.")
        return Item(*row)

    def _visible(self, tx: Tx, request_id: str, org: str) -> Request:
        req = self._get(tx, request_id) if isinstance(request_id, str) else None
        if req is None or org not in (req.requester_org, req.owner_org):
            raise ResourceNotFound(
                f"No release request {request_id!r} between your organisation and another."
            )
        return req

    def _as_owner(self, tx: Tx, request_id: str, owner_org: str) -> Request:
        self._expire(tx)
        req = self._visible(tx, request_id, owner_org)
        if req.owner_org != owner_org:
            raise ResourceNotFound(
                f"Release request {request_id} was made by your organisation, not to it: only the footage's "
                "owner decides it."
            )
        return req

    @staticmethod
    def _require(req: Request, status: str, verb: str) -> None:
        if req.status != status:
            raise ReleaseStateError(
                f"Release request {req.request_id} is {req.status}, so it cannot be {verb}: a request is decided once."
            )


def _iso(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else "?"

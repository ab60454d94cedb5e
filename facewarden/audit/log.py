"""The audit log: append-only, hash-chained, signed; one record per decision.

Each record is a flat JSON object (who, what, which collection, the decision and its rule, counts,
matched face ids, the applied threshold, the policy hash), never an image or a template; data
subjects appear only as keyed pseudonyms (:meth:`AuditLog.subject_ref`), so a subject can be
erased while the log stays append-only.

Integrity, from the inside out:

* every field of a record has a SHA-256 digest; the record's hash is
  ``SHA-256(previous hash + canonical JSON of the field digests)``, so the chain links every record
  to all before it, and an edit names the field it touched;
* every record hash is signed with the installation's Ed25519 key (``data_dir/keys``, outside the
  database), so a record appended by someone with write access to the database but not the key
  is caught even at the tail;
* a signed checkpoint (sequence number + hash) is written every ``checkpoint_every`` records and at
  shutdown, in the database and in ``data_dir/audit.head``; a log shorter than its checkpoint was
  truncated.

Appends are serialised across processes by one transaction under the lock "audit", so several
service processes keep one linear chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..db import Database, Migration, Tx, json_text, lock_key
from ..errors import InvalidInput, StorageError
from ..keyfiles import keys_dir, load_or_create
from .keys import ROTATED, SigningKeys, fingerprint, load_public, public_pem

log = logging.getLogger("facewarden.audit")

GENESIS = "0" * 64
#: The proleptic ordinal of 1970-01-01 (days since the epoch + this = a date).
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()

#: The fields of a record, in the order they are documented.
FIELDS = (
    "seq",
    "time",
    "org",
    "sector",
    "key",
    "purpose",
    "operation",
    "collection",
    "decision",
    "rule",
    "reason",
    "counts",
    "matched_face_ids",
    "applied_threshold",
    "subjects",
    "details",
    "policy_hash",
)
#: Columns duplicated from the record for queries (the transparency report counts them in the
#: database, the export filters on them through their indexes); verify checks they agree with the
#: signed record.
COLUMNS = (
    "operation",
    "decision",
    "org",
    "purpose",
    "sector",
    "rule",
    "faces_erased",
    "key_id",
    "collection",
    "console_read",
)
#: The values of ``decision``.
DECISIONS = ("allowed", "denied", "failed", "recorded")


def columns_of(record: dict[str, Any]) -> dict[str, Any]:
    """The values of :data:`COLUMNS` for a record."""
    return {
        "operation": record.get("operation") or "",
        "decision": record.get("decision") or "",
        "org": record.get("org"),
        **{k: record.get(k) or None for k in ("purpose", "sector", "rule")},
        "faces_erased": int((record.get("counts") or {}).get("faces_erased") or 0),
        "key_id": record.get("key") or None,
        "collection": record.get("collection") or None,
        "console_read": 1 if (record.get("details") or {}).get("console_read") is True else 0,
    }


def is_console_read(record: dict[str, Any]) -> bool:
    """A read the web console made for its own display (a listing, the log, the report), allowed:
    hidden by default where a person reads the log (see :class:`AuditFilter`)."""
    return bool(columns_of(record)["console_read"]) and record.get("decision") == "allowed"


@dataclass(frozen=True)
class AuditFilter:
    """Which records an export returns; every condition is a column of the log (indexed where it
    narrows: key, collection, organisation, decision, time, subject), so a filtered page of a log of
    millions is read without scanning it."""

    since: float | None = None
    until: float | None = None
    decision: str | None = None
    rule: str | None = None
    operation: str | None = None
    org: str | None = None
    key: str | None = None
    collection: str | None = None
    #: A subject's pseudonym (:meth:`AuditLog.subject_ref`).
    subject_ref: str | None = None
    #: Leave out the console's own allowed reads (:func:`is_console_read`).
    hide_console_reads: bool = False

    def where(self) -> tuple[str, tuple[Any, ...]]:
        """``(SQL conditions on the alias a, each followed by AND; their parameters)``."""
        sql, params = [], []
        for column, op, value in (
            ("ts", ">=", self.since),
            ("ts", "<", self.until),
            ("decision", "=", self.decision),
            ("rule", "=", self.rule),
            ("operation", "=", self.operation),
            ("org", "=", self.org),
            ("key_id", "=", self.key),
            ("collection", "=", self.collection),
        ):
            if value is not None:
                sql.append(f"a.{column} {op} ? AND ")
                params.append(value)
        if self.hide_console_reads:
            sql.append("(a.console_read = 0 OR a.decision <> 'allowed') AND ")
        return "".join(sql), tuple(params)

    def matches(self, record: dict[str, Any], ts: float) -> bool:
        """The same conditions, on one record in Python (for tests and checks)."""
        cols = columns_of(record)
        return (
            (self.since is None or ts >= self.since)
            and (self.until is None or ts < self.until)
            and all(
                want is None or cols[c] == want
                for c, want in (
                    ("decision", self.decision),
                    ("rule", self.rule),
                    ("operation", self.operation),
                    ("org", self.org),
                    ("key_id", self.key),
                    ("collection", self.collection),
                )
            )  # fmt: skip
            and (self.subject_ref is None or self.subject_ref in _refs(record))
            and not (self.hide_console_reads and is_console_read(record))
        )


def _report_columns(dialect: str) -> str:
    def field(*path: str) -> str:
        return json_text(dialect, "record", *path)

    return f"""
    ALTER TABLE audit_log ADD COLUMN purpose TEXT;
    ALTER TABLE audit_log ADD COLUMN sector TEXT;
    ALTER TABLE audit_log ADD COLUMN rule TEXT;
    ALTER TABLE audit_log ADD COLUMN faces_erased BIGINT NOT NULL DEFAULT 0;
    UPDATE audit_log SET purpose = NULLIF({field("purpose")}, ''),
        sector = NULLIF({field("sector")}, ''),
        rule = NULLIF({field("rule")}, ''),
        faces_erased = COALESCE(CAST({field("counts", "faces_erased")} AS BIGINT), 0);
    CREATE INDEX audit_log_report ON audit_log (operation, decision, purpose, sector, rule, faces_erased, ts)
    """


MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        operation TEXT NOT NULL,
        decision TEXT NOT NULL,
        org TEXT,
        record TEXT NOT NULL,
        digests TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        sig TEXT NOT NULL
    );
    CREATE INDEX audit_log_operation ON audit_log(operation, seq);
    CREATE TABLE audit_checkpoints (
        seq BIGINT PRIMARY KEY,
        hash TEXT NOT NULL,
        time TEXT NOT NULL,
        sig TEXT NOT NULL
    )
    """,
    # The report's columns, backfilled from the records.
    {dialect: _report_columns(dialect) for dialect in ("sqlite", "postgresql")},
    # Which records name which data subject (by pseudonym): a subject's records without reading the log.
    # (Not one text: the dialects expand a JSON array in different clauses.)
    {
        "sqlite": """
        CREATE TABLE audit_subjects (ref TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (ref, seq));
        INSERT OR IGNORE INTO audit_subjects (ref, seq)
            SELECT j.value, a.seq FROM audit_log a, json_each(a.record, '$.subjects') j
        """,
        "postgresql": """
        CREATE TABLE audit_subjects (ref TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (ref, seq));
        INSERT INTO audit_subjects (ref, seq)
            SELECT DISTINCT jsonb_array_elements_text((record::jsonb) -> 'subjects'), seq FROM audit_log
        """,
    },
    # The export's filters: key, collection and the console's own reads as columns; indexes for
    # the filters that narrow (the operation's index exists; decision and rule are narrow on denials);
    # the report's index, wider by the organisation and the console's reads, still covers everything
    # the report counts (its totals and its per-day series are read from the index alone).
    {
        dialect: f"""
        ALTER TABLE audit_log ADD COLUMN key_id TEXT;
        ALTER TABLE audit_log ADD COLUMN collection TEXT;
        ALTER TABLE audit_log ADD COLUMN console_read INTEGER NOT NULL DEFAULT 0;
        UPDATE audit_log SET key_id = NULLIF({json_text(dialect, "record", "key")}, ''),
            collection = NULLIF({json_text(dialect, "record", "collection")}, '');
        CREATE INDEX audit_log_key ON audit_log (key_id, seq);
        CREATE INDEX audit_log_collection ON audit_log (collection, seq);
        CREATE INDEX audit_log_org ON audit_log (org, seq);
        CREATE INDEX audit_log_decision ON audit_log (decision, seq);
        CREATE INDEX audit_log_ts ON audit_log (ts);
        DROP INDEX audit_log_report;
        CREATE INDEX audit_log_counts ON audit_log
            (operation, decision, org, purpose, sector, rule, console_read, faces_erased, ts)
        """
        for dialect in ("sqlite", "postgresql")
    },
]


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digests_of(record: dict[str, Any]) -> dict[str, str]:
    return {k: hashlib.sha256(canonical(v).encode()).hexdigest() for k, v in record.items()}


def _refs(record: dict[str, Any]) -> set[str]:
    return {str(r) for r in record.get("subjects") or []}


def _pair_digest(ref: str, seq: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{ref}\n{seq}".encode()).digest()[:16], "big")


def chain_hash(prev_hash: str, digests_text: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{digests_text}".encode()).hexdigest()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checkpoint_message(seq: int, hash_: str, time_: str) -> bytes:
    return f"facewarden-audit-checkpoint\n{seq}\n{hash_}\n{time_}".encode()


def _record_message(hash_: str) -> bytes:
    return f"facewarden-audit-record\n{hash_}".encode()


def _signed(key: Ed25519PublicKey, sig_hex: str, message: bytes) -> bool:
    try:
        key.verify(bytes.fromhex(sig_hex), message)
        return True
    except (InvalidSignature, ValueError):
        return False


@dataclass(frozen=True)
class Appended:
    """A record as appended, with its place in the chain: what a listener of the log is told."""

    record: dict[str, Any]
    prev_hash: str
    hash: str
    sig: str

    def line(self) -> str:
        """The record as one line of :meth:`AuditLog.export` (record, chain hash, signature)."""
        return canonical(
            {"record": self.record, "prev_hash": self.prev_hash, "hash": self.hash, "sig": self.sig}
        )


#: Called with every record appended (after its transaction commits when the log runs its own;
#: inside the caller's when ``append`` is given one). Listeners must be quick and must not raise.
Listener = Callable[[Appended], None]


@dataclass
class VerifyResult:
    ok: bool
    records: int = 0
    checkpoints: int = 0
    #: The first sequence number that is wrong (missing, edited, out of place, forged, cut off).
    first_bad_seq: int | None = None
    #: edited | deleted | inserted | reordered | forged | truncated | checkpoint
    kind: str | None = None
    problem: str = ""
    fields: list[str] = field(default_factory=list)
    last_checkpoint: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "Ok": self.ok,
            "Records": self.records,
            "Checkpoints": self.checkpoints,
            "LastCheckpoint": self.last_checkpoint,
            "FirstBadSequence": self.first_bad_seq,
            "Kind": self.kind,
            "Problem": self.problem,
            "Fields": self.fields,
        }


class AuditLog:
    #: Records read per query when scanning the log.
    scan_batch = 1000

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        clock: Callable[[], float],
        *,
        checkpoint_every: int = 100,
    ) -> None:
        self.db = db
        self.clock = clock
        self.checkpoint_every = max(1, int(checkpoint_every))
        kdir = keys_dir(data_dir)
        #: The signing key and the public keys it replaced (:mod:`facewarden.audit.keys`).
        self.keys = SigningKeys(kdir)
        self._rotation_seen = 0  # the seq of the last key-rotation record this process followed
        self._pseudonym_key = load_or_create(kdir / "audit_pseudonym.key", lambda: os.urandom(32))
        self.head_path = Path(data_dir) / "audit.head"
        #: Told of every append (metrics, the erasure journal); see :data:`Listener`.
        self.listeners: list[Listener] = []
        db.migrate("audit", MIGRATIONS)
        with db.read() as tx:
            self._follow_rotation(tx)

    @property
    def _key(self) -> Ed25519PrivateKey:
        return self.keys.private

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The active signing key's public key."""
        return self.keys.public_key

    @property
    def installation_id(self) -> str:
        """The fingerprint of the installation's first audit signing key: what names it in backups."""
        return self.keys.installation_id()

    def _follow_rotation(self, tx: Tx) -> None:
        """Sign with the key the log's last rotation record handed over to (finishing a rotation a
        killed process committed, or catching up with one another process made)."""
        row = tx.one(
            "SELECT seq, record FROM audit_log WHERE operation = ? AND seq > ? ORDER BY seq DESC LIMIT 1",
            (ROTATED, self._rotation_seen),
        )
        if row is None:
            return
        new_public = (json.loads(row[1]).get("details") or {}).get("new_public_key")
        if isinstance(new_public, str):
            self.keys.adopt(new_public)
        self._rotation_seen = int(row[0])

    def rotate_signing_key(
        self, entry: dict[str, Any], hook: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Hand signing over to a new key (see :mod:`facewarden.audit.keys`). ``entry`` is the rotation
        record (operation AuditKeyRotated); the retired and new public keys are added to its details.
        ``hook(point)`` is called at "prepared", "appended" (inside the transaction) and "committed"."""
        step = hook or (lambda point: None)
        new = self.keys.prepare()
        step("prepared")
        with self.db.transaction(lock="audit") as tx:
            self._lock(tx)
            self._follow_rotation(tx)
            retired = self.keys.public_pem
            new_public = public_pem(new)
            details = dict(entry.get("details") or {})
            details.update(
                retired_public_key=retired,
                retired_fingerprint=fingerprint(retired),
                new_public_key=new_public,
                new_fingerprint=fingerprint(new_public),
            )
            appended, _ = self._append_tx(tx, {**entry, "operation": ROTATED, "details": details})
            cp = self._checkpoint_tx(tx, int(appended.record["seq"]), appended.hash)
            step("appended")
        step("committed")
        self._write_head(cp)
        self.keys.adopt(new_public)
        self._rotation_seen = int(appended.record["seq"])
        for listener in self.listeners:
            try:
                listener(appended)
            except Exception:  # noqa: BLE001
                log.exception("audit listener failed")
        return appended.record

    # ---- writing -----------------------------------------------------------------------------
    def subject_ref(self, subject: str) -> str:
        """A keyed pseudonym of a data subject (ExternalImageId / UserId): the log never holds the id."""
        mac = hmac.new(self._pseudonym_key, f"subject\n{subject}".encode(), hashlib.sha256)
        return "subj-" + mac.hexdigest()[:32]

    def append(self, entry: dict[str, Any], tx: Tx | None = None) -> dict[str, Any]:
        """Append one record (fields as in FIELDS, ``seq`` and ``time`` are set here); returns it.

        With ``tx``, the record is written inside the caller's transaction (so that, e.g., an
        erasure and the record that says so commit together).
        """
        if tx is not None:
            appended, cp = self._append_tx(tx, entry)
        else:
            with self.db.transaction(lock="audit") as own:
                appended, cp = self._append_tx(own, entry)
        if cp is not None:
            self._write_head(cp)
        for listener in self.listeners:
            try:
                listener(appended)
            except Exception:  # noqa: BLE001 - a listener never fails an append
                log.exception("audit listener failed")
        return appended.record

    def _lock(self, tx: Tx) -> None:
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (lock_key("audit"),))

    def _append_tx(self, tx: Tx, entry: dict[str, Any]) -> tuple[Appended, dict[str, Any] | None]:
        self._lock(tx)
        self._follow_rotation(tx)
        last = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
        now = self.clock()
        record = {f: None for f in FIELDS}
        record.update({k: v for k, v in entry.items() if k in FIELDS})
        unknown = set(entry) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown audit fields: {sorted(unknown)}")
        record["seq"] = seq
        record["time"] = iso(now)
        for k in ("counts", "details"):
            record[k] = record[k] or {}
        for k in ("matched_face_ids", "subjects"):
            record[k] = list(record[k] or [])
        record_text = canonical(record)
        record = json.loads(record_text)  # exactly what is stored (e.g. tuples -> lists)
        digests_text = canonical(digests_of(record))
        h = chain_hash(prev, digests_text)
        sig = self._key.sign(_record_message(h)).hex()
        cols = columns_of(record)
        tx.execute(
            f"INSERT INTO audit_log (seq, ts, record, digests, prev_hash, hash, sig, {', '.join(COLUMNS)})"
            f" VALUES (?, ?, ?, ?, ?, ?, ?{', ?' * len(COLUMNS)})",
            (seq, now, record_text, digests_text, prev, h, sig, *(cols[c] for c in COLUMNS)),
        )
        tx.executemany(
            "INSERT INTO audit_subjects (ref, seq) VALUES (?, ?)", [(r, seq) for r in _refs(record)]
        )
        cp = self._checkpoint_tx(tx, seq, h) if seq % self.checkpoint_every == 0 else None
        return Appended(record, prev, h, sig), cp

    def _checkpoint_tx(self, tx: Tx, seq: int, h: str) -> dict[str, Any]:
        t = iso(self.clock())
        sig = self._key.sign(_checkpoint_message(seq, h, t)).hex()
        if tx.one("SELECT 1 FROM audit_checkpoints WHERE seq = ?", (seq,)) is None:
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, hash, time, sig) VALUES (?, ?, ?, ?)", (seq, h, t, sig)
            )
        return {"seq": seq, "hash": h, "time": t, "sig": sig}

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current end of the log (called every N records and at shutdown)."""
        with self.db.transaction(lock="audit") as tx:
            self._lock(tx)
            last = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            if last is None:
                return None
            cp = self._checkpoint_tx(tx, int(last[0]), str(last[1]))
        self._write_head(cp)
        return cp

    def _write_head(self, cp: dict[str, Any]) -> None:
        current = self._read_head()
        if current is not None and int(current.get("seq", 0)) >= cp["seq"]:
            return
        tmp = self.head_path.with_name(f".audit.head.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cp) + "\n")
        os.replace(tmp, self.head_path)

    def _read_head(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.head_path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    # ---- reading -----------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        """The sequence number and hash of the last record ((0, GENESIS) for an empty log); raises
        StorageError if the signed head file (``audit.head``) exists but cannot be read."""
        if self.head_path.exists() and self._read_head() is None:
            raise StorageError(f"{self.head_path} cannot be read: restore it from backup or remove it.")
        with self.db.read() as tx:
            last = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(last[0]), str(last[1])) if last else (0, GENESIS)

    def hash_at(self, seq: int) -> str | None:
        """The chain hash of record ``seq`` (None if there is none)."""
        with self.db.read() as tx:
            h = tx.scalar("SELECT hash FROM audit_log WHERE seq = ?", (int(seq),))
        return None if h is None else str(h)

    def verify_line(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The record of one exported line (``{"record", "prev_hash", "hash", "sig"}``) after checking
        that its hash covers its fields and that one of this installation's audit keys signed it;
        InvalidInput otherwise. (The chain between lines is not checked: a journal holds some.)"""
        record = entry.get("record")
        try:
            assert isinstance(record, dict)
            h = chain_hash(str(entry["prev_hash"]), canonical(digests_of(record)))
            assert h == entry["hash"]
            sig = bytes.fromhex(str(entry["sig"]))
        except (AssertionError, KeyError, ValueError, TypeError):
            raise InvalidInput("An audit line's hash does not match its record: it was edited.") from None
        for pem in self.keys.history():
            try:
                load_public(pem).verify(sig, _record_message(h))
                return record
            except InvalidSignature:
                continue
        raise InvalidInput(
            f"Audit record {record.get('seq')} is not signed by this installation's audit keys."
        )

    def last_record(self, operation: str | None = None) -> dict[str, Any] | None:
        with self.db.read() as tx:
            if operation:
                text = tx.scalar(
                    "SELECT record FROM audit_log WHERE operation = ? ORDER BY seq DESC LIMIT 1", (operation,)
                )
            else:
                text = tx.scalar("SELECT record FROM audit_log ORDER BY seq DESC LIMIT 1")
        return json.loads(text) if text else None

    def count(self) -> int:
        with self.db.read() as tx:
            return int(tx.scalar("SELECT COUNT(*) FROM audit_log") or 0)

    def _scan(
        self,
        columns: str,
        *,
        after: int = 0,
        before: int | None = None,
        ref: str | None = None,
        where: tuple[str, tuple[Any, ...]] = ("", ()),
    ) -> Iterator[tuple[Any, ...]]:
        """``(seq, *columns)`` rows in sequence order, a batch per read: the log may hold millions,
        and neither verification nor export may need it all in memory. With ``before``, newest
        first; with ``ref``, only the records naming that subject pseudonym; ``where``: more
        conditions on the alias ``a`` (:meth:`AuditFilter.where`)."""
        cursor = before
        conditions, params = where
        source = "audit_log a WHERE"
        if ref is not None:
            source, params = (
                "audit_subjects s JOIN audit_log a ON a.seq = s.seq WHERE s.ref = ? AND",
                (ref, *params),
            )
        source = f"{source} {conditions}"
        while True:
            with self.db.read() as tx:
                if before is None:
                    rows = tx.all(
                        f"SELECT a.seq, {columns} FROM {source} a.seq > ? ORDER BY a.seq LIMIT ?",
                        (*params, after, self.scan_batch),
                    )
                else:
                    rows = tx.all(
                        f"SELECT a.seq, {columns} FROM {source} a.seq < ? ORDER BY a.seq DESC LIMIT ?",
                        (*params, cursor, self.scan_batch),
                    )
            if not rows:
                return
            yield from rows
            after = cursor = int(rows[-1][0])

    def records(
        self, *, since: float | None = None, after_seq: int = 0, subject: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Records in sequence order (optionally from a time on, or naming one data subject)."""
        ref = self.subject_ref(subject) if subject is not None else None
        for _, text, ts in self._scan("record, ts", after=after_seq, ref=ref):
            if since is None or ts >= since:
                yield json.loads(text)

    def export(
        self,
        *,
        since: float | None = None,
        subject: str | None = None,
        after: int = 0,
        before: int | None = None,
        where: AuditFilter | None = None,
    ) -> Iterator[tuple[int, str]]:
        """``(seq, line)``: the log as JSON lines, each the record plus its chain hash and signature,
        oldest first after ``after``, or newest first below ``before``; only the records ``where``
        selects (``since`` and ``subject`` are shorthands for its ``since`` and ``subject_ref``)."""
        f = where or AuditFilter()
        if since is not None:
            f = dataclasses.replace(f, since=since if f.since is None else max(f.since, since))
        if subject is not None:
            f = dataclasses.replace(f, subject_ref=self.subject_ref(subject))
        for seq, text, prev, h, sig in self._scan(
            "a.record, a.prev_hash, a.hash, a.sig", after=after, before=before, ref=f.subject_ref,
            where=f.where(),
        ):  # fmt: skip
            record = json.loads(text)
            yield int(seq), canonical({"record": record, "prev_hash": prev, "hash": h, "sig": sig})

    def tally(self, since: float | None = None) -> list[tuple[str, str, str, str, str, str, bool, int, int]]:
        """``(operation, decision, organisation, purpose, sector, rule, console read, records, faces
        erased)`` for every distinct combination, counted by the database from the record's columns
        (no record parsed)."""
        where = " WHERE ts >= ?" if since is not None else ""
        rows = self._all(
            "SELECT operation, decision, org, purpose, sector, rule, console_read, COUNT(*), SUM(faces_erased)"
            f" FROM audit_log{where} GROUP BY operation, decision, org, purpose, sector, rule, console_read",
            () if since is None else (since,),
        )
        return [
            (op, dec or "", o or "", p or "", s or "", r or "", bool(c), int(n), int(e or 0))
            for op, dec, o, p, s, r, c, n, e in rows
        ]

    def daily(
        self, since: float | None = None, *, leave_out: tuple[str, ...] = ()
    ) -> list[tuple[str, str, str, int]]:
        """``(day, decision, rule of a denial or "", records)`` per UTC day (ISO date), counted by the
        database; bookkeeping (the operations in ``leave_out`` and every record whose decision is
        ``recorded``) and the console's own allowed reads are not counted."""
        day = (
            "CAST(FLOOR(ts / 86400) AS BIGINT)"
            if self.db.dialect == "postgresql"
            else "CAST(ts / 86400 AS INTEGER)"
        )
        conditions = ["NOT (console_read = 1 AND decision = 'allowed')", "decision <> 'recorded'"]
        params: list[Any] = []
        if leave_out:
            conditions.append(f"operation NOT IN ({', '.join('?' * len(leave_out))})")
            params.extend(leave_out)
        if since is not None:
            conditions.append("ts >= ?")
            params.append(since)
        rows = self._all(
            f"SELECT {day}, decision, CASE WHEN decision = 'denied' THEN rule END, COUNT(*) FROM audit_log"
            f" WHERE {' AND '.join(conditions)} GROUP BY 1, 2, 3 ORDER BY 1",
            tuple(params),
        )
        return [
            (dt.date.fromordinal(_EPOCH_ORDINAL + int(d)).isoformat(), dec or "", r or "", int(n))
            for d, dec, r, n in rows
        ]

    def span(self, since: float | None = None) -> tuple[str | None, str | None]:
        """The times of the first and the last record (from ``since`` on)."""
        where = " WHERE ts >= ?" if since is not None else ""
        params = () if since is None else (since,)
        ends = []
        for order in ("ASC", "DESC"):
            row = self._all(f"SELECT record FROM audit_log{where} ORDER BY seq {order} LIMIT 1", params)
            ends.append(json.loads(row[0][0]).get("time") if row else None)
        return ends[0], ends[1]

    def records_of(self, operation: str, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The records of one operation, in order (through the operation index)."""
        where = " AND ts >= ?" if since is not None else ""
        params = (operation,) if since is None else (operation, since)
        for (text,) in self._all(
            f"SELECT record FROM audit_log WHERE operation = ?{where} ORDER BY seq", params
        ):
            yield json.loads(text)

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.db.read() as tx:
            return tx.all(sql, params)

    def _subjects_digest(self, last_seq: int) -> int:
        acc, after = 0, ("", -1)
        while True:  # keyset pages over the primary key (ref, seq)
            rows = self._all(
                "SELECT ref, seq FROM audit_subjects WHERE (ref, seq) > (?, ?) ORDER BY ref, seq LIMIT ?",
                (after[0], after[1], self.scan_batch),
            )
            if not rows:
                return acc
            for ref, seq in rows:
                if int(seq) <= last_seq:
                    acc ^= _pair_digest(str(ref), int(seq))
            after = (str(rows[-1][0]), int(rows[-1][1]))

    def _first_subject_mismatch(self, last_seq: int) -> int:
        """The first record whose subjects and index rows differ (only run once a mismatch is known)."""
        indexed: dict[int, set[str]] = {}
        for ref, seq in self._all("SELECT ref, seq FROM audit_subjects WHERE seq <= ?", (last_seq,)):
            indexed.setdefault(int(seq), set()).add(str(ref))
        named = {int(seq): _refs(json.loads(text)) for seq, text in self._scan("record")}
        bad = [s for s in set(indexed) | set(named) if indexed.get(s, set()) != named.get(s, set())]
        return min(bad) if bad else last_seq

    def _seq_of_hash(self, hash_: str) -> int | None:
        with self.db.read() as tx:
            seq = tx.scalar("SELECT seq FROM audit_log WHERE hash = ?", (hash_,))
        return None if seq is None else int(seq)

    # ---- verification ------------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check the whole log: chain, field digests, signatures, checkpoints. Reports the first problem.

        The log is read a batch at a time. Checkpoints are read first, so that records appended
        while it runs cannot look like a truncation.
        """
        head = self._read_head()
        with self.db.read() as tx:
            cps = tx.all("SELECT seq, hash, time, sig FROM audit_checkpoints ORDER BY seq")
        checkpoints = [(int(s), str(hh), str(t), str(sg), "database") for s, hh, t, sg in cps]
        if head and {"seq", "hash", "time", "sig"} <= set(head):
            checkpoints.append(
                (int(head["seq"]), str(head["hash"]), str(head["time"]), str(head["sig"]), "audit.head")
            )
        wanted = {c[0] for c in checkpoints}
        hashes: dict[int, str] = {}  # of the checkpointed records only
        subjects = 0  # order-free digest of the (subject, record) pairs the records name
        res = VerifyResult(ok=True, records=0, checkpoints=len(cps))
        prev, expected = GENESIS, 1
        # The signing keys, oldest first; rotation records hand over from one to the next.
        history = self.keys.history()
        signers = [load_public(pem) for pem in history]
        active = 0
        handovers: list[int] = []  # seq of each rotation record, in order

        def bad(seq: int, kind: str, problem: str, fields: list[str] | None = None) -> VerifyResult:
            res.ok, res.first_bad_seq, res.kind, res.problem = False, seq, kind, problem
            res.fields = fields or []
            return res

        scanned = f"record, digests, prev_hash, hash, sig, {', '.join(COLUMNS)}"
        for seq, text, digests_text, prev_hash, h, sig, *stored_cols in self._scan(scanned):
            seq = int(seq)
            res.records += 1
            if seq != expected:
                gap = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
                return bad(expected, "deleted", f"Record {gap} is missing: deleted from the log.")
            try:
                record = json.loads(text)
                stored = json.loads(digests_text)
                assert isinstance(record, dict) and isinstance(stored, dict)
            except (ValueError, AssertionError):
                return bad(seq, "edited", f"Record {seq} is not valid JSON any more: it was edited.")
            computed = digests_of(record)
            rec_seq = record.get("seq")
            if rec_seq != seq and computed.get("seq") == stored.get("seq"):
                if isinstance(rec_seq, int) and 1 <= rec_seq < seq:  # every record before seq checked out
                    return bad(
                        seq,
                        "inserted",
                        f"Position {seq} holds a copy of record {rec_seq}: a record was inserted.",
                    )
                return bad(
                    seq, "reordered", f"Position {seq} holds record {rec_seq}: records were reordered."
                )
            changed = sorted(
                set(computed) ^ set(stored) | {k for k in computed if computed[k] != stored.get(k)}
            )
            if changed:
                return bad(
                    seq, "edited", f"Record {seq} was edited: field(s) {', '.join(changed)} no longer match "
                    "the digests its hash covers.", changed,
                )  # fmt: skip
            expected = columns_of(record)
            col_changed = [c for c, v in zip(COLUMNS, stored_cols) if expected[c] != v]
            if col_changed:
                return bad(seq, "edited", f"Record {seq} was edited: column(s) {', '.join(col_changed)} "
                           "disagree with the signed record.", col_changed)  # fmt: skip
            if chain_hash(str(prev_hash), str(digests_text)) != h:
                return bad(seq, "edited", f"Record {seq} was edited: its hash does not match its content.")
            try:
                signers[active].verify(bytes.fromhex(str(sig)), _record_message(str(h)))
            except (InvalidSignature, ValueError):
                return bad(
                    seq, "forged", f"Record {seq} is not signed by this installation's audit key: it was "
                    "forged (inserted or appended by someone without the key) or rewritten.",
                )  # fmt: skip
            if record.get("operation") == ROTATED and record.get("decision") == "recorded":
                new_public = str((record.get("details") or {}).get("new_public_key") or "")
                if active + 1 >= len(history) or history[active + 1].strip() != new_public.strip():
                    return bad(seq, "forged", f"Record {seq} hands the audit signing key over to a key that "
                               "is not in this installation's key history (keys/audit_ed25519.history).")  # fmt: skip
                active += 1
                handovers.append(seq)
            if prev_hash != prev:
                other = self._seq_of_hash(str(prev_hash))
                if other is not None:
                    return bad(seq, "reordered", f"Record {seq} follows record {other} in the chain, not "
                               f"record {seq - 1}: records were reordered.")  # fmt: skip
                return bad(seq, "deleted", f"Record {seq} does not follow record {seq - 1} in the chain: a "
                           "record before it was deleted or replaced.")  # fmt: skip
            prev, expected = str(h), seq + 1
            if seq in wanted:
                hashes[seq] = str(h)
            for ref in _refs(record):
                subjects ^= _pair_digest(ref, seq)

        last_seq = expected - 1
        for cseq, chash, ctime, csig, where in checkpoints:
            # signed with the key in force at its record, or (written later) a newer one
            first = sum(1 for t in handovers if t < cseq)
            if not any(_signed(k, csig, _checkpoint_message(cseq, chash, ctime)) for k in signers[first:]):
                return bad(min(cseq, last_seq + 1), "checkpoint",
                           f"The checkpoint at record {cseq} ({where}) has an invalid signature: it was forged.")  # fmt: skip
            if cseq > last_seq:
                return bad(
                    last_seq + 1, "truncated", f"The log ends at record {last_seq}, but a signed checkpoint "
                    f"({where}, {ctime}) says record {cseq} existed: the tail was truncated.",
                )  # fmt: skip
            if hashes.get(cseq) != chash:
                return bad(cseq, "edited", f"Record {cseq}'s hash differs from the one its signed checkpoint "
                           f"({where}) recorded: the log was rewritten.")  # fmt: skip
            res.last_checkpoint = max(res.last_checkpoint or 0, cseq)
        if self._subjects_digest(last_seq) != subjects:
            seq = self._first_subject_mismatch(last_seq)
            return bad(seq, "edited", f"The subject index disagrees with record {seq}: rows were added to or "
                       "deleted from audit_subjects, so a subject's records would be misreported.")  # fmt: skip
        res.problem = (
            f"{res.records} records, chain and signatures intact; {len(checkpoints)} checkpoints agree"
            + (f" (last at record {res.last_checkpoint})." if res.last_checkpoint else ".")
        )
        return res

"""Backup, restore, and the replay of erasures made after a backup was taken.

``facewarden backup DEST`` (:func:`backup`): decided by policy as the owner's ``CreateBackup``
(kind admin) and audited; the log is checkpointed; then :func:`facewarden.backup.create` writes the
sealed file while the service keeps running.

``facewarden restore SRC`` (:func:`restore`): the backup is opened and checked whole in a staging
folder (passphrase, every block, the manifest's hashes), then put into an empty data directory and
an empty database. A service is started on it (its start-up sweep re-applies retention and consent
expiry by the clock), the audit log must verify, and erasures recorded after the backup are
replayed (:func:`replay_erasures`) from the erasure journal (``FACEWARDEN_ERASURE_JOURNAL``, found
where the settings say, and the copy inside the backup) and from any audit export given. Each replay
is an ``ErasureReplayed`` audit record naming the original record; a ``Restored`` record ends it.

The common disaster (the database is lost; the journal, on another volume, is not) needs no extra
step: the journal names every erasure, signed. If the journal was lost too, the restore says so and
the erasures can be replayed later from an audit export of the lost installation (``facewarden
restore --erasures EXPORT`` on the restored one, or :func:`replay_erasures`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import backup as backups
from ..audit.journal import ERASURES, is_erasure, read_lines
from ..config import Settings
from ..db import Database
from ..errors import FacewardenError, InvalidInput, ResourceNotFound, RestoreRefused, StorageError
from ..policy.consent import erase_subject_consents
from ..policy.kinds import Kind
from ..policy.principals import Principal
from . import household
from .consent import withdraw
from .core import Service
from .registry import declare

BACKUP = declare("CreateBackup", Kind.ADMIN)
#: Erasures a restored service re-derives by itself from the clock (its start-up sweep).
BY_THE_CLOCK = frozenset({"ConsentExpired", "RetentionSweep"})


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("facewarden")
    except Exception:  # noqa: BLE001 - a source tree
        return "0"


def backup(svc: Service, principal: Principal | None, dest: Path, passphrase: str) -> backups.Manifest:
    """Write a sealed backup of the running installation to ``dest`` (audited as CreateBackup)."""
    svc.authorize(principal, BACKUP)
    svc.audit.checkpoint()
    return backups.create(
        svc.settings.data_dir,
        svc.db,
        Path(dest),
        passphrase,
        installation=svc.audit.installation_id,
        audit_head=svc.audit.head(),
        version=_version(),
        pg_tools_dir=svc.settings.pg_tools_dir,
    )


@dataclass
class Replay:
    """What :func:`replay_erasures` did with each erasure record it was given."""

    #: (seq, operation, what was erased) of each record replayed now.
    replayed: list[dict[str, Any]] = field(default_factory=list)
    #: already in the restored data (at or before its last record), or replayed before
    already: int = 0
    #: re-applied by the start-up sweep (retention, consent expiry)
    by_the_clock: int = 0
    #: lines not signed by this installation, or written for an erasure whose transaction never
    #: committed in this log's history: (seq or None, why)
    rejected: list[tuple[int | None, str]] = field(default_factory=list)


@dataclass
class Restored:
    manifest: backups.Manifest
    #: the restored log's last record before the restore appended anything
    head: tuple[int, str]
    verify: dict[str, Any]
    replay: Replay
    sources: list[str]
    #: where erasures after the backup could not be looked for (no journal found)
    warning: str | None = None


def _refuse_nonempty(data_dir: Path, manifest: backups.Manifest) -> None:
    if not data_dir.exists() or not any(data_dir.iterdir()):
        return
    pub = data_dir / "keys"
    other: str | None = None
    if (pub / "audit_ed25519.pub").exists():
        from ..audit.keys import SigningKeys

        try:
            other = SigningKeys(pub).installation_id()
        except FacewardenError:
            other = "?"
    if other is not None and other != manifest.installation:
        raise RestoreRefused(
            f"{data_dir} holds another installation ({other}); this backup is of installation "
            f"{manifest.installation}. Restore only into an empty data directory."
        )
    raise RestoreRefused(
        f"{data_dir} is not empty"
        + (" (it holds this installation already)" if other else "")
        + ": restore only into an empty data directory (move the old one aside first)."
    )


def restore(settings: Settings, src: Path, passphrase: str, erasure_logs: Iterable[Path] = ()) -> Restored:
    """Restore the backup ``src`` into the empty data directory and database of ``settings``."""
    data_dir = Path(settings.data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        # checked again with the backup's installation id once it is open; refuse early when we can
        if not (data_dir / "keys" / "audit_ed25519.pub").exists():
            raise RestoreRefused(
                f"{data_dir} is not empty: restore only into an empty data directory (move it aside first)."
            )
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".facewarden-restore-", dir=data_dir.parent))
    try:
        manifest = backups.extract(Path(src), passphrase, staging)
        _refuse_nonempty(data_dir, manifest)
        backups.install(staging, manifest, data_dir, settings.resolved_database_url, settings.pg_tools_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    head = _head(settings.resolved_database_url)
    svc = Service(settings)
    try:
        result = svc.audit.verify()
        if not result.ok:
            raise StorageError(f"The restored audit log does not verify: {result.problem}")
        sources: list[Path] = []
        journal = settings.erasure_journal_path
        if journal.exists():
            sources.append(journal)
        sources.extend(Path(p) for p in erasure_logs)
        warning = None
        if not any(p for p in sources):
            warning = (
                f"No erasure journal was found at {journal} and no audit export was given: erasures made "
                f"after the backup (after audit record {head[0]}) could not be replayed. Replay them with "
                "`facewarden restore --erasures EXPORT.jsonl` (an audit export or journal of the lost "
                "installation) as soon as you have one."
            )
        replay = replay_erasures(svc, sources, head)
        svc.audit_system(
            "Restored",
            counts={"erasures_replayed": len(replay.replayed)},
            details={
                "backup_created": manifest.created,
                "backup_head_seq": manifest.audit_head[0],
                "restored_head_seq": head[0],
                "erasure_sources": [str(p) for p in sources],
                "erasures_already_in_backup": replay.already,
                "erasures_rejected": len(replay.rejected),
                "journal_missing": warning is not None,
            },
        )
        return Restored(manifest, head, result.as_dict(), replay, [str(p) for p in sources], warning)
    finally:
        svc.close()


def _head(url: str) -> tuple[int, str]:
    db = Database(url)
    try:
        with db.read() as tx:
            row = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    finally:
        db.close()
    return (int(row[0]), str(row[1])) if row else (0, "")


# ---- replaying erasures ----------------------------------------------------------------------------
def replay_erasures(svc: Service, sources: Iterable[Path], head: tuple[int, str] | None = None) -> Replay:
    """Apply, to this installation, the erasures recorded in ``sources`` (erasure journals or audit
    exports) after its log's record ``head`` (default: where the last restore put its end, else its
    last record now) that are not in its own log. Lines must be signed by this installation's audit
    keys; each is applied once (an ``ErasureReplayed`` record says so)."""
    point = head[0] if head is not None else _fork(svc)
    out = Replay()
    entries: dict[str, dict[str, Any]] = {}
    for path in sources:
        for entry in read_lines(path):
            h = str(entry.get("hash"))
            entries.setdefault(h, entry)
    done = {
        str((r.get("details") or {}).get("original_hash")) for r in svc.audit.records_of("ErasureReplayed")
    }
    subjects: dict[str, str] | None = None
    for h, entry in sorted(entries.items(), key=lambda kv: int((kv[1].get("record") or {}).get("seq") or 0)):
        try:
            record = svc.audit.verify_line(entry)
        except InvalidInput as exc:
            out.rejected.append(((entry.get("record") or {}).get("seq"), exc.message))
            continue
        if not is_erasure(record):
            continue
        seq = int(record["seq"])
        if h in done or svc.audit.hash_at(seq) == h:  # replayed before, or in this log's own history
            out.already += 1
            continue
        if seq <= point:
            out.rejected.append((seq, "its transaction never committed in the restored log's history"))
            continue
        if record["operation"] in BY_THE_CLOCK:
            out.by_the_clock += 1
            continue
        if subjects is None:
            subjects = _subjects_by_ref(svc)
        named = [subjects[r] for r in record.get("subjects") or [] if r in subjects]
        erased = _apply(svc, record, named)
        svc.audit_system(
            "ErasureReplayed",
            counts={k: v for k, v in erased.items() if isinstance(v, int)},
            subjects=named,
            collection=record.get("collection"),
            details={
                "original_seq": seq,
                "original_hash": h,
                "original_operation": record["operation"],
                "original_time": record.get("time"),
            },
        )
        done.add(h)
        out.replayed.append({"seq": seq, "operation": record["operation"], **erased})
    return out


def _fork(svc: Service) -> int:
    """Where this log's history parted from the lost installation's: the restored head of the
    last restore (records after it here are this installation's own), else the log's end."""
    last = svc.audit.last_record("Restored")
    if last is not None and isinstance((last.get("details") or {}).get("restored_head_seq"), int):
        return int(last["details"]["restored_head_seq"])
    return svc.audit.head()[0]


def _subjects_by_ref(svc: Service) -> dict[str, str]:
    """pseudonym -> subject id, for every subject the restored database still names (faces'
    ExternalImageId and UserId, users, consents): the log only holds pseudonyms."""
    with svc.db.read() as tx:
        rows = tx.all(
            "SELECT external_image_id FROM gallery_faces WHERE external_image_id IS NOT NULL"
            " UNION SELECT user_id FROM gallery_faces WHERE user_id IS NOT NULL"
            " UNION SELECT user_id FROM gallery_users UNION SELECT subject FROM policy_consents"
        )
    return {svc.audit.subject_ref(str(s)): str(s) for (s,) in rows}


def _apply(svc: Service, record: dict[str, Any], subjects: list[str]) -> dict[str, Any]:
    """Erase again what ``record`` erased; returns counts of what was still there."""
    op = record["operation"]
    assert op in ERASURES
    collection = record.get("collection")
    details = record.get("details") or {}
    store = svc.store
    if op == "EraseSubject":
        faces = consents = 0
        for s in subjects:  # (search indexes catch up with the store before their next search)
            with svc.db.transaction(lock="consent") as tx:
                faces += len(store.erase_faces(None, external_image_id=s, user_id=s, tx=tx))
                consents += erase_subject_consents(tx, s)
        return {"faces_erased": faces, "consents_erased": consents}
    if op in ("WithdrawConsent", "ConsentWithdrawn"):
        faces = withdrawn = 0
        scopes = [collection] if collection else list(details.get("collections") or []) or [None]
        for s in subjects:
            for org in _consent_orgs(svc, s):
                for scope in scopes:
                    try:
                        w = withdraw(svc, None, org, s, scope, reason="replayed")
                    except ResourceNotFound:
                        continue
                    faces += w.faces_erased
                    withdrawn += w.consents_withdrawn
        return {"faces_erased": faces, "consents_withdrawn": withdrawn}
    if op == "DeleteFaces" and collection:
        ids = [str(f) for f in details.get("deleted_face_ids") or []]
        try:
            deleted, _ = store.delete_faces(collection, ids) if ids else ([], [])
        except ResourceNotFound:
            deleted = []
        return {"faces_erased": len(deleted)}
    if op == "DeleteCollection" and collection:
        try:
            n = store.get_collection(collection).face_count
            store.delete_collection(collection)
        except ResourceNotFound:
            n = 0
        return {"faces_erased": n}
    if op == "ConvertCollection" and collection:
        return household.convert_again(svc, collection)
    if op == "DeleteUser" and collection:
        users = 0
        for s in subjects:
            try:
                store.delete_user(collection, s)
                users += 1
            except ResourceNotFound:
                pass
        return {"users_deleted": users}
    return {}


def _consent_orgs(svc: Service, subject: str) -> list[str]:
    with svc.db.read() as tx:
        rows = tx.all(
            "SELECT DISTINCT org FROM policy_consents WHERE subject = ? AND withdrawn_at IS NULL", (subject,)
        )
    return sorted(str(r[0]) for r in rows)

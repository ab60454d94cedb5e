"""Backups of a running installation, sealed with a passphrase, and their restoration.

A backup is one file (:mod:`facewarden.backup.archive`: scrypt + AES-256-GCM in authenticated
chunks) holding a tar stream of

* ``database.sqlite3`` (SQLite's online backup API) or ``database.pgdump`` (``pg_dump``): one
  consistent state of gallery, consent register, keys' records and audit log
  (:mod:`facewarden.backup.database`);
* ``data/...``: the data directory's files: the key files (``keys/``: API-secret encryption key,
  audit signing and pseudonym keys), the policy file, user models, the erasure journal; not the
  search-index cache (``index/``, rebuilt from the database) and not ``audit.head`` (the restored
  database's own checkpoints stand for it);
* ``manifest.json``, last: the installation's id, the audit log's head at the backup, and the
  SHA-256 and size of every file above.

:func:`extract` opens a backup into a staging folder and checks everything before anything is put
in place: a wrong passphrase, a changed byte, a truncated file, a missing or extra file each stop
it with :class:`~facewarden.errors.WrongPassphrase` or :class:`~facewarden.errors.InvalidBackup`
saying which. :func:`install` then moves the files into an empty data directory and restores the
database into an empty database. The service layer (:mod:`facewarden.service.recovery`) wraps both
with the audit records and the replay of erasures made after the backup.

Backups and key rotations exclude each other (:func:`keys_lock`), so a backup never holds a key
file from one side of a rotation and a database from the other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..db import Database
from ..errors import InvalidBackup, RestoreRefused
from ..keyfiles import keys_dir
from . import database
from .archive import OpenedReader, SealedWriter

FORMAT = 1
MANIFEST = "manifest.json"
DB_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
#: Data-directory entries never copied: caches rebuilt from the database, the signed head file
#: (the restored database's checkpoints stand for it), the lock file.
SKIPPED = ("index", "audit.head", ".keys.lock")


@dataclass
class Manifest:
    installation: str
    dialect: str
    #: (seq, hash) of the audit log's last record when the backup began (the database holds at
    #: least this record).
    audit_head: tuple[int, str]
    created: str = ""
    version: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "installation": self.installation,
            "database": {"dialect": self.dialect, "file": DB_FILES[self.dialect]},
            "audit_head": {"seq": self.audit_head[0], "hash": self.audit_head[1]},
            "created": self.created,
            "facewarden": self.version,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        try:
            if data["format"] != FORMAT:
                raise InvalidBackup(
                    f"This backup has format {data['format']}; this facewarden reads {FORMAT}."
                )
            m = cls(
                installation=str(data["installation"]),
                dialect=str(data["database"]["dialect"]),
                audit_head=(int(data["audit_head"]["seq"]), str(data["audit_head"]["hash"])),
                created=str(data["created"]),
                version=str(data["facewarden"]),
                files={str(k): dict(v) for k, v in data["files"].items()},
            )
            assert m.dialect in DB_FILES and DB_FILES[m.dialect] in m.files
            return m
        except (KeyError, TypeError, ValueError, AssertionError, AttributeError):
            raise InvalidBackup(
                "The backup's manifest is malformed: the backup is incomplete or damaged."
            ) from None


@contextlib.contextmanager
def keys_lock(data_dir: Path) -> Iterator[None]:
    """Held by a backup and by a key rotation: one waits for the other (this machine's processes)."""
    path = keys_dir(data_dir) / ".keys.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _data_files(data_dir: Path, exclude: set[Path]) -> Iterator[tuple[str, Path]]:
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        dirs[:] = sorted(d for d in dirs if not (rel_root == Path(".") and d in SKIPPED))
        for name in sorted(files):
            path = Path(root) / name
            rel = (rel_root / name).as_posix()
            if path.resolve() in exclude or name in SKIPPED or name.endswith(".tmp") or path.is_symlink():
                continue
            yield rel, path


def _add(tar: tarfile.TarFile, arcname: str, path: Path, manifest: Manifest) -> None:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        info = tar.gettarinfo(fileobj=f, arcname=arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = int(info.mtime)
        hashing = _Hashing(f, h)
        tar.addfile(info, hashing)
        size = hashing.size
    manifest.files[arcname] = {"sha256": h.hexdigest(), "size": size}


class _Hashing:
    """A file object that hashes what tarfile reads from it."""

    def __init__(self, f: IO[bytes], h: Any) -> None:
        self.f, self.h, self.size = f, h, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        self.size += len(data)
        return data


def create(
    data_dir: Path,
    db: Database,
    dest: Path,
    passphrase: str,
    *,
    installation: str,
    audit_head: tuple[int, str],
    version: str,
    pg_tools_dir: str = "",
) -> Manifest:
    """Write a sealed backup of the installation at ``data_dir`` (database ``db``) to ``dest``.

    The file appears whole or not at all (written beside it, then renamed)."""
    dest = Path(dest)
    if dest.exists():
        raise RestoreRefused(f"{dest} already exists: choose a new file name for the backup.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(installation, db.dialect, audit_head, created=_now(), version=version)
    work = Path(tempfile.mkdtemp(prefix=".facewarden-backup-", dir=dest.parent))
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with keys_lock(data_dir):
            snap = work / DB_FILES[db.dialect]
            if db.dialect == "sqlite":
                database.snapshot_sqlite(db, snap)
            else:
                database.snapshot_postgres(db, snap, pg_tools_dir)
            exclude = set()
            if db.path is not None:
                exclude = {Path(f"{db.path}{s}").resolve() for s in ("", "-wal", "-shm", "-journal")}
            with tmp.open("xb") as out:
                sealed = SealedWriter(out, passphrase)
                with tarfile.open(fileobj=sealed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _add(tar, snap.name, snap, manifest)
                    for rel, path in _data_files(Path(data_dir), exclude):
                        _add(tar, f"data/{rel}", path, manifest)
                    body = json.dumps(manifest.as_json(), indent=1, sort_keys=True).encode()
                    info = tarfile.TarInfo(MANIFEST)
                    info.size, info.mtime, info.mode = len(body), int(time.time()), 0o600
                    tar.addfile(info, _BytesReader(body))
                sealed.close()
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return manifest


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out


def _safe(name: str) -> bool:
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts and name not in ("", ".")


def extract(src: Path, passphrase: str, staging: Path) -> Manifest:
    """Open the backup ``src`` into the empty folder ``staging`` and check it whole: passphrase,
    every block's authenticity, the end of the stream, the manifest and every file's hash."""
    try:
        f = Path(src).open("rb")
    except OSError as exc:
        raise InvalidBackup(f"Cannot read the backup {src}: {exc.strerror}.") from None
    got: dict[str, tuple[str, int]] = {}
    manifest_data: bytes | None = None
    with f:
        reader = OpenedReader(f, passphrase)
        reader.start()
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if not _safe(member.name):
                        raise InvalidBackup(f"The backup holds an unsafe path {member.name!r}: refused.")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise InvalidBackup(f"The backup holds {member.name!r}, which is not a plain file.")
                    data = tar.extractfile(member)
                    assert data is not None
                    if member.name == MANIFEST:
                        manifest_data = data.read()
                        continue
                    out_path = staging / member.name
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    h, size = hashlib.sha256(), 0
                    with out_path.open("xb") as out:
                        os.chmod(out_path, 0o600)
                        while block := data.read(1 << 20):
                            h.update(block)
                            size += len(block)
                            out.write(block)
                    got[member.name] = (h.hexdigest(), size)
        except tarfile.TarError:
            reader.drain()  # a cut or changed stream explains it better: raised from here if so
            raise InvalidBackup("The backup's contents are damaged (not a complete archive).") from None
        reader.drain()
    if manifest_data is None:
        raise InvalidBackup("The backup is incomplete: it has no manifest (it was cut short while written).")
    try:
        manifest = Manifest.from_json(json.loads(manifest_data))
    except ValueError:
        raise InvalidBackup("The backup's manifest is not valid JSON.") from None
    for name, meta in manifest.files.items():
        if name not in got:
            raise InvalidBackup(f"The backup is incomplete: {name} is listed in its manifest but missing.")
        if got[name] != (meta.get("sha256"), meta.get("size")):
            raise InvalidBackup(f"The backup was tampered with: {name} does not match its manifest hash.")
    extra = sorted(set(got) - set(manifest.files))
    if extra:
        raise InvalidBackup(f"The backup holds files its manifest does not list: {extra[:3]}.")
    return manifest


def install(staging: Path, manifest: Manifest, data_dir: Path, url: str, pg_tools_dir: str = "") -> None:
    """Move an extracted backup into ``data_dir`` (empty) and its database into the empty database
    at ``url`` (SQLite: the file must not exist)."""
    sqlite_path = Path(url.partition("://")[2][1:]) if url.startswith("sqlite") else None
    database.check_empty_target(url, sqlite_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    dump = staging / DB_FILES[manifest.dialect]
    if manifest.dialect == "sqlite":
        if sqlite_path is None:
            raise RestoreRefused(
                "This is a backup of a SQLite installation; restore it with FACEWARDEN_DATABASE_URL unset "
                "or a sqlite:/// URL (to move to PostgreSQL, restore it first, then migrate)."
            )
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dump), sqlite_path)
    else:
        if sqlite_path is not None:
            raise RestoreRefused(
                "This is a backup of a PostgreSQL installation: set FACEWARDEN_DATABASE_URL to an empty "
                "PostgreSQL database to restore it into."
            )
        database.restore_postgres(dump, url, pg_tools_dir)
    src_data = staging / "data"
    if src_data.is_dir():
        for entry in sorted(src_data.iterdir()):
            os.replace(entry, data_dir / entry.name)
    with contextlib.suppress(OSError):
        os.chmod(data_dir / "keys", 0o700)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

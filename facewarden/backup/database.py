"""Consistent copies of the database, taken while it is in use, and their restoration.

* SQLite: the online backup API (``sqlite3.Connection.backup``) copies the database page by page
  into a new file while other processes go on reading and writing; the copy is one consistent
  state (the backup restarts when a writer changes a page it already copied).
* PostgreSQL: ``pg_dump --format=custom`` of facewarden's database, which dumps one snapshot
  (a repeatable-read transaction) while the service runs; restored with ``pg_restore`` into an
  empty database. ``pg_dump`` must be at least the server's major version: it is looked for in
  ``FACEWARDEN_PG_TOOLS_DIR``, then on ``PATH`` (the README gives the procedure without it).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from ..db import Database
from ..errors import RestoreRefused, StorageError


def snapshot_sqlite(db: Database, dest: Path) -> None:
    """Copy the live SQLite database of ``db`` into the new file ``dest``."""
    assert db.path is not None
    src = sqlite3.connect(db.path, timeout=60.0)
    out = sqlite3.connect(dest)
    try:
        src.execute("PRAGMA busy_timeout=60000")
        src.backup(out, pages=4096)
        out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite backup failed: {exc}") from None
    finally:
        out.close()
        src.close()


def pg_tool(name: str, tools_dir: str, server_major: int | None) -> str:
    """The path of ``pg_dump`` / ``pg_restore``, checked against the server's major version."""
    found = shutil.which(name, path=tools_dir) if tools_dir else shutil.which(name)
    where = f"in {tools_dir}" if tools_dir else "on PATH"
    if not found:
        raise StorageError(
            f"{name} was not found {where}: install the PostgreSQL client tools of the server's major "
            "version (Debian: postgresql-client-N) or set FACEWARDEN_PG_TOOLS_DIR to their folder; "
            "the README's 'Backup and restore' section gives the procedure without them."
        )
    if server_major is not None:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"(\d+)(?:\.\d+)?", out)
        if m is None or int(m.group(1)) < server_major:
            raise StorageError(
                f"{found} is version {m.group(1) if m else '?'}, older than the server ({server_major}): "
                f"it cannot dump it. Install {name} {server_major} or newer, or point "
                "FACEWARDEN_PG_TOOLS_DIR at its folder."
            )
    return found


def server_major(db: Database) -> int:
    with db.read() as tx:
        return int(tx.scalar("SHOW server_version_num")) // 10000


def snapshot_postgres(db: Database, dest: Path, tools_dir: str) -> None:
    """``pg_dump`` facewarden's database (one snapshot, taken while it runs) into ``dest``."""
    pg_dump = pg_tool("pg_dump", tools_dir, server_major(db))
    proc = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={dest}", db.url],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise StorageError(f"pg_dump failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def check_empty_target(url: str, sqlite_path: Path | None) -> None:
    """Refuse to restore over a database that holds anything."""
    if sqlite_path is not None:
        if sqlite_path.exists():
            raise RestoreRefused(
                f"The database file {sqlite_path} already exists: restore only into an empty data "
                "directory and a database that does not exist yet (move the old one aside first)."
            )
        return
    db = Database(url)
    try:
        with db.read() as tx:
            tables = tx.all(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
    finally:
        db.close()
    if tables:
        raise RestoreRefused(
            f"The database at FACEWARDEN_DATABASE_URL is not empty ({len(tables)} tables, e.g. "
            f"{sorted(str(t[0]) for t in tables)[:3]}): restore only into an empty database "
            "(CREATE DATABASE a new one, or drop the old one's tables first)."
        )


def restore_postgres(dump: Path, url: str, tools_dir: str) -> None:
    """``pg_restore`` a dump into the empty database at ``url``, in one transaction."""
    db = Database(url)
    try:
        major = server_major(db)
    finally:
        db.close()
    pg_restore = pg_tool("pg_restore", tools_dir, major)
    proc = subprocess.run(
        [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
         f"--dbname={url}", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise StorageError(f"pg_restore failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")

"""One database for gallery, policy and audit: SQLite (embedded default) or PostgreSQL.

Gallery, policy and audit share one database so that one transaction can, for example, erase a
subject's templates and write the audit record that says so. This module is the thin layer under
all three: connections per thread, transactions, named locks that serialise writers across
*processes* (SQLite: ``BEGIN IMMEDIATE``, which locks the whole file; PostgreSQL: transaction-scoped
advisory locks), and versioned migrations per component. SQL is written once with ``?``
placeholders and DDL once with the column types of :data:`COLUMN_TYPES` (``{double}``, ...); only
statements that differ in more than types are given as ``{"sqlite": ..., "postgresql": ...}``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from .errors import StorageError

Migration = str | Mapping[str, str]

#: A result row.
Row = tuple[Any, ...]
#: The dialect of each database URL scheme.
DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
#: Column types that differ between the dialects, named once: DDL in a migration writes ``{double}``,
#: ``{bigint}``, ``{serial}`` (an auto-numbered 64-bit primary key) or ``{vector}`` (a float32
#: template: bytes on SQLite, pgvector's ``vector`` on PostgreSQL) and :meth:`Database.migrate`
#: puts in the dialect's.
COLUMN_TYPES = {
    "sqlite": {
        "double": "REAL",
        "bigint": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "vector": "BLOB",
    },
    "postgresql": {
        "double": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "serial": "BIGSERIAL PRIMARY KEY",
        "vector": "vector",
    },
}


def json_text(dialect: str, column: str, *path: str) -> str:
    """SQL for the value at ``path`` inside the JSON text of ``column``, in the dialect's own JSON
    functions (SQL NULL where the path is absent): for DDL that backfills from JSON records."""
    if dialect == "postgresql":
        return f"jsonb_extract_path_text(({column})::jsonb, {', '.join(repr(p) for p in path)})"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


_COLUMN_TYPE = re.compile(r"\{(" + "|".join(COLUMN_TYPES["sqlite"]) + r")\}")


class Tx:
    """A cursor inside one transaction; ``?`` placeholders work on both dialects."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cur = cursor
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.execute(sql, params).fetchall())

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[Row]]:
        """The result a batch of rows at a time, for results too big to hold at once: SQLite's cursor
        steps through the result; on PostgreSQL a server-side cursor keeps it in the server."""
        if self.dialect == "postgresql":
            with self._cur.connection.cursor(name=f"fw_stream_{uuid.uuid4().hex[:12]}") as cur:
                cur.execute(self._sql(sql), tuple(params))
                while batch := cur.fetchmany(size):
                    yield batch
            return
        cur = self.execute(sql, params)
        while batch := cur.fetchmany(size):
            yield batch

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class Database:
    """A connection factory plus transactions and migrations for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        scheme, sep, rest = url.partition("://")
        dialect = DIALECTS.get(scheme) if sep else None
        if dialect is None or (dialect == "sqlite" and not rest.startswith("/")):
            raise StorageError(f"Unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
        self.dialect: str = dialect
        #: The SQLite file (None on PostgreSQL).
        self.path: Path | None = None
        if dialect == "sqlite":
            self.path = Path(rest[1:])
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # SQLite lets one writer in at a time and makes the others poll (sleep and retry). Threads
        # of this process queue on a lock instead, which is fair and wastes no time sleeping;
        # other processes still wait on SQLite's own lock.
        self._writer = threading.RLock()  # re-entry fails loudly in SQLite instead of hanging here
        self._all: list[Any] = []
        self._all_lock = threading.Lock()

    # ---- connections -------------------------------------------------------------------------
    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> Any:
        if self.path is not None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # acknowledged = on disk, also on power loss
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            return conn
        import psycopg  # imported here: SQLite installations never load it
        from pgvector.psycopg import register_vector

        try:
            pg = psycopg.connect(self.url, autocommit=True)
            pg.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(pg)
        except psycopg.Error as exc:
            raise StorageError(f"Cannot connect to PostgreSQL: {exc}") from None
        return pg

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._all.clear()
        self._local = threading.local()

    # ---- transactions ------------------------------------------------------------------------
    @contextmanager
    def transaction(
        self, lock: str | None = None, write: bool = True, snapshot: bool = False
    ) -> Iterator[Tx]:
        """A transaction; ``lock`` names a lock that serialises it with others across processes.

        On SQLite every write transaction takes the database's write lock at BEGIN (IMMEDIATE),
        which serialises all writers of all processes; on PostgreSQL a named lock is an
        advisory lock held until commit. With ``snapshot`` every statement sees the same committed
        state (PostgreSQL's REPEATABLE READ; a SQLite transaction always reads one snapshot).
        """
        conn = self._connection()
        if self.dialect == "sqlite":
            if write:
                with self._writer:
                    yield from self._sqlite_transaction(conn, write)
            else:
                yield from self._sqlite_transaction(conn, write)
            return
        with conn.transaction():
            cur = conn.cursor()
            tx = Tx(cur, "postgresql")
            if snapshot:
                tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if lock:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(lock),))
            yield tx

    def _sqlite_transaction(self, conn: Any, write: bool) -> Iterator[Tx]:
        cur = conn.cursor()
        for _ in range(200):
            try:
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StorageError(f"SQLite error: {exc}") from None
                time.sleep(0.05)
        else:
            raise StorageError("The database stayed locked by another process; try again.")
        try:
            yield Tx(cur, "sqlite")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    def read(self, snapshot: bool = False) -> AbstractContextManager[Tx]:
        """A read-only transaction (no writer lock)."""
        return self.transaction(write=False, snapshot=snapshot)

    # ---- migrations --------------------------------------------------------------------------
    def migrate(self, component: str, migrations: Sequence[Migration]) -> None:
        """Apply the component's migrations not yet applied (version = position + 1), in order."""
        with self.transaction(lock="migrations") as tx:
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL,"
                " PRIMARY KEY (component, version))"
            )
            done = {
                r[0]
                for r in tx.all("SELECT version FROM schema_migrations WHERE component = ?", (component,))
            }
            for version, migration in enumerate(migrations, start=1):
                if version in done:
                    continue
                sql = migration if isinstance(migration, str) else migration[self.dialect]
                sql = _COLUMN_TYPE.sub(lambda m: COLUMN_TYPES[self.dialect][m[1]], sql)
                for statement in _statements(sql):
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                    (component, version, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                )


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lock name."""
    return zlib.crc32(name.encode()) | (0x5FACE << 32)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]

"""Who asks: organisations (with a declared sector) and their access keys (with a declared purpose).

An access key looks like an AWS one (``AccessKeyId`` "FW" + 18 characters, ``SecretAccessKey`` of
40 characters) so an unmodified boto3 client can sign requests with it. The HTTP layer needs the
secret to verify SigV4 signatures, so it is stored, but encrypted (Fernet: AES-128-CBC +
HMAC-SHA256) with a key kept in ``data_dir/keys/secret.key`` (mode 0600), outside the database.

The encryption key can be rotated (:meth:`Principals.rotate_encryption_key`): the new key is
written to ``secret.key.new``, then one transaction re-encrypts every secret and records the new
key's fingerprint in ``policy_secret_key``, then ``secret.key.new`` replaces ``secret.key``.
Every process decrypts with whichever key file opens a secret (re-reading the files when neither
does) and encrypts with the key whose fingerprint the database names, so a rotation killed at any
step loses nothing: before its commit the old key is in force, after it the new one, and a process
that starts (or the next rotation) finishes the file swap.

A key is bound to one purpose and, optionally, to a list of collections; it can expire and be
revoked. Policy decides what a purpose may do (:mod:`facewarden.policy.rules`); nothing here
grants anything by itself, and the owner organisation is subject to policy like everyone else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..db import Database, Row, Tx
from ..errors import InvalidInput, ResourceAlreadyExists, ResourceNotFound, StorageError, UnrecognizedClient
from ..keyfiles import keys_dir, load_or_create, write_atomic

#: Sectors an organisation may declare. Policy rules name sectors; an unknown one is refused at
#: creation so that a typo cannot slip past the moratorium ("law-enforcement").
SECTORS = (
    "commercial",
    "education",
    "healthcare",
    "research",
    "nonprofit",
    "media",
    "government",
    "law_enforcement",
    "immigration_enforcement",
    "military",
    "private_security",
    "individual",
)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"

MIGRATIONS = [
    """
    CREATE TABLE policy_organizations (
        name TEXT PRIMARY KEY,
        sector TEXT NOT NULL,
        is_owner INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE policy_keys (
        key_id TEXT PRIMARY KEY,
        org TEXT NOT NULL REFERENCES policy_organizations(name),
        purpose TEXT NOT NULL,
        collections TEXT,
        secret_enc TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX policy_keys_org ON policy_keys(org)
    """,
    # The fingerprint of the key secrets are encrypted with, once it was rotated (no row: secret.key).
    """
    CREATE TABLE policy_secret_key (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        rotated_at DOUBLE PRECISION NOT NULL
    )
    """,
]

SECRET_KEY = "secret.key"
SECRET_KEY_NEW = "secret.key.new"


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(key.strip()).hexdigest()[:16]


@dataclass(frozen=True)
class Principal:
    """The caller of one operation, as policy sees it."""

    org: str
    sector: str
    key_id: str
    purpose: str
    #: Collections the key may touch; ``None`` = any collection of its organisation.
    collections: tuple[str, ...] | None = None
    #: The organisation that runs this installation (created by ``init``). Owner ≠ superuser:
    #: policy applies to the owner too; only administrative operations are reserved to it.
    owner: bool = False
    expires_at: float | None = None
    revoked_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "Organization": self.org,
            "Sector": self.sector,
            "AccessKeyId": self.key_id,
            "Purpose": self.purpose,
            "Collections": list(self.collections) if self.collections is not None else None,
            "Owner": self.owner,
            "ExpiresAt": self.expires_at,
            "RevokedAt": self.revoked_at,
        }


def new_access_key_id() -> str:
    return "FW" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


class Principals:
    """Organisations and keys, stored in the shared database; secrets encrypted at rest."""

    def __init__(self, db: Database, data_dir: Path, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self._kdir = keys_dir(data_dir)
        load_or_create(self._kdir / SECRET_KEY, Fernet.generate_key)
        self._keys_lock = threading.Lock()
        self._keys: dict[str, Fernet] = {}
        db.migrate("policy_principals", MIGRATIONS)
        self._reload_keys()
        self._finish_rotation()

    # ---- the secret-encryption key -------------------------------------------------------------
    def _reload_keys(self) -> None:
        keys: dict[str, Fernet] = {}
        for name in (SECRET_KEY, SECRET_KEY_NEW):
            try:
                raw = (self._kdir / name).read_bytes().strip()
            except FileNotFoundError:
                continue
            try:
                keys[key_fingerprint(raw)] = Fernet(raw)
            except ValueError:
                raise StorageError(
                    f"{self._kdir / name} is not a valid key file; restore it from backup "
                    "(without it, stored API secrets cannot be read)."
                ) from None
        with self._keys_lock:
            self._keys = keys

    def _active_fingerprint(self, tx: Tx) -> str:
        fp = tx.scalar("SELECT fingerprint FROM policy_secret_key WHERE name = 'secrets'")
        if fp is not None:
            return str(fp)
        return key_fingerprint((self._kdir / SECRET_KEY).read_bytes())

    def _encrypter(self, tx: Tx) -> Fernet:
        """The key the database says secrets are encrypted with (files re-read if this process
        has not seen it yet)."""
        fp = self._active_fingerprint(tx)
        if fp not in self._keys:
            self._reload_keys()
        try:
            return self._keys[fp]
        except KeyError:
            raise StorageError(
                f"Secrets are encrypted with key {fp} since the last rotation, but {self._kdir} does not hold "
                "it: copy DATA_DIR/keys from the machine that rotated it."
            ) from None

    def _decrypt(self, token: str) -> str:
        for attempt in (0, 1):
            try:
                return MultiFernet(list(self._keys.values())).decrypt(token.encode()).decode()
            except (InvalidToken, ValueError):
                if attempt == 0:
                    self._reload_keys()  # another process may have rotated the key
        raise StorageError(
            "An API secret could not be decrypted: data_dir/keys/secret.key does not match this database."
        )

    def _finish_rotation(self) -> None:
        """If a rotation committed but its process died before swapping the files, swap them."""
        new = self._kdir / SECRET_KEY_NEW
        try:
            raw = new.read_bytes()
        except FileNotFoundError:
            return
        with self.db.read() as tx:
            fp = tx.scalar("SELECT fingerprint FROM policy_secret_key WHERE name = 'secrets'")
        if fp is not None and str(fp) == key_fingerprint(raw):
            os.replace(new, self._kdir / SECRET_KEY)
            self._reload_keys()

    def rotate_encryption_key(
        self, audit: Callable[[Tx, dict[str, Any]], None], hook: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Re-encrypt every stored secret with a new key; ``audit(tx, details)`` writes the record
        in the same transaction. ``hook(point)`` is called at "prepared", "reencrypted" (inside the
        transaction) and "committed" (before the file swap)."""
        step = hook or (lambda point: None)
        self._finish_rotation()
        raw = Fernet.generate_key()
        write_atomic(self._kdir / SECRET_KEY_NEW, raw)
        self._reload_keys()
        new_fp = key_fingerprint(raw)
        step("prepared")
        with self.db.transaction(lock="principals") as tx:
            old_fp = self._active_fingerprint(tx)
            rows = tx.all("SELECT key_id, secret_enc FROM policy_keys ORDER BY key_id")
            new = self._keys[new_fp]
            tx.executemany(
                "UPDATE policy_keys SET secret_enc = ? WHERE key_id = ?",
                [(new.encrypt(self._decrypt(str(enc)).encode()).decode(), key_id) for key_id, enc in rows],
            )
            tx.execute("DELETE FROM policy_secret_key WHERE name = 'secrets'")
            tx.execute(
                "INSERT INTO policy_secret_key (name, fingerprint, rotated_at) VALUES ('secrets', ?, ?)",
                (new_fp, self.clock()),
            )
            details = {
                "key": "secrets",
                "fingerprint": new_fp,
                "retired": old_fp,
                "secrets_reencrypted": len(rows),
            }
            audit(tx, details)
            step("reencrypted")
        step("committed")
        self._finish_rotation()
        return details

    # ---- organisations -----------------------------------------------------------------------
    def create_org(
        self, name: str, sector: str, *, owner: bool = False, description: str = ""
    ) -> dict[str, Any]:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInput("Organization name must be 1-128 letters, digits, '_', '.' or '-'.")
        if sector not in SECTORS:
            raise InvalidInput(f"Unknown sector {sector!r}; declare one of: {', '.join(SECTORS)}.")
        with self.db.transaction(lock="principals") as tx:
            if tx.one("SELECT 1 FROM policy_organizations WHERE name = ?", (name,)):
                raise ResourceAlreadyExists(f"Organization {name!r} already exists.")
            if owner and tx.one("SELECT 1 FROM policy_organizations WHERE is_owner = 1"):
                raise ResourceAlreadyExists("This installation already has an owner organization.")
            tx.execute(
                "INSERT INTO policy_organizations (name, sector, is_owner, description, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, sector, 1 if owner else 0, description, self.clock()),
            )
        return self.get_org(name)

    def set_sector(self, name: str, sector: str) -> dict[str, Any]:
        """Change the declared sector of organisation ``name``; its keys' principals follow at once."""
        if sector not in SECTORS:
            raise InvalidInput(f"Unknown sector {sector!r}; declare one of: {', '.join(SECTORS)}.")
        with self.db.transaction(lock="principals") as tx:
            n = tx.execute(
                "UPDATE policy_organizations SET sector = ? WHERE name = ?", (sector, name)
            ).rowcount
        if not n:
            raise ResourceNotFound(f"Organization {name!r} does not exist.")
        return self.get_org(name)

    def get_org(self, name: str) -> dict[str, Any]:
        with self.db.read() as tx:
            row = tx.one(
                "SELECT name, sector, is_owner, description, created_at FROM policy_organizations WHERE name = ?",
                (name,),
            )
        if row is None:
            raise ResourceNotFound(f"Organization {name!r} does not exist.")
        return _org(row)

    def list_orgs(self) -> list[dict[str, Any]]:
        with self.db.read() as tx:
            rows = tx.all(
                "SELECT name, sector, is_owner, description, created_at FROM policy_organizations ORDER BY name"
            )
        return [_org(r) for r in rows]

    def owner_org(self) -> dict[str, Any] | None:
        with self.db.read() as tx:
            row = tx.one(
                "SELECT name, sector, is_owner, description, created_at FROM policy_organizations WHERE is_owner = 1"
            )
        return _org(row) if row else None

    # ---- keys --------------------------------------------------------------------------------
    def create_key(
        self,
        org: str,
        purpose: str,
        *,
        collections: list[str] | None = None,
        expires_at: float | None = None,
        description: str = "",
    ) -> tuple[Principal, str]:
        """A new key for ``org`` bound to ``purpose``; returns the principal and the secret (shown once)."""
        if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
            raise InvalidInput("Purpose must be a lower-case identifier such as photo_organisation.")
        if collections is not None and (
            not isinstance(collections, list) or not all(isinstance(c, str) and c for c in collections)
        ):
            raise InvalidInput("Collections must be a list of collection ids.")
        if expires_at is not None and (
            isinstance(expires_at, bool) or not isinstance(expires_at, (int, float))
        ):
            raise InvalidInput("ExpiresAt must be a Unix time in seconds.")
        self.get_org(org)
        secret = new_secret()
        key_id = new_access_key_id()
        with self.db.transaction(lock="principals") as tx:
            self._insert_key(
                tx,
                key_id,
                secret,
                org,
                purpose,
                None if collections is None else sorted(set(collections)),
                description,
                None if expires_at is None else float(expires_at),
            )
        return self.principal_for_key(key_id), secret

    def _insert_key(
        self,
        tx: Tx,
        key_id: str,
        secret: str,
        org: str,
        purpose: str,
        collections: list[str] | None,
        description: str,
        expires_at: float | None,
    ) -> None:
        tx.execute(
            "INSERT INTO policy_keys (key_id, org, purpose, collections, secret_enc, description,"
            " created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                key_id,
                org,
                purpose,
                None if collections is None else json.dumps(collections),
                self._encrypter(tx).encrypt(secret.encode()).decode(),
                description,
                self.clock(),
                expires_at,
            ),
        )

    def rotate_access_key(self, key_id: str, overlap_s: float) -> tuple[Principal, str, Principal]:
        """A new key like ``key_id`` (organisation, purpose, collections, expiry); the old one now
        expires after ``overlap_s`` seconds (or earlier, if it already did). Returns (new principal,
        its secret, the old principal)."""
        old = self.principal_for_key(key_id)
        secret, new_id = new_secret(), new_access_key_id()
        retire_at = self.clock() + max(0.0, float(overlap_s))
        with self.db.transaction(lock="principals") as tx:
            self._insert_key(
                tx,
                new_id,
                secret,
                old.org,
                old.purpose,
                None if old.collections is None else list(old.collections),
                f"rotated from {key_id}",
                old.expires_at,
            )
            tx.execute(
                "UPDATE policy_keys SET expires_at = ? WHERE key_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (retire_at, key_id, retire_at),
            )
        return self.principal_for_key(new_id), secret, self.principal_for_key(key_id)

    def revoke_key(self, key_id: str) -> Principal:
        with self.db.transaction(lock="principals") as tx:
            n = tx.execute(
                "UPDATE policy_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (self.clock(), key_id),
            ).rowcount
            if not n and not tx.one("SELECT 1 FROM policy_keys WHERE key_id = ?", (key_id,)):
                raise ResourceNotFound(f"Access key {key_id!r} does not exist.")
        return self.principal_for_key(key_id)

    def list_keys(self, org: str | None = None) -> list[Principal]:
        sql = _KEY_SELECT + (" WHERE k.org = ?" if org else "") + " ORDER BY k.created_at, k.key_id"
        with self.db.read() as tx:
            rows = tx.all(sql, (org,) if org else ())
        return [_principal(r) for r in rows]

    def principal_for_key(self, key_id: str) -> Principal:
        """The principal of an access key (revoked and expired keys too: policy denies them, audited)."""
        with self.db.read() as tx:
            row = tx.one(_KEY_SELECT + " WHERE k.key_id = ?", (key_id,))
        if row is None:
            raise UnrecognizedClient(
                "The security token included in the request is invalid: unknown access key."
            )
        return _principal(row)

    def lookup_secret(self, key_id: str) -> tuple[Principal, str]:
        """The principal and the plain secret of a key, for SigV4 verification by the HTTP layer."""
        principal = self.principal_for_key(key_id)
        with self.db.read() as tx:
            enc = tx.scalar("SELECT secret_enc FROM policy_keys WHERE key_id = ?", (key_id,))
        return principal, self._decrypt(str(enc))

    def owner_key(self) -> Principal | None:
        """The owner organisation's first usable key (the one ``init`` created)."""
        now = self.clock()
        for p in self.list_keys():
            if p.owner and p.revoked_at is None and (p.expires_at is None or p.expires_at > now):
                return p
        return None


_KEY_SELECT = (
    "SELECT k.key_id, k.org, o.sector, k.purpose, k.collections, o.is_owner, k.expires_at, k.revoked_at"
    " FROM policy_keys k JOIN policy_organizations o ON o.name = k.org"
)


def _principal(row: Row) -> Principal:
    key_id, org, sector, purpose, collections, is_owner, expires_at, revoked_at = row
    return Principal(
        org=org,
        sector=sector,
        key_id=key_id,
        purpose=purpose,
        collections=None if collections is None else tuple(json.loads(collections)),
        owner=bool(is_owner),
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def _org(row: Row) -> dict[str, Any]:
    name, sector, is_owner, description, created_at = row
    return {
        "Name": name,
        "Sector": sector,
        "Owner": bool(is_owner),
        "Description": description,
        "CreatedAt": created_at,
    }

"""The audit log's signing keys: the active Ed25519 key, the public keys it replaced, and rotation.

Files in ``DATA_DIR/keys`` (mode 0600, outside the database):

* ``audit_ed25519.pem``: the active private key; ``audit_ed25519.pub`` its public key;
* ``audit_ed25519.history``: every public key the installation has signed with, oldest first (JSON
  list of PEM texts; absent until the first rotation, when it is just the active key). The first
  one's fingerprint is the installation's id;
* ``audit_ed25519.pem.new``: only during a rotation.

A rotation (:meth:`AuditLog.rotate_signing_key`) is crash-safe in three steps: (1) the new key is
written to ``.pem.new``; (2) one transaction appends an ``AuditKeyRotated`` record, signed with the
old key, that names the retired and the new public key, and a checkpoint of it (still the old
key): from this commit on the log says which key signs; (3) the new public key joins the history
and ``.pem.new`` replaces ``.pem``. Killed before (2), the old key stays in force (a later rotation
overwrites the unused ``.pem.new``); killed after it, any process that next appends, or starts,
finds the committed record and finishes step (3) itself. Records after the rotation record are
signed with the new key; ``audit verify`` follows the rotation records through the history, so old
records and checkpoints still verify with the retired public keys, and a rotation record naming a
key the history does not hold is reported as forged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import StorageError
from ..keyfiles import load_or_create, write_atomic

PEM = "audit_ed25519.pem"
PUB = "audit_ed25519.pub"
NEW = "audit_ed25519.pem.new"
HISTORY = "audit_ed25519.history"
#: The operation name of the record that hands signing over to a new key.
ROTATED = "AuditKeyRotated"


def _generate() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private(pem: bytes, where: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise StorageError(f"{where} is not an Ed25519 private key: restore the key files from backup.")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise StorageError("An audit public key is not an Ed25519 key.")
    return key


def fingerprint(pem: str) -> str:
    """A short id of a public key: SHA-256 of its raw 32 bytes, 16 hex digits."""
    raw = load_public(pem).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class SigningKeys:
    """The key files of one data directory."""

    def __init__(self, kdir: Path) -> None:
        self.kdir = Path(kdir)
        self.private = load_private(load_or_create(self.kdir / PEM, _generate), self.kdir / PEM)
        self.public_pem = public_pem(self.private)
        if not (self.kdir / PUB).exists():
            write_atomic(self.kdir / PUB, self.public_pem.encode())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def history(self) -> list[str]:
        """Every public key the installation has signed with, oldest first."""
        try:
            keys = json.loads((self.kdir / HISTORY).read_text())
            assert isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)
        except FileNotFoundError:
            return [self.public_pem]
        except (ValueError, AssertionError):
            raise StorageError(
                f"{self.kdir / HISTORY} is damaged: restore the key files from backup."
            ) from None
        return keys

    def installation_id(self) -> str:
        return fingerprint(self.history()[0])

    # ---- rotation ----------------------------------------------------------------------------------
    def prepare(self) -> Ed25519PrivateKey:
        """Step 1: a new key in ``.pem.new`` (replacing one a killed rotation left unused)."""
        pem = _generate()
        write_atomic(self.kdir / NEW, pem)
        return load_private(pem, self.kdir / NEW)

    def adopt(self, new_public: str) -> None:
        """Step 3, or catching up with a rotation another process committed: make the key whose
        public key is ``new_public`` the active one. StorageError if this machine does not have it."""
        if new_public.strip() == self.public_pem.strip():
            return
        for name in (NEW, PEM):
            try:
                pem = (self.kdir / name).read_bytes()
            except FileNotFoundError:
                continue
            key = load_private(pem, self.kdir / name)
            if public_pem(key).strip() != new_public.strip():
                continue
            history = self.history()
            if new_public not in history:
                write_atomic(self.kdir / HISTORY, json.dumps([*history, new_public], indent=1).encode())
            if name == NEW:
                os.replace(self.kdir / NEW, self.kdir / PEM)
            write_atomic(self.kdir / PUB, new_public.encode())
            self.private, self.public_pem = key, public_pem(key)
            return
        raise StorageError(
            f"The audit log is signed with key {fingerprint(new_public)} since its last rotation, but "
            f"{self.kdir} holds only key {fingerprint(self.public_pem)}: copy DATA_DIR/keys from the "
            "machine that rotated it."
        )

"""Key rotation: the installation's two secret keys, and access keys rotated by their owners.

* ``facewarden keys rotate secrets``: a new API-secret encryption key; every stored secret is
  re-encrypted with it in one transaction (:meth:`~facewarden.policy.principals.Principals.rotate_encryption_key`).
* ``facewarden keys rotate audit-signing``: a new audit signing key; the rotation record, signed
  with the retired key, hands over to it (:mod:`facewarden.audit.keys`).

Both are the owner's (decided as ``RotateKeys``, kind admin), both are audited, both exclude
backups while they run (a backup never pairs a key file from one side of a rotation with a
database from the other), and both survive being killed at any point: until their transaction
commits the old key stays in force; after it, every process finishes the switch on its own.
With several machines, copy ``DATA_DIR/keys`` to the others after a rotation (they refuse to sign
the audit log with a stale key and say so).

``RotateKey`` (kind manage) is an access key's owner's: a new key (same organisation, purpose and
collections) whose secret is shown once, while the old key keeps working for the overlap period
(default a day, at most 30 days) and then expires. Both keys are valid during the overlap, so
clients can switch without downtime; revoking the old one early is ``RevokeKey``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from ..audit.entry import AuditEntry
from ..audit.keys import ROTATED
from ..backup import keys_lock
from ..errors import AccessDenied, InvalidInput
from ..policy.kinds import Kind
from ..policy.principals import Principal
from .admin import _key_view
from .core import Service
from .params import Range
from .registry import Context, Rest, declare, operation

ROTATE_KEYS = declare("RotateKeys", Kind.ADMIN)
#: A hook called at named points of a rotation (tests kill the process there).
Hook = Callable[[str], None]


def _entry(
    svc: Service, principal: Principal | None, operation: str, details: dict[str, Any]
) -> dict[str, Any]:
    return AuditEntry(
        operation,
        "recorded",
        "system",
        f"{operation} by the owner",
        svc.policy.sha256,
        **AuditEntry.caller(principal),
        details=details,
    ).record()


def rotate_secrets(svc: Service, principal: Principal | None, hook: Hook | None = None) -> dict[str, Any]:
    """Rotate the API-secret encryption key; returns {"keys_reencrypted", "fingerprint", "retired"}."""
    svc.authorize(principal, ROTATE_KEYS, audit_allowed=False)
    with keys_lock(svc.settings.data_dir):

        def audit(tx: Any, details: dict[str, Any]) -> None:
            svc.audit.append(_entry(svc, principal, "SecretKeyRotated", details), tx=tx)

        return svc.principals.rotate_encryption_key(audit, hook)


def rotate_audit_signing(
    svc: Service, principal: Principal | None, hook: Hook | None = None
) -> dict[str, Any]:
    """Rotate the audit signing key; returns the rotation record."""
    svc.authorize(principal, ROTATE_KEYS, audit_allowed=False)
    with keys_lock(svc.settings.data_dir):
        return svc.audit.rotate_signing_key(_entry(svc, principal, ROTATED, {}), hook)


# ---- access keys ---------------------------------------------------------------------------------------
DAY = 86_400


@dataclass(frozen=True)
class RotateKeyRequest:
    #: The key to rotate (default: the caller's own).
    access_key_id: str | None = None
    #: How long the old key keeps working beside the new one, in seconds (at most 30 days).
    overlap_seconds: Annotated[int, Range(0, 30 * DAY)] = DAY


@dataclass(frozen=True)
class RotateKeyResult:
    #: The new key, with its SecretAccessKey (shown this once).
    access_key: dict[str, Any]
    #: The old key and when it stops working.
    retiring_key: dict[str, Any]


@operation("RotateKey", kind=Kind.MANAGE, rest=Rest("POST", "/v1/keys/rotate", "keys"))
def rotate_key(svc: Service, ctx: Context, req: RotateKeyRequest) -> RotateKeyResult:
    """Rotate an access key: a new key now, the old one expiring after OverlapSeconds"""
    caller = ctx.caller
    key_id = req.access_key_id or caller.key_id
    target = svc.principals.principal_for_key(key_id) if key_id != caller.key_id else caller
    if target.org != caller.org and not caller.owner:
        raise AccessDenied(
            f"Key {key_id} belongs to another organisation: only its organisation (or the owner) may rotate it.",
            "key_owner",
        )
    if target.revoked_at is not None:
        raise InvalidInput(f"Key {key_id} is revoked: create a new key instead of rotating it.")
    new, secret, old = svc.principals.rotate_access_key(key_id, float(req.overlap_seconds))
    ctx.details.update(new_key=new.key_id, retiring_key=old.key_id, overlap_s=req.overlap_seconds,
                       retires_at=old.expires_at)  # fmt: skip
    return RotateKeyResult(_key_view(new, secret), _key_view(old))

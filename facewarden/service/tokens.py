"""Tokens the Rekognition wire hands out and takes back: NextToken, ClientRequestToken, and the
installation's account id in collection ARNs.

* :class:`PageTokens`: a NextToken is opaque to the client and bound to the operation and the
  collection that issued it (an HMAC-SHA256 under a key derived from the installation secret), so a
  made-up token, a token of another collection or of another List operation is refused with
  ``InvalidPaginationTokenException`` instead of paging something else.
* :class:`RequestTokens`: Rekognition's ``ClientRequestToken`` idempotency. A repeated request with
  the same token and the same parameters gets the first response again (nothing runs twice); the
  same token with other parameters is ``IdempotentParameterMismatchException``. Tokens belong to an
  organisation (AWS: an account) and an operation, and are remembered for 24 hours.
* :func:`account_id`: twelve digits derived from the installation secret, the same on every
  machine that shares ``DATA_DIR/keys`` (as they must), different between installations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..db import Database
from ..errors import IdempotentParameterMismatch, InvalidPaginationToken
from ..keyfiles import keys_dir

#: How long a ClientRequestToken is remembered.
REQUEST_TOKEN_TTL_S = 24 * 3600


def installation_key(data_dir: Path, purpose: str) -> bytes:
    """A key for ``purpose`` derived from the installation secret (``DATA_DIR/keys/secret.key``,
    created by the key store at start-up): nothing new to copy between machines."""
    secret = (keys_dir(data_dir) / "secret.key").read_bytes().strip()
    return hmac.new(secret, f"facewarden/{purpose}".encode(), hashlib.sha256).digest()


def account_id(data_dir: Path) -> str:
    """The installation's 12-digit account id (the ACCOUNT of its ARNs)."""
    n = int.from_bytes(installation_key(data_dir, "account-id")[:8], "big")
    return f"{n % 10**12:012d}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issue and open NextTokens bound to (operation, collection)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, operation: str, scope: str, after: bytes) -> bytes:
        msg = b"\0".join((operation.encode(), scope.encode(), after))
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:12]

    def issue(self, operation: str, scope: str, after: str | None) -> str | None:
        """The NextToken that continues ``operation`` on ``scope`` (a collection id, or "") after
        the key ``after`` (None: no next page)."""
        if after is None:
            return None
        raw = after.encode()
        return f"{_b64(raw)}.{_b64(self._mac(operation, scope, raw))}"

    def open(self, operation: str, scope: str, token: str | None) -> str | None:
        """The key a NextToken continues after (None for no token); InvalidPaginationToken if this
        operation did not issue it for this collection."""
        if token is None:
            return None
        body, _, mac = token.partition(".")
        try:
            raw, tag = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raw, tag = b"", b""
        if not tag or not hmac.compare_digest(tag, self._mac(operation, scope, raw)):
            where = f" of collection {scope!r}" if scope else ""
            raise InvalidPaginationToken(
                f"NextToken {token[:40]!r} was not issued by {operation}{where}: pass the NextToken of the "
                "previous page of the same operation and collection unchanged, or none for the first page."
            )
        return raw.decode()


def request_digest(wire: dict[str, Any]) -> str:
    """A digest of a request's parameters (its wire form without the ClientRequestToken)."""
    body = {k: v for k, v in wire.items() if k != "ClientRequestToken"}

    def default(o: Any) -> Any:
        if isinstance(o, (bytes, bytearray)):
            return hashlib.sha256(o).hexdigest()
        return str(o)

    return hashlib.sha256(json.dumps(body, sort_keys=True, default=default).encode()).hexdigest()


MIGRATIONS = [
    """
    CREATE TABLE service_request_tokens (
        org TEXT NOT NULL,
        operation TEXT NOT NULL,
        token TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (org, operation, token)
    )
    """,
]


class RequestTokens:
    """The ClientRequestTokens seen in the last 24 hours, with each first response."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        db.migrate("service_request_tokens", MIGRATIONS)

    def recall(self, org: str, operation: str, token: str, digest: str) -> dict[str, Any] | None:
        """The response first given to this token, or None if it is new; raises
        IdempotentParameterMismatch if it came with other parameters."""
        cutoff = self.clock() - REQUEST_TOKEN_TTL_S
        with self.db.read() as tx:
            row = tx.one(
                "SELECT request_sha256, response FROM service_request_tokens"
                " WHERE org = ? AND operation = ? AND token = ? AND created_at >= ?",
                (org, operation, token, cutoff),
            )
        if row is None:
            return None
        if row[0] != digest:
            raise IdempotentParameterMismatch(
                f"ClientRequestToken {token!r} was used for an earlier {operation} request with other "
                "parameters; use a new token for a new request."
            )
        response: dict[str, Any] = json.loads(row[1])
        return response

    def remember(self, org: str, operation: str, token: str, digest: str, response: dict[str, Any]) -> None:
        now = self.clock()
        with self.db.transaction(lock="request_tokens") as tx:
            tx.execute(
                "DELETE FROM service_request_tokens WHERE created_at < ?", (now - REQUEST_TOKEN_TTL_S,)
            )
            tx.execute(
                "DELETE FROM service_request_tokens WHERE org = ? AND operation = ? AND token = ?",
                (org, operation, token),
            )
            tx.execute(
                "INSERT INTO service_request_tokens (org, operation, token, request_sha256, response, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (org, operation, token, digest, json.dumps(response, default=str), now),
            )

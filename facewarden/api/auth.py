"""Who is calling: AWS Signature Version 4 (the Rekognition wire) and bearer keys (REST, console).

Signatures are checked with botocore's own signing code: the canonical request is rebuilt from the
method, path, query, signed headers and body that arrived, signed with the key's stored secret by
:class:`botocore.auth.SigV4Auth`, and compared in constant time. The key store itself belongs to
the policy layer; this module only asks it, through :class:`KeyLookup`, for a key's secret and
principal. Every authentication failure is reported to the audit log (:func:`audit_auth_failure`).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.requests import Request

from ..errors import AuthError, InvalidSignature, MissingAuthentication, UnrecognizedClient
from ..policy.principals import Principal
from ..service import Service
from .wire import to_jsonable

log = logging.getLogger("facewarden.api")

SERVICE_NAME = "rekognition"
#: How far X-Amz-Date may be from the server's clock, either way.
MAX_CLOCK_SKEW_S = 300
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"

MSG_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)
MSG_UNKNOWN_KEY = "The security token included in the request is invalid."
MSG_MISSING = "Missing Authentication Token"


@dataclass(frozen=True)
class Key:
    """A verified caller: the access key id and the principal it belongs to."""

    access_key_id: str
    principal: Principal


#: access key id -> (secret, principal), or None for an unknown key.
KeyLookup = Callable[[str], "tuple[str, Principal] | None"]


def service_key_lookup(service: Service) -> KeyLookup:
    """The key store of ``service``'s policy layer as a :data:`KeyLookup`. Revoked and expired
    keys are returned: policy denies them inside the service, with an audit record."""

    def lookup(access_key_id: str) -> tuple[str, Principal] | None:
        try:
            principal, secret = service.lookup_secret(access_key_id)
        except UnrecognizedClient:
            return None
        return secret, principal

    return lookup


def audit_auth_failure(
    service: Service,
    *,
    error: AuthError,
    access_key_id: str | None,
    operation: str | None,
    adapter: str,
    remote: str | None,
) -> None:
    """Write the audit record of a refused authentication. Never raises: a failing audit write
    must not turn a 403 into a 500 (it is logged)."""
    try:
        service.record_auth_failure(
            access_key_id=access_key_id,
            operation=operation,
            error_code=error.aws_code,
            reason=str(error),
            adapter=adapter,
            remote=remote,
        )
    except Exception:
        log.exception("could not audit an authentication failure")


def authenticate(service: Service, lookup: KeyLookup, request: Request) -> Key:
    """The verified bearer key of a REST request (a refusal is audited, then raised)."""
    try:
        return verify_bearer(request.headers, lookup)
    except AuthError as exc:
        token = (request.headers.get("authorization") or "").partition(" ")[2]
        audit_auth_failure(
            service,
            error=exc,
            access_key_id=token.partition(":")[0] or None,
            operation=request.scope.get("facewarden.operation"),
            adapter="rest",
            remote=request.client.host if request.client else None,
        )
        raise


def describe_principal(principal: Principal) -> Any:
    """A principal as JSON (for /v1/whoami), without anything secret."""
    data = {
        k: v
        for k, v in principal.as_dict().items()
        if not any(s in k.lower() for s in ("secret", "hash", "salt"))
    }
    return to_jsonable(data, timestamps="iso")


# ---- SigV4 ---------------------------------------------------------------------------------------
_AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+(?P<rest>.+)$", re.DOTALL)


@dataclass(frozen=True)
class SignedRequest:
    """What arrived over HTTP, as SigV4 needs it."""

    method: str
    path: str  # decoded path, e.g. "/"
    query_string: str  # raw query, without "?"
    headers: Sequence[tuple[str, str]]  # (lowercase name, value), repeated names kept
    body: bytes


def parse_authorization(value: str) -> tuple[str, str, str, str, list[str], str]:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` ->
    (key id, date, region, service, signed header names, signature)."""
    m = _AUTH_RE.match(value.strip())
    if not m:
        raise InvalidSignature(
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm (Signature Version 4)."
        )
    parts: dict[str, str] = {}
    for piece in m.group("rest").split(","):
        name, sep, val = piece.strip().partition("=")
        if sep:
            parts[name.strip()] = val.strip()
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not parts.get(p)]
    if missing:
        raise InvalidSignature(
            f"Authorization header requires '{missing[0]}' parameter. Authorization={value[:200]}"
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise InvalidSignature(
            "Credential should be <AccessKeyId>/<yyyymmdd>/<region>/rekognition/aws4_request."
        )
    key_id, date, region, service, _ = scope
    signed = [h.strip().lower() for h in parts["SignedHeaders"].split(";") if h.strip()]
    return key_id, date, region, service, signed, parts["Signature"]


def verify_sigv4(req: SignedRequest, lookup: KeyLookup, now: float | None = None) -> Key:
    """Verify a Signature Version 4 request; the verified key, or an :class:`AuthError`."""
    headers: dict[str, list[str]] = {}
    for name, value in req.headers:
        headers.setdefault(name.lower(), []).append(value)
    authorization = (headers.get("authorization") or [""])[0]
    if not authorization:
        raise MissingAuthentication(MSG_MISSING)
    key_id, scope_date, region, service, signed, signature = parse_authorization(authorization)
    if service != SERVICE_NAME:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE_NAME}'.")
    found = lookup(key_id)
    if found is None:
        raise UnrecognizedClient(MSG_UNKNOWN_KEY)
    secret, principal = found

    amz_date = (headers.get("x-amz-date") or [""])[0].strip()
    if not amz_date:
        raise InvalidSignature("Authorization header requires existence of a 'X-Amz-Date' header.")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, SIGV4_TIMESTAMP))
    except ValueError:
        raise InvalidSignature(f"X-Amz-Date {amz_date!r} is not in the form yyyymmddThhmmssZ.") from None
    now = time.time() if now is None else now
    if now - signed_at > MAX_CLOCK_SKEW_S:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is now earlier than {_fmt(now - MAX_CLOCK_SKEW_S)} "
            f"({_fmt(now)} - 5 min.)"
        )
    if signed_at - now > MAX_CLOCK_SKEW_S:
        raise InvalidSignature(
            f"Signature not yet current: {amz_date} is still later than {_fmt(now + MAX_CLOCK_SKEW_S)} "
            f"({_fmt(now)} + 5 min.)"
        )
    if scope_date != amz_date[:8]:
        raise InvalidSignature(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{scope_date}' != '{amz_date[:8]}'"
        )
    if "host" not in signed or "x-amz-date" not in signed:
        raise InvalidSignature("The 'host' and 'x-amz-date' headers must be signed.")
    body_hash = hashlib.sha256(req.body).hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed[0].strip().lower(), body_hash):
        raise InvalidSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")

    host = (headers.get("host") or [""])[0]
    url = f"http://{host}{req.path or '/'}" + (f"?{req.query_string}" if req.query_string else "")
    aws_request = AWSRequest(
        method=req.method,
        url=url,
        headers={name: ",".join(headers[name]) for name in signed if name in headers},
        data=req.body,
    )
    aws_request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key_id, secret), SERVICE_NAME, region)
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise InvalidSignature(MSG_SIGNATURE_MISMATCH)
    return Key(key_id, principal)


def _fmt(t: float) -> str:
    return time.strftime(SIGV4_TIMESTAMP, time.gmtime(t))


# ---- bearer keys ---------------------------------------------------------------------------------
def verify_bearer(headers: Mapping[str, str], lookup: KeyLookup) -> Key:
    """``Authorization: Bearer <AccessKeyId>:<SecretAccessKey>`` -> the verified key."""
    value = headers.get("authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if not value or scheme.lower() != "bearer" or not token.strip():
        raise MissingAuthentication(
            "Missing credentials: send the header 'Authorization: Bearer <AccessKeyId>:<SecretAccessKey>'."
        )
    key_id, sep, secret = token.strip().partition(":")
    if not sep or not key_id or not secret:
        raise MissingAuthentication("Malformed bearer token: it must be '<AccessKeyId>:<SecretAccessKey>'.")
    found = lookup(key_id)
    if found is None:
        raise UnrecognizedClient(f"The access key {key_id!r} is not known (or was revoked).")
    stored, principal = found
    if not hmac.compare_digest(stored.encode("utf-8"), secret.encode("utf-8")):
        raise InvalidSignature("The secret access key does not match the access key id.")
    return Key(key_id, principal)

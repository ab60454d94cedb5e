"""The Amazon Rekognition wire protocol: ``POST /`` with ``X-Amz-Target: RekognitionService.<Op>``.

An unmodified boto3 ``rekognition`` client pointed at facewarden (``endpoint_url=...``) works:
requests are AWS JSON 1.1 signed with Signature Version 4, errors come back as AWS sends them
(``{"__type": code, "Message": ...}`` plus ``x-amzn-ErrorType``). The handler only parses, calls
:meth:`Service.call` with the verified key's principal, and serialises; policy and audit happen in
the service. The service is synchronous, so the work runs in the thread pool.
"""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse, Response

from ..errors import AuthError, FacewardenError, ImageTooLarge, InvalidInput, UnknownOperation
from ..media import images
from ..service import Service
from .auth import KeyLookup, SignedRequest, audit_auth_failure, parse_authorization, verify_sigv4
from .wire import MAX_IMAGE_BYTES, body_limit, decode_request, encode_response

log = logging.getLogger("facewarden.api")

TARGET_PREFIX = "RekognitionService."
CONTENT_TYPE = "application/x-amz-json-1.1"
#: Request media types routed to the JSON protocol (what the SDKs send, and plain JSON). AWS routes
#: a request by its Content-Type before anything else: another type (text/plain, a form, none) is
#: no JSON-protocol call, and it answers UnknownOperationException.
JSON_CONTENT_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0", "application/json")


class SerializationError(InvalidInput):
    """The body is not JSON."""

    aws_code = "SerializationException"


def error_response(error: FacewardenError, request_id: str) -> Response:
    body = {"__type": error.aws_code, "Message": error.message}
    return Response(
        json.dumps(body),
        status_code=error.http_status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-ErrorType": error.aws_code, "x-amzn-RequestId": request_id},
    )


def internal_error(request_id: str) -> Response:
    return error_response(
        FacewardenError(f"An internal error occurred; it was logged with request id {request_id}."),
        request_id,
    )


def operation_from_target(target: str | None) -> str | None:
    if target and target.startswith(TARGET_PREFIX):
        name = target[len(TARGET_PREFIX) :].strip()
        return name or None
    return None


def check_content_type(value: str | None) -> None:
    """Refuse what AWS does not route to the JSON protocol (see JSON_CONTENT_TYPES)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media not in JSON_CONTENT_TYPES:
        raise UnknownOperation(
            f"Content-Type {value or '(none)'!r} is not a Rekognition request: send the JSON body as "
            f"'Content-Type: {CONTENT_TYPE}' (the AWS SDKs do), with 'X-Amz-Target: RekognitionService.<Operation>'."
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (before it is read, when Content-Length says so) above ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput("Content-Length is not a number.") from None
        if size > limit:
            raise _too_large(size, limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The request body is {'at least ' if size <= limit else ''}{size / 1e6:.1f} MB; this operation "
        f"accepts at most {limit / 1e6:.1f} MB (images sent as bytes may be at most "
        f"{MAX_IMAGE_BYTES / 1024 / 1024:.0f} MB each). Resize or recompress the image."
    )


def mount(app: FastAPI, service: Service, lookup: KeyLookup) -> None:
    """Add the Rekognition endpoint (``POST /``) to ``app``."""

    @app.post("/", include_in_schema=False)
    async def rekognition(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        operation = operation_from_target(request.headers.get("x-amz-target"))
        try:
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request, body_limit(operation))
        except FacewardenError as exc:
            return error_response(exc, request_id)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        signed = SignedRequest(
            method=request.method,
            path=request.url.path,
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            body=body,
        )
        remote = request.client.host if request.client else None
        return await run_in_threadpool(_handle, service, lookup, signed, operation, remote, request_id)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console")


def _handle(
    service: Service,
    lookup: KeyLookup,
    signed: SignedRequest,
    operation: str | None,
    remote: str | None,
    request_id: str,
) -> Response:
    """Authenticate, parse, call the service, serialise (runs in a worker thread)."""
    try:
        try:
            key = verify_sigv4(signed, lookup, now=service.clock())
        except AuthError as exc:
            audit_auth_failure(
                service,
                error=exc,
                access_key_id=_key_id(signed),
                operation=operation,
                adapter="rekognition",
                remote=remote,
            )
            raise
        if operation is None:
            raise UnknownOperation(
                "Missing or unknown X-Amz-Target; send 'X-Amz-Target: RekognitionService.<Operation>', "
                "e.g. RekognitionService.DetectFaces."
            )
        try:
            payload = json.loads(signed.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"The request body is not valid JSON ({exc}).") from None
        request = decode_request(operation, payload)
        with images.wire_formats():  # the wire keeps Rekognition's formats; /v1 and the CLI take more
            response = service.call(operation, request, key.principal, region=_region(signed))
        body = json.dumps(encode_response(operation, response), separators=(",", ":"), allow_nan=False)
        return Response(body, media_type=CONTENT_TYPE, headers={"x-amzn-RequestId": request_id})
    except FacewardenError as exc:
        return error_response(exc, request_id)
    except Exception:
        log.exception("internal error in %s (request id %s)", operation, request_id)
        return internal_error(request_id)


def _region(signed: SignedRequest) -> str | None:
    """The region the (verified) request was signed for: ARNs name it, as AWS's do."""
    for name, value in signed.headers:
        if name.lower() == "authorization":
            return parse_authorization(value)[2] or None
    return None


def _key_id(signed: SignedRequest) -> str | None:
    for name, value in signed.headers:
        if name.lower() == "authorization" and "Credential=" in value:
            return value.split("Credential=", 1)[1].split("/", 1)[0].strip() or None
    return None

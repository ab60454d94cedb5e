"""The native REST API under ``/v1``: the same operations as the Rekognition wire, as resources.

:func:`mount` adds one route per operation that declares one (:mod:`facewarden.api.routes`), the
generic ``POST /v1/operations/{Operation}``, ``GET /v1/operations`` and ``GET /v1/whoami``, and the
error handlers. A handler only authenticates, builds the wire dict from the path, query string and
body (:mod:`facewarden.api.forms`, Rekognition's member names throughout), calls
:meth:`Service.call` once and serialises; the OpenAPI document comes from
:mod:`facewarden.api.openapi`.

Authentication: ``Authorization: Bearer <AccessKeyId>:<SecretAccessKey>``.
The web console sends ``X-Facewarden-Console-Read: 1`` with the reads it makes to draw a page;
the audit record of a declared read (a listing, the log, the report) is then marked
``console_read``, so that the log's readers can hide the console's own traffic (any other
operation's record is not marked).
Errors: ``{"error": "<Code>", "message": "..."}`` with the error's HTTP status.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from ..errors import FacewardenError, InvalidInput, InvalidVideo, VideoTooLarge
from ..service import OPERATIONS, Service
from ..service.params import File, to_wire
from ..service.video import PutVideoRequest, put_video
from .auth import KeyLookup, authenticate, describe_principal
from .forms import build_request
from .openapi import error_responses, operation_extra
from .routes import GENERIC, GENERIC_ROUTE, Route, routes
from .wire import encode_response

log = logging.getLogger("facewarden.api")

#: The header of the console's own reads (see the module docstring).
CONSOLE_READ_HEADER = "X-Facewarden-Console-Read"

bearer = HTTPBearer(auto_error=False, description="`<AccessKeyId>:<SecretAccessKey>`")
#: Declares the bearer scheme in the OpenAPI document (the check itself is :func:`authenticate`).
BEARER = Security(bearer)


def error_response(error: FacewardenError, request_id: str | None = None) -> JSONResponse:
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse(
        {"error": error.aws_code, "message": error.message}, error.http_status, headers=headers
    )


def mount(app: FastAPI, service: Service, lookup: KeyLookup) -> None:
    """Add the /v1 routes, their error handlers and the OpenAPI metadata to ``app``."""
    table = routes()
    for route in table:
        app.add_api_route(
            route.path,
            _endpoint(service, lookup, route),
            methods=[route.method],
            summary=route.summary,
            tags=[route.tag],
            operation_id=route.operation,
            openapi_extra=operation_extra(route),
            response_class=JSONResponse,
        )

    @app.get("/v1/operations", tags=["operations"], summary="The operations this server offers")
    def list_operations() -> dict[str, Any]:
        return {
            "Operations": sorted(OPERATIONS),
            "Kinds": {name: op.kind.value for name, op in sorted(OPERATIONS.items())},
            "Routes": [{"Method": r.method, "Path": r.path, "Operation": r.operation} for r in table],
        }

    app.add_api_route(
        GENERIC_ROUTE.path,
        _endpoint(service, lookup, GENERIC_ROUTE),
        methods=[GENERIC_ROUTE.method],
        summary=GENERIC_ROUTE.summary,
        description=(
            "The escape hatch: `POST /v1/operations/SearchFacesByImage` with the body boto3 would "
            "send (images as base64). Offered operations: " + ", ".join(sorted(OPERATIONS)) + "."
        ),
        tags=[GENERIC_ROUTE.tag],
        operation_id="CallOperation",
        openapi_extra={
            "parameters": [
                {
                    "name": "Operation",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(OPERATIONS)},
                }
            ],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": error_responses(),
        },
    )

    @app.get("/v1/whoami", tags=["operations"], summary="Check a key: its id and principal")
    def whoami(request: Request, _c: HTTPAuthorizationCredentials | None = BEARER) -> Response:
        try:
            key = authenticate(service, lookup, request)
        except FacewardenError as exc:
            return error_response(exc)
        return JSONResponse(
            {"AccessKeyId": key.access_key_id, "Principal": describe_principal(key.principal)}
        )

    @app.post(
        "/v1/videos",
        tags=["video"],
        summary="Upload a video into your organisation's bucket (the body is the file, streamed)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": error_responses(),
        },
    )
    async def upload_video(
        request: Request, Name: str, _c: HTTPAuthorizationCredentials | None = BEARER
    ) -> Response:
        request_id = str(uuid.uuid4())
        try:
            key = await run_in_threadpool(authenticate, service, lookup, request)
            # decided before a byte is stored; the operation decides again and audits
            await run_in_threadpool(service.authorize, key.principal, "PutVideo", None, audit_allowed=False)
            staged = await _stage_upload(request, service)
            result = await run_in_threadpool(
                service.execute, put_video, PutVideoRequest(Name, str(staged)), key.principal
            )
            return JSONResponse(to_wire(result), headers={"x-request-id": request_id})
        except FacewardenError as exc:
            return error_response(exc, request_id)
        except ClientDisconnect:
            return Response(status_code=400)

    @app.exception_handler(FacewardenError)
    async def _facewarden_error(request: Request, exc: FacewardenError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(InvalidInput(f"Invalid request: {where}: {first.get('msg', 'invalid value')}."))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        msg = {
            404: f"No such route: {request.method} {request.url.path}. See /docs for the API.",
            405: f"{request.method} is not allowed on {request.url.path}. See /docs for the API.",
        }
        return JSONResponse(
            {"error": code, "message": msg.get(exc.status_code, str(exc.detail))},
            exc.status_code,
            headers=exc.headers,
        )


async def _stage_upload(request: Request, service: Service) -> Path:
    """The request body, written to a staging file as it arrives, refused past the video limit."""
    limit = service.settings.video_max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise VideoTooLarge(f"The upload is {int(declared) / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB.")
    incoming = service.settings.resolved_buckets_dir / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    staged = incoming / f"{uuid.uuid4().hex}.upload"
    size = 0
    try:
        with open(staged, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise VideoTooLarge(f"The upload is larger than the limit of {limit / 1e6:.1f} MB.")
                out.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if size == 0:
        staged.unlink(missing_ok=True)
        raise InvalidVideo("The upload is empty: send the video file as the request body.")
    return staged


def _endpoint(service: Service, lookup: KeyLookup, route: Route) -> Callable[..., Awaitable[Response]]:
    """The handler of one route: authenticate, parse, call the service, serialise."""

    async def endpoint(request: Request, _c: HTTPAuthorizationCredentials | None = BEARER) -> Response:
        request_id = str(uuid.uuid4())
        operation = str(
            request.path_params.get("Operation") if route.operation == GENERIC else route.operation
        )
        request.scope["facewarden.operation"] = operation
        try:
            key = await run_in_threadpool(authenticate, service, lookup, request)
            call = await build_request(request, route, operation)
            console_read = request.headers.get(CONSOLE_READ_HEADER, "").strip().lower() in ("1", "true")
            response = await run_in_threadpool(
                functools.partial(service.call, console_read=console_read), operation, call, key.principal
            )
            if isinstance(response, File):  # a download: streamed, then marked handed over
                return FileResponse(
                    response.path,
                    media_type=response.media_type,
                    filename=response.filename,
                    headers={"x-request-id": request_id},
                    background=BackgroundTask(response.done),
                )
            return JSONResponse(
                encode_response(operation, response, timestamps="iso"), headers={"x-request-id": request_id}
            )
        except FacewardenError as exc:
            return error_response(exc, request_id)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more
        except Exception:
            log.exception("internal error in %s (request id %s)", operation, request_id)
            return error_response(
                FacewardenError(f"An internal error occurred; it was logged with request id {request_id}."),
                request_id,
            )

    endpoint.__name__ = f"rest_{route.operation}".replace("*", "any")
    return endpoint

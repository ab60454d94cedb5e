"""The native REST API under ``/v1``: the same operations as the Rekognition wire, as resources.

Each route is one row of :data:`ROUTES` naming one service operation; the request is built from
the path, the query string and the body (JSON, or ``multipart/form-data`` with the image files),
using Rekognition's member names throughout (``CollectionId``, ``MaxFaces``, ``Image``...), and
handed to :meth:`Service.call` once. Request and response schemas in the OpenAPI document are
generated from Rekognition's service model, so ``/docs`` and the wire never disagree.

Authentication: ``Authorization: Bearer <AccessKeyId>:<SecretAccessKey>``.
Errors: ``{"error": "<Code>", "message": "..."}`` with the error's HTTP status.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import AuthError, FacewardenError, InvalidInput
from .auth import Key, KeyLookup, audit_auth_failure, verify_bearer
from .rekognition import read_body
from .wire import (
    body_limit,
    check_image_size,
    decode_request,
    encode_response,
    input_shape,
    output_shape,
    to_jsonable,
)

log = logging.getLogger("facewarden.api")

DESCRIPTION = """\
facewarden's native REST API. Every route runs one facewarden operation — the same operations,
request members and response shapes as the Amazon Rekognition API (which facewarden also speaks
at `POST /` for boto3 and the AWS SDKs).

**Authentication**: `Authorization: Bearer <AccessKeyId>:<SecretAccessKey>` (use *Authorize*).

**Images**: send `multipart/form-data` with the image file in the field `Image` (`SourceImage`
and `TargetImage` for compare), other members as form fields; or JSON with the image as
base64, e.g. `{"Image": {"Bytes": "<base64>"}}`. Images may be at most 5 MB.

**Errors**: `{"error": "<Code>", "message": "<what was wrong and what to do>"}` with the HTTP
status of the error (400 invalid input, 403 denied by policy or bad key, 429 quota exceeded).
Every decision, allow or deny, is written to the audit log.
"""

IMAGE_MEMBERS = ("Image", "SourceImage", "TargetImage")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: str
    summary: str
    tag: str
    #: Members read from the query string (GET/DELETE); the rest of the request is the body.
    query: tuple[str, ...] = ()
    body: bool = True
    #: Members fixed by the route itself (e.g. an admin route's sub-action).
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


C = "/v1/collections/{CollectionId}"
ROUTES: list[Route] = [
    Route("POST", "/v1/faces/detect", "DetectFaces", "Detect faces in an image", "faces"),
    Route(
        "POST",
        "/v1/faces/cluster",
        "ClusterFaces",
        "Group the faces of several images by person (no collection): files in Images",
        "faces",
    ),
    Route(
        "POST",
        "/v1/faces/compare",
        "CompareFaces",
        "Compare the largest face of one image with the faces of another",
        "faces",
    ),
    Route(
        "GET",
        "/v1/collections",
        "ListCollections",
        "List collections",
        "collections",
        ("MaxResults", "NextToken"),
        body=False,
    ),
    Route("POST", "/v1/collections", "CreateCollection", "Create a collection", "collections"),
    Route("GET", C, "DescribeCollection", "Describe a collection", "collections", body=False),
    Route("DELETE", C, "DeleteCollection", "Delete a collection and its faces", "collections", body=False),
    Route(
        "POST",
        f"{C}/faces",
        "IndexFaces",
        "Enrol (index) the faces of an image; needs a consent record",
        "faces in collections",
    ),
    Route(
        "GET",
        f"{C}/faces",
        "ListFaces",
        "List the faces of a collection",
        "faces in collections",
        ("MaxResults", "NextToken", "UserId", "FaceIds"),
        body=False,
    ),
    Route(
        "DELETE",
        f"{C}/faces",
        "DeleteFaces",
        "Delete faces (FaceIds in the query string)",
        "faces in collections",
        ("FaceIds",),
        body=False,
    ),
    Route(
        "POST",
        f"{C}/search",
        "SearchFacesByImage",
        "Search the collection for the largest face of an image",
        "search",
    ),
    Route(
        "POST",
        f"{C}/faces/{{FaceId}}/search",
        "SearchFaces",
        "Search the collection for an enrolled face",
        "search",
    ),
    Route("GET", f"{C}/users", "ListUsers", "List users", "users", ("MaxResults", "NextToken"), body=False),
    Route("POST", f"{C}/users", "CreateUser", "Create a user", "users"),
    Route("DELETE", f"{C}/users/{{UserId}}", "DeleteUser", "Delete a user", "users", body=False),
    Route("POST", f"{C}/users/{{UserId}}/faces", "AssociateFaces", "Associate faces with a user", "users"),
    Route(
        "DELETE",
        f"{C}/users/{{UserId}}/faces",
        "DisassociateFaces",
        "Disassociate faces (FaceIds in the query string) from a user",
        "users",
        ("FaceIds",),
        body=False,
    ),
    Route("POST", f"{C}/users/search", "SearchUsers", "Search users by FaceId or UserId", "search"),
    Route(
        "POST",
        f"{C}/users/search-by-image",
        "SearchUsersByImage",
        "Search users by the largest face of an image",
        "search",
    ),
]

#: Admin routes: filled from the admin operations (see :func:`admin_routes`).
ADMIN_TAG = "administration"


def admin_routes(operations: set[str]) -> list[Route]:
    """Routes for the administration operations (organisations, keys, policy, consent, data
    subjects, audit log, transparency report), for those the service offers."""
    A = "/v1/admin"
    table = [
        Route("GET", f"{A}/organizations", "ListOrganizations", "List organisations", ADMIN_TAG, body=False),
        Route(
            "POST",
            f"{A}/organizations",
            "CreateOrganization",
            "Create an organisation: Name, Sector (declared), Description",
            ADMIN_TAG,
        ),
        Route(
            "GET",
            f"{A}/keys",
            "ListKeys",
            "List access keys (optionally of one Organization)",
            ADMIN_TAG,
            ("Organization",),
            body=False,
        ),
        Route(
            "POST",
            f"{A}/keys",
            "CreateKey",
            "Create an access key: Organization, Purpose, Collections, ExpiresAt; the secret is shown once",
            ADMIN_TAG,
        ),
        Route(
            "DELETE", f"{A}/keys/{{AccessKeyId}}", "RevokeKey", "Revoke an access key", ADMIN_TAG, body=False
        ),
        Route(
            "GET",
            f"{A}/policy",
            "DescribePolicy",
            "The policy in force (its text and SHA-256)",
            ADMIN_TAG,
            body=False,
        ),
        Route(
            "PUT",
            f"{A}/policy",
            "ApplyPolicy",
            "Apply a new policy (TOML text in Policy); its hash is audited",
            ADMIN_TAG,
        ),
        Route(
            "GET",
            f"{A}/consents",
            "ListConsents",
            "The consent register",
            ADMIN_TAG,
            ("Subject", "CollectionId", "Organization"),
            body=False,
        ),
        Route(
            "POST",
            f"{A}/consents",
            "GrantConsent",
            "Record a subject's consent: Subject, CollectionId, Evidence, ExpiresAt",
            ADMIN_TAG,
        ),
        Route(
            "DELETE",
            f"{A}/consents",
            "WithdrawConsent",
            "Withdraw a subject's consent (erases the subject's templates)",
            ADMIN_TAG,
            ("Subject", "CollectionId", "Organization"),
            body=False,
        ),
        Route(
            "GET",
            f"{A}/subjects/{{Subject}}",
            "ExportSubject",
            "Everything held about a data subject",
            ADMIN_TAG,
            ("IncludeTemplates",),
            body=False,
        ),
        Route(
            "DELETE",
            f"{A}/subjects/{{Subject}}",
            "EraseSubject",
            "Erase a data subject everywhere",
            ADMIN_TAG,
            body=False,
        ),
        Route(
            "GET",
            f"{A}/audit",
            "ExportAudit",
            "The audit log as JSON lines, a page at a time (optionally Since a time, about one Subject, NewestFirst)",
            ADMIN_TAG,
            ("Since", "Subject", "MaxResults", "NextToken", "NewestFirst"),
            body=False,
        ),
        Route(
            "GET",
            f"{A}/audit/verify",
            "VerifyAudit",
            "Verify the audit log's hash chain and signatures",
            ADMIN_TAG,
            body=False,
        ),
        Route(
            "GET",
            f"{A}/transparency-report",
            "GetTransparencyReport",
            "The transparency report (optionally Since a time)",
            ADMIN_TAG,
            ("Since",),
            body=False,
        ),
        Route(
            "POST",
            f"{A}/retention-sweep",
            "RunRetentionSweep",
            "Purge expired templates and consents now",
            ADMIN_TAG,
        ),
    ]
    return [r for r in table if r.operation in operations]


def _admin_bodies() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the administration requests (for /docs; the service validates)."""
    try:
        from ..policy.principals import SECTORS
    except ImportError:  # pragma: no cover
        SECTORS = ()
    text = {"type": "string", "minLength": 1}
    when = {"description": "Unix time or ISO 8601 date", "oneOf": [{"type": "number"}, {"type": "string"}]}
    return {
        "CreateOrganization": {
            "type": "object",
            "required": ["Name", "Sector"],
            "properties": {
                "Name": text,
                "Sector": {"type": "string", "enum": list(SECTORS)} if SECTORS else text,
                "Description": {"type": "string"},
            },
        },
        "CreateKey": {
            "type": "object",
            "required": ["Organization", "Purpose"],
            "properties": {
                "Organization": text,
                "Purpose": text,
                "Collections": {"type": "array", "items": text},
                "ExpiresAt": when,
                "Description": {"type": "string"},
            },
        },
        "GrantConsent": {
            "type": "object",
            "required": ["Subject", "Evidence"],
            "properties": {
                "Subject": text,
                "CollectionId": text,
                "Evidence": text,
                "ExpiresAt": when,
                "Organization": text,
            },
        },
        "ApplyPolicy": {
            "type": "object",
            "required": ["Policy"],
            "properties": {"Policy": {"type": "string", "description": "TOML"}},
        },
        "RunRetentionSweep": {"type": "object"},
        "ClusterFaces": {
            "type": "object",
            "required": ["Images"],
            "properties": {
                "Images": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["Bytes"],
                        "properties": {"Bytes": {"type": "string", "format": "byte"}},
                    },
                },
                "SimilarityThreshold": {"type": "number", "minimum": 0, "maximum": 100},
            },
        },
    }


#: Types of members only facewarden has (not in Rekognition's model), for query strings and forms.
EXTRA_MEMBER_TYPES = {
    "IncludeTemplates": "boolean",
    "RetentionDays": "integer",
    "MaxResults": "integer",
    "NewestFirst": "boolean",
}
#: ... and for form fields of operations only facewarden has.
EXTRA_FORM_TYPES = {"SimilarityThreshold": "float"}


bearer = HTTPBearer(auto_error=False, description="`<AccessKeyId>:<SecretAccessKey>`")
#: Declares the bearer scheme in the OpenAPI document (the check itself is :func:`authenticate`).
BEARER = Security(bearer)


def error_response(error: FacewardenError, request_id: str | None = None) -> JSONResponse:
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse(
        {"error": error.aws_code, "message": error.message}, error.http_status, headers=headers
    )


def authenticate(service: Any, lookup: KeyLookup, request: Request) -> Key:
    """The verified bearer key of ``request`` (auditing a refusal)."""
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


def mount(app: FastAPI, service: Any, lookup: KeyLookup) -> None:
    """Add the /v1 routes, their error handlers and the OpenAPI metadata to ``app``."""
    from ..service import OPERATIONS

    offered = set(OPERATIONS)
    routes = [r for r in ROUTES if r.operation in offered] + admin_routes(offered)
    for route in routes:
        app.add_api_route(
            route.path,
            _endpoint(service, lookup, route),
            methods=[route.method],
            summary=route.summary,
            tags=[route.tag],
            operation_id=route.operation,
            openapi_extra=_openapi(route),
            response_class=JSONResponse,
        )

    @app.get("/v1/operations", tags=["operations"], summary="The operations this server offers")
    def list_operations() -> dict[str, Any]:
        return {
            "Operations": sorted(OPERATIONS),
            "Routes": [{"Method": r.method, "Path": r.path, "Operation": r.operation} for r in routes],
        }

    generic = Route(
        "POST",
        "/v1/operations/{Operation}",
        "*",
        "Run any operation with a Rekognition-shaped JSON request",
        "operations",
    )
    app.add_api_route(
        generic.path,
        _endpoint(service, lookup, generic),
        methods=["POST"],
        summary=generic.summary,
        description=(
            "The escape hatch: `POST /v1/operations/SearchFacesByImage` with the body boto3 would "
            "send (images as base64). Offered operations: " + ", ".join(sorted(OPERATIONS)) + "."
        ),
        tags=["operations"],
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
            "responses": _error_responses(),
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
            headers=getattr(exc, "headers", None),
        )


def describe_principal(principal: Any) -> Any:
    """A principal as JSON, without anything secret."""
    if principal is None:
        return None
    if hasattr(principal, "as_dict"):
        data = principal.as_dict()
    elif hasattr(principal, "to_dict"):
        data = principal.to_dict()
    elif hasattr(principal, "__dataclass_fields__"):
        import dataclasses

        data = dataclasses.asdict(principal)
    elif isinstance(principal, dict):
        data = dict(principal)
    else:
        return str(principal)
    return to_jsonable(
        {k: v for k, v in data.items() if not any(s in k.lower() for s in ("secret", "hash", "salt"))},
        timestamps="iso",
    )


def _endpoint(service: Any, lookup: KeyLookup, route: Route):
    async def endpoint(request: Request, _c: HTTPAuthorizationCredentials | None = BEARER) -> Response:
        request_id = str(uuid.uuid4())
        operation = request.path_params.get("Operation") if route.operation == "*" else route.operation
        request.scope["facewarden.operation"] = operation
        try:
            key = await run_in_threadpool(authenticate, service, lookup, request)
            call = await _build_request(request, route, str(operation))
            response = await run_in_threadpool(service.call, operation, call, key.principal)
            return JSONResponse(
                encode_response(str(operation), response, timestamps="iso"),
                headers={"x-request-id": request_id},
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


# ---- request building ----------------------------------------------------------------------------
async def _build_request(request: Request, route: Route, operation: str) -> dict[str, Any]:
    shape = input_shape(operation)
    members = shape.members if shape is not None else {}
    call: dict[str, Any] = {}
    # query string
    for name in set(request.query_params.keys()):
        values = request.query_params.getlist(name)
        call[name] = _coerce_query(values, members.get(name) or _extra_shape(name), name)
    # body
    if route.body or route.operation == "*":
        body = await read_body(request, body_limit(operation))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            call.update(await _parse_form(request, body, ctype, members))
        elif body.strip():
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"The request body is not valid JSON ({exc}).") from None
            if not isinstance(payload, dict):
                raise InvalidInput("The request body must be a JSON object.")
            call.update(payload)
    # path (wins over body and query)
    for name in route.path_params:
        if name != "Operation":
            call[name] = request.path_params[name]
    call.update(route.fixed)
    return decode_request(operation, call)


class _ScalarShape:
    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _extra_shape(name: str) -> Any:
    kind = EXTRA_MEMBER_TYPES.get(name)
    return _ScalarShape(kind) if kind else None


def _coerce_query(values: list[str], shape: Any, name: str) -> Any:
    if shape is not None and shape.type_name == "list":
        out = []
        for v in values:
            out.extend(p for p in v.split(",") if p)
        return [_coerce_scalar(v, shape.member, name) for v in out]
    return _coerce_scalar(values[-1], shape, name)


def _coerce_scalar(value: str, shape: Any, name: str) -> Any:
    kind = shape.type_name if shape is not None else "string"
    try:
        if kind in ("integer", "long"):
            return int(value)
        if kind in ("float", "double"):
            return float(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {value[:40]!r}.") from None
    if kind == "boolean":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise InvalidInput(f"{name} must be true or false, not {value[:40]!r}.")
    if kind in ("structure", "map", "list"):
        try:
            return json.loads(value)
        except ValueError:
            raise InvalidInput(f"{name} must be JSON here, not {value[:40]!r}.") from None
    return value


async def _parse_form(request: Request, body: bytes, ctype: str, members: dict[str, Any]) -> dict[str, Any]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        if ctype == "multipart/form-data":
            form = await MultiPartParser(
                request.headers, stream(), max_files=4, max_fields=50, max_part_size=256 * 1024
            ).parse()
        else:
            form = await FormParser(
                request.headers, stream(), max_fields=50, max_part_size=256 * 1024
            ).parse()
    except MultiPartException as exc:
        raise InvalidInput(f"The form could not be parsed: {exc.message}") from None
    out: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                if name == "Images":  # a list of images (ClusterFaces)
                    out.setdefault("Images", []).append(
                        {"Bytes": check_image_size(data, f"Images[{len(out.get('Images', []))}]")}
                    )
                    continue
                canonical = _image_member(name)
                if canonical is None:
                    raise InvalidInput(
                        f"Unexpected file field {name!r}; send images as Image, SourceImage or TargetImage."
                    )
                out[canonical] = {"Bytes": check_image_size(data, canonical)}
            elif name in members and members[name].type_name == "list":
                out.setdefault(name, []).extend(_coerce_query([value], members[name], name))
            else:
                if name in members:
                    out[name] = _coerce_scalar(value, members[name], name)
                elif name in EXTRA_MEMBER_TYPES:
                    out[name] = _coerce_scalar(value, _extra_shape(name), name)
                elif not members and name in EXTRA_FORM_TYPES:
                    out[name] = _coerce_scalar(value, _ScalarShape(EXTRA_FORM_TYPES[name]), name)
                else:
                    out[name] = _form_extra(value)
    finally:
        await form.close()
    return out


def _image_member(name: str) -> str | None:
    for member in IMAGE_MEMBERS:
        if name.lower() in (member.lower(), member.lower().replace("image", "") or "image"):
            return member
    return None


def _form_extra(value: str) -> Any:
    """A form field facewarden adds to Rekognition's members: JSON if it parses as such."""
    text = value.strip()
    if text[:1] in ("{", "[") or text in ("true", "false", "null"):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value


# ---- OpenAPI -------------------------------------------------------------------------------------
def _openapi(route: Route) -> dict[str, Any]:
    shape = input_shape(route.operation)
    members = dict(shape.members) if shape is not None else {}
    required = set(shape.required_members) if shape is not None else set()
    params: list[dict[str, Any]] = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": shape_schema(members[p]) if p in members else {"type": "string", "minLength": 1},
        }
        for p in route.path_params
    ]
    for q in route.query:
        s = members.get(q)
        extra_type = EXTRA_MEMBER_TYPES.get(q, "string")
        schema = shape_schema(s) if s is not None else {"type": extra_type}
        param: dict[str, Any] = {"name": q, "in": "query", "required": q in required, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    extra: dict[str, Any] = {"parameters": params, "responses": _error_responses()}
    out_shape = output_shape(route.operation)
    if out_shape is not None:
        extra["responses"]["200"] = {
            "description": "The operation's result (Rekognition's response shape).",
            "content": {"application/json": {"schema": shape_schema(out_shape, output=True)}},
        }
    if route.body:
        body_members = {
            k: v for k, v in members.items() if k not in route.path_params and k not in route.query
        }
        body_required = sorted(k for k in required if k in body_members)
        json_schema: dict[str, Any] = {"type": "object"}
        if body_members:
            json_schema = {
                "type": "object",
                "properties": {k: shape_schema(v) for k, v in body_members.items()},
            }
            if body_required:
                json_schema["required"] = body_required
        if shape is None and route.operation in _admin_bodies():
            json_schema = _admin_bodies()[route.operation]
            body_required = json_schema.get("required", [])
        content: dict[str, Any] = {"application/json": {"schema": json_schema}}
        if route.operation == "ClusterFaces":
            content["multipart/form-data"] = {
                "schema": {
                    "type": "object",
                    "required": ["Images"],
                    "properties": {
                        "Images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "SimilarityThreshold": {"type": "number", "minimum": 0, "maximum": 100},
                    },
                }
            }
        images = [k for k in body_members if k in IMAGE_MEMBERS]
        if images:
            form_props: dict[str, Any] = {}
            for k, v in body_members.items():
                if k in IMAGE_MEMBERS:
                    form_props[k] = {
                        "type": "string",
                        "format": "binary",
                        "description": "The image file (at most 5 MB).",
                    }
                elif v.type_name in ("string", "integer", "long", "float", "double", "boolean"):
                    form_props[k] = shape_schema(v)
                else:
                    form_props[k] = {"type": "string", "description": f"{k} as JSON text."}
            form_schema: dict[str, Any] = {"type": "object", "properties": form_props}
            if body_required:
                form_schema["required"] = body_required
            content["multipart/form-data"] = {"schema": form_schema}
        extra["requestBody"] = {"required": bool(body_required), "content": content}
    return extra


def _error_responses() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "The error code (Rekognition's error name)."},
            "message": {"type": "string", "description": "What was wrong and what to do."},
        },
    }
    content = {"application/json": {"schema": schema}}
    return {
        "400": {"description": "Invalid request, image, or unknown resource", "content": content},
        "403": {"description": "Denied by policy, or a missing/unknown/invalid key", "content": content},
        "429": {"description": "A per-key quota is used up", "content": content},
    }


def shape_schema(shape: Any, *, output: bool = False, depth: int = 0) -> dict[str, Any]:
    """A botocore shape as JSON Schema (for the OpenAPI document)."""
    if depth > 12:
        return {}
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        props = {k: shape_schema(v, output=output, depth=depth + 1) for k, v in shape.members.items()}
        if set(props) == {"Bytes", "S3Object"}:  # an Image: facewarden takes Bytes only
            props.pop("S3Object")
        schema: dict[str, Any] = {"type": "object", "properties": props}
        req = [r for r in shape.required_members if r in props]
        if req and not output:
            schema["required"] = req
        return schema
    if kind == "list":
        schema = {"type": "array", "items": shape_schema(shape.member, output=output, depth=depth + 1)}
        if not output:
            if "min" in meta:
                schema["minItems"] = int(meta["min"])
            if "max" in meta:
                schema["maxItems"] = int(meta["max"])
        return schema
    if kind == "map":
        return {
            "type": "object",
            "additionalProperties": shape_schema(shape.value, output=output, depth=depth + 1),
        }
    if kind == "string":
        schema = {"type": "string"}
        if shape.enum:
            schema["enum"] = list(shape.enum)
        if not output:
            if "min" in meta:
                schema["minLength"] = int(meta["min"])
            if "max" in meta:
                schema["maxLength"] = int(meta["max"])
            pattern = meta.get("pattern")
            if pattern and "\\p" not in pattern:
                schema["pattern"] = pattern if pattern.startswith("^") else f"^{pattern}$"
        return schema
    if kind in ("integer", "long"):
        schema = {"type": "integer"}
    elif kind in ("float", "double"):
        schema = {"type": "number"}
    elif kind == "boolean":
        return {"type": "boolean"}
    elif kind == "blob":
        return {"type": "string", "format": "byte", "description": "base64"}
    elif kind == "timestamp":
        return {"type": "string", "format": "date-time"} if output else {"type": "number"}
    else:
        return {}
    if not output:
        if "min" in meta:
            schema["minimum"] = meta["min"]
        if "max" in meta:
            schema["maximum"] = meta["max"]
    return schema

"""The OpenAPI document of the native REST API: schemas from the operations' own descriptions.

Rekognition's operations are described by botocore's service model (request and response shapes),
so ``/docs`` and the wire never disagree; facewarden's own operations by their request dataclasses
(:func:`facewarden.service.params.params_of`): the JSON body, the multipart form (an image member
is a file, a list of images several) and the query parameters all come from there.
"""

from __future__ import annotations

from typing import Any

from botocore.model import Shape

from ..service.params import Param, params_of
from .members import Member, members
from .routes import Route
from .wire import MAX_IMAGE_BYTES, input_shape, output_shape

DESCRIPTION = f"""\
facewarden's native REST API. Every route runs one facewarden operation — the same operations,
request members and response shapes as the Amazon Rekognition API (which facewarden also speaks
at `POST /` for boto3 and the AWS SDKs).

**Authentication**: `Authorization: Bearer <AccessKeyId>:<SecretAccessKey>` (use *Authorize*).

**Images**: send `multipart/form-data` with the image file in the field `Image` (`SourceImage`
and `TargetImage` for compare), other members as form fields; or JSON with the image as
base64, e.g. `{{"Image": {{"Bytes": "<base64>"}}}}`. Images may be at most {MAX_IMAGE_BYTES // 2**20} MB.

**Errors**: `{{"error": "<Code>", "message": "<what was wrong and what to do>"}}` with the HTTP
status of the error (400 invalid input, or a daily quota used up: `ServiceQuotaExceededException`,
not worth retrying before midnight UTC; 403 denied by policy or bad key; 404 unknown operation).
Every decision, allow or deny, is written to the audit log.
"""

SCALARS = ("string", "integer", "long", "float", "double", "boolean")


def operation_extra(route: Route) -> dict[str, Any]:
    """The OpenAPI fields of ``route`` (parameters, request body, responses) FastAPI cannot infer."""
    shape = input_shape(route.operation)
    known = members(route.operation)
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": _path_schema(known.get(p))}
        for p in route.path_params
    ]
    for q in route.query:
        schema = member_schema(known[q], botocore=shape is not None)
        param: dict[str, Any] = {"name": q, "in": "query", "required": known[q].required, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    extra: dict[str, Any] = {"parameters": params, "responses": error_responses()}
    out_shape = output_shape(route.operation)
    if out_shape is not None:
        extra["responses"]["200"] = {
            "description": "The operation's result (Rekognition's response shape).",
            "content": {"application/json": {"schema": shape_schema(out_shape, output=True)}},
        }
    if route.body:
        extra["requestBody"] = _request_body(route, known, botocore=shape is not None)
    return extra


def _request_body(route: Route, known: dict[str, Member], *, botocore: bool) -> dict[str, Any]:
    # Rekognition's operations document exactly botocore's members; facewarden's, their own.
    body = {
        k: m
        for k, m in known.items()
        if k not in route.path_params and (m.shape is not None if botocore else m.param is not None)
    }
    required = sorted(k for k, m in body.items() if m.required)
    schema: dict[str, Any] = {"type": "object"}
    if body:
        schema["properties"] = {k: member_schema(m, botocore=botocore) for k, m in body.items()}
        if required:
            schema["required"] = required
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if any(m.kind == "image" or m.item == "image" for m in body.values()):
        form: dict[str, Any] = {}
        for k, m in body.items():
            if m.kind == "image":
                form[k] = {
                    "type": "string",
                    "format": "binary",
                    "description": "The image file (at most 5 MB).",
                }
            elif m.item == "image":
                form[k] = {"type": "array", "items": {"type": "string", "format": "binary"}}
            elif m.kind in ("string", "integer", "float", "boolean"):
                form[k] = member_schema(m, botocore=botocore)
            else:
                form[k] = {"type": "string", "description": f"{k} as JSON text."}
        form_schema: dict[str, Any] = {"type": "object", "properties": form}
        if required:
            form_schema["required"] = required
        content["multipart/form-data"] = {"schema": form_schema}
    return {"required": bool(required), "content": content}


def _path_schema(member: Member | None) -> dict[str, Any]:
    if member is not None and member.shape is not None:
        return shape_schema(member.shape)
    if member is not None and member.param is not None:
        return param_schema(member.param)
    return {"type": "string", "minLength": 1}


def member_schema(m: Member, *, botocore: bool) -> dict[str, Any]:
    if botocore and m.shape is not None:
        return shape_schema(m.shape)
    if m.param is not None:
        return param_schema(m.param)
    return {"type": "string"}


def param_schema(p: Param) -> dict[str, Any]:
    """JSON Schema of a request member facewarden describes (a request dataclass's field)."""
    kind = p.kind
    schema: dict[str, Any]
    if kind == "string":
        schema = {"type": "string"}
        if p.one_of is not None:
            schema["enum"] = list(p.one_of.values)
        elif p.pattern is not None:
            schema["pattern"] = f"^{p.pattern.regex}$"
        elif p.required:
            schema["minLength"] = 1
    elif kind in ("integer", "float"):
        schema = {"type": "integer" if kind == "integer" else "number"}
        if p.range is not None:
            schema.update(minimum=p.range.lo, maximum=p.range.hi)
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "time":
        schema = {
            "description": "Unix time or ISO 8601 date",
            "oneOf": [{"type": "number"}, {"type": "string"}],
        }
    elif kind == "image":
        schema = {
            "type": "object",
            "required": ["Bytes"],
            "properties": {"Bytes": {"type": "string", "format": "byte"}},
        }
    elif kind == "list":
        item = param_schema(p.item) if p.item is not None else {}
        if p.item is not None and p.item.kind == "string" and "minLength" not in item:
            item["minLength"] = 1
        schema = {"type": "array", "items": item}
        if p.items is not None and p.items.lo is not None:
            schema["minItems"] = p.items.lo
        if p.items is not None and p.items.hi is not None:
            schema["maxItems"] = p.items.hi
    elif kind == "structure" and p.structure is not None:
        inner = [q for q in params_of(p.structure) if not q.internal]
        schema = {"type": "object", "properties": {q.wire: param_schema(q) for q in inner}}
        if any(q.required for q in inner):
            schema["required"] = [q.wire for q in inner if q.required]
    elif kind in ("map", "structure"):
        schema = {"type": "object"}
    else:
        schema = {}
    return schema


def error_responses() -> dict[str, Any]:
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
        "400": {
            "description": "Invalid request, image, or unknown resource; or a per-key daily quota is used up "
            "(ServiceQuotaExceededException: it resets at midnight UTC, a retry before then cannot succeed)",
            "content": content,
        },
        "403": {"description": "Denied by policy, or a missing/unknown/invalid key", "content": content},
        "404": {"description": "No such operation or route", "content": content},
    }


def shape_schema(shape: Shape, *, output: bool = False, depth: int = 0) -> dict[str, Any]:
    """A botocore shape as JSON Schema."""
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

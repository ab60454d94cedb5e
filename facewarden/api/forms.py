"""A REST request -> the operation's wire dict: path, query string and body (JSON, or a form).

Values are typed by the operation's request members (:mod:`facewarden.api.members`): a query
string or form field of a number member becomes a number, of a list member a list (repeated or
comma-separated), of a boolean ``true``/``false``. In a ``multipart/form-data`` body, a file field
is an image member (``Image``, or ``image``; ``SourceImage`` or ``source``...) or one image of a
list-of-images member (``Images``, repeated). The dict then goes through the same decoding and
botocore validation as the Rekognition wire (:func:`facewarden.api.wire.decode_request`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from ..errors import InvalidInput
from .members import Member, image_members, members
from .rekognition import read_body
from .routes import GENERIC, Route
from .wire import body_limit, check_image_size, decode_request

FORM_LIMITS = {"max_fields": 50, "max_part_size": 256 * 1024}
MAX_FILES = 4


async def build_request(request: Request, route: Route, operation: str) -> dict[str, Any]:
    """The wire dict of ``operation`` from a REST request."""
    known = members(operation)
    call: dict[str, Any] = {}
    for name in set(request.query_params.keys()):
        call[name] = _from_text(request.query_params.getlist(name), known.get(name), name, form=False)
    if route.body:
        body = await read_body(request, body_limit(operation))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            call.update(await _parse_form(request, body, ctype, operation))
        elif body.strip():
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"The request body is not valid JSON ({exc}).") from None
            if not isinstance(payload, dict):
                raise InvalidInput("The request body must be a JSON object.")
            call.update(payload)
    for name in route.path_params:  # the path wins over body and query
        if route.operation != GENERIC or name != "Operation":
            call[name] = request.path_params[name]
    return decode_request(operation, call)


def _from_text(values: list[str], member: Member | None, name: str, *, form: bool = True) -> Any:
    """Query string or form values (text) -> the member's value. A form field that is no member
    is taken as JSON if it reads as such (a query parameter that is none stays text)."""
    if member is not None and member.kind == "list":
        out = [p for v in values for p in v.split(",") if p]
        return [_scalar(v, member.item, name) for v in out]
    return _scalar(values[-1], member.kind if member else (None if form else "string"), name)


def _scalar(value: str, kind: str | None, name: str) -> Any:
    try:
        if kind == "integer":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "time":
            return float(value) if value.replace(".", "", 1).isdigit() else value
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {value[:40]!r}.") from None
    if kind == "boolean":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise InvalidInput(f"{name} must be true or false, not {value[:40]!r}.")
    if kind in ("object", "list", "image"):
        try:
            return json.loads(value)
        except ValueError:
            raise InvalidInput(f"{name} must be JSON here, not {value[:40]!r}.") from None
    if kind is None:  # a member facewarden does not know: JSON if it reads as such
        text = value.strip()
        if text[:1] in ("{", "[") or text in ("true", "false", "null"):
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _file_member(name: str, operation: str) -> Member | None:
    """The image member a file field fills: its name, or its name without "Image" (``source``)."""
    low = name.lower()
    for m in image_members(operation):
        full = m.name.lower()
        if low in (full, full.replace("image", "") or "image"):
            return m
    return None


async def _parse_form(request: Request, body: bytes, ctype: str, operation: str) -> dict[str, Any]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        if ctype == "multipart/form-data":
            form = await MultiPartParser(
                request.headers, stream(), max_files=MAX_FILES, **FORM_LIMITS
            ).parse()
        else:
            form = await FormParser(request.headers, stream(), **FORM_LIMITS).parse()
    except MultiPartException as exc:
        raise InvalidInput(f"The form could not be parsed: {exc.message}") from None
    known = members(operation)
    out: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                member = _file_member(name, operation)
                if member is None:
                    accepted = ", ".join(m.name for m in image_members(operation)) or "(none)"
                    raise InvalidInput(
                        f"Unexpected file field {name!r}; this operation takes images as: {accepted}."
                    )
                data = await value.read()
                if member.kind == "list":
                    images = out.setdefault(member.name, [])
                    images.append({"Bytes": check_image_size(data, f"{member.name}[{len(images)}]")})
                else:
                    out[member.name] = {"Bytes": check_image_size(data, member.name)}
                continue
            member = known.get(name)
            if member is not None and member.kind == "list":
                out.setdefault(name, []).extend(_from_text([value], member, name))
            else:
                out[name] = _from_text([value], member, name)
    finally:
        await form.close()
    return out

"""An operation's request members as the HTTP layer sees them: name, type, where they are described.

Every operation's request dataclass describes its members (:func:`facewarden.service.params.params_of`);
for Rekognition's operations botocore's service model describes them too (and is what the wire is
checked against and the OpenAPI document shows). Query strings and forms are typed from here, so
that no operation needs a special case.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from botocore.model import Shape

from ..service import OPERATIONS
from ..service.params import Param, params_of
from .wire import input_shape


@dataclass(frozen=True)
class Member:
    name: str
    #: string | integer | float | boolean | time | image | blob | list | object | any
    kind: str
    #: The kind of a list's items.
    item: str | None = None
    required: bool = False
    #: facewarden's description (the request dataclass's field), if it reads the member.
    param: Param | None = None
    #: botocore's shape, for Rekognition's operations.
    shape: Shape | None = None


_SHAPE_KINDS = {
    "string": "string",
    "integer": "integer",
    "long": "integer",
    "float": "float",
    "double": "float",
    "boolean": "boolean",
    "blob": "blob",
    "timestamp": "time",
    "list": "list",
    "map": "object",
}


def _shape_kind(shape: Shape) -> str:
    if shape.type_name == "structure":
        return "image" if "Bytes" in shape.members else "object"
    return _SHAPE_KINDS.get(shape.type_name, "any")


def _shape_item(shape: Shape) -> str | None:
    return _shape_kind(shape.member) if shape.type_name == "list" else None


def _param_kind(p: Param) -> str:
    return {"map": "object", "structure": "object"}.get(p.kind, p.kind)


@functools.cache
def members(operation: str) -> dict[str, Member]:
    """The request members of ``operation`` (none for an operation facewarden does not offer)."""
    op = OPERATIONS.get(operation)
    if op is None:
        return {}
    shape = input_shape(operation)
    shapes = dict(shape.members) if shape is not None else {}
    required = set(shape.required_members) if shape is not None else set()
    out: dict[str, Member] = {}
    for p in params_of(op.request):
        if p.internal:
            continue
        s = shapes.get(p.wire)
        # The wire's type is botocore's where it has one (Attributes: a list on the wire, "ALL"
        # once checked); required if either says so (IndexFaces' Image is optional only in Python).
        if s is not None:
            kind, item = _shape_kind(s), _shape_item(s)
        else:
            kind, item = _param_kind(p), _param_kind(p.item) if p.item is not None else None
        out[p.wire] = Member(p.wire, kind, item, p.required or p.wire in required, p, s)
    for name, s in shapes.items():
        if name not in out:
            out[name] = Member(name, _shape_kind(s), _shape_item(s), name in required, None, s)
    return out


def image_members(operation: str) -> list[Member]:
    """The members that take an image, or a list of images (file fields of a form)."""
    return [m for m in members(operation).values() if m.kind == "image" or m.item == "image"]

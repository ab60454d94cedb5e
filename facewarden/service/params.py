"""The one parameter module: wire dicts -> typed requests, typed results -> Rekognition's shapes.

An operation's request is a dataclass with snake_case fields; its member name on the wire is the
field name in CamelCase (``external_image_id`` -> ``ExternalImageId``), or the name given with
:class:`Wire` where Rekognition's does not camelize. The field's type says how a value is
checked, with the markers of :data:`typing.Annotated`::

    @dataclass(frozen=True)
    class SearchFacesByImageRequest:
        collection_id: CollectionId                       # required: no default
        image: Image
        max_faces: Annotated[int, Range(1, 4096)] = 80    # optional: the default
        face_match_threshold: Threshold | None = None
        analysed: Annotated[AnalysedImage | None, INTERNAL] = None   # no wire dict can set it

:func:`parse` builds a request from a wire dict (the Rekognition wire, a REST form, the CLI);
:func:`validate` checks one built in Python (the CLI, the Python API) the same way; both raise
:class:`~facewarden.errors.InvalidInput` with a message that says what was wrong and what to send.
Unknown members are ignored (Rekognition's own members are checked against botocore's model by
the HTTP layer before they get here). :func:`to_wire` turns a result dataclass into Rekognition's
shape: members in CamelCase, ``None`` left out (unless the field is :data:`NULLABLE`), nested
dataclasses and lists likewise (a dict member is taken to be in Rekognition's shape already: the
lower layers' own serialisations, e.g. ``Face.to_rekognition()``). Structures nest: a member whose
type is a dataclass is parsed and checked member by member. :func:`params_of` describes a request's members for the REST layer,
which derives JSON Schema, form fields and query parameters from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from ..errors import InvalidInput, InvalidS3Object
from .refusals import refused_attribute

T = TypeVar("T")


# ---- markers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wire:
    """The member's name on the wire, where it is not the field name in CamelCase."""

    name: str


@dataclass(frozen=True)
class Range:
    """A number from ``lo`` to ``hi`` (an ``int`` field takes whole numbers only)."""

    lo: float
    hi: float


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` entirely; ``what`` says in words what is expected."""

    regex: str
    what: str

    @functools.cached_property
    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.regex)


@dataclass(frozen=True)
class Items:
    """A list of ``lo`` to ``hi`` items (either may be None); ``noun`` names them in messages."""

    noun: str
    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True)
class OneOf:
    """One of ``values``; ``message`` (with ``{name}``, ``{value}``, ``{choices}``) when not.
    With ``upper``, the value is compared and returned in upper case."""

    values: tuple[str, ...]
    message: str = "{name} must be one of {choices}; got {value!r}."
    upper: bool = False


@dataclass(frozen=True)
class Check:
    """A check of the member's own: ``fn(value, name)`` returns the value to use or raises."""

    fn: Callable[[Any, str], Any]


class _Flag:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: A field no wire dict can set (e.g. images the bulk indexer analysed in its worker processes).
INTERNAL = _Flag("INTERNAL")
#: A result member sent as ``null`` when None (Rekognition leaves absent members out).
NULLABLE = _Flag("NULLABLE")


# ---- value types --------------------------------------------------------------------------------
@dataclass(frozen=True)
class S3Object:
    """Rekognition's ``S3Object``: a file in a bucket folder of the buckets directory (see
    :mod:`facewarden.media.buckets`; which buckets a caller may read is the service's to decide)."""

    bucket: Annotated[str, Pattern(r"[0-9A-Za-z.\-_]{3,255}", "a bucket name: 3-255 of a-z, A-Z, 0-9, . - _")]
    name: Annotated[str, Pattern(r"[^\x00]{1,1024}", "an object key of 1-1024 characters")]
    version: Annotated[str, Pattern(r"[^\x00]{1,1024}", "an object version")] | None = None


@dataclass(frozen=True)
class Image:
    """An image: Rekognition's ``Image``, its bytes (``{"Bytes": ...}``) or an object in a bucket
    (``{"S3Object": {...}}``, read by the service into ``data`` before the operation runs)."""

    data: bytes = dataclasses.field(default=b"", repr=False)
    s3_object: S3Object | None = None

    def __repr__(self) -> str:
        if self.s3_object is not None and not self.data:
            return f"Image(s3://{self.s3_object.bucket}/{self.s3_object.name})"
        return f"Image({len(self.data)} bytes)"


#: A point in time: a Unix time, or an ISO 8601 date or date/time (UTC unless it says otherwise).
class Time(float):
    pass


class File:
    """A file the caller downloads (a released copy). The native REST API streams it as the
    response body; a JSON adapter sends its bytes in base64 (``{"Bytes": ...}``). ``sent`` is called
    once it has been handed over (e.g. to delete a copy that may be downloaded only once)."""

    def __init__(
        self, path: str, media_type: str, filename: str, sent: Callable[[], None] | None = None
    ) -> None:
        self.path, self.media_type, self.filename = path, media_type, filename
        self._sent = sent

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def done(self) -> None:
        """Mark the file handed over (once)."""
        sent, self._sent = self._sent, None
        if sent is not None:
            sent()

    def __repr__(self) -> str:
        return f"File({self.filename!r}, {self.media_type})"


@dataclass(frozen=True)
class Empty:
    """A request without members, or a result with nothing in it (Rekognition answers {})."""


# ---- the members operations share ------------------------------------------------------------------
CollectionId = Annotated[str, Pattern(r"[a-zA-Z0-9_.\-]{1,255}", "1-255 characters of a-z, A-Z, 0-9, _ . -")]
UserId = Annotated[str, Pattern(r"[a-zA-Z0-9_.\-:]{1,128}", "1-128 characters of a-z, A-Z, 0-9, _ . - :")]
ExternalImageId = Annotated[
    str, Pattern(r"[a-zA-Z0-9_.\-:]{1,255}", "1-255 characters of a-z, A-Z, 0-9, _ . - :")
]
FaceId = Annotated[
    str,
    Pattern(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "a face id as IndexFaces returned it (a lower-case UUID)",
    ),
]
ClientRequestToken = Annotated[str, Pattern(r"[a-zA-Z0-9_\-]{1,64}", "1-64 characters of a-z, A-Z, 0-9, _ -")]
#: A calibrated similarity, 0-100 (policy may raise it: purpose floor, gallery size).
Similarity = Annotated[float, Range(0, 100)]

QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")
QualityFilter = Annotated[str, OneOf(QUALITY_FILTERS, upper=True)]


def next_token(value: Any, name: str) -> str | None:
    """The NextToken of the previous page (an empty one: the first page)."""
    if value == "":
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise InvalidInput(f"{name} must be the NextToken string of the previous response.")
    return value


NextToken = Annotated[str, Check(next_token)]


def attributes(value: Any, name: str) -> str:
    """Rekognition's ``Attributes`` list -> "DEFAULT" or "ALL"; the attributes facewarden refuses
    (:mod:`facewarden.service.refusals`: demographic, emotional, unmeasured) raise NotOffered."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f'{name} must be a list of strings, e.g. ["DEFAULT"] or ["ALL"].')
    for v in value:
        refusal = refused_attribute(v)
        if refusal is not None:
            raise refusal
        if v.upper() not in ("DEFAULT", "ALL"):
            raise InvalidInput(f"Unknown attribute {v!r}; use DEFAULT or ALL.")
    return "ALL" if any(v.upper() == "ALL" for v in value) else "DEFAULT"


#: Which face attributes to return: "DEFAULT" or "ALL" (Rekognition's list of names on the wire).
Attributes = Annotated[str, Check(attributes)]


# ---- the description of a request's members -----------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One member of a request: how it is named, typed and checked."""

    field: str
    wire: str
    #: string | integer | float | boolean | image | time | list | map | structure | any
    kind: str
    required: bool
    default: Any = None
    #: Makes the default (a list, say) where the field has a default factory.
    factory: Callable[[], Any] | None = None
    item: Param | None = None
    #: The dataclass of a structure member (its own members are checked the same way).
    structure: type[Any] | None = None
    range: Range | None = None
    pattern: Pattern | None = None
    items: Items | None = None
    one_of: OneOf | None = None
    check: Check | None = None
    internal: bool = False
    nullable: bool = False


def camel(name: str) -> str:
    """``external_image_id`` -> ``ExternalImageId``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


_PARAMS: dict[type[Any], tuple[Param, ...]] = {}


def params_of(cls: type[Any]) -> tuple[Param, ...]:
    """The members of request (or result) dataclass ``cls``, in field order."""
    found = _PARAMS.get(cls)
    if found is None:
        found = _PARAMS[cls] = _params_of(cls)
    return found


def _params_of(cls: type[Any]) -> tuple[Param, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        has_factory = f.default_factory is not dataclasses.MISSING
        required = f.default is dataclasses.MISSING and not has_factory
        default = None if f.default is dataclasses.MISSING else f.default
        p = _param(f.name, hints[f.name], required, default)
        out.append(dataclasses.replace(p, factory=typing.cast(Any, f.default_factory)) if has_factory else p)
    return tuple(out)


def _param(name: str, hint: Any, required: bool, default: Any) -> Param:
    base, marks = _unwrap(hint)
    wire = next((m.name for m in marks if isinstance(m, Wire)), camel(name))
    kw: dict[str, Any] = {
        "range": _first(marks, Range),
        "pattern": _first(marks, Pattern),
        "items": _first(marks, Items),
        "one_of": _first(marks, OneOf),
        "check": _first(marks, Check),
        "internal": INTERNAL in marks,
        "nullable": NULLABLE in marks,
    }
    if kw["internal"]:
        return Param(name, wire, "any", required, default, **kw)
    kind, item = _kind(base, name)
    structure = typing.get_origin(base) or base if kind == "structure" else None
    return Param(name, wire, kind, required, default, item=item, structure=structure, **kw)


def _unwrap(hint: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``| None`` (in any nesting) -> (the base type, the markers)."""
    marks: list[Any] = []
    while True:
        if typing.get_origin(hint) is Annotated:
            marks.extend(hint.__metadata__)
            hint = hint.__origin__
            continue
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) == 1:
                hint = args[0]
                continue
        return hint, marks


def _kind(base: Any, name: str) -> tuple[str, Param | None]:
    origin = typing.get_origin(base) or base
    if origin in (list, tuple):
        args = typing.get_args(base)
        item = _param(f"{name}[]", args[0], True, None) if args else None
        return "list", item
    if origin in (dict, Mapping):
        return "map", None
    simple = {str: "string", bool: "boolean", int: "integer", float: "float", Image: "image", Time: "time"}
    if origin in simple:
        return simple[origin], None
    if dataclasses.is_dataclass(origin):
        return "structure", None
    return "any", None


def _first(marks: list[Any], cls: type[T]) -> T | None:
    return next((m for m in marks if isinstance(m, cls)), None)


# ---- wire dict -> request ---------------------------------------------------------------------------
def parse(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build request ``cls`` from a wire dict, checking every member (InvalidInput if one is bad)."""
    if not isinstance(data, Mapping):
        raise InvalidInput("The request must be a JSON object.")
    return _structure(cls, data, "")


def _structure(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    values = {p.field: coerce(p, data.get(p.wire), prefix + p.wire) for p in params_of(cls) if not p.internal}
    return cls(**values)


def validate(request: T) -> T:
    """Check a request built in Python the way :func:`parse` checks one from the wire; returns it
    with each member in its canonical form (e.g. QualityFilter in upper case)."""
    return _validate(request, "")


def _validate(request: T, prefix: str) -> T:
    values = {
        p.field: coerce(p, getattr(request, p.field), prefix + p.wire)
        for p in params_of(type(request))
        if not p.internal
    }
    return dataclasses.replace(request, **values)  # type: ignore[type-var]


def coerce(p: Param, value: Any, name: str) -> Any:
    """One member's value (from the wire, or already typed) -> its typed value, or InvalidInput."""
    if _absent(p, value):
        if p.required:
            raise InvalidInput(f"{name} is required.")
        return p.factory() if p.factory is not None else p.default
    if p.check is not None:
        return p.check.fn(value, name)
    kind = p.kind
    if kind == "string":
        return _string(p, value, name)
    if kind == "integer":
        return _integer(p, value, name)
    if kind == "float":
        return _number(p, value, name)
    if kind == "boolean":
        return _boolean(value, name)
    if kind == "image":
        return _image(value, name)
    if kind == "time":
        return _time(value, name)
    if kind == "list":
        return _list(p, value, name)
    if kind == "structure" and p.structure is not None:
        if isinstance(value, p.structure):
            return _validate(value, f"{name}.")
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{name} must be an object.")
        return _structure(p.structure, value, f"{name}.")
    if kind == "map" and not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be an object.")
    return value


def _absent(p: Param, value: Any) -> bool:
    # An empty string counts as absent for free text (a form left empty), not for ids and choices.
    return value is None or (
        value == "" and p.kind in ("string", "time") and p.pattern is None and p.one_of is None
    )


def _string(p: Param, value: Any, name: str) -> str:
    if p.pattern is not None:
        if not isinstance(value, str) or not p.pattern.compiled.fullmatch(value):
            raise InvalidInput(f"{name} must be {p.pattern.what}; got {value!r}.")
        return value
    if p.one_of is not None:
        o = p.one_of
        key = value.upper() if o.upper and isinstance(value, str) else value
        if not isinstance(value, str) or key not in o.values:
            raise InvalidInput(o.message.format(name=name, value=value, choices=", ".join(o.values)))
        return str(key)
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string.")
    return value


def _integer(p: Param, value: Any, name: str) -> int:
    lo, hi = (int(p.range.lo), int(p.range.hi)) if p.range else (-(2**63), 2**63 - 1)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise InvalidInput(f"{name} must be a whole number between {lo} and {hi}.")
    if not lo <= int(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, not {value}.")
    return int(value)


def _number(p: Param, value: Any, name: str) -> float:
    return number(value, name, *((p.range.lo, p.range.hi) if p.range else (-float("inf"), float("inf"))))


def number(value: Any, name: str, lo: float, hi: float) -> float:
    """A number from ``lo`` to ``hi``, or InvalidInput saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number between {lo:g} and {hi:g}.")
    if not lo <= float(value) <= hi:
        raise InvalidInput(f"{name} must be between {lo:g} and {hi:g}, not {value}.")
    return float(value)


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):  # a query parameter
        return value.lower() == "true"
    raise InvalidInput(f"{name} must be true or false.")


def _image(value: Any, name: str) -> Image:
    if isinstance(value, Image):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be an object with Bytes.")
    if value.get("S3Object") is not None and value.get("Bytes") is None:
        s3 = value["S3Object"]
        if not isinstance(s3, Mapping):
            raise InvalidS3Object(f"{name}.S3Object must be an object with Bucket and Name.")
        return Image(b"", _structure(S3Object, s3, f"{name}.S3Object."))
    data = value.get("Bytes")
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidInput(f"{name}.Bytes is missing; send the encoded image bytes (or an S3Object).")
    return Image(bytes(data))


def time_of(value: Any, name: str) -> Time:
    """A Unix time, or an ISO 8601 date or date/time (UTC unless it says otherwise) -> a Time."""
    return _time(value, name)


def _time(value: Any, name: str) -> Time:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a Unix time or an ISO 8601 date.")
    if isinstance(value, (int, float)):
        return Time(value)
    if isinstance(value, (dt.date, str)):
        try:
            d = value if isinstance(value, dt.date) else dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{name} must be a Unix time or an ISO 8601 date such as 2025-01-31."
            ) from None
        if not isinstance(d, dt.datetime):
            d = dt.datetime(d.year, d.month, d.day)
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        return Time(d.timestamp())
    raise InvalidInput(f"{name} must be a Unix time or an ISO 8601 date.")


def _list(p: Param, value: Any, name: str) -> list[Any]:
    spec = p.items or Items("values")
    lo, hi = spec.lo, spec.hi
    many = f"{lo} to {hi} {spec.noun}" if lo is not None and hi is not None else spec.noun
    bad = InvalidInput(f"{name} must be a list of {many}.")
    if (
        not isinstance(value, (list, tuple))
        or (lo is not None and len(value) < lo)
        or (hi is not None and len(value) > hi)
    ):
        raise bad
    item = p.item
    if item is None:
        return list(value)
    if item.kind == "string" and item.pattern is None and item.one_of is None:
        if not all(isinstance(v, str) and v for v in value):  # plain strings: the list's own message
            raise bad
        return list(value)
    return [coerce(item, v, f"{name}[{i}]") for i, v in enumerate(value)]


def peek(source: Any, field: str) -> Any:
    """Member ``field`` of a wire dict or a typed request, unchecked: what policy decides on before
    the request is parsed (a denied caller learns nothing about their request's validity)."""
    if isinstance(source, Mapping):
        return source.get(camel(field))
    return getattr(source, field, None)


# ---- result -> wire dict ----------------------------------------------------------------------------
#: Values :func:`to_wire` passes through unchanged: a dict member is taken to be in Rekognition's
#: shape already (the lower layers' own serialisations, e.g. ``Face.to_rekognition()``).
_PLAIN = frozenset({dict, str, int, float, bool, type(None)})


def to_wire(result: Any) -> Any:
    """A result (dataclass, list of them, plain value) -> Rekognition's shape: members in
    CamelCase (or their :class:`Wire` name), None members left out unless :data:`NULLABLE`."""
    if type(result) in _PLAIN:
        return result
    if isinstance(result, (Image, File)):
        return result if isinstance(result, File) else {"Bytes": result.data}
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        out: dict[str, Any] = {}
        for p in params_of(type(result)):
            if p.internal:
                continue
            value = getattr(result, p.field)
            if value is None and not p.nullable:
                continue
            out[p.wire] = to_wire(value)
        return out
    if isinstance(result, (list, tuple)):
        return [v if type(v) in _PLAIN else to_wire(v) for v in result]
    return result

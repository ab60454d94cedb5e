"""The operations, written once: policy decision, media, engine, gallery, audit record, in that order.

Every adapter runs an operation through :class:`Service` — the HTTP APIs with a wire dict
(``service.call("SearchFacesByImage", {...}, principal)`` -> a dict in Rekognition's shape), the
CLI and the Python API with a typed request (``service.execute(search_faces_by_image, request,
principal)`` -> the typed result). Both take the same path: decide (policy and quota, before
anything is decoded), check the request, run, write one audit record (also for denials and
failures).

How to add an operation
-----------------------
Declare it once, in the service module of its domain (``faces``, ``gallery``, ``users``,
``consent``, ``admin``, ``retention``...; a new domain gets a new module, imported below)::

    @dataclass(frozen=True)
    class RedactFacesRequest:                      # wire members: the fields in CamelCase
        image: Image                               # required (no default)
        method: Annotated[str, OneOf(("blur", "pixelate", "solid"))] = "blur"
        margin: Annotated[float, Range(0, 1)] = 0.1
        keep_collection_id: CollectionId | None = None

    @dataclass(frozen=True)
    class RedactFacesResult:
        image: Image
        faces_hidden: int

    @operation("RedactFaces", kind=Kind.REDACT, rest=Rest("POST", "/v1/redact", "redaction"))
    def redact_faces(svc: Service, ctx: Context, req: RedactFacesRequest) -> RedactFacesResult:
        '''Redact every face of an image'''       # first line: the route's summary in /docs
        ...                                        # fill ctx.counts / ctx.subjects for the audit
        return RedactFacesResult(...)

* ``kind`` (:class:`~facewarden.policy.kinds.Kind`) is what policy decides on: the policy file's
  rules and purposes name kinds, and a file cannot reclassify an operation. A new kind is a new
  member of ``Kind`` (policy's), named by the purposes that may use it in ``default_policy.toml``.
* The request's fields, with the markers of :mod:`facewarden.service.params` (``Range``,
  ``Pattern``, ``OneOf``, ``Items``, ``Check``; shared types such as ``CollectionId``, ``Image``,
  ``Similarity``), are the whole parameter schema: :func:`~facewarden.service.params.parse` checks
  a wire dict against it (messages say what to send), and the REST layer derives the JSON Schema,
  the form fields (an ``Image`` field is a file upload, ``list[Image]`` several) and the query
  parameters from it. Rekognition's own operations keep botocore's model for the wire and OpenAPI.
* A field marked ``INTERNAL`` can only be set in Python (e.g. images analysed by bulk workers).
* The result serialises with :func:`~facewarden.service.params.to_wire` (CamelCase members, None
  left out unless ``NULLABLE``); nested dataclasses likewise.
* ``rest`` puts it on the native REST API (members in ``{braces}`` of the path come from the path;
  the others from the query for GET/DELETE, from the JSON or multipart body otherwise); every
  operation is also at ``POST /v1/operations/{Name}`` and on the Rekognition wire by its name.
* Work that runs outside the pipeline (worker processes) is decided first with
  :meth:`Service.authorize`; an activity that is no operation declares its kind with
  :func:`~facewarden.service.registry.declare`.
"""

from . import (  # noqa: F401  (each module registers its operations)
    admin,
    consent,
    evaluation,
    faces,
    gallery,
    household,
    jobs,
    keys,
    recovery,
    redaction,
    release,
    retention,
    users,
    video,
)
from .core import Service, largest
from .registry import ACTIVITIES, OPERATIONS, Context, Operation, Rest, declare, operation

__all__ = [
    "ACTIVITIES",
    "OPERATIONS",
    "Context",
    "Operation",
    "Rest",
    "Service",
    "declare",
    "largest",
    "operation",
]

"""The registry of operations: each declared once, with its kind, request and result types.

:func:`operation` registers ``fn(svc, ctx, request) -> result`` under its name and kind (see the
package docstring for how to add one); :func:`declare` gives a kind to work that runs outside the
pipeline. :class:`Context` is what one call in flight carries to its audit record.
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..errors import AccessDenied
from ..policy.kinds import Kind
from ..policy.principals import Principal
from ..policy.rules import Decision

Req = TypeVar("Req")
Res = TypeVar("Res")
#: The service an operation runs on (:class:`facewarden.service.core.Service`, which imports this
#: registry: the registry is generic in it rather than importing it back).
Svc = TypeVar("Svc")


@dataclass
class Context:
    """One call in flight: who asks, what, and what the audit record will say about it."""

    operation: str
    #: The operation's declared kind (None: nothing declared it, and policy denies it).
    kind: Kind | None
    principal: Principal | None
    collection_id: str | None = None
    #: Filled by the operation for the audit record (never images or templates).
    counts: dict[str, int] = field(default_factory=dict)
    matched_face_ids: list[str] = field(default_factory=list)
    applied_threshold: dict[str, Any] | None = None
    #: Data subjects (ExternalImageId / UserId) the call is about; the audit log keeps pseudonyms.
    subjects: list[str] = field(default_factory=list)
    #: Extra, non-biometric facts for the audit record.
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    decision: Decision | None = None
    #: Set once the call's audit record is written (by the pipeline or by :meth:`Service.audit_now`).
    audit_record: dict[str, Any] | None = None
    #: The region a wire request was signed for (None: the configured one), as ARNs name it.
    region: str | None = None

    @property
    def caller(self) -> Principal:
        """The principal of a call policy allowed (it refuses calls without one)."""
        if self.principal is None:
            raise AccessDenied("Every request needs a principal (an organisation's access key).", "principal")
        return self.principal


# ---- the registry of operations ------------------------------------------------------------------
@dataclass(frozen=True)
class Rest:
    """Where the native REST API offers an operation. Request members named ``{Like}`` in the path
    come from the path; the others from the query string (GET, DELETE) or the body (POST, PUT).
    The operation's docstring's first line is the route's summary in /docs; ``tag`` its group."""

    method: str
    path: str
    tag: str


@dataclass(frozen=True)
class Operation(Generic[Req, Res]):
    """An operation as declared with :func:`operation`."""

    name: str
    kind: Kind
    request: type[Req]
    result: type[Res]
    #: ``run(service, ctx, request)``; the handler itself types its service.
    run: Callable[[Any, Context, Req], Res]
    rest: Rest | None = None
    #: The call creates the collection it names (policy decides on the collection it would be).
    creates_collection: bool = False
    #: A read of the service's own records (a listing, a description, the audit log, the report):
    #: it computes nothing and changes nothing. When the web console asks for one to draw a page,
    #: the record says so (``details.console_read``) and the log's readers may hide it.
    reads: bool = False

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.run) or self.name).strip().splitlines()[0]


OPERATIONS: dict[str, Operation[Any, Any]] = {}
#: Work that runs outside :meth:`Service.call` (evaluations in worker processes) and is decided by
#: :meth:`Service.authorize` under a declared kind.
ACTIVITIES: dict[str, Kind] = {}


def operation(
    name: str,
    *,
    kind: Kind,
    rest: Rest | None = None,
    creates_collection: bool = False,
    reads: bool = False,
) -> Callable[[Callable[[Svc, Context, Req], Res]], Operation[Req, Res]]:
    """Declare ``fn(svc, ctx, request) -> result`` as the operation ``name`` of ``kind``.

    The request and result types are read from ``fn``'s annotations; ``rest`` says where the
    native REST API offers it (otherwise only at ``POST /v1/operations/{name}``); ``reads``: see
    :attr:`Operation.reads` (only for operations that compute and change nothing).
    """
    if not isinstance(kind, Kind):
        raise TypeError(f"operation {name}: kind must be a facewarden.policy.kinds.Kind, not {kind!r}")

    def deco(fn: Callable[[Svc, Context, Req], Res]) -> Operation[Req, Res]:
        hints = typing.get_type_hints(fn)
        names = list(inspect.signature(fn).parameters)
        if len(names) != 3 or "return" not in hints or names[2] not in hints:
            raise TypeError(f"operation {name}: declare it as fn(svc, ctx, request: Request) -> Result")
        op = Operation(name, kind, hints[names[2]], hints["return"], fn, rest, creates_collection, reads)
        OPERATIONS[name] = op
        return op

    return deco


def declare(name: str, kind: Kind) -> str:
    """Declare the kind of work ``name`` that runs outside :meth:`Service.call` (see ACTIVITIES)."""
    ACTIVITIES[name] = kind
    return name


#: Checks every service process runs at start-up, once the policy is in force (e.g. the household
#: collections policy now refuses): registered with :func:`at_start` by the modules that own them.
STARTUP: list[Callable[[Any], object]] = []


def at_start(check: Callable[[Svc], object]) -> Callable[[Svc], object]:
    """Register ``check(service)`` to run when a service process starts (a failure is logged)."""
    STARTUP.append(check)
    return check


@dataclass(frozen=True)
class Duty:
    """Work every service process does on a period, declared with :func:`periodic`."""

    name: str
    every_s: float
    #: ``run(service, now)`` -> what it did (counts, for the caller and the audit record).
    run: Callable[[Any, float], Mapping[str, int]]


DUTIES: dict[str, Duty] = {}


def periodic(
    name: str, every_s: float
) -> Callable[[Callable[[Svc, float], Mapping[str, int]]], Callable[[Svc, float], Mapping[str, int]]]:
    """Declare ``fn(service, now)`` as a duty run every ``every_s`` seconds by every service process
    (:class:`facewarden.service.periodic.Periodic` says when)."""

    def deco(fn: Callable[[Svc, float], Mapping[str, int]]) -> Callable[[Svc, float], Mapping[str, int]]:
        DUTIES[name] = Duty(name, every_s, fn)
        return fn

    return deco


def kind_of(name: str) -> Kind | None:
    """The declared kind of operation or activity ``name`` (None if nothing declares it)."""
    op = OPERATIONS.get(name)
    return op.kind if op is not None else ACTIVITIES.get(name)


def declared_kinds() -> dict[str, Kind]:
    """Every declared operation and activity, with its kind."""
    return {**ACTIVITIES, **{name: op.kind for name, op in OPERATIONS.items()}}

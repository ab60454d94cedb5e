"""The native REST API's route table, derived from the operations' own declarations.

An operation declared with ``rest=Rest(method, path, tag)`` (:mod:`facewarden.service.registry`) gets
that route; every operation is also reachable at ``POST /v1/operations/{Operation}`` (the generic
route, with the request boto3 would send). Request members named in the path come from the path;
for GET and DELETE the others come from the query string, otherwise from the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..service import OPERATIONS
from .members import members

GENERIC = "*"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    #: The operation's name, or GENERIC for /v1/operations/{Operation}.
    operation: str
    summary: str
    tag: str

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def body(self) -> bool:
        """Does the request carry a body (POST, PUT), or only a query string (GET, DELETE)?"""
        return self.method in ("POST", "PUT", "PATCH") or self.operation == GENERIC

    @property
    def query(self) -> list[str]:
        """Members read from the query string: every member not in the path, for GET and DELETE."""
        if self.body:
            return []
        return [m for m in members(self.operation) if m not in self.path_params]


def routes() -> list[Route]:
    """The dedicated route of every operation that declares one, in declaration order."""
    return [
        Route(op.rest.method, op.rest.path, name, op.summary, op.rest.tag)
        for name, op in OPERATIONS.items()
        if op.rest is not None
    ]


GENERIC_ROUTE = Route(
    "POST",
    "/v1/operations/{Operation}",
    GENERIC,
    "Run any operation with a Rekognition-shaped JSON request",
    "operations",
)

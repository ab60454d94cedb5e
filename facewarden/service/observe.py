"""Monitoring hooks: what the service tells an observer, without depending on a monitoring library.

Every operation passes :meth:`Service.call` / :meth:`Service.execute`, so that is where they are
counted: when an operation finishes, each :class:`Observer` hears its name, kind, outcome and
duration; every audit record appended (denials with their rule, refused authentications, the
service's own records) reaches :meth:`Observer.audit_appended`. ``facewarden.api.metrics`` wires an
observer to Prometheus; the service layer itself imports no monitoring library (an import-linter
contract keeps ``prometheus_client`` in ``facewarden.api``).

What is measured at scrape time rather than counted (engine queue, job queue, gallery sizes) is
read by :func:`facewarden.service.health.snapshot`, as plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

#: The outcomes of an operation: ``ok``; ``denied`` by policy or quota; ``failed`` on bad input
#: (a facewarden error: the client's to fix); ``error`` (an internal error).
OUTCOMES = ("ok", "denied", "failed", "error")


class Observer(Protocol):
    """Told of every operation that finishes and every audit record appended. Must be quick; an
    exception it raises is logged, never passed to the caller."""

    def operation_finished(self, name: str, kind: str, outcome: str, seconds: float) -> None: ...

    def audit_appended(self, record: Mapping[str, Any]) -> None: ...

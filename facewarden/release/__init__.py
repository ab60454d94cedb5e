"""Footage release: a requester organisation asks a footage owner for footage; the owner declines
or releases chosen files; what leaves is always a redacted copy, handed over once, before an
expiry. See :mod:`facewarden.release.store` for the states and the one-download rule; the
operations (policy, audit, redaction) are the service's (``service/release.py``)."""

from .store import (
    DECLINED,
    DOWNLOADED,
    EXPIRED,
    FAILED,
    IMAGE,
    PENDING,
    PREPARING,
    READY,
    RELEASED,
    VIDEO,
    Footage,
    Item,
    Releases,
    Request,
)

__all__ = [
    "DECLINED",
    "DOWNLOADED",
    "EXPIRED",
    "FAILED",
    "IMAGE",
    "PENDING",
    "PREPARING",
    "READY",
    "RELEASED",
    "VIDEO",
    "Footage",
    "Item",
    "Releases",
    "Request",
]

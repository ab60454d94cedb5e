"""The operations, written once: policy decision, engine, gallery, audit record, in that order.

Each operation is a function registered under its Rekognition name (``@operation``) in the module
of its domain; :class:`Service.call` is the one path they all take.
"""

from . import (
    admin,  # noqa: F401  (registers the administrative operations)
    faces,  # noqa: F401  (registers the operations)
    gallery,  # noqa: F401  (registers the gallery operations)
)
from .core import OPERATIONS, Context, Service, largest, number, operation

__all__ = ["OPERATIONS", "Context", "Service", "largest", "number", "operation"]

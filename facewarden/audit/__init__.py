"""Append-only, hash-chained, signed audit log; verification; export; transparency report."""

from .log import AuditLog, VerifyResult, canonical
from .report import transparency_report

__all__ = ["AuditLog", "VerifyResult", "canonical", "transparency_report"]

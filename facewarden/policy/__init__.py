"""Policy before pixels: principals and keys, the policy file (the moratorium), quotas, consent.

Every operation is decided here before any image is decoded (:meth:`Policy.decide`); the service
(:meth:`facewarden.service.Service.call`) is the only caller that matters.
"""

from .consent import Consents, require_consent
from .principals import SECTORS, Principal, Principals
from .rules import DEFAULT_POLICY_PATH, CollectionInfo, Decision, Policy

__all__ = [
    "DEFAULT_POLICY_PATH",
    "SECTORS",
    "CollectionInfo",
    "Consents",
    "Decision",
    "Policy",
    "Principal",
    "Principals",
    "require_consent",
]

"""Policy before pixels: principals and keys, the policy file (the moratorium), quotas, consent.

Every operation is decided here before any image is decoded (:meth:`Policy.decide`, on the
operation's declared :class:`Kind`); the service (:meth:`facewarden.service.Service.call`) is the
only caller that matters.
"""

from .consent import Consents
from .kinds import Kind
from .principals import SECTORS, Principal, Principals
from .rules import DEFAULT_POLICY_PATH, CollectionInfo, Decision, Policy

__all__ = [
    "DEFAULT_POLICY_PATH",
    "SECTORS",
    "CollectionInfo",
    "Consents",
    "Decision",
    "Kind",
    "Policy",
    "Principal",
    "Principals",
]

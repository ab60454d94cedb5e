"""The kinds of operation policy decides on: each operation declares one, in code, with itself.

A kind says what an operation does to faces, which is what the moratorium and the purposes are
about: ``identify`` (1:N search), ``compare`` (1:1), ``enrol`` (store a template), ``cluster``
(group faces by person) compute or compare templates; ``detect`` and ``redact`` protect privacy.
The service declares each operation's kind (``@operation("SearchFaces", kind=Kind.IDENTIFY)``);
the policy file's rules and purposes name kinds, and it cannot move an operation to another kind.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What an operation does, as policy sees it (the names the policy file's rules use)."""

    #: Find faces (boxes, landmarks, pose, quality): no template leaves the call.
    DETECT = "detect"
    #: Hide faces in images or video.
    REDACT = "redact"
    #: Compare one face with the faces of another image (1:1).
    COMPARE = "compare"
    #: Store a face's template in a collection, or tie stored faces to a user.
    ENROL = "enrol"
    #: Search a collection for a face or a user (1:N).
    IDENTIFY = "identify"
    #: Group faces by person.
    CLUSTER = "cluster"
    #: Collections, faces and users as records, without computing templates.
    MANAGE = "manage"
    #: Audits that compute no template (detection per group); evaluations that compare faces are
    #: of kind compare (pairs, calibration) or identify (a gallery's 1:N test).
    EVALUATE = "evaluate"
    #: The consent register.
    CONSENT = "consent"
    #: Organisations, keys, policy, data-subject rights, the audit log (the owner's).
    ADMIN = "admin"
    #: Footage-release requests and their redacted copies.
    RELEASE = "release"

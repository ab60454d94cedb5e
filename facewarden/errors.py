"""The one error hierarchy of facewarden.

Every error a user can see is a :class:`FacewardenError`. Each class maps to exactly one
Rekognition error ``__type`` (``aws_code``) and one HTTP status, so the HTTP adapters, the CLI
and the Python API report the same failure the same way. Lower layers (Pillow, dlib, SQLite,
PostgreSQL) are mapped to these at their boundary; nothing else escapes.

    FacewardenError
    ├── InvalidInput                      bad request: InvalidParameterException / 400
    │   ├── InvalidImage                  InvalidImageFormatException / 400
    │   │   └── ImageTooLarge             ImageTooLargeException / 400
    │   ├── NoFaceFound                   InvalidParameterException / 400
    │   ├── ModelMismatch                 InvalidParameterException / 400
    │   ├── UnsupportedOperation          InvalidParameterException / 400
    │   ├── InvalidVideo                  InvalidParameterException / 400
    │   │   └── VideoTooLarge             VideoTooLargeException / 400
    │   ├── IdempotentParameterMismatch   IdempotentParameterMismatchException / 400
    │   ├── InvalidPaginationToken        InvalidPaginationTokenException / 400
    │   ├── InvalidS3Object               InvalidS3ObjectException / 400
    │   ├── UnknownOperation              UnknownOperationException / 404
    │   ├── InvalidBackup                 InvalidParameterException / 400 (tampered, truncated, incomplete)
    │   │   └── WrongPassphrase           InvalidParameterException / 400
    │   └── RestoreRefused                InvalidParameterException / 400 (target not empty, other installation)
    ├── ResourceNotFound                  ResourceNotFoundException / 400
    ├── ResourceAlreadyExists             ResourceAlreadyExistsException / 400
    ├── Conflict                          ConflictException / 400
    ├── ServiceQuotaExceeded              ServiceQuotaExceededException / 400
    ├── ReleaseStateError                 ConflictException / 409 (a footage release not in that state)
    ├── AccessDenied(rule, reason)        AccessDeniedException / 403
    │   ├── ConsentRequired               AccessDeniedException / 403
    │   ├── NotOffered                    AccessDeniedException / 403 (refused operation or attribute)
    │   └── PolicyWeakening               AccessDeniedException / 403
    ├── QuotaExceeded                     ServiceQuotaExceededException / 400 (not retried by SDKs)
    ├── AuthError                         (signature / key problems)
    │   ├── InvalidSignature              InvalidSignatureException / 403
    │   ├── UnrecognizedClient            UnrecognizedClientException / 403
    │   └── MissingAuthentication         MissingAuthenticationTokenException / 403
    ├── ModelError                        InternalServerError / 500 (broken model file)
    └── StorageError                      InternalServerError / 500
"""

from __future__ import annotations


class FacewardenError(Exception):
    """Base of every error facewarden raises on purpose."""

    aws_code = "InternalServerError"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(FacewardenError):
    """The request itself is wrong: a parameter, a value out of range, a missing field."""

    aws_code = "InvalidParameterException"
    http_status = 400
    exit_code = 3


class InvalidImage(InvalidInput):
    """The bytes are not an image facewarden can read (empty, corrupt, truncated, wrong format)."""

    aws_code = "InvalidImageFormatException"


class ImageTooLarge(InvalidImage):
    """The image exceeds the byte or pixel limit."""

    aws_code = "ImageTooLargeException"


class NoFaceFound(InvalidInput):
    """An operation that needs a face (compare, search by image) found none."""


class ModelMismatch(InvalidInput):
    """Templates of different model versions cannot be compared or mixed in a collection."""


class UnsupportedOperation(InvalidInput):
    """Something facewarden deliberately does not do (e.g. infer gender, age, emotion)."""


class InvalidVideo(InvalidInput):
    """The file is not a video facewarden can read (empty, corrupt, truncated, no video stream,
    a codec it cannot decode). A video job that meets one ends FAILED with this message."""


class VideoTooLarge(InvalidVideo):
    """The video exceeds the byte, duration or pixel limit."""

    aws_code = "VideoTooLargeException"


class IdempotentParameterMismatch(InvalidInput):
    """A ClientRequestToken was used before with different parameters."""

    aws_code = "IdempotentParameterMismatchException"


class InvalidPaginationToken(InvalidInput):
    """A NextToken that no earlier page of this operation and collection returned."""

    aws_code = "InvalidPaginationTokenException"


class UnknownOperation(InvalidInput):
    """The request names no operation facewarden or Rekognition knows (what AWS answers, with 404
    as its Common Errors list it, for an unknown ``X-Amz-Target`` or a body it cannot route)."""

    aws_code = "UnknownOperationException"
    http_status = 404


class InvalidS3Object(InvalidInput):
    """An S3Object image reference: facewarden has no S3; send the image as Bytes."""

    aws_code = "InvalidS3ObjectException"


class InvalidBackup(InvalidInput):
    """A backup that cannot be restored as it is: tampered with, truncated, incomplete, not a backup."""


class WrongPassphrase(InvalidBackup):
    """The passphrase does not open this backup."""


class RestoreRefused(InvalidInput):
    """A restore (or backup) that would overwrite something: a data directory or database that is
    not empty, another installation's data, an existing backup file."""


class ResourceNotFound(FacewardenError):
    aws_code = "ResourceNotFoundException"
    http_status = 400
    exit_code = 3


class ResourceAlreadyExists(FacewardenError):
    aws_code = "ResourceAlreadyExistsException"
    http_status = 400
    exit_code = 3


class Conflict(FacewardenError):
    """The resource exists already in a state the request conflicts with (CreateUser on an
    existing UserId, as Rekognition answers it)."""

    aws_code = "ConflictException"
    http_status = 400
    exit_code = 3


class ServiceQuotaExceeded(FacewardenError):
    """A hard limit of the data model (e.g. more than 100 faces associated with one user)."""

    aws_code = "ServiceQuotaExceededException"
    http_status = 400
    exit_code = 3


class ReleaseStateError(FacewardenError):
    """A footage release cannot do that now: a download before the owner's approval, after the
    release expired, or a second time; a decision on a request already decided."""

    aws_code = "ConflictException"
    http_status = 409
    exit_code = 3


class AccessDenied(FacewardenError):
    """Policy refused the operation. ``rule`` is the policy rule id, ``reason`` its human text."""

    aws_code = "AccessDeniedException"
    http_status = 403
    exit_code = 4

    def __init__(self, reason: str, rule: str = "denied") -> None:
        super().__init__(f"[{rule}] {reason}")
        self.rule = rule
        self.reason = reason


class ConsentRequired(AccessDenied):
    """Enrolment without an active consent record for the subject."""

    def __init__(self, reason: str, rule: str = "consent") -> None:
        super().__init__(reason, rule)


class NotOffered(AccessDenied):
    """An operation or attribute Rekognition has and facewarden refuses on purpose; ``reason`` says
    why. AccessDenied, not InvalidParameter: the request is well formed, and retrying or fixing it
    will not help."""


class PolicyWeakening(AccessDenied):
    """A policy file would weaken a safeguard built into the code (the moratorium, the surveillance
    rule, a purpose's similarity floor, a quota, a cap); ``rule`` is ``builtin:<name>``. The policy
    in force stays in force."""


class QuotaExceeded(FacewardenError):
    """A per-key daily quota (identification searches, comparisons) is used up until midnight UTC.

    ServiceQuotaExceededException with 400, which no AWS SDK retries (botocore's legacy and
    standard retry modes retry ThrottlingException and HTTP 429): a retry minutes later cannot
    succeed, and a client retrying it would only spend its attempts. The message names the rule
    and the reset time."""

    aws_code = "ServiceQuotaExceededException"
    http_status = 400
    exit_code = 4

    def __init__(self, reason: str, rule: str = "quota") -> None:
        super().__init__(f"[{rule}] {reason}")
        self.rule = rule
        self.reason = reason


class AuthError(FacewardenError):
    aws_code = "UnrecognizedClientException"
    http_status = 403
    exit_code = 4


class InvalidSignature(AuthError):
    aws_code = "InvalidSignatureException"


class UnrecognizedClient(AuthError):
    aws_code = "UnrecognizedClientException"


class MissingAuthentication(AuthError):
    aws_code = "MissingAuthenticationTokenException"


class ModelError(FacewardenError):
    """A model file is missing, truncated or not what it claims to be."""


class StorageError(FacewardenError):
    """The store failed in a way the caller cannot fix (corruption, lost connection)."""

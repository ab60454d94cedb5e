"""Shared by both HTTP adapters: request decoding, response encoding and error bodies.

Rekognition's own service model (botocore's ``rekognition/2016-06-27/service-2.json``) is the
schema of the wire: it says which members are blobs (base64 in JSON), which are timestamps (epoch
seconds in JSON 1.1) and what types a request may carry. Parsing a request against it is what
turns malformed input into ``InvalidParameterException`` before the service sees it; facewarden's
extension members (not in Rekognition's model) pass through unchanged for the service to check.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal
import math
from functools import lru_cache
from typing import Any

import botocore.session
from botocore.model import OperationNotFoundError, ServiceModel, Shape
from botocore.validate import ParamValidator

from ..errors import ImageTooLarge, InvalidImage, InvalidInput
from ..service import OPERATIONS
from ..service.params import File

#: Rekognition's limit for an image passed as raw bytes (API reference: "up to 5 MB").
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: Length of the base64 text of the largest accepted image.
MAX_IMAGE_BASE64 = 4 * math.ceil(MAX_IMAGE_BYTES / 3)
#: Room for everything in a request besides its images (ids, thresholds, JSON syntax).
BODY_SLACK = 64 * 1024
#: Operations whose request carries more than one image, and how many images' worth of body they
#: accept (ClusterFaces takes a list of images: its body is capped at 5 maximal images, ~35 MB;
#: more photos fit when they are smaller). Every other request carries at most one image.
MULTI_IMAGE_OPERATIONS = {"CompareFaces": 2, "ClusterFaces": 5}


def body_limit(operation: str | None) -> int:
    """The largest request body accepted for ``operation``: its images in base64, plus slack."""
    images = MULTI_IMAGE_OPERATIONS.get(operation or "", 1)
    return images * MAX_IMAGE_BASE64 + BODY_SLACK


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """Rekognition's service model as botocore ships it (loaded once)."""
    return botocore.session.get_session().get_service_model("rekognition")


def input_shape(operation: str) -> Shape | None:
    try:
        return service_model().operation_model(operation).input_shape
    except OperationNotFoundError:
        return None


def output_shape(operation: str) -> Shape | None:
    try:
        return service_model().operation_model(operation).output_shape
    except OperationNotFoundError:
        return None


# ---- requests ------------------------------------------------------------------------------------
def decode_image_bytes(value: Any, where: str) -> bytes:
    """A base64 ``Bytes`` member -> the image bytes, with Rekognition's 5 MB limit."""
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a base64-encoded string.")
    if len(value) > MAX_IMAGE_BASE64 + 4:
        raise ImageTooLarge(
            f"{where} is {len(value) * 3 / 4 / 1e6:.1f} MB; images sent as bytes may be at most "
            f"{MAX_IMAGE_BYTES / 1024 / 1024:.0f} MB. Resize or recompress the image."
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            f"{where} is not valid base64. Encode the image file's bytes with standard base64 "
            "(boto3 and the AWS SDKs do this for you)."
        ) from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(
            f"{where} is {len(data) / 1e6:.1f} MB; images sent as bytes may be at most "
            f"{MAX_IMAGE_BYTES / 1024 / 1024:.0f} MB. Resize or recompress the image."
        )
    return data


def check_image_size(data: bytes, where: str) -> bytes:
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(
            f"{where} is {len(data) / 1e6:.1f} MB; images may be at most "
            f"{MAX_IMAGE_BYTES / 1024 / 1024:.0f} MB. Resize or recompress the image."
        )
    return data


def decode_request(operation: str, body: Any) -> dict[str, Any]:
    """A JSON request body -> the request dict ``Service.call`` takes (blobs as ``bytes``).

    Known Rekognition operations are checked against Rekognition's input shape (types, required
    members); members facewarden adds and operations only facewarden has are passed through,
    with any ``{"Bytes": "<base64>"}`` image decoded.
    """
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")
    if operation not in OPERATIONS:
        return body  # the service answers: facewarden does not offer it
    shape = input_shape(operation)
    if shape is None:
        untyped: dict[str, Any] = _decode_untyped(body, "")
        return untyped
    known = {k: v for k, v in body.items() if k in shape.members}
    extra = {k: _decode_untyped(v, k) for k, v in body.items() if k not in shape.members}
    decoded: dict[str, Any] = _decode_shaped(known, shape, "")
    _validate(decoded, shape)
    decoded.update(extra)
    return decoded


def _decode_shaped(value: Any, shape: Shape, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: (_decode_shaped(v, shape.members[k], _join(path, k)) if k in shape.members else v)
            for k, v in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [_decode_shaped(v, shape.member, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _decode_shaped(v, shape.value, f"{path}.{k}") for k, v in value.items()}
    if kind == "blob":
        if isinstance(value, (bytes, bytearray)):  # a file upload (REST multipart)
            return check_image_size(bytes(value), path)
        return decode_image_bytes(value, path)
    if kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(value, _dt.UTC)
    return value


def _decode_untyped(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "Bytes" and isinstance(v, str):
                out[k] = decode_image_bytes(v, _join(path, k))
            else:
                out[k] = _decode_untyped(v, _join(path, k))
        return out
    if isinstance(value, list):
        return [_decode_untyped(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate(request: dict[str, Any], shape: Shape) -> None:
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        text = report.generate_report().replace("\n", " ")
        raise InvalidInput(f"The request does not match the operation's parameters: {text}")


# ---- responses -----------------------------------------------------------------------------------
def to_jsonable(value: Any, *, timestamps: str = "epoch") -> Any:
    """A service response -> plain JSON values: bytes as base64, datetimes as epoch seconds
    (Rekognition JSON 1.1) or ISO 8601 (``timestamps="iso"``, the native REST API)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, timestamps=timestamps) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, timestamps=timestamps) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, File):  # a download answered in JSON: its bytes, in base64
        data = value.read()
        value.done()
        return {
            "Bytes": base64.b64encode(data).decode("ascii"),
            "Name": value.filename,
            "MediaType": value.media_type,
        }
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.timestamp() if timestamps == "epoch" else value.isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item(), timestamps=timestamps)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return to_jsonable(value.tolist(), timestamps=timestamps)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return to_jsonable(dataclasses.asdict(value), timestamps=timestamps)
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return to_jsonable(value.value, timestamps=timestamps)
    return str(value)


def encode_response(operation: str, response: Any, *, timestamps: str = "epoch") -> Any:
    """A service response -> JSON values; with ``timestamps="iso"`` the members Rekognition types
    as timestamps (which the service may give as Unix times) become ISO 8601 strings."""
    out = to_jsonable(response, timestamps=timestamps)
    shape = output_shape(operation)
    if timestamps == "iso" and shape is not None:
        out = _iso_timestamps(out, shape)
    return out


def _iso_timestamps(value: Any, shape: Shape) -> Any:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: (_iso_timestamps(v, shape.members[k]) if k in shape.members else v) for k, v in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [_iso_timestamps(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _iso_timestamps(v, shape.value) for k, v in value.items()}
    if kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(value, _dt.UTC).isoformat()
    return value

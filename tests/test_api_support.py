"""Shared fixtures and helpers of the HTTP tests (imported by test_api_*.py and test_console*.py).

A real server: uvicorn on a free loopback port in a background thread, serving a Service on a
temporary data directory; real boto3 clients with keys made through the policy layer's key store.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from facewarden.api import create_app
from facewarden.api.testing import ServerThread, make_key
from facewarden.config import Settings
from facewarden.service import Service

FACES = (Path(__file__).resolve().parent.parent.parent / "shared" / "faces").resolve()


def face(rel: str) -> bytes:
    """A photo from ../shared/faces (relative to the repository root)."""
    path = FACES / rel
    if not path.is_file():
        pytest.fail(
            f"Test photo {path} is missing: the HTTP tests need the shared face photos in "
            f"{FACES} (../shared/faces relative to the repository root)."
        )
    return path.read_bytes()


def small_jpeg(rel: str = "barack_obama/barack_obama_1.jpg", width: int = 240) -> bytes:
    """A downscaled copy of a photo (cheap to detect; for load tests)."""
    from PIL import Image

    img = Image.open(io.BytesIO(face(rel))).convert("RGB")
    img.thumbnail((width, width * 4))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


class Harness:
    """One Service + one running server + helpers for keys and clients."""

    def __init__(self, data_dir: Path, engine_cache: Any = None) -> None:
        self.service = Service(Settings(data_dir=data_dir))
        if engine_cache is not None:  # each photo analysed once per session (tests/conftest.py)
            from tests.conftest import CachedEngine

            self.service.engine = CachedEngine(engine_cache)
        owner, secret = self.service.init_owner("operator", "commercial")
        #: the owner's key (purpose "administration": every operation, admin included)
        self.owner_key = (owner.key_id, secret)
        self.app = create_app(self.service)
        self.server = ServerThread(self.app)
        self.url = self.server.start()

    def key(
        self, org: str = "acme", sector: str = "commercial", purpose: str = "research_audit", **kwargs: Any
    ) -> tuple[str, str]:
        return make_key(self.service, org, sector, purpose, **kwargs)

    def client(self, key: tuple[str, str], **config: Any) -> Any:
        return boto3.client(
            "rekognition",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
        )

    def audit_records(self) -> list[dict[str, Any]]:
        return list(self.service.audit.records())

    def close(self) -> None:
        self.server.stop()
        self.service.close()


@pytest.fixture(scope="module", name="harness")
def harness_fixture(tmp_path_factory: pytest.TempPathFactory, engine_cache: Any) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("facewarden-http"), engine_cache)
    try:
        yield h
    finally:
        h.close()


# ---- response validation against botocore's output shapes ---------------------------------------
#: facewarden's extension members (boto3 drops them; the native REST API and the console read them).
EXTENSIONS = {"AppliedThreshold", "ConsentMode", "RetentionDays", "OwnerOrganization", "AlreadyIndexed"}


def validate_output(operation: str, response: dict[str, Any]) -> None:
    """Assert that a boto3 response (parsed) matches Rekognition's output shape for ``operation``:
    no unknown members (facewarden's AppliedThreshold aside), every member of the right type,
    enum values from the enum."""
    from facewarden.api.wire import output_shape

    shape = output_shape(operation)
    assert shape is not None, operation
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    _check(body, shape, operation, top=True)


def _check(value: Any, shape: Any, path: str, top: bool = False) -> None:
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: expected an object, got {value!r:.80}"
        for k, v in value.items():
            if top and k in EXTENSIONS:
                continue
            assert k in shape.members, f"{path}.{k} is not a member of {shape.name}"
            _check(v, shape.members[k], f"{path}.{k}")
    elif kind == "list":
        assert isinstance(value, list), f"{path}: expected a list, got {value!r:.80}"
        for i, v in enumerate(value):
            _check(v, shape.member, f"{path}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: expected a map"
        for k, v in value.items():
            _check(v, shape.value, f"{path}.{k}")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected a string, got {value!r:.80}"
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} is not one of {shape.enum}"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), (
            f"{path}: expected an integer, got {value!r}"
        )
    elif kind in ("float", "double"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: expected a number"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: expected a boolean, got {value!r}"
    elif kind == "timestamp":
        assert isinstance(value, dt.datetime), f"{path}: expected a timestamp, got {value!r}"
    elif kind == "blob":
        assert isinstance(value, (bytes, bytearray)), f"{path}: expected bytes"
    else:  # pragma: no cover
        raise AssertionError(f"{path}: unknown shape type {kind}")


# ---- raw signed requests (for what boto3 would refuse to send) ------------------------------------
def signed_post(
    url: str,
    key: tuple[str, str],
    operation: str | None,
    body: bytes,
    *,
    region: str = "us-east-1",
    service: str = "rekognition",
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Any:
    """POST ``body`` to the Rekognition endpoint, signed with botocore's SigV4 signer."""
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    h = {"Content-Type": "application/x-amz-json-1.1"}
    if operation:
        h["X-Amz-Target"] = f"RekognitionService.{operation}"
    h.update(headers or {})
    req = AWSRequest(method="POST", url=url + "/", data=body, headers=h)
    SigV4Auth(Credentials(*key), service, region).add_auth(req)
    return httpx.post(url + "/", content=body, headers=dict(req.headers.items()), timeout=timeout)


# ---- consent --------------------------------------------------------------------------------------
def grant_consent(h: Harness, collection_id: str, subject: str) -> None:
    """Record a subject's consent for a collection, as the owner would (a no-op before the
    consent operations exist)."""
    h.service.call(
        "GrantConsent",
        {"Subject": subject, "CollectionId": collection_id, "Evidence": f"test consent form for {subject}"},
        h.service.owner_principal(),
    )

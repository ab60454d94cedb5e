"""Shared fixtures: the photos of ../shared/faces, a real PostgreSQL (pgserver), a cached engine.

* ``faces_dir``: ``shared/faces`` beside the repository (never copied into it).
* ``pg_url``: a PostgreSQL server with pgvector started from the ``pgserver`` package for the
  session. In CI (``CI=true``) it must start; elsewhere the tests that need it are skipped, loudly,
  only when it cannot.
* ``engine_cache`` / ``cached_engine``: embedding costs ~0.1 s per face on a small machine, so each
  photo is analysed once per session (and kept on disk in pytest's cache, keyed by the photo's
  content, the model version and the engine's source) and every service in the tests reuses the
  results. The operations still run their whole path; only the pixels -> faces step is memoised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import pickle
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


# ---- photos ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not SHARED_FACES.is_dir():
        pytest.fail(
            f"The test photos are missing: expected the folder {SHARED_FACES} (shared/faces beside the "
            "repository, with one sub-folder per identity). Put it there; tests never copy photos into the repo.",
            pytrace=False,
        )
    return SHARED_FACES


def identity_photos(faces_dir: Path) -> dict[str, list[Path]]:
    """identity -> its single-person photos (group/ and noface/ excluded), sorted."""
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        if d.name in ("group", "noface"):
            continue
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if photos:
            out[d.name] = photos
    return out


# ---- PostgreSQL --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The URI of a session-wide PostgreSQL server with pgvector (from the pgserver package)."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    try:
        import pgserver

        # Not under pytest's basetemp: as root, pgserver runs PostgreSQL as the user "pgserver",
        # which cannot enter pytest-of-root (mode 0700, reset by every concurrent pytest session).
        root = Path(tempfile.mkdtemp(prefix="facewarden-pg-"))
        server = pgserver.get_server(str(root / "data"), cleanup_mode="delete")
        uri = server.get_uri()
        import psycopg

        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            # A throwaway server: the tests kill clients, never this server, so its own durability
            # buys nothing. Without fsync its commits and its final checkpoint (a hundred test
            # databases) stop waiting on a disk shared with everything else on the machine.
            for setting in ("fsync", "full_page_writes", "synchronous_commit"):
                conn.execute(f"ALTER SYSTEM SET {setting} = off")
            conn.execute("SELECT pg_reload_conf()")
    except Exception as exc:  # noqa: BLE001 - reported below
        if in_ci:
            pytest.fail(f"PostgreSQL (pgserver) did not start in CI: {exc!r}", pytrace=False)
        import warnings

        warnings.warn(
            f"SKIPPING PostgreSQL tests: pgserver could not start a server here: {exc!r}", stacklevel=1
        )
        pytest.skip(f"PostgreSQL tests skipped: pgserver could not start a server ({exc!r})")
    yield uri
    with contextlib.suppress(Exception):
        server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


def fresh_pg_database(pg_url: str) -> str:
    """A new, empty database on the session's server; returns its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = pg_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


# ---- a memoising engine ----------------------------------------------------------------------
def _engine_source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((REPO / "facewarden" / "engine").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class EngineCache:
    """pixels -> detected faces and (pixels, box) -> template, shared by the session's services."""

    def __init__(self, engine: Any, disk: Path | None) -> None:
        self.engine = engine
        self.disk = disk
        self.lock = threading.Lock()
        self.detections: dict[str, list[Any]] = {}
        self.templates: dict[tuple, np.ndarray] = {}
        self.misses = 0
        self._salt = f"{engine.model_version}:{_engine_source_hash()}"
        if disk is not None and (disk / f"{self._salt}.pkl").exists():
            with contextlib.suppress(Exception):  # a broken cache is just recomputed
                self.detections, self.templates = pickle.loads((disk / f"{self._salt}.pkl").read_bytes())
        self._dirty = False

    def key(self, image: np.ndarray, detector: str, attributes: str) -> str:
        h = hashlib.sha1(np.ascontiguousarray(image).data)
        return f"{h.hexdigest()}:{image.shape}:{detector}:{attributes}"

    @staticmethod
    def box_key(pixels_key: str, face: Any) -> tuple:
        b = face.box
        return (
            pixels_key.split(":")[0],
            round(b.left, 2),
            round(b.top, 2),
            round(b.right, 2),
            round(b.bottom, 2),
        )

    def save(self) -> None:
        if self.disk is None or not self._dirty:
            return
        self.disk.mkdir(parents=True, exist_ok=True)
        tmp = self.disk / f".{self._salt}.{os.getpid()}.tmp"
        with self.lock:
            tmp.write_bytes(pickle.dumps((self.detections, self.templates)))
        tmp.replace(self.disk / f"{self._salt}.pkl")


class CachedEngine:
    """An Engine whose detect/embed are memoised in an :class:`EngineCache`."""

    def __init__(self, cache: EngineCache) -> None:
        self._cache = cache
        self._engine = cache.engine
        self._live: dict[str, list[Any]] = {}  # pixels key -> faces with landmark shapes (for embed misses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def detect(
        self, image: np.ndarray, detector: str | None = None, attributes: str = "DEFAULT"
    ) -> list[Any]:
        detector = detector or self._engine.settings.detector
        key = self._cache.key(image, detector, attributes)
        with self._cache.lock:
            hit = self._cache.detections.get(key)
        if hit is None:
            faces = self._engine.detect(image, detector, attributes)
            with self._cache.lock:
                self._cache.misses += 1
                self._cache.detections[key] = [dataclasses.replace(f, shape=None) for f in faces]
                self._cache._dirty = True
            self._live[key.split(":")[0]] = faces
            hit = self._cache.detections[key]
        return [dataclasses.replace(f) for f in hit]

    def embed(self, image: np.ndarray, faces: list[Any]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self._engine.spec.dim), np.float32)
        rows: list[np.ndarray | None] = []
        pk = hashlib.sha1(np.ascontiguousarray(image).data).hexdigest()
        for f in faces:
            with self._cache.lock:
                rows.append(self._cache.templates.get(EngineCache.box_key(pk, f)))
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            live = self._live.get(pk)
            if live is None:
                live = self._engine.detect(image)
                self._live[pk] = live
            by_box = {EngineCache.box_key(pk, f): f for f in live}
            todo = [by_box[EngineCache.box_key(pk, faces[i])] for i in missing]
            computed = self._engine.embed(image, todo)
            with self._cache.lock:
                for i, t in zip(missing, computed):
                    self._cache.templates[EngineCache.box_key(pk, faces[i])] = t
                    rows[i] = t
                self._cache._dirty = True
        return np.stack(rows).astype(np.float32)

    def analyse(
        self, image: np.ndarray, detector: str | None = None, attributes: str = "DEFAULT"
    ) -> list[Any]:
        from facewarden.engine import FaceTemplate

        faces = self.detect(image, detector, attributes)
        return [
            FaceTemplate(f, t, self._engine.model_version) for f, t in zip(faces, self.embed(image, faces))
        ]


@pytest.fixture(scope="session")
def engine_cache(request: pytest.FixtureRequest) -> Any:
    from facewarden.config import Settings
    from facewarden.engine import Engine

    engine = Engine(Settings(data_dir=Path(request.config.cache.makedir("facewarden_data"))))
    cache = EngineCache(engine, Path(request.config.cache.makedir("facewarden_templates")))
    yield cache
    cache.save()


@pytest.fixture(scope="session")
def photo_templates(engine_cache: EngineCache, faces_dir: Path) -> dict[Path, tuple[Any, np.ndarray]]:
    """Every single-person photo -> (its largest face, that face's template), computed once."""
    from facewarden.media import images

    engine = CachedEngine(engine_cache)
    out: dict[Path, tuple[Any, np.ndarray]] = {}
    for photos in identity_photos(faces_dir).values():
        for p in photos:
            pixels = images.decode(p.read_bytes())
            faces = engine.detect(pixels)
            if not faces:
                continue
            face = max(faces, key=lambda f: f.box.area)
            out[p] = (face, engine.embed(pixels, [face])[0])
    engine_cache.save()
    return out


# ---- gallery test helpers -------------------------------------------------------------------
BOX = {"Width": 0.2, "Height": 0.3, "Left": 0.1, "Top": 0.1}


def capped_policy(text: str, cap: float) -> str:
    """The policy ``text`` with every ``max_expected_false_matches`` set to ``cap``, or to its
    built-in ceiling where that is lower (access control's, child safety's)."""
    from facewarden.policy.rules import BUILT_IN

    out, purpose = [], None
    for line in text.splitlines(keepends=True):
        section = re.match(r"\[purposes\.([^\]]+)\]", line)
        if section or line.startswith("["):
            purpose = section.group(1) if section else None
        if line.startswith("max_expected_false_matches = "):
            line = f"max_expected_false_matches = {min(cap, BUILT_IN.cap_ceiling(purpose))}\n"
        out.append(line)
    return "".join(out)


def make_service(settings: Any, cache: Any = None) -> Any:
    from facewarden.service import Service

    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # The gallery tests measure the gallery at the thresholds they request (the default 80); the
    # policy's cap on expected false matches per search (which raises thresholds with the gallery
    # size) is policy's to test, so it is relaxed here.
    from facewarden.policy.rules import DEFAULT_POLICY_PATH

    # (1.0 is the built-in ceiling of the cap: a search of up to 1,000 faces keeps the threshold asked)
    (data_dir / "policy.toml").write_text(capped_policy(Path(DEFAULT_POLICY_PATH).read_text(), 1.0))
    service = Service(settings)
    service.init_owner("test-org", "commercial")
    #: the principal the gallery tests act as: a photo-organisation key of a natural person (sector
    #: individual: the only kind of organisation a household collection may belong to)
    service.principals.create_org("test-family", "individual")
    service.test_principal = service.principals.create_key("test-family", "photo_organisation")[0]
    if cache is not None:
        service.engine = CachedEngine(cache)  # type: ignore[assignment]
    return service


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, base: np.ndarray, n: int, noise: float = 0.02) -> np.ndarray:
    x = base[None, :] + noise * rng.normal(size=(n, base.shape[0])).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def new_faces(templates: np.ndarray, external: str | None = "synthetic", sha: str | None = None) -> list[Any]:
    from facewarden.gallery import NewFace

    return [NewFace(t, BOX, 99.0, external_image_id=external, image_sha256=sha) for t in templates]


# ---- Rekognition output shapes (botocore's service model) -------------------------------------
@functools.lru_cache(maxsize=1)
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("rekognition")


#: facewarden's extension members (boto3 drops them; the native REST API and the console read them).
EXTENSIONS = {"AppliedThreshold", "ConsentMode", "RetentionDays", "OwnerOrganization", "AlreadyIndexed"}


def assert_shape(operation: str, response: dict[str, Any]) -> None:
    """``response`` fits the operation's output shape (plus facewarden's top-level extensions)."""
    shape = _model().operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k not in EXTENSIONS}
    errors: list[str] = []
    _check(shape, body, operation, errors)
    assert not errors, f"{operation} response does not fit Rekognition's shape:\n" + "\n".join(errors)
    if "AppliedThreshold" in response:
        at = response["AppliedThreshold"]
        assert set(at) >= {"Similarity", "Source", "FalseMatchRate"}, at
        assert at["Source"] in ("requested", "floor", "gallery_size"), at


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for k, v in value.items():
            if k not in shape.members:
                errors.append(f"{path}.{k}: not a member of {shape.name}")
            else:
                _check(shape.members[k], v, f"{path}.{k}", errors)
        for k in shape.required_members:
            if k not in value:
                errors.append(f"{path}.{k}: required")
    elif t == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, v in enumerate(value):
            _check(shape.member, v, f"{path}[{i}]", errors)
    elif t == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
        elif shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in {shape.enum}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {value!r}")
        else:
            _range(shape, value, path, errors)
    elif t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {value!r}")
        else:
            _range(shape, value, path, errors)
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean")
    elif t == "timestamp":
        if not isinstance(value, (int, float, dt.datetime)) or isinstance(value, bool):
            errors.append(f"{path}: expected a timestamp (epoch seconds)")
    elif t == "blob" and not isinstance(value, (bytes, bytearray)):
        errors.append(f"{path}: expected bytes")


def _range(shape: Any, value: float, path: str, errors: list[str]) -> None:
    meta = shape.metadata
    if "min" in meta and value < meta["min"]:
        errors.append(f"{path}: {value} < min {meta['min']}")
    if "max" in meta and value > meta["max"]:
        errors.append(f"{path}: {value} > max {meta['max']}")


# ---- gallery fixtures: the same tests against every backend --------------------------------------
#: Every gallery backend the tests run against: its id -> how to make its settings (the database
#: URL aside). PostgreSQL is there twice, searched with HNSW and through each process's
#: in-process index. tests/test_store_contract.py checks that every registered URL scheme is here.
BACKENDS: dict[str, dict[str, Any]] = {
    "sqlite": {},
    "postgres": {"gallery_pg_search": "hnsw"},
    "postgres-local": {"gallery_pg_search": "local"},
}


def backend_params() -> list[Any]:
    return [
        pytest.param(name, id=name, marks=() if name == "sqlite" else pytest.mark.postgres)
        for name in BACKENDS
    ]


def backend_settings(request: pytest.FixtureRequest, tmp_path: Path, backend: str, **more: Any) -> Any:
    """Settings of a new, empty gallery database of ``backend`` (data directory: ``tmp_path/data``)."""
    from facewarden.config import Settings

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    else:
        url = fresh_pg_database(request.getfixturevalue("pg_url"))
    return Settings(data_dir=tmp_path / "data", database_url=url, **(BACKENDS[backend] | more))


@pytest.fixture(params=backend_params())
def gallery_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Settings for a gallery database of each backend in turn (the tests, and the worker
    processes they start, are handed these settings: nothing goes through the environment)."""
    return backend_settings(request, tmp_path, request.param)


@pytest.fixture
def service(gallery_settings: Any, engine_cache: EngineCache) -> Any:
    svc = make_service(gallery_settings, engine_cache)
    yield svc
    svc.store.close()
    svc.close()


@pytest.fixture
def store(service: Any) -> Any:
    return service.store

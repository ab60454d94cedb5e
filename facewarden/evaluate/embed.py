"""Embed a set of image files once: one template per image, cached by content, computed in parallel.

Each image contributes one face: the largest (as CompareFaces and SearchFacesByImage pick it) or
the one nearest the image centre (``face_choice="centre"``, for tightly cropped sets like LFW where
a bystander may be larger). An image without a face, or one that cannot be read, is a *detection
failure*: recorded with its reason, never silently dropped.

Templates are cached in ``<data_dir>/cache/templates-<model_version>.npz``, keyed by the SHA-256 of
the file's bytes, the face choice and :meth:`Engine.pipeline_key` (the detector's version and
parameters, where the alignment points come from, the model version, the runtime), so a renamed or
symlinked copy is not embedded twice, a second evaluation of the same photos costs only the
hashing, and a changed detector or alignment never serves the old templates. The cache holds
biometric templates: it lives in the data directory, with the gallery, and never in a report.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..errors import FacewardenError, InvalidInput
from ..media import images

log = logging.getLogger(__name__)

FACE_CHOICES = ("largest", "centre")
IMAGE_SUFFIXES = images.FILE_SUFFIXES
_SAVE_EVERY = 250  # results between cache writes on long runs


@dataclass(frozen=True)
class Embedded:
    """The outcome for one image file."""

    path: str
    sha256: str
    #: L2-normalised template of the chosen face; None on a detection failure.
    template: np.ndarray | None
    #: ``ok``, ``no_face`` or ``invalid_image``
    status: str
    #: why it failed (empty when ok)
    message: str = ""
    #: number of faces found in the image
    faces: int = 0

    @property
    def ok(self) -> bool:
        return self.template is not None


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (by suffix), sorted, hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder of images.")
    pattern = root.rglob("*") if recursive else root.glob("*")
    found = [
        p
        for p in pattern
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    ]
    return sorted(found)


def cache_path(settings: Settings, model_version: str) -> Path:
    return Path(settings.data_dir) / "cache" / f"templates-{model_version}.npz"


class TemplateCache:
    """A content-addressed store of templates for one model version (one ``.npz`` file)."""

    def __init__(self, path: str | Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = dim
        self._rows: dict[str, tuple[np.ndarray | None, str, str, int]] = {}
        self._dirty = False
        self._lock = threading.Lock()
        self._rows.update(self._read())

    def _read(self) -> dict[str, tuple[np.ndarray | None, str, str, int]]:
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                keys, tpl, status, msg, faces = (
                    z["keys"],
                    z["templates"],
                    z["status"],
                    z["message"],
                    z["faces"],
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # a damaged cache: start again
            log.warning("ignoring unreadable template cache %s: %s", self.path, exc)
            return {}
        if tpl.ndim != 2 or tpl.shape[1] != self.dim:
            return {}
        return {
            str(k): (tpl[i].copy() if s == "ok" else None, str(s), str(m), int(f))
            for i, (k, s, m, f) in enumerate(zip(keys, status, msg, faces))
        }

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> tuple[np.ndarray | None, str, str, int] | None:
        return self._rows.get(key)

    def put(self, key: str, template: np.ndarray | None, status: str, message: str, faces: int) -> None:
        with self._lock:
            self._rows[key] = (
                None if template is None else np.asarray(template, np.float32),
                status,
                message,
                faces,
            )
            self._dirty = True

    def save(self) -> None:
        """Merge with what is on disk (another process may have added entries) and replace atomically."""
        with self._lock:
            if not self._dirty:
                return
            rows = self._read()
            rows.update(self._rows)
            self._rows = rows
            keys = list(rows)
            tpl = np.zeros((len(keys), self.dim), np.float32)
            for i, k in enumerate(keys):
                t = rows[k][0]
                if t is not None:
                    tpl[i] = t
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(
                        fh,
                        keys=np.array(keys, dtype=str),
                        templates=tpl,
                        status=np.array([rows[k][1] for k in keys], dtype=str),
                        message=np.array([rows[k][2] for k in keys], dtype=str),
                        faces=np.array([rows[k][3] for k in keys], dtype=np.int32),
                    )
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._dirty = False


# ---- the work done per image (in a worker process or in-process) -----------------------------------
_worker_engine: Any = None


def _init_worker(settings: Settings) -> None:
    global _worker_engine
    # one process per core: keep ONNX Runtime / BLAS / OpenMP in each worker to one thread, or the
    # workers oversubscribe the cores (set before the engine loads its models, which it does lazily)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from ..engine import Engine

    _worker_engine = Engine(settings.replace(onnx_threads=settings.onnx_threads or 1))


def _embed_in_worker(path: str, face_choice: str) -> tuple[np.ndarray | None, str, str, int]:
    return embed_file(_worker_engine, path, face_choice)


def choose_face(faces: Sequence[Any], face_choice: str, image_size: tuple[int, int]) -> Any:
    """The face an evaluation uses: the largest, or the one whose centre is nearest the image centre."""
    if face_choice == "largest":
        return max(faces, key=lambda f: f.box.area)
    w, h = image_size
    cx, cy = w / 2.0, h / 2.0
    return min(
        faces,
        key=lambda f: ((f.box.left + f.box.right) / 2 - cx) ** 2 + ((f.box.top + f.box.bottom) / 2 - cy) ** 2,
    )


def embed_file(
    engine: Any, path: str | Path, face_choice: str = "largest"
) -> tuple[np.ndarray | None, str, str, int]:
    """``(template or None, status, message, number of faces)`` for one image file."""
    s = engine.settings
    try:
        rgb = images.read(path, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
    except FacewardenError as exc:
        return None, "invalid_image", exc.message, 0
    faces = engine.detect(rgb)
    if not faces:
        return None, "no_face", "no face found", 0
    face = choose_face(faces, face_choice, (rgb.shape[1], rgb.shape[0]))
    template = engine.embed(rgb, [face])[0]
    return np.asarray(template, np.float32), "ok", "", len(faces)


def _sha256(path: Path, max_bytes: int) -> tuple[str | None, str]:
    try:
        data = images.read_bytes(path, max_bytes=max_bytes)
    except FacewardenError as exc:
        return None, exc.message
    return hashlib.sha256(data).hexdigest(), ""


def _progress_bar(enabled: bool | None, total: int, description: str) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    bar.start()
    bar.add_task(description, total=total)
    return bar


def embed_images(
    paths: Iterable[str | Path],
    settings: Settings | None = None,
    workers: int | None = None,
    face_choice: str = "largest",
    progress: bool | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Embedded]:
    """Embed each image once (cached), in ``workers`` processes; ``{str(path): Embedded}``.

    ``workers`` defaults to ``os.cpu_count()``; 1 runs in this process. ``progress``: a progress bar
    on stderr (None: only when stderr is a terminal). ``cache_dir``: where the template cache lives
    (default ``<data_dir>/cache``).
    """
    from ..engine import Engine

    if face_choice not in FACE_CHOICES:
        raise InvalidInput(f"face_choice must be one of {FACE_CHOICES}, not {face_choice!r}.")
    settings = settings or Settings.from_env()
    engine = Engine(settings)  # resolves the model spec; loads no weights
    spec = engine.spec
    cfile = (
        (Path(cache_dir) / f"templates-{spec.version}.npz")
        if cache_dir
        else cache_path(settings, spec.version)
    )
    cache = TemplateCache(cfile, spec.dim)
    tag = f"{engine.pipeline_key()}|{face_choice}"

    results: dict[str, Embedded] = {}
    todo: dict[str, list[str]] = {}  # cache key -> paths with that content
    first_path: dict[str, str] = {}
    seen: set[str] = set()
    for p in paths:
        name = str(p)
        if name in seen:
            continue
        seen.add(name)
        sha, err = _sha256(Path(p), settings.max_image_bytes)
        if sha is None:
            results[name] = Embedded(name, "", None, "invalid_image", err, 0)
            continue
        key = f"{sha}|{tag}"
        hit = cache.get(key)
        if hit is not None:
            t, status, msg, nf = hit
            results[name] = Embedded(name, sha, t, status, msg, nf)
            continue
        todo.setdefault(key, []).append(name)
        first_path.setdefault(key, name)

    def record(key: str, out: tuple[np.ndarray | None, str, str, int]) -> None:
        t, status, msg, nf = out
        cache.put(key, t, status, msg, nf)
        sha = key.split("|", 1)[0]
        for name in todo[key]:
            results[name] = Embedded(name, sha, t, status, msg, nf)

    if todo:
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        bar = _progress_bar(progress, len(todo), f"Embedding {len(todo)} images")
        done = 0
        try:
            if n_workers == 1:
                for key in todo:
                    record(key, embed_file(engine, first_path[key], face_choice))
                    done += 1
                    if bar:
                        bar.advance(0)
                    if done % _SAVE_EVERY == 0:
                        cache.save()
            else:
                # spawn, not fork: the parent may hold dlib/ONNX threads that a fork would copy mid-flight
                with ProcessPoolExecutor(
                    max_workers=n_workers,
                    mp_context=get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(settings,),
                ) as pool:
                    keys = iter(todo)
                    pending: dict[Future[Any], str] = {}

                    def submit_next() -> None:
                        key = next(keys, None)
                        if key is not None:
                            pending[pool.submit(_embed_in_worker, first_path[key], face_choice)] = key

                    # a bounded queue: results stream back in order of completion
                    for _ in range(n_workers * 4):
                        submit_next()
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            key = pending.pop(fut)
                            record(key, fut.result())
                            done += 1
                            if bar:
                                bar.advance(0)
                            if done % _SAVE_EVERY == 0:
                                cache.save()
                            submit_next()
        finally:
            if bar:
                bar.stop()
            cache.save()
    return results

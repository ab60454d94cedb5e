"""Bulk work for the CLI: index folders of photos on every core, and group faces by person.

* :func:`index_paths` indexes files and folders (recursively, by image extension) into a collection.
  Worker processes (one model load each) decode, detect, select and embed; the parent writes every
  image through ``Service.call("IndexFaces", ...)`` so that policy (consent, moratorium, quotas) and
  the audit log apply to each image exactly as to a request. It is resumable: an image whose content
  (SHA-256) is already in the collection is skipped before any work, and the store re-checks that
  in the same transaction as the insert, so parallel or repeated runs never store an image twice.
* :func:`cluster_faces` groups templates whose calibrated similarity reaches a threshold
  (connected components, i.e. single linkage); :func:`cluster_paths` runs it on photos through the
  ``ClusterFaces`` operation and can turn the groups into users of a collection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_ID_BAD = re.compile(r"[^a-zA-Z0-9_.\-:]")


def iter_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively; sorted, unique."""
    out: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    out[f] = None
        elif p.is_file():
            out[p] = None
        else:
            raise FileNotFoundError(f"{p} is neither an image file nor a folder.")
    return list(out)


def external_id_for(path: Path, mode: str = "filename") -> str:
    """The ExternalImageId of a photo: its file name without extension, or its folder's name."""
    if mode not in ("filename", "folder"):
        raise ValueError("external_id_from must be 'filename' or 'folder'")
    raw = path.stem if mode == "filename" else path.parent.name
    return (_ID_BAD.sub("_", raw) or "image")[:255]


# ---- worker processes --------------------------------------------------------------------------
_ENGINE: Any = None


def _init_worker(settings: Any) -> None:
    global _ENGINE
    from ..engine import Engine

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _ENGINE = Engine(settings)


def _strip(face: Any) -> Any:
    return dataclasses.replace(face, shape=None)  # dlib objects do not cross processes


def analyse_file(
    path: Path, max_faces: int, quality: str, detector: str | None, engine: Any = None, settings: Any = None
) -> tuple[Path, Any]:
    """Decode, detect, select and embed one photo -> ``(path, AnalysedImage)`` or ``(path, error text)``."""
    from ..media import images
    from ..errors import FacewardenError
    from ..service.gallery import AnalysedImage, select_faces

    engine = engine or _ENGINE
    try:
        data = path.read_bytes()
        kw = {}
        if settings is not None:
            kw = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
        pixels = images.decode(data, **kw)
        faces = engine.detect(pixels, detector)
        kept, unindexed = select_faces(faces, max_faces, quality)
        templates = engine.embed(pixels, kept)
        return path, AnalysedImage(
            sha256=hashlib.sha256(data).hexdigest(),
            model_version=engine.model_version,
            kept=[_strip(f) for f in kept],
            templates=np.asarray(templates, np.float32),
            unindexed=[(_strip(f), r) for f, r in unindexed],
        )
    except (FacewardenError, OSError) as exc:
        return path, f"{type(exc).__name__}: {exc}"


def _analysed(
    service: Any, files: list[Path], workers: int, max_faces: int, quality: str, progress: Any, task: Any
) -> Iterator[tuple[Path, Any]]:
    detector = service.settings.detector
    if workers <= 1 or len(files) <= 1:
        for f in files:
            yield analyse_file(
                f, max_faces, quality, detector, engine=service.engine, settings=service.settings
            )
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no inherited DB connections or locks
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(service.settings,)
    ) as pool:
        futures = [
            pool.submit(analyse_file, f, max_faces, quality, detector, None, service.settings) for f in files
        ]
        for fut in as_completed(futures):
            yield fut.result()


def _progress(enabled: bool, total: int, what: str) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task(what, total=total)


def _principal(service: Any, principal: Any) -> Any:
    if principal is not None:
        return principal
    owner = getattr(service, "owner_principal", None)
    return owner() if callable(owner) else None


def index_paths(
    service: Any,
    paths: Iterable[str | Path],
    collection_id: str,
    external_id_from: str = "filename",
    workers: int | None = None,
    progress: bool = True,
    principal: Any = None,
    *,
    max_faces: int = 100,
    quality: str = "AUTO",
) -> dict[str, Any]:
    """Index photos into a collection on all cores; resumable. Returns a summary dict:
    ``images``, ``indexed_images``, ``skipped_known``, ``faces_indexed``, ``faces_unindexed``,
    ``no_face`` (paths), ``errors`` ([{path, error}]), ``seconds``."""
    from ..errors import FacewardenError

    started = time.time()
    principal = _principal(service, principal)
    # Policy before pixels: the workers compute templates outside Service.call, so decide first.
    service.authorize(principal, "IndexFaces", collection_id, audit_allowed=False)
    store = service.store
    store.get_collection(collection_id)  # unknown collection: fail before any work
    files = iter_images(paths)
    summary: dict[str, Any] = {
        "collection": collection_id,
        "images": len(files),
        "indexed_images": 0,
        "skipped_known": 0,
        "faces_indexed": 0,
        "faces_unindexed": 0,
        "no_face": [],
        "errors": [],
    }
    todo = []
    for f in files:
        try:
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError as exc:
            summary["errors"].append({"path": str(f), "error": str(exc)})
            continue
        if store.has_image(collection_id, sha):
            summary["skipped_known"] += 1
        else:
            todo.append(f)
    bar, task = _progress(progress, len(todo), f"indexing into {collection_id}")
    try:
        workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        for path, result in _analysed(service, todo, workers, max_faces, quality, bar, task):
            if bar is not None:
                bar.advance(task)
            if isinstance(result, str):
                summary["errors"].append({"path": str(path), "error": result})
                continue
            request = {
                "CollectionId": collection_id,
                "ExternalImageId": external_id_for(path, external_id_from),
                "MaxFaces": max_faces,
                "QualityFilter": quality,
                "_Analysed": result,
                "_SkipKnownImage": True,
            }
            try:
                response = service.call("IndexFaces", request, principal)
            except FacewardenError as exc:
                summary["errors"].append({"path": str(path), "error": f"{exc.aws_code}: {exc.message}"})
                continue
            n = len(response["FaceRecords"])
            summary["faces_indexed"] += n
            summary["faces_unindexed"] += len(response["UnindexedFaces"])
            if n:
                summary["indexed_images"] += 1
            elif result.kept:
                summary["skipped_known"] += 1  # indexed meanwhile by another run
            else:
                summary["no_face"].append(str(path))
    finally:
        if bar is not None:
            bar.stop()
    summary["seconds"] = round(time.time() - started, 3)
    return summary


# ---- clustering --------------------------------------------------------------------------------
def cluster_faces(templates: np.ndarray, threshold_similarity: float, calibration: Any) -> list[list[int]]:
    """Groups (lists of row indices, largest group first) of templates linked by calibrated
    similarity >= ``threshold_similarity`` (connected components / single linkage). Faces that
    match nobody are groups of one."""
    t = np.asarray(templates, np.float32)
    n = len(t)
    if n == 0:
        return []
    d = calibration.distance_for(float(threshold_similarity))
    min_ip = 1.0 - (d * d) / 2.0 if np.isfinite(d) else -np.inf
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    block = 2048
    for start in range(0, n, block):
        ip = t[start : start + block] @ t.T
        rows, cols = np.nonzero(ip >= min_ip)
        for r, c in zip(rows + start, cols):
            if c > r:
                a, b = find(int(r)), find(int(c))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def cluster_paths(
    service: Any,
    paths: Iterable[str | Path],
    threshold: float | None = None,
    workers: int | None = None,
    progress: bool = True,
    principal: Any = None,
    *,
    collection_id: str | None = None,
    create_users: bool = False,
    user_prefix: str = "person",
) -> dict[str, Any]:
    """Group the faces of photos by person. Returns ``{"groups": [{"group", "size", "faces":
    [{"path", "BoundingBox", "Confidence", "FaceId"?}]}], "singletons", "faces", "images",
    "AppliedThreshold", "users": [...]}`` (JSON-able).

    The grouping runs as the ``ClusterFaces`` operation (policy and audit apply). With
    ``collection_id`` every face is also indexed there; with ``create_users`` each group of two or
    more faces becomes a user (``<user_prefix>-0001``...) with its faces associated.
    """
    principal = _principal(service, principal)
    # Policy before pixels: decide before the workers compute any template.
    service.authorize(principal, "ClusterFaces", collection_id, audit_allowed=False)
    if collection_id is not None:
        service.authorize(principal, "IndexFaces", collection_id, audit_allowed=False)
    files = iter_images(paths)
    bar, task = _progress(progress, len(files), "analysing faces")
    analysed: list[tuple[Path, Any]] = []
    errors: list[dict[str, str]] = []
    try:
        workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        for path, result in _analysed(service, files, workers, 100, "AUTO", bar, task):
            if bar is not None:
                bar.advance(task)
            if isinstance(result, str):
                errors.append({"path": str(path), "error": result})
            else:
                analysed.append((path, result))
    finally:
        if bar is not None:
            bar.stop()
    analysed.sort(key=lambda pr: str(pr[0]))
    request: dict[str, Any] = {"_Analysed": [a for _, a in analysed]}
    if threshold is not None:
        request["SimilarityThreshold"] = threshold
    response = service.call("ClusterFaces", request, principal)
    face_ids: dict[tuple[int, int], str] = {}
    if collection_id is not None:
        for i, (path, a) in enumerate(analysed):
            r = service.call(
                "IndexFaces",
                {"CollectionId": collection_id, "ExternalImageId": external_id_for(path), "_Analysed": a},
                principal,
            )
            for j, rec in enumerate(r["FaceRecords"]):
                face_ids[(i, j)] = rec["Face"]["FaceId"]
    groups, users = [], []
    for g, group in enumerate(response["Groups"]):
        faces = []
        for f in group["Faces"]:
            item = {
                "path": str(analysed[f["ImageIndex"]][0]),
                "BoundingBox": f["BoundingBox"],
                "Confidence": f["Confidence"],
            }
            fid = face_ids.get((f["ImageIndex"], f["FaceIndex"]))
            if fid:
                item["FaceId"] = fid
            faces.append(item)
        groups.append({"group": g + 1, "size": len(faces), "faces": faces})
        if create_users and collection_id is not None and len(faces) >= 2:
            user_id = f"{user_prefix}-{g + 1:04d}"
            service.call("CreateUser", {"CollectionId": collection_id, "UserId": user_id}, principal)
            ids = [f["FaceId"] for f in faces if "FaceId" in f][:100]
            if ids:
                service.call(
                    "AssociateFaces",
                    {
                        "CollectionId": collection_id,
                        "UserId": user_id,
                        "FaceIds": ids,
                        "UserMatchThreshold": 0,
                    },
                    principal,
                )
            users.append({"UserId": user_id, "faces": len(ids)})
    return {
        "images": len(files),
        "faces": sum(g["size"] for g in groups),
        "groups": [g for g in groups if g["size"] >= 2],
        "singletons": [g["faces"][0] for g in groups if g["size"] == 1],
        "errors": errors,
        "AppliedThreshold": response.get("AppliedThreshold"),
        "users": users,
    }

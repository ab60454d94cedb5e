"""Bulk work for the CLI: index folders of photos on every core, and group faces by person.

* :func:`index_paths` indexes files and folders (recursively, by image extension) into a collection.
  Policy comes before pixels for every file: the subject a file is about (its ExternalImageId, from
  its name or its folder's) is known from the path, so policy and the subject's consent are decided
  (and a refusal audited) before the file is read; refused files are reported and never decoded.
  Worker processes (one model load each) then decode, detect, select and embed the others (in a
  consent collection only the subject's face is embedded); the parent runs every image through the
  IndexFaces operation (:meth:`Service.execute`, with the analysed image in the request's internal
  ``analysed`` field) so that policy and the audit log apply to each image exactly as to a request
  (consent is checked again there). It is resumable: an image whose content (SHA-256) is already in
  the collection is skipped before any work, and the store re-checks that in the same transaction
  as the insert, so parallel or repeated runs never store an image twice.
* :func:`cluster_paths` groups the faces of photos by person through the ClusterFaces operation
  and can turn the groups into users of a collection (then, as for indexing, files whose subject
  may not be enrolled there are refused before they are read).
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

from ..config import Settings
from ..engine import DetectedFace, Engine
from ..errors import AccessDenied, FacewardenError
from ..media import images
from ..policy.principals import Principal
from . import faces, gallery, users
from .consent import require_consent
from .core import Service
from .faces import AnalysedImage, select_faces, select_subject_face
from .registry import Context

IMAGE_EXTENSIONS = set(images.FILE_SUFFIXES)
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
_ENGINE: Engine | None = None


def _init_worker(settings: Settings) -> None:
    global _ENGINE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _ENGINE = Engine(settings)


def _strip(face: DetectedFace) -> DetectedFace:
    return dataclasses.replace(face, shape=None)  # dlib objects do not cross processes


def analyse_file(
    path: Path,
    max_faces: int,
    quality: str,
    detector: str | None,
    engine: Engine | None = None,
    settings: Settings | None = None,
    one_face: bool = False,
) -> tuple[Path, AnalysedImage | str]:
    """Decode, detect, select and embed one photo -> ``(path, AnalysedImage)`` or ``(path, error text)``.
    ``one_face`` (a consent collection): only the subject's face is selected and embedded."""
    engine = engine or _ENGINE
    assert engine is not None, "analyse_file runs in a worker (with its engine) or is given one"
    try:
        data = path.read_bytes()
        kw = {}
        if settings is not None:
            kw = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
        pixels = images.decode(data, **kw)
        detected = engine.detect(pixels, detector)
        refusal = None
        try:
            kept, unindexed = (
                select_subject_face(detected, quality)
                if one_face
                else select_faces(detected, max_faces, quality)
            )
        except AccessDenied as exc:  # IndexFaces refuses the image, audited
            kept, unindexed, refusal = [], [], exc.reason
        templates = engine.embed(pixels, kept)
        return path, AnalysedImage(
            sha256=hashlib.sha256(data).hexdigest(),
            model_version=engine.model_version,
            kept=[_strip(f) for f in kept],
            templates=np.asarray(templates, np.float32),
            unindexed=[(_strip(f), r) for f, r in unindexed],
            refusal=refusal,
        )
    except (FacewardenError, OSError) as exc:
        return path, f"{type(exc).__name__}: {exc}"


def _analysed(
    service: Service,
    files: list[Path],
    workers: int,
    max_faces: int,
    quality: str,
    model_version: str,
    one_face: bool = False,
) -> Iterator[tuple[Path, AnalysedImage | str]]:
    """Each file analysed with ``model_version`` (the target collection's), in ``workers`` processes."""
    detector = service.settings.detector
    engine = service.engine_for(model_version)
    if workers <= 1 or len(files) <= 1:
        for f in files:
            yield analyse_file(f, max_faces, quality, detector, engine, service.settings, one_face)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no inherited DB connections or locks
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(service.settings.replace(model=model_version),),
    ) as pool:
        futures = [
            pool.submit(analyse_file, f, max_faces, quality, detector, None, service.settings, one_face)
            for f in files
        ]
        for fut in as_completed(futures):
            yield fut.result()


def admitted(
    service: Service,
    principal: Principal,
    collection_id: str,
    files: list[Path],
    external_id_from: str,
    refused: list[dict[str, str]],
) -> list[Path]:
    """The files policy lets into ``collection_id``, decided from their paths alone (nothing is
    read): the IndexFaces decision and the consent of each file's subject. A refused file is
    audited (the decision names its rule) and added to ``refused``; it is never read or decoded."""
    out = []
    for f in files:
        subject = external_id_for(f, external_id_from)

        def consent(ctx: Context, subject: str = subject) -> None:
            require_consent(service, ctx, collection_id, subject)

        try:
            service.authorize(principal, "IndexFaces", collection_id, audit_allowed=False, check=consent)
        except AccessDenied as exc:
            refused.append({"path": str(f), "subject": subject, "rule": exc.rule, "reason": exc.reason})
            continue
        out.append(f)
    return out


def _progress(enabled: bool, total: int, what: str) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task(what, total=total)


def index_paths(
    service: Service,
    paths: Iterable[str | Path],
    collection_id: str,
    external_id_from: str = "filename",
    workers: int | None = None,
    progress: bool = True,
    principal: Principal | None = None,
    *,
    max_faces: int = 100,
    quality: str = "AUTO",
) -> dict[str, Any]:
    """Index photos into a collection on all cores; resumable. Returns a summary dict:
    ``images``, ``indexed_images``, ``skipped_known`` (and ``already_enrolled``: the paths of
    images the collection already held, by content, which are not enrolled again),
    ``faces_indexed``, ``faces_unindexed``, ``no_face`` (paths), ``refused`` ([{path, subject, rule,
    reason}]: refused by policy before being read), ``errors`` ([{path, error}]), ``seconds``."""
    started = time.time()
    principal = principal or service.owner_principal()
    # Policy before pixels: the workers compute templates outside the operation, so decide first.
    service.authorize(principal, "IndexFaces", collection_id, audit_allowed=False)
    store = service.store
    col = store.get_collection(collection_id)  # unknown collection: fail before any work
    files = iter_images(paths)
    summary: dict[str, Any] = {
        "collection": collection_id,
        "images": len(files),
        "indexed_images": 0,
        "skipped_known": 0,
        "already_enrolled": [],
        "faces_indexed": 0,
        "faces_unindexed": 0,
        "no_face": [],
        "refused": [],
        "errors": [],
    }
    todo = []
    for f in admitted(service, principal, collection_id, files, external_id_from, summary["refused"]):
        try:
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError as exc:
            summary["errors"].append({"path": str(f), "error": str(exc)})
            continue
        if store.has_image(collection_id, sha):
            summary["skipped_known"] += 1
            summary["already_enrolled"].append(str(f))
        else:
            todo.append(f)
    bar, task = _progress(progress, len(todo), f"indexing into {collection_id}")
    try:
        workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        one_face = col.consent_mode != "household"
        for path, result in _analysed(
            service, todo, workers, max_faces, quality, col.model_version, one_face
        ):
            if bar is not None:
                bar.advance(task)
            if isinstance(result, str):
                summary["errors"].append({"path": str(path), "error": result})
                continue
            request = gallery.IndexFacesRequest(
                collection_id,
                external_image_id=external_id_for(path, external_id_from),
                max_faces=max_faces,
                quality_filter=quality,
                analysed=result,
            )
            try:
                response = service.execute(gallery.index_faces, request, principal)
            except AccessDenied as exc:
                refusal = {"path": str(path), "subject": request.external_image_id or "", "rule": exc.rule}
                summary["refused"].append({**refusal, "reason": exc.reason})
                continue
            except FacewardenError as exc:
                summary["errors"].append({"path": str(path), "error": f"{exc.aws_code}: {exc.message}"})
                continue
            if response.already_indexed:  # indexed meanwhile by another run, or a copy of a photo
                summary["skipped_known"] += 1
                summary["already_enrolled"].append(str(path))
                continue
            n = len(response.face_records)
            summary["faces_indexed"] += n
            summary["faces_unindexed"] += len(response.unindexed_faces)
            if n:
                summary["indexed_images"] += 1
            else:
                summary["no_face"].append(str(path))
    finally:
        if bar is not None:
            bar.stop()
    summary["seconds"] = round(time.time() - started, 3)
    return summary


def cluster_paths(
    service: Service,
    paths: Iterable[str | Path],
    threshold: float | None = None,
    workers: int | None = None,
    progress: bool = True,
    principal: Principal | None = None,
    *,
    collection_id: str | None = None,
    create_users: bool = False,
    user_prefix: str = "person",
    external_id_from: str = "filename",
) -> dict[str, Any]:
    """Group the faces of photos by person. Returns ``{"groups": [{"group", "size", "faces":
    [{"path", "BoundingBox", "Confidence", "FaceId"?}]}], "singletons", "faces", "images",
    "AppliedThreshold", "users": [...], "skipped_known": [paths], "refused": [...], "errors": [...]}``
    (JSON-able).

    The grouping runs as the ``ClusterFaces`` operation (policy and audit apply). With
    ``collection_id`` every face is also indexed there, under the ExternalImageId of its file (or
    folder); files policy or consent refuses there are refused before they are read, and in a
    consent collection only each photo's subject face is analysed. An image the collection already
    holds is not enrolled again: its stored faces are used, and it is listed in ``skipped_known``.
    With ``create_users`` each group of two or more indexed faces becomes a user
    (``<user_prefix>-0001``...) with its faces associated (in a consent collection a user holds one
    subject's faces: a group that mixes subjects is reported in ``errors``).
    """
    principal = principal or service.owner_principal()
    # Policy before pixels: decide before the workers compute any template.
    service.authorize(principal, "ClusterFaces", collection_id, audit_allowed=False)
    files = iter_images(paths)
    total = len(files)
    refused: list[dict[str, str]] = []
    one_face = False
    if collection_id is not None:
        service.authorize(principal, "IndexFaces", collection_id, audit_allowed=False)
    # faces clustered into a collection are analysed with its model; otherwise the default model
    model = service.engine.model_version
    if collection_id is not None:
        target = service.store.get_collection(collection_id)
        model, one_face = target.model_version, target.consent_mode != "household"
        files = admitted(service, principal, collection_id, files, external_id_from, refused)
    bar, task = _progress(progress, len(files), "analysing faces")
    analysed: list[tuple[Path, AnalysedImage]] = []
    errors: list[dict[str, str]] = []
    try:
        workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        for path, result in _analysed(service, files, workers, 100, "AUTO", model, one_face):
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
    response = service.execute(
        faces.cluster_faces,
        faces.ClusterFacesRequest(similarity_threshold=threshold, analysed=[a for _, a in analysed]),
        principal,
    )
    face_ids: dict[tuple[int, int], str] = {}
    known: list[str] = []
    if collection_id is not None:
        for i, (path, a) in enumerate(analysed):
            subject = external_id_for(path, external_id_from)
            try:
                r = service.execute(
                    gallery.index_faces,
                    gallery.IndexFacesRequest(collection_id, external_image_id=subject, analysed=a),
                    principal,
                )
            except AccessDenied as exc:
                refused.append(
                    {"path": str(path), "subject": subject, "rule": exc.rule, "reason": exc.reason}
                )
                continue
            if r.already_indexed:  # enrolled before: its faces are found by their boxes, not enrolled again
                known.append(str(path))
                for j, face in enumerate(a.kept):
                    fid = _same_box(face.face_detail()["BoundingBox"], [rec.face for rec in r.face_records])
                    if fid:
                        face_ids[(i, j)] = fid
                continue
            for j, rec in enumerate(r.face_records):
                face_ids[(i, j)] = rec.face["FaceId"]
    groups: list[dict[str, Any]] = []
    made: list[dict[str, Any]] = []
    for g, group in enumerate(response.groups):
        members: list[dict[str, Any]] = []
        for f in group.faces:
            item: dict[str, Any] = {
                "path": str(analysed[f.image_index][0]),
                "BoundingBox": f.bounding_box,
                "Confidence": f.confidence,
            }
            fid = face_ids.get((f.image_index, f.face_index))
            if fid:
                item["FaceId"] = fid
            members.append(item)
        groups.append({"group": g + 1, "size": len(members), "faces": members})
        if create_users and collection_id is not None and len(members) >= 2:
            user_id = f"{user_prefix}-{g + 1:04d}"
            ids = list(dict.fromkeys(str(f["FaceId"]) for f in members if "FaceId" in f))[:100]
            subjects = {external_id_for(Path(f["path"]), external_id_from) for f in members if "FaceId" in f}
            if one_face and len(subjects) > 1:
                errors.append({"user": user_id, "error": (
                    f"not made: the group holds faces of {len(subjects)} subjects, and in a consent collection "
                    "a user stands for one subject"
                )})  # fmt: skip
                continue
            try:
                service.execute(users.create_user, users.UserRequest(collection_id, user_id), principal)
                if ids:
                    service.execute(
                        users.associate_faces,
                        users.AssociateFacesRequest(collection_id, user_id, ids, user_match_threshold=0),
                        principal,
                    )
            except FacewardenError as exc:
                errors.append({"user": user_id, "error": f"{exc.aws_code}: {exc.message}"})
                continue
            made.append({"UserId": user_id, "faces": len(ids)})
    return {
        "images": total,
        "refused": refused,
        "faces": sum(g["size"] for g in groups),
        "groups": [g for g in groups if g["size"] >= 2],
        "singletons": [g["faces"][0] for g in groups if g["size"] == 1],
        "errors": errors,
        "AppliedThreshold": response.applied_threshold,
        "users": made,
        "skipped_known": known,
    }


def _same_box(box: dict[str, float], faces: list[dict[str, Any]]) -> str | None:
    """The FaceId of the stored face whose box is this box (IoU > 0.5), if any."""

    def iou(a: dict[str, float], b: dict[str, float]) -> float:
        w = min(a["Left"] + a["Width"], b["Left"] + b["Width"]) - max(a["Left"], b["Left"])
        h = min(a["Top"] + a["Height"], b["Top"] + b["Height"]) - max(a["Top"], b["Top"])
        inter = max(0.0, w) * max(0.0, h)
        union = a["Width"] * a["Height"] + b["Width"] * b["Height"] - inter
        return inter / union if union > 0 else 0.0

    best = max(faces, key=lambda f: iou(box, f["BoundingBox"]), default=None)
    return str(best["FaceId"]) if best is not None and iou(box, best["BoundingBox"]) > 0.5 else None

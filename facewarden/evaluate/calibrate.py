"""Build a model's calibration table (similarity <-> false match rate) from a labelled folder of photos.

Every pair of photos of different people is an impostor pair; their template distances go to
:meth:`Calibration.build`. The table records where it came from: the folder, how many images,
templates and identities, and which images had no detectable face.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..engine.calibration import Calibration, impostor_distances
from ..errors import InvalidInput
from .embed import embed_images, list_images

IDENTITY_FROM = ("folder", "filename")
_TRAILING_NUMBER = re.compile(r"[_-]\d+$")


def identity_for(root: Path, path: Path, identity_from: str) -> str:
    """``folder``: the first folder under ``root``; ``filename``: the stem without a trailing ``_NNNN``."""
    if identity_from == "folder":
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            raise InvalidInput(f"{path} is not inside an identity folder of {root} (identity_from='folder').")
        return rel.parts[0]
    return _TRAILING_NUMBER.sub("", path.stem) or path.stem


def calibrate(
    images_dir: str | Path,
    identity_from: str = "folder",
    out_path: str | Path | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    *,
    face_choice: str = "largest",
    progress: bool | None = None,
    description: str | None = None,
) -> Calibration:
    """Embed every image, take all cross-identity pairs, build (and save to ``out_path``) the table."""
    from ..engine import Engine

    if identity_from not in IDENTITY_FROM:
        raise InvalidInput(f"identity_from must be 'folder' or 'filename', not {identity_from!r}.")
    settings = settings or Settings.from_env()
    engine = Engine(settings)
    root = Path(images_dir)
    files = list_images(root, recursive=identity_from == "folder")
    if not files:
        raise InvalidInput(f"{root} holds no images.")
    labels = {p: identity_for(root, p, identity_from) for p in files}
    emb = embed_images(files, settings, workers, face_choice=face_choice, progress=progress)
    ok = [p for p in files if emb[str(p)].ok]
    failed = [p for p in files if not emb[str(p)].ok]
    if len({labels[p] for p in ok}) < 2:
        raise InvalidInput(
            f"Calibration needs photos of at least two identities with a face; {root} has fewer."
        )
    templates = np.stack([emb[str(p)].template for p in ok]).astype(np.float32)
    identities = [labels[p] for p in ok]
    distances = impostor_distances(templates, identities)
    source: dict[str, Any] = {
        "folder": str(root),
        "images": len(files),
        "templates": len(ok),
        "identities": len(set(labels.values())),
        "identities_with_templates": len(set(identities)),
        "detection_failures": len(failed),
        "detection_failure_images": [str(p.relative_to(root)) for p in failed],
        "identity_from": identity_from,
        "detector": settings.detector,
        "runtime": settings.runtime,
        "face_choice": "largest face" if face_choice == "largest" else "nearest the image centre",
    }
    if description:
        source["description"] = description
    cal = Calibration.build(distances, engine.model_version, source)
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        cal.save(out_path)
    return cal

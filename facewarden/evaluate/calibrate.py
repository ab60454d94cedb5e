"""Build a model's calibration table (similarity <-> false match rate) from a labelled folder of photos.

Every pair of photos of different people is an impostor pair; their template distances go to
:meth:`Calibration.build`. The table records where it came from: the folder, how many images,
templates and identities, and which images had no detectable face.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..engine.calibration import Calibration, UserScoring, impostor_distances
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


def not_people(files: list[Path], labels: dict[Path, str], faces: dict[str, int]) -> dict[str, str]:
    """Identity folders that hold no one person: fewer than half of their images hold exactly one
    face (a folder of group photos, of photos without faces). -> {folder: why}. A person's folder
    with an odd group photo stays, and so does a folder of one photo (its face is chosen by
    ``face_choice``: one photo cannot tell a person's picture with a bystander from a group)."""
    by_folder: dict[str, list[int]] = {}
    for p in files:
        by_folder.setdefault(labels[p], []).append(faces[str(p)])
    out = {}
    for folder, counts in sorted(by_folder.items()):
        single = sum(1 for n in counts if n == 1)
        if len(counts) >= 2 and 2 * single < len(counts):
            many = sum(1 for n in counts if n > 1)
            out[folder] = (
                f"{single} of its {len(counts)} images hold exactly one face ({many} hold several, "
                f"{len(counts) - single - many} none): not one person's photos"
            )
    return out


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
    """Embed every image, take all cross-identity pairs, build (and save to ``out_path``) the table.

    With ``identity_from="folder"``, folders that are not one person's photos (:func:`not_people`:
    group photos, photos without faces) are skipped and listed in the table's source."""
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
    skipped = (
        not_people(files, labels, {str(p): emb[str(p)].faces for p in files})
        if identity_from == "folder"
        else {}
    )
    files = [p for p in files if labels[p] not in skipped]
    labels = {p: labels[p] for p in files}
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
        "skipped_folders": skipped,
        "identity_from": identity_from,
        "detector": settings.detector,
        "runtime": settings.runtime,
        "face_choice": "largest face" if face_choice == "largest" else "nearest the image centre",
        "pipeline": engine.pipeline(),
        "pipeline_key": engine.pipeline_key(),
    }
    if description:
        source["description"] = description
    cal = Calibration.build(distances, engine.model_version, source)
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        cal.save(out_path)
    return cal


#: The false match rates at which the user scoring is measured (FMR 1e-4 needs about a million
#: user-stranger comparisons to see a few dozen false matches).
USER_LEVELS = (1e-2, 1e-3, 1e-4)


def calibrate_users(
    people_dir: str | Path,
    impostors_dir: str | Path,
    out_path: str | Path | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    *,
    max_faces: int = 6,
    sets_per_person: int = 10,
    progress: bool | None = None,
    description: str | None = None,
) -> UserScoring:
    """Measure how a model should score a user of several faces (:class:`UserScoring`).

    ``people_dir``: a folder per person (several photos each, largest face); ``impostors_dir``:
    photos of other people, one identity per file name (the face nearest the centre). For m = 2 ..
    ``max_faces`` faces, up to ``sets_per_person`` sets of m photos of each person with that many
    are users; every impostor photo is compared with each. How often a stranger reaches the
    thresholds of FMR 1e-2, 1e-3, 1e-4 against a user's mean template, relative to a single photo
    of the same people, is its factor (upper 95% bound, the largest over those thresholds); the
    mean template is chosen when its factor is below m for every m measured (it then gives a
    stranger fewer chances than the best of m faces can be bounded by), else the best face.
    """
    import random

    from ..engine import Engine

    settings = settings or Settings.from_env()
    cal = Engine(settings).calibration
    people_root, imp_root = Path(people_dir), Path(impostors_dir)
    people_files = list_images(people_root, recursive=True)
    imp_files = list_images(imp_root, recursive=False)
    emb_p = embed_images(people_files, settings, workers, face_choice="largest", progress=progress)
    emb_i = embed_images(imp_files, settings, workers, face_choice="centre", progress=progress)
    by_person: dict[str, list[np.ndarray]] = {}
    for p in people_files:
        if emb_p[str(p)].ok and p.parent != people_root:
            by_person.setdefault(identity_for(people_root, p, "folder"), []).append(emb_p[str(p)].template)
    strangers = np.stack([emb_i[str(p)].template for p in imp_files if emb_i[str(p)].ok]).astype(np.float32)
    people = {k: np.stack(v).astype(np.float32) for k, v in sorted(by_person.items()) if len(v) >= 2}
    if len(people) < 5 or len(strangers) < 1000:
        raise InvalidInput(
            "Measuring user scores needs 5 people with 2 or more photos and 1,000 impostor photos."
        )
    inner = {f: 1.0 - cal.distance_for(cal.similarity_for_fmr(f)) ** 2 / 2.0 for f in USER_LEVELS}
    single = np.concatenate([strangers @ t.T for t in people.values()], axis=1).ravel()
    base = {f: float(np.mean(single >= inner[f])) for f in USER_LEVELS}
    rng = random.Random(0)
    measured: dict[str, Any] = {}
    factors = [1.0]
    for m in range(2, max_faces + 1):
        eligible = [t for t in people.values() if len(t) >= m]
        if len(eligible) < 5:
            break
        mean_scores, best_scores = [], []
        for t in eligible:
            sets = list(itertools.combinations(range(len(t)), m))
            rng.shuffle(sets)
            for chosen in sets[:sets_per_person]:
                u = t[list(chosen)]
                mean = u.mean(axis=0)
                mean_scores.append(strangers @ (mean / np.linalg.norm(mean)))
                best_scores.append((strangers @ u.T).max(axis=1))
        row: dict[str, Any] = {"people": len(eligible), "users": len(mean_scores)}
        bounds = []
        for f in USER_LEVELS:
            ms, bs = np.concatenate(mean_scores), np.concatenate(best_scores)
            n, k_mean, k_best = ms.size, int((ms >= inner[f]).sum()), int((bs >= inner[f]).sum())
            expected = base[f] * n
            row[f"{f:g}"] = {
                "comparisons": n,
                "single_rate": base[f],
                "mean_template": k_mean,
                "best_face": k_best,
                "mean_ratio": k_mean / expected if expected else None,
                "best_ratio": k_best / expected if expected else None,
            }
            if expected >= 10:  # enough single-photo false matches to compare with
                bounds.append(_poisson_upper(k_mean) / expected)
        row["factor"] = max(bounds) if bounds else float(m)
        measured[str(m)] = row
        factors.append(max(factors[-1], 1.0, row["factor"]))  # never fewer chances with more faces
    pooling = "mean" if all(f < m for m, f in enumerate(factors[1:], start=2)) else "best"
    scoring = UserScoring(
        pooling,
        tuple(factors) if pooling == "mean" else (),
        {
            "model_version": cal.model_version,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "people": str(people_root),
                "people_with_photos": len(people),
                "impostors": str(imp_root),
                "impostor_photos": len(strangers),
                "detector": settings.detector,
                "sets_per_person": sets_per_person,
                **({"description": description} if description else {}),
            },
            "measured": measured,
            "rule": (
                "factor[m-1]: the upper 95% bound of how much more often a stranger reaches the threshold "
                "of FMR 1e-2/1e-3/1e-4 against the mean template of m photos than against one photo; "
                "pooling 'mean' when every factor is below m (the best of m faces is bounded by m)"
            ),
        },
    )
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        scoring.save(out_path)
    return scoring


def _poisson_upper(k: int, alpha: float = 0.05) -> float:
    """The upper (1 - alpha) bound of a Poisson mean from a count ``k`` (Garwood)."""
    from scipy.stats import chi2

    return float(chi2.ppf(1 - alpha, 2 * k + 2) / 2)

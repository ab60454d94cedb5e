"""1:N audit in the manner of the ACLU's 2018 test of Rekognition: enrol a gallery, search probes.

Identity is the folder name (``<dir>/<identity>/<image>``; an image directly in the folder is its own
identity, named by its file stem). Every gallery image with a face is enrolled (in memory; exact
search with numpy). Each probe is searched against all of them:

- *non-mated* probes (identity not enrolled): every gallery face at or above a threshold is a false
  match. The calibrated scale predicts ``N x FMR(t)`` false matches per probe for a gallery of ``N``
  faces; the report sets the observed count beside that expectation, with a Wilson interval on the
  observed per-comparison FMR.
- *mated* probes: rank-1 identification rate (the best-scoring gallery face is the right identity),
  and at each threshold the rate at which the right identity is returned first and at or above it.

A probe without a detectable face is a miss (never a match); a gallery image without one is not
enrolled. Both are listed. A probe that is byte-for-byte a gallery photo is counted
(``probes_identical_to_a_gallery_image``): it inflates rank-1 and should not be in a fair test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings
from ..engine.calibration import Calibration
from ..errors import InvalidInput
from . import metrics
from .embed import embed_images, list_images
from .pairs import tkey


def _identity(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def _labelled(folder: str | Path) -> list[tuple[Path, str]]:
    root = Path(folder)
    files = list_images(root)
    if not files:
        raise InvalidInput(f"{root} holds no images (expected <identity>/<image> files).")
    return [(p, _identity(root, p)) for p in files]


def evaluate_gallery(
    gallery_dir: str | Path,
    probes_dir: str | Path,
    thresholds: Sequence[float] = (80, 90, 95, 99),
    settings: Settings | None = None,
    workers: int | None = None,
    *,
    calibration: Calibration | None = None,
    progress: bool | None = None,
    face_choice: str = "largest",
) -> dict[str, Any]:
    """Enrol ``gallery_dir``, search every image of ``probes_dir``; false matches vs ``N x FMR``, rank-1."""
    from ..engine import Engine

    settings = settings or Settings.from_env()
    cal = calibration or Engine(settings).calibration
    gallery = _labelled(gallery_dir)
    probes = _labelled(probes_dir)
    ts = sorted({float(t) for t in thresholds})
    for t in ts:
        if not 0.0 <= t <= 100.0:
            raise InvalidInput(f"Thresholds are similarities between 0 and 100, not {t}.")
    emb = embed_images([p for p, _ in gallery] + [p for p, _ in probes], settings, workers,
                       face_choice=face_choice, progress=progress)  # fmt: skip

    g_ok = [(p, i) for p, i in gallery if emb[str(p)].ok]
    g_fail = [p for p, _ in gallery if not emb[str(p)].ok]
    n_gallery = len(g_ok)
    if n_gallery == 0:
        raise InvalidInput(f"No face was found in any gallery image under {gallery_dir}.")
    g_tpl = np.stack([emb[str(p)].template for p, _ in g_ok]).astype(np.float32)
    g_ids = np.array([i for _, i in g_ok], dtype=object)
    enrolled = set(g_ids.tolist())

    p_paths = [p for p, _ in probes]
    p_ids = [i for _, i in probes]
    p_ok = np.array([emb[str(p)].ok for p in p_paths], dtype=bool)
    mated = np.array([i in enrolled for i in p_ids], dtype=bool)

    sims = np.full((len(probes), n_gallery), -np.inf)
    if p_ok.any():
        p_tpl = np.stack([emb[str(p_paths[k])].template for k in np.flatnonzero(p_ok)]).astype(np.float64)
        g64 = g_tpl.astype(np.float64)
        d2 = np.maximum(0.0, (p_tpl**2).sum(1)[:, None] + (g64**2).sum(1)[None, :] - 2.0 * p_tpl @ g64.T)
        sims[p_ok] = np.asarray(cal.similarity(np.sqrt(d2)), dtype=np.float64).reshape(len(p_tpl), n_gallery)

    best = sims.argmax(axis=1)
    best_sim = sims[np.arange(len(probes)), best]
    best_id = g_ids[best]
    correct_top = p_ok & (best_id == np.array(p_ids, dtype=object))
    same_id = g_ids[None, :] == np.array(p_ids, dtype=object)[:, None]  # (probes, gallery)

    n_mated = int(mated.sum())
    n_non = int((~mated).sum())
    non_ok = ~mated & p_ok
    per_t: dict[str, Any] = {}
    for t in ts:
        fmr_claim = cal.fmr(t)
        hits = sims >= t
        # non-mated probes: every hit is a false match
        nm_hits = hits[non_ok]
        fm_pairs = int(nm_hits.sum())
        comparisons = int(non_ok.sum()) * n_gallery
        probes_fm = int(nm_hits.any(axis=1).sum()) if len(nm_hits) else 0
        obs = metrics.Rate(fm_pairs, comparisons)
        nm_probe_rate = metrics.Rate(probes_fm, int(non_ok.sum()))
        # mated probes: the right identity first and above threshold; wrong identities above threshold
        m_rows = mated & p_ok
        mated_correct = int((correct_top & mated & (best_sim >= t)).sum())
        mated_false_pairs = int((hits & ~same_id)[m_rows].sum())
        per_t[tkey(t)] = {
            "threshold": t,
            "claimed_fmr": fmr_claim,
            "non_mated": {
                "false_match_pairs": fm_pairs,
                "comparisons": comparisons,
                "expected_false_match_pairs": comparisons * fmr_claim,
                "expected_false_matches_per_probe": n_gallery * fmr_claim,
                "observed_false_matches_per_probe": (fm_pairs / int(non_ok.sum())) if non_ok.any() else None,
                "observed_fmr": obs.to_dict("comparisons"),
                "claim_inside_ci": bool(obs.ci and obs.ci[0] <= fmr_claim <= obs.ci[1]),
                "probes_with_false_match": probes_fm,
                "probes_with_false_match_rate": nm_probe_rate.to_dict("non-mated probes"),
                "expected_probes_with_false_match": int(non_ok.sum())
                * (1.0 - (1.0 - fmr_claim) ** n_gallery),
            },
            "mated": {
                "correct_first_above_threshold": mated_correct,
                "identification_rate": metrics.Rate(mated_correct, n_mated).to_dict("mated probes"),
                "false_match_pairs": mated_false_pairs,
            },
        }

    rank1 = int((correct_top & mated).sum())
    gallery_shas = {emb[str(p)].sha256 for p, _ in g_ok}
    same_photo = sum(1 for p in p_paths if emb[str(p)].ok and emb[str(p)].sha256 in gallery_shas)
    failures = [
        {"path": str(p), "role": role, "status": emb[str(p)].status, "reason": emb[str(p)].message}
        for role, paths in (("gallery", g_fail), ("probe", [p for p, ok in zip(p_paths, p_ok) if not ok]))
        for p in paths
    ]
    return {
        "gallery_dir": str(gallery_dir),
        "probes_dir": str(probes_dir),
        "model_version": cal.model_version,
        "gallery_faces": n_gallery,
        "gallery_identities": len(enrolled),
        "probes": len(probes),
        "mated_probes": n_mated,
        "non_mated_probes": n_non,
        "probes_identical_to_a_gallery_image": same_photo,
        "detection_failures": len(failures),
        "detection_failure_images": failures,
        "rank1": metrics.Rate(rank1, n_mated).to_dict("mated probes"),
        "rank1_rate": rank1 / n_mated if n_mated else None,
        "thresholds": per_t,
        "per_probe": [
            {
                "path": str(p),
                "identity": i,
                "mated": bool(m),
                "face_found": bool(ok),
                "best_identity": str(bi) if ok else None,
                "best_similarity": float(bs) if ok else None,
            }
            for p, i, m, ok, bi, bs in zip(p_paths, p_ids, mated, p_ok, best_id, best_sim)
        ],
    }

"""1:1 verification audit on a list of labelled pairs, overall and per demographic group.

``PAIRS.tsv`` has a header ``path_a<TAB>path_b<TAB>same`` (paths relative to the images folder,
``same`` 1/0). ``GROUPS.tsv`` maps an image path or an identity (its folder name) to a group label,
one ``key<TAB>group`` per line (a header line is allowed); or the labels come from a column of a
dataset's manifest (``read_groups(MANIFEST.tsv, group_by="race")``), whose images also give the
pairs (:func:`manifest_pairs`: same identity genuine, else impostor). A pair belongs to a group when both of its
images do; impostor pairs across groups are counted apart (``cross_group_pairs``), as NIST's
demographic reports measure each group's false matches within the group.

A pair where either face was missed is a non-match at every threshold: an error for a genuine pair,
never a false match. Every rate carries its counts and a 95% Wilson interval, and a rate over no
pairs is null with a reason, never 0%.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_MATCH_THRESHOLD, Settings
from ..engine.calibration import Calibration
from ..errors import InvalidInput
from . import metrics
from .embed import embed_images
from .scores import PairScores

HEADLINE_THRESHOLDS = (80.0, 90.0, 95.0, 99.0)
FMR_TARGETS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
ALWAYS_REPORTED_TARGETS = (1e-2, 1e-3, 1e-4)  # finer targets appear only where the data resolves them
CALIBRATION_GRID = tuple(float(s) for s in range(50, 101, 5))
_KEY_HEADERS = ("path", "identity", "key", "name", "subject")
_GROUP_HEADERS = ("group", "label", "group_label")


def tkey(threshold: float) -> str:
    """The JSON key of a similarity threshold: ``80.0 -> "80"``, ``92.5 -> "92.5"``."""
    return f"{float(threshold):g}"


# ---- reading inputs ------------------------------------------------------------------------------
def read_pairs(pairs_tsv: str | Path) -> list[tuple[str, str, bool]]:
    path = Path(pairs_tsv)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"Cannot read the pairs file {path}: {exc.strerror or exc}.") from None
    reader = csv.DictReader(text.splitlines(), delimiter="\t")
    need = {"path_a", "path_b", "same"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise InvalidInput(
            f"{path} must be tab-separated with the header path_a, path_b, same; got {reader.fieldnames}."
        )
    out = []
    for n, row in enumerate(reader, start=2):
        raw = (row["same"] or "").strip().lower()
        if raw in ("1", "true", "yes", "same", "genuine"):
            same = True
        elif raw in ("0", "false", "no", "different", "impostor"):
            same = False
        else:
            raise InvalidInput(f"{path} line {n}: 'same' must be 1 or 0, not {row['same']!r}.")
        a, b = (row["path_a"] or "").strip(), (row["path_b"] or "").strip()
        if not a or not b:
            raise InvalidInput(f"{path} line {n}: path_a and path_b must both be given.")
        out.append((a, b, same))
    if not out:
        raise InvalidInput(f"{path} has no pairs.")
    return out


def read_groups(groups_tsv: str | Path, group_by: str | None = None) -> dict[str, str]:
    """``{path or identity: group}`` from a two-column TSV (a header line is allowed), or with
    ``group_by`` from a column of a manifest (a TSV with a header and a ``path`` column, such as a
    dataset's MANIFEST.tsv: ``group_by="race"``)."""
    path = Path(groups_tsv)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"Cannot read the groups file {path}: {exc.strerror or exc}.") from None
    if group_by is not None:
        rows = _manifest_rows(path, lines, "path", group_by)
        return {r["path"]: r[group_by] for r in rows if r[group_by]}
    out: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise InvalidInput(f"{path} line {n}: expected 'path-or-identity<TAB>group'.")
        if n == 1 and cells[0].lower() in _KEY_HEADERS and cells[1].lower() in _GROUP_HEADERS:
            continue
        out[cells[0]] = cells[1]
    return out


def manifest_pairs(
    manifest_tsv: str | Path,
    identity_column: str = "identity",
    groups: Mapping[str, str] | None = None,
) -> list[tuple[str, str, bool]]:
    """Every pair of a manifest's images (its ``path`` column): genuine when both have the same
    identity, impostor otherwise. An image whose identity is empty or ``unknown`` is taken as a
    person of its own (a set of one photo per person, such as UTKFace's crops, gives impostor
    pairs only). With ``groups`` (from :func:`read_groups`), only pairs within one group are kept:
    the pairs a per-group report counts (NIST's within-group false matches)."""
    path = Path(manifest_tsv)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"Cannot read the manifest {path}: {exc.strerror or exc}.") from None
    rows = _manifest_rows(path, lines, "path", identity_column)
    items = [(r["path"], r[identity_column].strip()) for r in rows if r["path"]]
    out = []
    for i, (a, ida) in enumerate(items):
        for b, idb in items[i + 1 :]:
            if groups is not None and (groups.get(a) is None or groups.get(a) != groups.get(b)):
                continue
            known = ida.lower() not in ("", "unknown") and idb.lower() not in ("", "unknown")
            out.append((a, b, known and ida == idb))
    if not out:
        raise InvalidInput(f"{path} gives no pairs (it needs two images{' in one group' if groups else ''}).")
    return out


def _manifest_rows(path: Path, lines: list[str], *columns: str) -> list[dict[str, str]]:
    reader = csv.DictReader(lines, delimiter="\t")
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidInput(
            f"{path} has no column {', '.join(missing)}; its columns are {', '.join(reader.fieldnames or ())}."
        )
    return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]


def identity_of(rel_path: str) -> str:
    """The identity of an image: its folder name (the file's stem when it has no folder)."""
    p = Path(rel_path)
    return p.parent.name if p.parent.name else p.stem


def group_of(rel_path: str, groups: Mapping[str, str]) -> str | None:
    return groups.get(rel_path) or groups.get(identity_of(rel_path))


def _resolve(images_dir: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else images_dir / p


# ---- scoring -------------------------------------------------------------------------------------
def score_pairs(
    pairs_tsv: str | Path | Sequence[tuple[str, str, bool]],
    images_dir: str | Path,
    groups_tsv: str | Path | Mapping[str, str] | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    calibration: Calibration | None = None,
    progress: bool | None = None,
    face_choice: str = "largest",
) -> PairScores:
    """Embed every image of the pairs once and score every pair with the calibrated similarity.

    ``pairs_tsv``: a PAIRS.tsv, or the pairs themselves (e.g. from :func:`manifest_pairs`);
    ``groups_tsv``: a GROUPS.tsv, or the ``{path or identity: group}`` mapping itself."""
    from ..engine import Engine

    settings = settings or Settings.from_env()
    images_root = Path(images_dir)
    if not images_root.is_dir():
        raise InvalidInput(f"The images folder {images_root} does not exist.")
    pairs = read_pairs(pairs_tsv) if isinstance(pairs_tsv, str | Path) else list(pairs_tsv)
    if isinstance(groups_tsv, Mapping):
        groups = dict(groups_tsv)
    else:
        groups = read_groups(groups_tsv) if groups_tsv else {}
    cal = calibration or Engine(settings).calibration
    rels = sorted({p for a, b, _ in pairs for p in (a, b)})
    embedded = embed_images(
        [_resolve(images_root, r) for r in rels],
        settings,
        workers,
        face_choice=face_choice,
        progress=progress,
    )
    by_rel = {r: embedded[str(_resolve(images_root, r))] for r in rels}
    n = len(pairs)
    dist = np.full(n, np.inf)
    for i, (a, b, _) in enumerate(pairs):
        ta, tb = by_rel[a].template, by_rel[b].template
        if ta is not None and tb is not None:
            dist[i] = float(np.linalg.norm(ta.astype(np.float64) - tb.astype(np.float64)))
    sim = np.full(n, -np.inf)
    ok = np.isfinite(dist)
    if ok.any():
        sim[ok] = np.asarray(cal.similarity(dist[ok]), dtype=np.float64)
    grp: list[str | None] = []
    for a, b, _ in pairs:
        ga, gb = group_of(a, groups), group_of(b, groups)
        grp.append(ga if ga is not None and ga == gb else None)
    return PairScores(
        [a for a, _, _ in pairs],
        [b for _, b, _ in pairs],
        np.array([s for _, _, s in pairs], dtype=bool),
        sim,
        dist,
        grp,
        {r: e for r, e in by_rel.items() if not e.ok},
    )


# ---- figures -------------------------------------------------------------------------------------
def summarise(
    scores: PairScores,
    thresholds: Sequence[float],
    policy_floors: Mapping[str, float],
    calibration: Calibration,
    default_threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> dict[str, Any]:
    """Every figure for one set of pairs (the whole set, or one group)."""
    gen_sim, imp_sim = scores.similarity[scores.same], scores.similarity[~scores.same]
    # the curves use minus the distance: the same order as similarity, without its clamping at 50 and 100
    gen_d, imp_d = -scores.distance[scores.same], -scores.distance[~scores.same]
    n_gen, n_imp = len(gen_sim), len(imp_sim)
    notes: list[str] = []
    if n_imp == 0:
        notes.append("no impostor pairs: FMR is undefined (null), not 0%")
    if n_gen == 0:
        notes.append("no genuine pairs: FNMR is undefined (null), not 0%")

    all_t = sorted({float(default_threshold), *map(float, thresholds), *map(float, policy_floors.values())})
    rates = {tkey(t): metrics.rates_at(gen_sim, imp_sim, t) for t in all_t}
    default = rates[tkey(default_threshold)]

    e = metrics.eer(gen_d, imp_d)
    eer_out: dict[str, Any] = {"value": e["value"]}
    if e["value"] is None:
        eer_out["reason"] = e["reason"]
    else:
        eer_out["similarity_threshold"] = _sim_of_neg_distance(e["threshold"], calibration)

    at_fmr: dict[str, Any] = {}
    for target in FMR_TARGETS:
        r = metrics.fnmr_at_fmr(gen_d, imp_d, target)
        if not r["resolved"] and target not in ALWAYS_REPORTED_TARGETS:
            continue
        out = {k: v for k, v in r.items() if k != "threshold"}
        if r["resolved"]:
            out["similarity_threshold"] = _sim_of_neg_distance(r["threshold"], calibration)
        at_fmr[f"{target:.0e}"] = out

    missed = scores.missed
    return {
        "pairs": len(scores),
        "genuine": n_gen,
        "impostor": n_imp,
        "detection_failures": len(scores.failures),
        "pairs_with_detection_failure": {
            "genuine": int(np.count_nonzero(missed & scores.same)),
            "impostor": int(np.count_nonzero(missed & ~scores.same)),
        },
        "threshold_default": float(default_threshold),
        "accuracy_at_default": default["accuracy"]["value"],
        "fmr_at": {k: r["fmr"]["value"] for k, r in rates.items()},
        "fnmr_at": {k: r["fnmr"]["value"] for k, r in rates.items()},
        "eer": eer_out["value"],
        "eer_detail": eer_out,
        "fnmr_at_fmr": at_fmr,
        "rates": rates,
        "policy_floors": {name: rates[tkey(t)] for name, t in policy_floors.items()},
        "notes": notes,
    }


def _sim_of_neg_distance(neg_distance: float | None, calibration: Calibration) -> float | None:
    if neg_distance is None or not math.isfinite(neg_distance):
        return None
    return float(calibration.similarity(-neg_distance))


def _policy_floors(policy_floors: Mapping[str, float] | Iterable[float] | None) -> dict[str, float]:
    if policy_floors is None:
        return {}
    if isinstance(policy_floors, Mapping):
        items = {str(k): float(v) for k, v in policy_floors.items()}
    else:
        items = {tkey(float(v)): float(v) for v in policy_floors}
    for name, v in items.items():
        if not 0.0 <= v <= 100.0:
            raise InvalidInput(f"Policy floor {name} must be a similarity between 0 and 100, not {v}.")
    return items


def build_report(
    scores: PairScores,
    calibration: Calibration,
    thresholds: Sequence[float] | None = None,
    policy_floors: Mapping[str, float] | Iterable[float] | None = None,
    default_threshold: float = DEFAULT_MATCH_THRESHOLD,
) -> dict[str, Any]:
    """The report of a scored set of pairs (pure: no images, no engine)."""
    ts = sorted({*HEADLINE_THRESHOLDS, *(float(t) for t in (thresholds or ()))})
    for t in ts:
        if not 0.0 <= t <= 100.0:
            raise InvalidInput(f"Thresholds are similarities between 0 and 100, not {t}.")
    floors = _policy_floors(policy_floors)
    report = summarise(scores, ts, floors, calibration, default_threshold)
    report["thresholds"] = ts
    report["detection_failure_images"] = [
        {"path": p, "status": e.status, "reason": e.message} for p, e in sorted(scores.failures.items())
    ]
    imp_sim = scores.similarity[~scores.same]
    grid = sorted({*CALIBRATION_GRID, *ts, *floors.values()})
    report["calibration"] = {
        "model_version": calibration.model_version,
        "formula": "FMR(s) = 10^-((s - 50) / 10) up to 99; above, the model's fine tail to fmr_at_100",
        "fmr_at_100": calibration.fmr_at_100,
        "table_impostor_pairs": calibration.meta.get("impostor_pairs"),
        "table_source": calibration.meta.get("source"),
        "points": metrics.calibration_points(imp_sim, grid, calibration.fmr),
    }
    labels = sorted({g for g in scores.group if g is not None})
    if labels:
        group_arr = np.array([g if g is not None else "" for g in scores.group], dtype=object)
        per_group = {}
        for g in labels:
            sub = scores.subset(group_arr == g)
            per_group[g] = summarise(sub, ts, floors, calibration, default_threshold)
        report["groups"] = per_group
        ungrouped = np.array([g is None for g in scores.group])
        report["cross_group_pairs"] = {
            "pairs": int(ungrouped.sum()),
            "genuine": int((ungrouped & scores.same).sum()),
            "impostor": int((ungrouped & ~scores.same).sum()),
            "note": "pairs whose images are in different groups (or in none) count overall, in no group",
        }
        diffs = {}
        for name, t in [("default", float(default_threshold)), *floors.items()]:
            k = tkey(t)
            fm = {
                g: metrics.Rate(r["rates"][k]["fmr"]["count"], r["rates"][k]["fmr"]["trials"])
                for g, r in per_group.items()
            }
            fnm = {
                g: metrics.Rate(r["rates"][k]["fnmr"]["count"], r["rates"][k]["fnmr"]["trials"])
                for g, r in per_group.items()
            }
            diffs[k] = {
                "name": name,
                "threshold": t,
                "fmr": metrics.differential(fm),
                "fnmr": metrics.differential(fnm),
            }
        report["differentials"] = diffs
    return report


def evaluate_pairs(
    pairs_tsv: str | Path | Sequence[tuple[str, str, bool]],
    images_dir: str | Path,
    groups_tsv: str | Path | Mapping[str, str] | None = None,
    out_dir: str | Path | None = None,
    settings: Settings | None = None,
    workers: int | None = None,
    thresholds: Sequence[float] | None = None,
    policy_floors: Mapping[str, float] | Iterable[float] | None = None,
    *,
    calibration: Calibration | None = None,
    progress: bool | None = None,
    face_choice: str = "largest",
) -> dict[str, Any]:
    """Audit 1:1 verification on labelled pairs; write ``report.json``/``report.html`` to ``out_dir``.

    Returns the report (without the per-pair scores, which only ``report.json`` holds). Headline keys:
    ``pairs``, ``genuine``, ``impostor``, ``detection_failures`` (images), ``threshold_default``,
    ``accuracy_at_default``, ``fmr_at``/``fnmr_at`` (keyed by threshold, e.g. ``"80"``), ``eer`` and,
    with groups, ``groups`` (the same figures per group) and ``differentials``.
    """
    from ..engine import Engine

    settings = settings or Settings.from_env()
    cal = calibration or Engine(settings).calibration
    scores = score_pairs(
        pairs_tsv, images_dir, groups_tsv, settings, workers, cal, progress=progress, face_choice=face_choice
    )
    report = build_report(scores, cal, thresholds, policy_floors, settings.match_threshold)
    report["inputs"] = {
        "pairs_tsv": str(pairs_tsv) if isinstance(pairs_tsv, str | Path) else f"{len(scores)} pairs given",
        "images_dir": str(images_dir),
        "groups_tsv": str(groups_tsv) if isinstance(groups_tsv, str | Path) else None,
        "model_version": cal.model_version,
        "detector": settings.detector,
        "pipeline": Engine(settings).pipeline(),
        "face_choice": face_choice,
    }
    if out_dir is not None:
        from .report import write_pairs_report

        report["report_files"] = write_pairs_report(report, scores, Path(out_dir))
    return report

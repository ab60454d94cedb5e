"""The per-group detection audit: how many faces the detector misses, per group of people.

A manifest (TSV) lists images with a group label (any column: race, gender, age band, camera...)
and, optionally, how many faces each holds (default: one). A face is *missed* when an image yields
fewer faces than it holds; extra faces are counted apart as *false faces* (on images known to hold
none, every face found is one). Each group's miss rate comes with a 95% Wilson interval, and the
differential is the worst group's rate over the best group's (NIST's form; unbounded, and said so,
when the best group misses nothing).

    facewarden evaluate detection MANIFEST.tsv --images DIR --group-by race --out report/

The same audit a user runs on their own photos; ``bench/bench_detectors.py`` runs it on the shared
sets for every registered detector.
"""

from __future__ import annotations

import csv
import html
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import FacewardenError, InvalidInput
from . import metrics

#: Manifest columns read for the number of faces an image holds, first match wins.
EXPECTED_COLUMNS = ("faces", "number_of_faces", "number_of_faces_if_known")


@dataclass(frozen=True)
class Item:
    path: str
    group: str
    expected: int


def read_manifest(manifest: str | Path, group_by: str, expected_column: str | None = None) -> list[Item]:
    """Rows of a TSV manifest with ``path`` and ``group_by`` columns; a blank face count is 1."""
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as exc:
        raise InvalidInput(f"Cannot read the manifest {manifest}: {exc.strerror or exc}.") from None
    columns = set(rows[0]) if rows else set()
    missing = [c for c in ("path", group_by) if c not in columns]
    if missing:
        raise InvalidInput(
            f"The manifest {manifest} has no column {', '.join(missing)}; its columns: "
            f"{', '.join(sorted(columns)) or 'none'}. It must be a TSV with a header row."
        )
    count_col = expected_column or next((c for c in EXPECTED_COLUMNS if c in columns), None)
    if expected_column and expected_column not in columns:
        raise InvalidInput(f"The manifest {manifest} has no column {expected_column}.")
    items = []
    for n, r in enumerate(rows, start=2):
        raw = (r.get(count_col) or "").strip() if count_col else ""
        if raw and not raw.isdigit():
            raise InvalidInput(f"{manifest} line {n}: the face count {raw!r} is not a whole number.")
        items.append(Item(r["path"], (r.get(group_by) or "").strip() or "(none)", int(raw) if raw else 1))
    return items


# ---- counting faces (in worker processes) ----------------------------------------------------------
_engine: Any = None


def _init(settings: Settings) -> None:
    global _engine
    from ..engine import Engine

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _engine = Engine(settings.replace(onnx_threads=settings.onnx_threads or 1))


def _count(path: str, detector: str | None) -> tuple[int | None, str]:
    from ..media import images

    s = _engine.settings
    try:
        pixels = images.read(path, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
        return len(_engine.detect(pixels, detector)), ""
    except FacewardenError as exc:
        return None, exc.message


def count_faces(
    paths: Sequence[str], settings: Settings, detector: str | None = None, workers: int | None = None
) -> list[tuple[int | None, str]]:
    """Faces found in each image (None and the reason where it could not be read)."""
    n = max(1, min(workers or os.cpu_count() or 1, len(paths)))
    if n == 1:
        _init(settings)
        return [_count(p, detector) for p in paths]
    with ProcessPoolExecutor(n, initializer=_init, initargs=(settings,)) as pool:
        return list(pool.map(_count, paths, [detector] * len(paths), chunksize=8))


# ---- the report ------------------------------------------------------------------------------------
def build_report(
    items: Sequence[Item], counts: Sequence[tuple[int | None, str]], group_by: str
) -> dict[str, Any]:
    per_image, errors = [], []
    groups: dict[str, dict[str, int]] = {}
    for it, (found, why) in zip(items, counts):
        g = groups.setdefault(
            it.group, {"images": 0, "faces": 0, "missed": 0, "false_faces": 0, "unreadable": 0}
        )
        g["images"] += 1
        g["faces"] += it.expected
        if found is None:  # an unreadable image hides every face it holds: count them as missed
            g["unreadable"] += 1
            g["missed"] += it.expected
            errors.append({"path": it.path, "reason": why})
        else:
            g["missed"] += max(0, it.expected - found)
            g["false_faces"] += max(0, found - it.expected)
        per_image.append({"path": it.path, "group": it.group, "expected": it.expected, "found": found})
    rates = {name: metrics.Rate(g["missed"], g["faces"]) for name, g in groups.items()}
    total = metrics.Rate(sum(g["missed"] for g in groups.values()), sum(g["faces"] for g in groups.values()))
    return {
        "group_by": group_by,
        "images": len(items),
        "faces": total.trials,
        "missed": total.count,
        "false_faces": sum(g["false_faces"] for g in groups.values()),
        "miss_rate": total.to_dict("faces"),
        "groups": {
            name: g | {"miss_rate": rates[name].to_dict("faces")} for name, g in sorted(groups.items())
        },
        "differential": metrics.differential(rates),
        "unreadable": errors,
        "per_image": per_image,
    }


def evaluate_detection(
    manifest: str | Path,
    images_dir: str | Path,
    group_by: str = "race",
    *,
    settings: Settings | None = None,
    detector: str | None = None,
    expected_column: str | None = None,
    out_dir: str | Path | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the audit; with ``out_dir``, write ``report.json`` and ``report.html`` (with a bar chart)."""
    from ..engine import detectors

    settings = settings or Settings.from_env()
    spec = detectors.get(detector or settings.detector)
    items = read_manifest(manifest, group_by, expected_column)
    if not items:
        raise InvalidInput(f"The manifest {manifest} lists no images.")
    root = Path(images_dir)
    counts = count_faces([str(root / it.path) for it in items], settings, spec.name, workers)
    report = build_report(items, counts, group_by)
    report["inputs"] = {
        "manifest": str(manifest),
        "images_dir": str(images_dir),
        "detector": spec.name,
        "detector_version": spec.version,
    }
    if out_dir is not None:
        report["report_files"] = write_report(report, Path(out_dir))
    return report


def _pct(rate: dict[str, Any]) -> str:
    if rate.get("value") is None:
        return "n/a"
    lo, hi = rate["ci95"]
    return f"{100 * rate['value']:.2f}% ({rate['count']}/{rate['trials']}; 95% CI {100 * lo:.2f}-{100 * hi:.2f}%)"


def ratio_text(report: dict[str, Any]) -> str:
    d = report["differential"]
    if d.get("ratio") is not None:
        return f"{d['ratio']:.2f}x ({d['max']['group']} / {d['min']['group']})"
    return f"n/a: {d.get('reason', '')}"


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, str]:
    from .report import _pyplot, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(report["groups"])
    rates = [report["groups"][g]["miss_rate"] for g in names]
    values = [100 * (r["value"] or 0.0) for r in rates]
    lo = [v - 100 * (r["ci95"] or [0, 0])[0] for v, r in zip(values, rates)]
    hi = [100 * (r["ci95"] or [0, 0])[1] - v for v, r in zip(values, rates)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 3.6))
    ax.bar(names, values, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_ylabel("faces missed (%), 95% Wilson interval")
    ax.set_title(f"Missed faces by {report['group_by']} ({report['inputs']['detector']})")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out_dir / "miss-rates.png", dpi=110)
    plt.close(fig)

    e = html.escape
    inp = report["inputs"]
    rows = "".join(
        f"<tr><td>{e(g)}</td><td>{report['groups'][g]['images']}</td><td>{report['groups'][g]['faces']}</td>"
        f"<td>{e(_pct(report['groups'][g]['miss_rate']))}</td><td>{report['groups'][g]['false_faces']}</td></tr>"
        for g in names
    )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>facewarden detection audit</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}</style></head><body>"
        f"<h1>Missed faces by {e(report['group_by'])}</h1>"
        f"<p>manifest: {e(inp['manifest'])} · images: {e(inp['images_dir'])} · detector: "
        f"{e(inp['detector'])} ({e(inp['detector_version'])})</p>"
        f"<p>Overall: {e(_pct(report['miss_rate']))} of faces missed; {report['false_faces']} false faces; "
        f"worst / best group: {e(ratio_text(report))}.</p>"
        "<table><tr><th>group</th><th>images</th><th>faces</th><th>missed</th><th>false faces</th></tr>"
        f"{rows}</table>"
        "<figure><img src='miss-rates.png' alt='miss rate per group with 95% intervals'></figure>"
        "</body></html>\n"
    )
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    write_json(report, out_dir / "report.json")
    return {
        k: str(out_dir / v)
        for k, v in (("html", "report.html"), ("json", "report.json"), ("plot", "miss-rates.png"))
    }

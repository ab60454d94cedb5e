"""Writing an audit: ``report.json``, ``report.html`` and the PNG plots beside them.

The HTML page needs nothing but the PNG files next to it (no scripts, no network); the plots are
drawn with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import metrics

if TYPE_CHECKING:
    from .scores import PairScores

PLOT_FILES = {
    "det": "det.png",
    "roc": "roc.png",
    "histogram": "similarity-histogram.png",
    "calibration": "calibration.png",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """JSON has no infinities: turn them (and NaN) into null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_clean(data), indent=1, default=_json_default) + "\n")


# ---- plots -------------------------------------------------------------------------------------
def _det_series(scores: PairScores) -> tuple[np.ndarray, np.ndarray] | None:
    gen, imp = -scores.distance[scores.same], -scores.distance[~scores.same]
    if not len(gen) or not len(imp):
        return None
    fmr, fnmr, _ = metrics.det_points(gen, imp)
    return fmr, fnmr


def plot_det(scores: PairScores, groups: list[str], path: Path, roc: bool = False) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    series = [("all pairs", scores)]
    garr = np.array([g if g is not None else "" for g in scores.group], dtype=object)
    series += [(g, scores.subset(garr == g)) for g in groups]
    drew = False
    for label, sub in series:
        s = _det_series(sub)
        if s is None:
            continue
        fmr, fnmr = s
        n_imp = int((~sub.same).sum())
        floor = 0.5 / n_imp  # zero rates drawn half a pair below the finest resolvable rate
        x = np.maximum(fmr, floor)
        if roc:
            ax.step(
                x,
                1 - fnmr,
                where="post",
                label=f"{label} ({n_imp} imp.)",
                lw=2 if label == "all pairs" else 1,
            )
        else:
            y = np.maximum(fnmr, 0.5 / max(1, int(sub.same.sum())))
            ax.step(x, y, where="post", label=f"{label} ({n_imp} imp.)", lw=2 if label == "all pairs" else 1)
        drew = True
    ax.set_xscale("log")
    ax.set_xlabel("false match rate (FMR)")
    if roc:
        ax.set_ylabel("true match rate (1 - FNMR)")
        ax.set_title("ROC")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("false non-match rate (FNMR)")
        ax.set_title("DET (zero rates drawn at half a pair)")
    ax.grid(True, which="both", alpha=0.3)
    if drew:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_histogram(scores: PairScores, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    bins = np.linspace(50, 100, 51)
    gen = scores.similarity[scores.same & np.isfinite(scores.similarity)]
    imp = scores.similarity[~scores.same & np.isfinite(scores.similarity)]
    if len(imp):
        ax.hist(imp, bins=bins, alpha=0.6, label=f"impostor ({len(imp)})", color="tab:red")
    if len(gen):
        ax.hist(gen, bins=bins, alpha=0.6, label=f"genuine ({len(gen)})", color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("calibrated similarity (pairs with a missed face not shown)")
    ax.set_ylabel("pairs")
    ax.set_title("Similarity of genuine and impostor pairs")
    ax.axvline(80, color="k", ls="--", lw=1, label="default threshold 80")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_calibration(points: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 5.0), dpi=100)
    n = points[0]["impostor_pairs"] if points else 0
    floor = 0.5 / n if n else 1e-7
    claimed = np.array([p["claimed_fmr"] for p in points])
    observed = np.array([p["observed_fmr"] if p["observed_fmr"] is not None else np.nan for p in points])
    lo = np.array([p["ci95"][0] if p["ci95"] else np.nan for p in points])
    hi = np.array([p["ci95"][1] if p["ci95"] else np.nan for p in points])
    obs = np.maximum(observed, floor)
    yerr = np.vstack([obs - np.maximum(lo, floor), np.maximum(hi, floor) - obs])
    ax.errorbar(claimed, obs, yerr=np.maximum(yerr, 0), fmt="o", capsize=3, label="observed (95% Wilson CI)")
    lim = [min(claimed.min(initial=1e-5), floor) / 2, 1.5]
    ax.plot(lim, lim, "k--", lw=1, label="claimed = observed")
    if n:
        ax.axhline(1.0 / n, color="grey", ls=":", lw=1, label=f"1 / impostor pairs ({n})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("FMR claimed by the similarity (10^-((s-50)/10))")
    ax.set_ylabel("FMR observed (zero drawn at half a pair)")
    ax.set_title("Calibration: claimed vs observed false match rate")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


# ---- HTML --------------------------------------------------------------------------------------
def _pct(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.{digits}f}%"


def _rate_cell(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return f"<td class='na'>n/a ({html.escape(r.get('reason', 'undefined'))})</td>"
    lo, hi = r["ci95"]
    return (
        f"<td>{_pct(r['value'])} <small>({r['count']}/{r['trials']}; CI {_pct(lo)}–{_pct(hi)})</small></td>"
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
td.na{color:#a00}
small{color:#666}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.note{color:#555;font-size:13px}
"""


def render_html(report: dict[str, Any], files: dict[str, str]) -> str:
    e = html.escape
    thresholds = list(report["rates"])
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<title>facewarden accuracy and bias audit</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>facewarden accuracy and bias audit</h1>",
    ]
    inp = report.get("inputs", {})
    out.append(
        "<p class='note'>"
        + e(
            f"pairs: {inp.get('pairs_tsv', '?')} · images: {inp.get('images_dir', '?')} · "
            f"model: {inp.get('model_version', '?')} · detector: {inp.get('detector', '?')} · "
            f"face: {inp.get('face_choice', '?')}"
        )
        + "</p>"
    )
    # headline
    out.append("<h2>Headline</h2><table>")
    rows = [
        ("pairs", report["pairs"]),
        ("genuine pairs", report["genuine"]),
        ("impostor pairs", report["impostor"]),
        ("images with a detection failure", report["detection_failures"]),
        ("genuine / impostor pairs with a missed face",
         f"{report['pairs_with_detection_failure']['genuine']} / {report['pairs_with_detection_failure']['impostor']}"),
        ("default threshold", report["threshold_default"]),
        ("accuracy at the default threshold", _pct(report["accuracy_at_default"])),
        ("equal error rate", _pct(report["eer"]) if report["eer"] is not None
         else f"n/a ({report['eer_detail'].get('reason', '')})"),
    ]  # fmt: skip
    out += [
        f"<tr><th>{e(k)}</th><td>{_fmt(v) if not isinstance(v, str) else e(v)}</td></tr>" for k, v in rows
    ]
    out.append("</table>")

    out.append("<h2>FMR and FNMR at similarity thresholds</h2>")
    out.append(
        "<table><tr><th>threshold</th><th>claimed FMR</th><th>FMR</th><th>FNMR</th><th>accuracy</th></tr>"
    )
    floors = {f"{v['threshold']:g}": k for k, v in report.get("policy_floors", {}).items()}
    for k in thresholds:
        r = report["rates"][k]
        label = k + (f" <small>(policy floor {e(floors[k])})</small>" if k in floors else "")
        label += " <small>(default)</small>" if float(k) == report["threshold_default"] else ""
        claimed = 10 ** (-(float(k) - 50) / 10)
        out.append(
            f"<tr><td>{label}</td><td>{claimed:.2g}</td>{_rate_cell(r['fmr'])}{_rate_cell(r['fnmr'])}"
            f"{_rate_cell(r['accuracy'])}</tr>"
        )
    out.append("</table>")

    out.append(
        "<h2>FNMR at a fixed FMR</h2><table><tr><th>target FMR</th><th>FNMR</th><th>similarity threshold</th></tr>"
    )
    for k, r in report["fnmr_at_fmr"].items():
        if r["resolved"]:
            out.append(
                f"<tr><td>{e(k)}</td>{_rate_cell(r['fnmr'])}<td>{_fmt(r.get('similarity_threshold'))}</td></tr>"
            )
        else:
            out.append(f"<tr><td>{e(k)}</td><td class='na' colspan='2'>{e(r['reason'])}</td></tr>")
    out.append("</table>")

    groups = report.get("groups")
    if groups:
        k80 = f"{report['threshold_default']:g}"
        out.append(f"<h2>Per group (threshold {e(k80)})</h2>")
        out.append(
            "<table><tr><th>group</th><th>pairs</th><th>genuine</th><th>impostor</th><th>failures</th>"
            "<th>FMR</th><th>FNMR</th><th>EER</th><th>notes</th></tr>"
        )
        for g, r in groups.items():
            rr = r["rates"][k80]
            out.append(
                f"<tr><td>{e(g)}</td><td>{r['pairs']}</td><td>{r['genuine']}</td><td>{r['impostor']}</td>"
                f"<td>{r['detection_failures']}</td>{_rate_cell(rr['fmr'])}{_rate_cell(rr['fnmr'])}"
                f"<td>{_pct(r['eer'])}</td><td>{e('; '.join(r['notes']))}</td></tr>"
            )
        out.append("</table>")
        cg = report.get("cross_group_pairs", {})
        out.append(
            f"<p class='note'>{e(str(cg.get('pairs', 0)))} pairs span two groups (or none); {e(cg.get('note', ''))}.</p>"
        )
        out.append("<h3>Differentials across groups</h3><table><tr><th>threshold</th><th>rate</th><th>highest</th>"
                   "<th>lowest</th><th>max / min</th><th>groups without trials</th></tr>")  # fmt: skip
        for k, d in report.get("differentials", {}).items():
            for rate in ("fmr", "fnmr"):
                x = d[rate]
                hi = f"{e(x['max']['group'])}: {_pct(x['max']['value'])}" if x.get("max") else "n/a"
                lo = f"{e(x['min']['group'])}: {_pct(x['min']['value'])}" if x.get("min") else "n/a"
                ratio = (
                    f"{x['ratio']:.3g}" if x.get("ratio") is not None else f"n/a ({e(x.get('reason', ''))})"
                )
                out.append(
                    f"<tr><td>{e(k)} ({e(d['name'])})</td><td>{rate.upper()}</td><td>{hi}</td><td>{lo}</td>"
                    f"<td>{ratio}</td><td>{e(', '.join(x['undefined_groups']) or '-')}</td></tr>"
                )
        out.append("</table>")

    cal = report["calibration"]
    out.append("<h2>Calibration: claimed vs observed FMR</h2>")
    out.append(
        f"<p class='note'>Table {e(str(cal['model_version']))}, built on {e(str(cal.get('table_impostor_pairs')))} "
        "impostor pairs. Observed on this set's impostor pairs; 'resolved' means the claimed FMR is at least "
        "1 / impostor pairs.</p>"
    )
    out.append("<table><tr><th>similarity</th><th>claimed FMR</th><th>observed FMR</th><th>95% CI</th>"
               "<th>resolved</th><th>claim inside CI</th></tr>")  # fmt: skip
    for p in cal["points"]:
        ci = f"{p['ci95'][0]:.2g}–{p['ci95'][1]:.2g}" if p["ci95"] else "n/a"
        obs = (
            f"{p['observed_fmr']:.3g} ({p['false_matches']}/{p['impostor_pairs']})"
            if p["observed_fmr"] is not None
            else "n/a"
        )
        out.append(
            f"<tr><td>{p['similarity']:g}</td><td>{p['claimed_fmr']:.2g}</td><td>{obs}</td><td>{ci}</td>"
            f"<td>{'yes' if p['resolved'] else 'no'}</td><td>{'yes' if p['consistent'] else 'no'}</td></tr>"
        )
    out.append("</table>")

    if report["detection_failure_images"]:
        out.append("<h2>Detection failures</h2><table><tr><th>image</th><th>status</th><th>reason</th></tr>")
        for f in report["detection_failure_images"]:
            out.append(f"<tr><td>{e(f['path'])}</td><td>{e(f['status'])}</td><td>{e(f['reason'])}</td></tr>")
        out.append("</table>")

    out.append("<h2>Plots</h2>")
    for key, alt in (("det", "DET curves per group"), ("roc", "ROC curves"),
                     ("histogram", "genuine and impostor similarity histograms"),
                     ("calibration", "claimed vs observed FMR")):  # fmt: skip
        if key in files:
            out.append(
                f"<figure><img src='{e(files[key])}' alt='{e(alt)}'><figcaption>{e(alt)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_pairs_report(report: dict[str, Any], scores: PairScores, out_dir: Path) -> dict[str, str]:
    """Write the plots, ``report.html`` and ``report.json`` (with per-pair similarities) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = sorted(report.get("groups", {}))
    plot_det(scores, groups, out_dir / PLOT_FILES["det"])
    plot_det(scores, groups, out_dir / PLOT_FILES["roc"], roc=True)
    plot_histogram(scores, out_dir / PLOT_FILES["histogram"])
    plot_calibration(report["calibration"]["points"], out_dir / PLOT_FILES["calibration"])
    files = dict(PLOT_FILES)
    (out_dir / "report.html").write_text(render_html(report, files), encoding="utf-8")
    files["html"] = "report.html"
    files["json"] = "report.json"
    full = dict(report)
    full["report_files"] = files
    full["per_pair"] = scores.to_records()
    write_json(full, out_dir / "report.json")
    return {k: str(out_dir / v) for k, v in files.items()}

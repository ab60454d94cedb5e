"""The accuracy and bias audit: evaluate pairs, evaluate gallery, calibrate."""

from __future__ import annotations

import json
from typing import Any

import click

from ..engine import detectors
from ..service.evaluation import EVALUATE_CALIBRATION, EVALUATE_DETECTION, EVALUATE_GALLERY, EVALUATE_PAIRS
from . import App, main, pass_app

HEADLINE = (
    "pairs",
    "genuine",
    "impostor",
    "detection_failures",
    "threshold_default",
    "accuracy_at_default",
    "fmr_at",
    "fnmr_at",
    "eer",
    "groups",
)


@main.group("evaluate")
def evaluate_group() -> None:
    """Measure accuracy and demographic differentials on your own labelled photos."""


#: The options every audit shares: where its report goes, and how many worker processes embed.
REPORT_OUT = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write report.json and report.html here.",
)
WORKERS = click.option("--workers", type=click.IntRange(1, 256), default=None)


@evaluate_group.command("pairs")
@click.argument("pairs_tsv", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--groups",
    "groups_tsv",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TSV: path or identity -> group label (any labels you choose).",
)
@REPORT_OUT
@WORKERS
@pass_app
def evaluate_pairs(
    app: App,
    pairs_tsv: str,
    images_dir: str,
    groups_tsv: str | None,
    out_dir: str | None,
    workers: int | None,
) -> None:
    """1:1 verification on PAIRS_TSV (path_a, path_b, same): ROC/DET, EER, FMR/FNMR per group."""
    from ..evaluate import evaluate_pairs as run

    app.service.authorize(app.principal, EVALUATE_PAIRS)  # an audit like any other use
    floors = _policy_floors(app)
    report = run(
        pairs_tsv,
        images_dir,
        groups_tsv=groups_tsv,
        out_dir=out_dir,
        settings=app.settings,
        workers=workers,
        policy_floors=floors,
        progress=False if app.json else None,
    )
    if app.json:
        click.echo(
            json.dumps(
                {k: report[k] for k in HEADLINE if k in report} | {"report_files": report.get("report_files")}
            )
        )
        return
    click.echo(
        f"pairs {report['pairs']} (genuine {report['genuine']}, impostor {report['impostor']}), "
        f"detection failures {report['detection_failures']}"
    )
    click.echo(
        f"accuracy at {report['threshold_default']:g}: {report['accuracy_at_default']:.4f}   EER: {report['eer']}"
    )
    for t in sorted(report["fmr_at"], key=float):
        click.echo(f"  similarity {t:>5}: FMR {_fmt(report['fmr_at'][t])}  FNMR {_fmt(report['fnmr_at'][t])}")
    for g, fig in (report.get("groups") or {}).items():
        click.echo(
            f"  group {g}: FMR@80 {_fmt(fig['fmr_at'].get('80'))}  FNMR@80 {_fmt(fig['fnmr_at'].get('80'))}"
        )
    if report.get("report_files"):
        click.echo(f"report: {report['report_files']}")


@evaluate_group.command("detection")
@click.argument("manifest_tsv", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--group-by", default="race", show_default=True, help="The manifest column to group by.")
@click.option(
    "--detector", type=click.Choice(detectors.names()), default=None, help="Default: the configured one."
)
@REPORT_OUT
@WORKERS
@pass_app
def evaluate_detection(
    app: App,
    manifest_tsv: str,
    images_dir: str,
    group_by: str,
    detector: str | None,
    out_dir: str | None,
    workers: int | None,
) -> None:
    """Missed faces per group (MANIFEST_TSV: path, the group column, optional face count), with
    95% Wilson intervals and the worst/best group ratio."""
    from ..evaluate.detection import evaluate_detection as run
    from ..evaluate.detection import ratio_text

    app.service.authorize(app.principal, EVALUATE_DETECTION)
    report = run(
        manifest_tsv,
        images_dir,
        group_by,
        settings=app.settings,
        detector=detector,
        out_dir=out_dir,
        workers=workers,
    )
    report.pop("per_image")

    def show(r: dict[str, Any]) -> None:
        click.echo(
            f"detector {r['inputs']['detector']}: {r['missed']} of {r['faces']} faces missed "
            f"({_fmt(r['miss_rate'])}), {r['false_faces']} false faces; worst/best: {ratio_text(r)}"
        )
        for g, fig in r["groups"].items():
            ci = fig["miss_rate"]["ci95"] or [0, 0]
            click.echo(
                f"  {g:<20} {fig['missed']:>5} / {fig['faces']:<6} {_fmt(fig['miss_rate'])}  (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
            )
        if r.get("report_files"):
            click.echo(f"report: {r['report_files']['html']}")

    app.emit(report, show)


@evaluate_group.command("gallery")
@click.option("--gallery", "gallery_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--probes", "probes_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--threshold",
    "thresholds",
    type=click.FloatRange(50, 100),
    multiple=True,
    help="Repeatable; default 80 90 95 99.",
)
@WORKERS
@pass_app
def evaluate_gallery(
    app: App, gallery_dir: str, probes_dir: str, thresholds: tuple[float, ...], workers: int | None
) -> None:
    """1:N test in the ACLU's form: enrol the gallery, search every probe (identity = folder name)."""
    from ..evaluate import evaluate_gallery as run

    app.service.authorize(app.principal, EVALUATE_GALLERY)
    report = run(
        gallery_dir,
        probes_dir,
        thresholds=thresholds or (80, 90, 95, 99),
        settings=app.settings,
        workers=workers,
        progress=False if app.json else None,
    )
    report.pop("per_probe", None)
    click.echo(json.dumps(report, indent=None if app.json else 1))


@main.command()
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--identity-from", type=click.Choice(["folder", "filename"]), default="folder", show_default=True
)
@click.option(
    "--face",
    "face_choice",
    type=click.Choice(["largest", "centre"]),
    default="largest",
    show_default=True,
    help="Which face of a photo stands for its identity.",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Model to calibrate (default: FACEWARDEN_MODEL, the built-in one).",
)
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to write the table (default: the model's own calibration file, which puts it in service).",
)
@WORKERS
@pass_app
def calibrate(
    app: App,
    images_dir: str,
    identity_from: str,
    face_choice: str,
    model_name: str | None,
    out_path: str | None,
    workers: int | None,
) -> None:
    """Build a calibration table (similarity <-> false match rate) from every cross-identity pair."""
    from ..engine import Engine
    from ..evaluate import calibrate as run

    app.service.authorize(app.principal, EVALUATE_CALIBRATION)
    settings = app.settings.replace(model=model_name) if model_name else app.settings
    spec = Engine(settings).spec
    if out_path is None:
        if spec.calibration_file is None or spec.align_template is None:
            raise click.UsageError("give --out: the built-in model's shipped table is not overwritten")
        out_path = str(spec.calibration_file)
        spec.calibration_file.parent.mkdir(parents=True, exist_ok=True)
    table = run(
        images_dir,
        identity_from=identity_from,
        out_path=out_path,
        settings=settings,
        workers=workers,
        face_choice=face_choice,
        progress=False if app.json else None,
    )
    meta = {
        k: table.meta.get(k) for k in ("impostor_pairs", "finest_fmr_resolved", "extrapolated_points", "tail")
    }
    skipped = (table.meta.get("source") or {}).get("skipped_folders") or {}
    meta["skipped_folders"] = skipped

    def human(m: dict[str, Any]) -> None:
        for folder, why in skipped.items():
            click.echo(f"skipped folder {folder}/: {why}")
        click.echo(
            f"wrote {out_path}: " + ", ".join(f"{k} {v}" for k, v in m.items() if k != "skipped_folders")
        )

    app.emit(meta, human)


@main.command("calibrate-users")
@click.option(
    "--people",
    "people_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A folder per person, several photos each.",
)
@click.option(
    "--impostors",
    "impostors_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Photos of other people, one person per file name (e.g. the calibration folder).",
)
@click.option("--model", "model_name", default=None, help="Default: FACEWARDEN_MODEL, the built-in one.")
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Default: <version>.users.json beside the model's calibration table, which puts it in service.",
)
@WORKERS
@pass_app
def calibrate_users(
    app: App,
    people_dir: str,
    impostors_dir: str,
    model_name: str | None,
    out_path: str | None,
    workers: int | None,
) -> None:
    """Measure how to score a user of several faces (its best face or its mean template) and
    how many chances that score gives a stranger."""
    from ..engine import Engine
    from ..engine.calibration import user_scoring_path
    from ..evaluate.calibrate import calibrate_users as run

    app.service.authorize(app.principal, EVALUATE_CALIBRATION)
    settings = app.settings.replace(model=model_name) if model_name else app.settings
    spec = Engine(settings).spec
    if out_path is None:
        if spec.calibration_file is None:
            raise click.UsageError("give --out: this model has no calibration table to sit beside")
        out_path = str(user_scoring_path(spec.calibration_file))
    scoring = run(
        people_dir, impostors_dir, out_path, settings, workers, progress=False if app.json else None
    )
    shown = {"pooling": scoring.pooling, "factors": list(scoring.factors), "out": out_path}
    app.emit(shown, lambda r: click.echo(f"wrote {r['out']}: pooling {r['pooling']}, factors {r['factors']}"))


def _policy_floors(app: App) -> dict[str, float]:
    try:
        policy = app.service.policy
        return {f"floor:{name}": float(policy.min_similarity(name)) for name in policy.purposes}
    except Exception:  # noqa: BLE001 - floors are an extra; evaluation measures the model
        return {}


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        v = v.get("rate", v.get("value"))
    return "n/a" if v is None else f"{v:.4g}"

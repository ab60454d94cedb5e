"""Face models: the built-in one and user-supplied ONNX embedders."""

from __future__ import annotations

from typing import Any

import click

from . import App, main, pass_app


@main.group()
def model() -> None:
    """Register and list face models (a collection is bound to one model version)."""


@model.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Name to select it by (FACEWARDEN_MODEL=NAME).")
@click.option(
    "--input-size",
    type=click.IntRange(16, 1024),
    required=True,
    help="Square input size in pixels, e.g. 112.",
)
@click.option(
    "--template",
    default="arcface",
    show_default=True,
    help="Alignment template: 'arcface', or ten numbers x1,y1,...,x5,y5 in input pixels "
    "(image-left eye, other eye, nose tip, left and right mouth corner).",
)
@click.option("--mean", default="127.5,127.5,127.5", show_default=True, help="Per-channel mean subtracted.")
@click.option("--std", default="127.5,127.5,127.5", show_default=True, help="Per-channel divisor.")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True)
@click.option("--channels", type=click.Choice(["RGB", "BGR"]), default="RGB", show_default=True)
@click.option("--licence", default="", help="The model's licence, recorded with it.")
@pass_app
def model_add(
    app: App,
    file: str,
    name: str,
    input_size: int,
    template: str,
    mean: str,
    std: str,
    layout: str,
    channels: str,
    licence: str,
) -> None:
    """Register a user-supplied ONNX embedder; calibrate it before use."""
    from ..engine.onnx_user import add_model

    points: Any = template
    if template not in ("arcface",):
        v = _floats(template, 10, "--template")
        points = tuple((v[i], v[i + 1]) for i in range(0, 10, 2))
    m = add_model(
        app.settings.data_dir,
        file,
        name,
        input_size=input_size,
        template=points,
        mean=_three(mean, "--mean"),
        std=_three(std, "--std"),
        layout=layout,
        channels=channels,
        licence=licence,
    )
    out = {"Name": m.name, "FaceModelVersion": m.version, "Dimensions": m.dim}
    app.emit(
        out,
        lambda r: click.echo(
            f"registered {m.version} ({m.dim}-D). Next: facewarden calibrate --model {m.name} --images DIR"
        ),
    )


@model.command("list")
@pass_app
def model_list(app: App) -> None:
    from ..engine import models, onnx_user

    onnx_user.load_registry(app.settings.data_dir)
    rows = [
        {
            "Name": s.name,
            "FaceModelVersion": s.version,
            "Dimensions": s.dim,
            "Calibrated": bool(s.calibration_file and s.calibration_file.exists()),
            "Licence": s.licence,
        }
        for s in models.all_models()
    ]

    def human(r: Any) -> None:
        for x in rows:
            click.echo(
                f"{x['FaceModelVersion']:32} {x['Dimensions']:>4}-D  {'calibrated' if x['Calibrated'] else 'NOT calibrated'}  {x['Licence']}"
            )

    app.emit({"Models": rows}, human)


def _three(text: str, name: str) -> tuple[float, float, float]:
    a, b, c = _floats(text, 3, name)
    return a, b, c


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{name} takes {n} comma-separated numbers") from None
    if len(values) != n:
        raise click.BadParameter(f"{name} takes {n} comma-separated numbers, not {len(values)}")
    return values

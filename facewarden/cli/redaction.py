"""``facewarden redact``: hide every face of images (and videos), except consenting people kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from ..redact import masks
from ..service import redaction as redaction_ops
from . import App, image_request, main, pass_app


@main.command()
@click.argument("inputs", metavar="IMAGE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the redacted copies (same file names; never the originals' folder).",
)
@click.option("--method", type=click.Choice(masks.METHODS), default="blur", show_default=True)
@click.option("--shape", type=click.Choice(masks.SHAPES), default="ellipse", show_default=True)
@click.option(
    "--margin",
    type=click.FloatRange(0, masks.MAX_MARGIN),
    default=masks.DEFAULT_MARGIN,
    show_default=True,
    help="Added on each side of a face's box, as a fraction of its size.",
)
@click.option(
    "--keep-collection",
    "keep_collection",
    metavar="COLLECTION",
    default=None,
    help="Leave visible the faces of this consent collection's consenting people (an identification: "
    "refused to police and immigration keys and to redaction keys).",
)
@pass_app
def redact(
    app: App,
    inputs: tuple[str, ...],
    out_dir: str,
    method: str,
    shape: str,
    margin: float,
    keep_collection: str | None,
) -> None:
    """Hide every face in each IMAGE (RedactFaces); the copies keep their format, without metadata.

    With --json, one summary per image: faces found, hidden and kept.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def request_for(name: str) -> redaction_ops.RedactFacesRequest:
        _target(Path(name), out)  # refuse before any work
        return redaction_ops.RedactFacesRequest(
            image_request(name, app), method, shape, margin, keep_collection
        )

    def saved(name: str, result: redaction_ops.RedactFacesResult) -> dict[str, Any]:
        target = _target(Path(name), out)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(result.image.data)
        tmp.replace(target)
        return {
            "Image": name,
            "Output": str(target),
            "Format": result.format,
            "FacesFound": result.faces_found,
            "FacesHidden": result.faces_hidden,
            "FacesKept": result.faces_kept,
        }

    def human(name: str, s: dict[str, Any]) -> None:
        kept = f", {s['FacesKept']} kept (consenting)" if keep_collection else ""
        click.echo(f"{name} -> {s['Output']}: {s['FacesHidden']} of {s['FacesFound']} faces hidden{kept}")

    app.each_image(inputs, redaction_ops.redact_faces, request_for, human, saved)


def _target(source: Path, out: Path) -> Path:
    target = out / source.name
    if target.resolve() == source.resolve():
        raise InvalidInput(f"--out {out} would overwrite the original {source}; choose another folder.")
    return target

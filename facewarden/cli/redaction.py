"""``facewarden redact``: hide every face of images (and videos), except consenting people kept.

Images go through RedactFaces, one by one, into a folder (files as given, folders searched
recursively for images, in sorted order; a folder's images keep their place below it in the
output folder); a video (known by its suffix) is a StartFaceRedaction job on the local file, run
in this process with a progress bar on a terminal, into the file ``--out`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from ..redact import masks
from ..service import redaction as redaction_ops
from . import IMAGES, App, image_files, image_request, main, pass_app


#: Suffixes of the files redacted as videos.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts")


@main.command()
@click.argument("inputs", metavar="IMAGE_OR_FOLDER... | VIDEO", nargs=-1, required=True, type=IMAGES)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(),
    help="Images: the folder for the redacted copies (same file names, a folder's images in the same "
    "subfolders; never the originals' folder). "
    "A video: the redacted copy's file.",
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
    """Hide every face in each image (RedactFaces; folders are searched recursively for images),
    or in a VIDEO (StartFaceRedaction, with a
    progress bar); image copies keep their format without metadata, a video keeps its container,
    codec family, resolution, frame rate, duration and audio.

    With --json, one summary per image (faces found, hidden and kept), or the video job's
    GetFaceRedaction response.
    """
    videos = [i for i in inputs if Path(i).suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        if len(inputs) != 1:
            raise InvalidInput(
                "Redact one video at a time (with --out naming its redacted copy), or only images."
            )
        _redact_video(app, inputs[0], Path(out_dir), method, shape, margin, keep_collection)
        return
    out = Path(out_dir)
    if out.is_file():
        raise InvalidInput(f"--out {out} is a file; images are redacted into a folder.")
    names = _copy_names(inputs)
    out.mkdir(parents=True, exist_ok=True)

    def _target(source: Path, out: Path) -> Path:
        target = out / names[str(source)]
        if target.resolve() == source.resolve():
            raise InvalidInput(f"--out {out} would overwrite the original {source}; choose another folder.")
        return target

    def request_for(name: str) -> redaction_ops.RedactFacesRequest:
        _target(Path(name), out)  # refuse before any work
        return redaction_ops.RedactFacesRequest(
            image_request(name, app), method, shape, margin, keep_collection
        )

    def saved(name: str, result: redaction_ops.RedactFacesResult) -> dict[str, Any]:
        target = _target(Path(name), out)
        target.parent.mkdir(parents=True, exist_ok=True)
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

    app.each_image(list(names), redaction_ops.redact_faces, request_for, human, saved)


def _copy_names(inputs: tuple[str, ...]) -> dict[str, Path]:
    """Each image to redact -> its copy's path below --out: a file given by name keeps its name, an
    image found in a folder its path below that folder. Two images with one copy name: an error."""
    from ..service.bulk import iter_images

    image_files(inputs)  # a usage error when there is none at all
    names: dict[str, Path] = {}
    for given in inputs:
        root = Path(given)
        for found in [str(p) for p in iter_images((given,))] if root.is_dir() else [given]:
            names.setdefault(
                found, Path(found).relative_to(root) if root.is_dir() else Path(Path(found).name)
            )
    seen: dict[Path, str] = {}
    for source, name in names.items():
        if name in seen:
            raise InvalidInput(
                f"{seen[name]} and {source} would both be redacted to {name}; redact them into separate folders."
            )
        seen[name] = source
    return names


def _redact_video(
    app: App, source: str, out: Path, method: str, shape: str, margin: float, keep_collection: str | None
) -> None:
    from ..errors import InvalidVideo
    from ..service.params import S3Object, to_wire
    from ..service.video import Video
    from .video import _run_here

    src = Path(source)
    if not src.is_file():
        raise InvalidVideo(f"No such video file: {source}")
    if out.is_dir():
        out = out / f"{src.stem}.redacted{src.suffix}"
    request = redaction_ops.StartFaceRedactionRequest(
        Video(S3Object("local-file", src.name)),
        method=method,
        shape=shape,
        margin=margin,
        keep_collection_id=keep_collection,
        path=str(src),
        output_path=str(out),
    )
    job = app.run(redaction_ops.start_face_redaction, request)
    _run_here(app, job.job_id, "redacting")
    result = to_wire(
        app.run(redaction_ops.get_face_redaction, redaction_ops.GetFaceRedactionRequest(job.job_id))
    )
    if app.json:
        import json

        click.echo(json.dumps(result))
    elif result["JobStatus"] == "SUCCEEDED":
        r, meta = result.get("Redaction") or {}, result.get("VideoMetadata") or {}
        kept = f", {r.get('TracksKept', 0)} kept (consenting)" if keep_collection else ""
        click.echo(
            f"{source} -> {out}: {r.get('TracksHidden', 0)} people hidden{kept}; "
            f"{r.get('MaskedFaceFrames', 0)} face-frames masked, {meta.get('DurationMillis', 0) / 1000:.1f} s"
        )
    else:
        click.echo(f"{source}: {result['JobStatus']} ({result.get('StatusMessage') or ''})", err=True)
    if result["JobStatus"] == "FAILED":
        raise click.exceptions.Exit(3)

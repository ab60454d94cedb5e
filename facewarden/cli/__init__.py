"""The command line: one command per user task, each a thin translation onto the service.

Exit codes: 0 success, 1 internal error, 2 usage error (a missing file included; also: not
initialised yet), 3 bad input (the error on stderr), 4 denied by policy or quota (the rule id and
reason on stderr). The global options ``--json``, ``--key`` and ``--data-dir`` work before and
after the command (``facewarden --json key list`` = ``facewarden key list --json``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Settings
from ..engine import detectors
from ..errors import FacewardenError, ResourceNotFound, UnrecognizedClient
from ..media import images
from ..policy.principals import Principal
from ..service import Operation, Service
from ..service.faces import CompareFacesRequest, CompareFacesResult, DetectFacesRequest, DetectFacesResult
from ..service.faces import compare_faces as compare_op
from ..service.faces import detect_faces as detect_op
from ..service.params import Image, Time, time_of, to_wire

EXIT_BAD_INPUT = 3
EXIT_DENIED = 4

Req = TypeVar("Req")
Res = TypeVar("Res")


class App:
    """What every command shares: settings, one service (models loaded once), the principal.

    Settings are read on first use, so that a global option given after the command
    (``facewarden key list --data-dir d``) still applies."""

    def __init__(self, data_dir: str | None, as_json: bool, key: str | None) -> None:
        self.data_dir = data_dir
        self.json = as_json
        self.key_option = key
        self._settings: Settings | None = None
        self._service: Service | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            # --data-dir and --key win over FACEWARDEN_DATA_DIR and FACEWARDEN_KEY (read by Settings)
            self._settings = Settings.from_env(data_dir=self.data_dir, key=self.key_option)
        return self._settings

    @property
    def key(self) -> str | None:
        """The access key the command acts as (None: the owner)."""
        return self.settings.key or None

    @property
    def service(self) -> Service:
        if self._service is None:
            self._service = Service(self.settings)
        return self._service

    @property
    def principal(self) -> Principal:
        """The owner's principal, or the one of ``--key``; nobody bypasses policy."""
        svc = self.service
        if self.key:
            principal = svc.principal_for_key(self.key)
            if principal is None:
                raise UnrecognizedClient(f"Unknown access key {self.key}: see `facewarden key list`.")
            return principal
        try:
            return svc.owner_principal()
        except ResourceNotFound:
            raise NotInitialised(self.settings.data_dir) from None

    def run(self, op: Operation[Req, Res], request: Req) -> Res:
        """Run one operation (policy, audit) as this command's principal."""
        return self.service.execute(op, request, self.principal)

    def each_image(
        self,
        paths: Sequence[str],
        op: Operation[Req, Res],
        request_for: Callable[[str], Req],
        human: Callable[[str, Any], None],
        output: Callable[[str, Res], Any] | None = None,
    ) -> None:
        """One operation per image, in order, one output per image. A bad image is reported (on
        stderr, and as an error line in --json mode, so lines still match images) and the others
        still run; a policy denial stops at once. With --json each line names its file (``Image``).
        ``output(path, result)``, if given, is what is printed (and handed to ``human``) instead
        of the result."""
        worst = 0
        for path in paths:
            try:
                result = self.run(op, request_for(path))
            except FacewardenError as exc:
                if exc.exit_code == EXIT_DENIED:
                    raise
                click.echo(f"error: {path}: {exc.aws_code}: {exc.message}", err=True)
                if self.json:
                    click.echo(
                        json.dumps({"Error": {"Code": exc.aws_code, "Message": exc.message}, "Image": path})
                    )
                worst = max(worst, exc.exit_code)
                continue
            shown = output(path, result) if output else result
            if self.json:  # the response, in Rekognition's shape, and the file it is about
                click.echo(json.dumps({**to_wire(shown), "Image": path}, default=_json_default))
            else:
                human(path, shown)
        if worst:
            raise click.exceptions.Exit(worst)

    def emit(self, obj: Any, human: Callable[[Any], object] | None = None) -> None:
        """Print a result: as JSON (in Rekognition's shape) with --json, else for a person."""
        if self.json or human is None:
            click.echo(json.dumps(to_wire(obj), default=_json_default))
        else:
            human(obj)


class When(click.ParamType[Time]):
    """An option that is a point in time: an ISO 8601 date or date/time, or a Unix time."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Time:
        if isinstance(value, Time):
            return value
        text = str(value)
        number = text.replace(".", "", 1).isdigit()
        return time_of(float(text) if number else text, param.opts[0] if param else "date")


def given(**members: Any) -> dict[str, Any]:
    """The request members an option set (None: not given, the request's default applies)."""
    return {k: v for k, v in members.items() if v is not None}


class NotInitialised(click.ClickException):
    """A command that needs the owner organisation, run before ``facewarden init`` (exit 2)."""

    exit_code = 2

    def __init__(self, data_dir: Path) -> None:
        where = "" if data_dir == Settings().data_dir else f" --data-dir {data_dir}"
        served = Path("data", "owner-key.json")
        hint = (
            " (./data is set up, by make serve: to use it, export FACEWARDEN_DATA_DIR=$PWD/data)"
            if served.is_file() and Path("data").resolve() != data_dir.resolve()
            else ""
        )
        super().__init__(
            f"{data_dir} is not set up yet{hint}: `facewarden init` creates your organisation and its owner "
            "key and declares the organisation's sector, which the moratorium decides on (law enforcement "
            "and immigration enforcement may detect faces but not identify them). Run: "
            f"facewarden{where} init --org-name my-organisation --sector commercial"
        )


def iso(value: Any) -> str:
    """A Unix time -> ISO 8601 in UTC (``2026-06-30T00:00:00Z``) for people; "" for None."""
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def image_files(paths: tuple[str, ...]) -> list[str]:
    """The images among ``paths``: files as given, folders searched recursively (images only),
    sorted; a usage error if there are none."""
    from ..service.bulk import iter_images

    found = [str(p) for p in iter_images(paths)]
    if not found:
        raise click.UsageError(f"no images found in {', '.join(paths)} (looked for {IMAGE_KINDS}).")
    return found


IMAGE_KINDS = ".jpg .jpeg .png .webp .bmp .gif .tif .tiff"


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray)):
        return None
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def fail(exc: FacewardenError) -> click.exceptions.Exit:
    click.echo(f"error: {exc.aws_code}: {exc.message}", err=True)
    return click.exceptions.Exit(exc.exit_code)


pass_app = click.make_pass_decorator(App)


def _set_global(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        app = ctx.find_object(App)
        if app is not None:
            setattr(app, attr, True if value is True else value)

    return callback


def _global_options() -> list[click.Option]:
    """The global options, accepted after a command too (hidden there: the root's help shows them)."""
    return [
        click.Option(["--json"], is_flag=True, hidden=True, expose_value=False, callback=_set_global("json")),
        click.Option(["--key"], hidden=True, expose_value=False, callback=_set_global("key_option")),
        click.Option(
            ["--data-dir"],
            type=click.Path(file_okay=False),
            hidden=True,
            expose_value=False,
            callback=_set_global("data_dir"),
        ),
    ]


class Group(click.Group):
    """Maps facewarden's errors to exit codes and clear messages, once for every command, and
    accepts the global options after every command (subgroups are of this class too)."""

    group_class = type

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        cmd.params.extend(o for o in _global_options() if not taken & set(o.opts))
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FacewardenError as exc:
            raise fail(exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            # `keys create` (installation keys) for `key create` (access keys), and the like
            name, root = ctx.info_name or "", ctx.find_root().command
            for sibling in sorted({f"{name}s", name.removesuffix("s")} - {name}):
                other = root.commands.get(sibling) if isinstance(root, click.Group) else None
                if args and isinstance(other, click.Group) and args[0] in other.commands:
                    raise click.UsageError(
                        f"No such command {args[0]!r}. Did you mean `facewarden {sibling} {args[0]}`?", ctx
                    ) from None
            raise


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where facewarden keeps its data (env FACEWARDEN_DATA_DIR); also after the command.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable output (one JSON object per line); also after the command.",
)
@click.option(
    "--key",
    "key",
    metavar="KEY_ID",
    help="Act as this key's principal instead of the owner (env FACEWARDEN_KEY); also after the command.",
)
@click.version_option(package_name="facewarden")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, as_json: bool, key: str | None) -> None:
    """facewarden: face recognition that keeps its promises in code."""
    ctx.obj = App(data_dir, as_json, key)


def image_request(path: str, app: App) -> Image:
    return Image(images.read_bytes(path, max_bytes=app.settings.max_image_bytes))


# ---- faces in images ---------------------------------------------------------------------------
#: Image arguments: files and folders (searched recursively for images); a missing one is a usage
#: error (exit 2) naming it.
IMAGES = click.Path(exists=True)
FILE = IMAGE = click.Path(exists=True, dir_okay=False)


@main.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=IMAGES)
@click.option(
    "--detector",
    type=click.Choice(detectors.names()),
    default=None,
    help="Face detector (default: FACEWARDEN_DETECTOR, else centerface).",
)
@click.option("--attributes", type=click.Choice(["DEFAULT", "ALL"], case_sensitive=False), default="DEFAULT")
@pass_app
def detect(app: App, paths: tuple[str, ...], detector: str | None, attributes: str) -> None:
    """Find the faces in each image of PATH... (files, or folders searched recursively) with
    DetectFaces: boxes, landmarks, pose, quality. With --json, one response per line, naming its File."""

    def request_for(path: str) -> DetectFacesRequest:
        return DetectFacesRequest(image_request(path, app), attributes.upper(), detector)

    app.each_image(image_files(paths), detect_op, request_for, _print_faces)


def _print_faces(path: str, result: DetectFacesResult) -> None:
    faces = result.face_details
    click.echo(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
    for i, f in enumerate(faces, 1):
        b, p, q = f["BoundingBox"], f["Pose"], f["Quality"]
        click.echo(
            f"  {i:>3}  box left={b['Left']:.3f} top={b['Top']:.3f} width={b['Width']:.3f} height={b['Height']:.3f}"
            f"  confidence={f['Confidence']:.1f}  roll={p['Roll']:+.0f} yaw={p['Yaw']:+.0f} pitch={p['Pitch']:+.0f}"
            f"  brightness={q['Brightness']:.0f} sharpness={q['Sharpness']:.0f}"
        )


@main.command()
@click.argument("source", type=IMAGE)
@click.argument("target", type=IMAGE)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=None,
    help="Similarity threshold (default 80: 1 false match in 1,000).",
)
@click.option("--detector", type=click.Choice(detectors.names()), default=None, help="Face detector.")
@pass_app
def compare(app: App, source: str, target: str, threshold: float | None, detector: str | None) -> None:
    """Is the largest face in SOURCE among the faces in TARGET? (CompareFaces)"""
    request = CompareFacesRequest(
        image_request(source, app), image_request(target, app), threshold, detector or None
    )
    app.emit(app.run(compare_op, request), _print_compare)


def _print_compare(result: CompareFacesResult) -> None:
    thr = (result.applied_threshold or {})["Similarity"]
    matches = result.face_matches
    others = result.unmatched_faces
    if matches:
        best = matches[0].similarity
        click.echo(
            f"MATCH  similarity {best:.1f} >= threshold {thr:g}  ({len(matches)} matching face(s) in target)"
        )
    else:
        click.echo(f"NO MATCH  threshold {thr:g}; {len(others)} face(s) in target, none similar enough")
    for m in matches:
        click.echo(f"  match     similarity {m.similarity:.1f}")


# ---- setting up ----------------------------------------------------------------------------------
@main.command()
@click.option("--org-name", "--org", "org", required=True, help="Your organisation's name.")
@click.option(
    "--sector",
    required=True,
    help="Your organisation's declared sector (commercial, research, law_enforcement, ...).",
)
@click.option(
    "--purpose", default="administration", show_default=True, help="Declared purpose of the owner key."
)
@pass_app
def init(app: App, org: str, sector: str, purpose: str) -> None:
    """Create the data directory, the owner organisation and its key (the secret is shown once)."""
    principal, secret = app.service.init_owner(org, sector, purpose=purpose)
    key_file = app.settings.data_dir / "owner-key.json"
    key = {"AccessKeyId": principal.key_id, "SecretAccessKey": secret}
    key_file.write_text(json.dumps(key) + "\n")
    key_file.chmod(0o600)
    if app.json:
        click.echo(json.dumps(key))
    else:
        click.echo(f"Initialised {app.settings.data_dir} for {org} (sector: {sector}).")
        click.echo(f"Owner key: AccessKeyId={key['AccessKeyId']}  SecretAccessKey={secret}")
        click.echo(f"The secret is shown once; a copy readable only by you is in {key_file}.")


from . import admin, evaluate, gallery, models, ops, redaction, release, serve, video  # noqa: E402,F401  (register their commands)

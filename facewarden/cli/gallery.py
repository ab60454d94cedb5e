"""Collections, faces, users, indexing folders, 1:N search and clustering."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from ..service import Operation
from ..service import gallery as gallery_ops
from ..service import household as household_ops
from ..service import users as user_ops
from ..service.params import to_wire
from . import IMAGE, IMAGES, App, given, image_files, image_request, iso, main, pass_app


class Paged(Protocol):
    @property
    def next_token(self) -> str | None: ...


Req = TypeVar("Req")
Page = TypeVar("Page", bound=Paged)


def _table(rows: list[dict[str, Any]], columns: list[str], dates: tuple[str, ...] = ()) -> None:
    """Rows as a table for people; the ``dates`` columns (Unix times) in ISO 8601, UTC."""
    if not rows:
        click.echo("(none)")
        return
    if dates:
        rows = [{**r, **{c: iso(r.get(c)) for c in dates}} for r in rows]
    rows = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in columns))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _pages(app: App, op: Operation[Req, Page], request: Req, items: Callable[[Page], list[Any]]) -> list[Any]:
    """Every item of a paginated List* operation."""
    out: list[Any] = []
    while True:
        page = app.run(op, request)
        out += items(page)
        if not page.next_token:
            return out
        request = dataclasses.replace(request, next_token=page.next_token)  # type: ignore[type-var]


# ---- collections ---------------------------------------------------------------------------------
@main.group()
def collection() -> None:
    """Create, list, describe and delete collections."""


@collection.command("create")
@click.argument("name")
@click.option(
    "--consent",
    "consent_mode",
    type=click.Choice(["required", "household"]),
    default="required",
    show_default=True,
    help="household: a personal photo library, usable only by your photo_organisation keys.",
)
@click.option(
    "--retention-days",
    type=click.IntRange(1, 36500),
    default=None,
    help="Purge templates older than this (default 365).",
)
@pass_app
def collection_create(app: App, name: str, consent_mode: str, retention_days: int | None) -> None:
    """Create collection NAME."""
    req = gallery_ops.CreateCollectionRequest(
        name, consent_mode=consent_mode, **given(retention_days=retention_days)
    )
    app.emit(
        app.run(gallery_ops.create_collection, req),
        lambda r: click.echo(f"created {r.collection_arn} ({r.face_model_version})"),
    )


@collection.command("list")
@pass_app
def collection_list(app: App) -> None:
    ids = _pages(
        app, gallery_ops.list_collections, gallery_ops.ListCollectionsRequest(), lambda p: p.collection_ids
    )
    app.emit({"CollectionIds": ids}, lambda r: click.echo("\n".join(ids) if ids else "(no collections)"))


@collection.command("describe")
@click.argument("name")
@pass_app
def collection_describe(app: App, name: str) -> None:
    def human(r: gallery_ops.DescribeCollectionResult) -> None:
        wire = to_wire(r)
        for k in ("CollectionARN", "FaceCount", "UserCount", "FaceModelVersion"):
            click.echo(f"{k}: {wire.get(k)}")
        click.echo(f"CreationTimestamp: {iso(wire.get('CreationTimestamp'))}")

    app.emit(app.run(gallery_ops.describe_collection, gallery_ops.CollectionRequest(name)), human)


@collection.command("convert")
@click.argument("name")
@click.option(
    "--consent",
    "consent_mode",
    type=click.Choice(["required"]),
    required=True,
    help="required: every face needs its subject's consent record (faces without one are erased).",
)
@pass_app
def collection_convert(app: App, name: str, consent_mode: str) -> None:
    """Convert household collection NAME into a consent collection (the operator's; audited)."""
    r = app.run(household_ops.convert_collection, household_ops.ConvertCollectionRequest(name, consent_mode))
    app.emit(r, lambda r: click.echo(
        f"converted {name} to consent {r.consent_mode}: {r.faces_erased} face(s) without consent erased, "
        f"{r.faces_kept} kept"
    ))  # fmt: skip


@collection.command("delete")
@click.argument("name")
@pass_app
def collection_delete(app: App, name: str) -> None:
    app.emit(
        app.run(gallery_ops.delete_collection, gallery_ops.CollectionRequest(name)),
        lambda r: click.echo(f"deleted {name}"),
    )


# ---- indexing and search ---------------------------------------------------------------------------
@main.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--collection", "collection_id", required=True)
@click.option(
    "--external-id-from",
    type=click.Choice(["filename", "folder"]),
    default="filename",
    show_default=True,
    help="ExternalImageId of each face: the file name without extension, or the parent folder's name.",
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=None, help="Worker processes (default: all cores)."
)
@pass_app
def index(
    app: App, paths: tuple[str, ...], collection_id: str, external_id_from: str, workers: int | None
) -> None:
    """Enrol the faces in PATH... (files or folders) into a collection; re-running skips done images."""
    from ..service.bulk import index_paths

    summary = index_paths(
        app.service,
        list(paths),
        collection_id,
        external_id_from=external_id_from,
        workers=workers,
        progress=not app.json,
        principal=app.principal,
    )
    app.emit(summary, _print_index)
    code = max(4 if summary["refused"] else 0, 3 if summary["errors"] else 0)
    if code:
        raise click.exceptions.Exit(code)


def _report_refused(refused: list[dict[str, str]]) -> None:
    """Files policy refused (never read), one line each on stderr with the rule and the reason."""
    for r in refused:
        click.echo(f"refused: {r['path']} (subject {r['subject']}): [{r['rule']}] {r['reason']}", err=True)


@main.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=IMAGES)
@click.option("--collection", "collection_id", required=True)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=None,
    help="Similarity threshold (policy may raise it).",
)
@click.option("--max-faces", type=click.IntRange(1, 4096), default=None)
@pass_app
def search(
    app: App, paths: tuple[str, ...], collection_id: str, threshold: float | None, max_faces: int | None
) -> None:
    """Who is the largest face in each image of PATH... (files, or folders searched recursively)?
    One SearchFacesByImage per image; with --json one response per line, naming its File."""
    options = given(face_match_threshold=threshold, max_faces=max_faces)
    app.each_image(
        image_files(paths),
        gallery_ops.search_faces_by_image,
        lambda p: gallery_ops.SearchFacesByImageRequest(collection_id, image_request(p, app), **options),
        _print_search,
    )


def similarity_text(s: float) -> str:
    """A similarity as the CLI prints it: to 0.1 below 99, to 0.001 in the fine tail above (where
    genuine matches lie and a thousandth is still an order of magnitude of FMR)."""
    return f"{s:.1f}" if s < 99 else f"{s:.3f}"


def threshold_text(thr: dict[str, Any]) -> str:
    """The applied threshold, why, and (count only) what the gallery-size cap withheld."""
    if not thr:
        return "similarity >= ?"
    out = f"similarity >= {similarity_text(thr['Similarity'])} ({thr.get('Source', '')}"
    if thr.get("Source") == "gallery_size":
        out += (
            f": {thr.get('GallerySize')} {thr.get('GallerySizeCounts', 'faces')} x FMR "
            f"{thr.get('FalseMatchRate', 0):.2g} <= {thr.get('MaxExpectedFalseMatches'):g} expected false matches"
        )
    out += ")"
    withheld = thr.get("WithheldByCap") or 0
    if withheld:
        out += (
            f"; {withheld} candidate(s) reached the requested {similarity_text(thr.get('RequestedSimilarity', 0))}"
            " but were withheld by the gallery-size cap"
        )
    return out


def _print_search(path: str, r: gallery_ops.SearchFacesByImageResult) -> None:
    matches = r.face_matches
    click.echo(f"{path}: {len(matches)} match(es) at {threshold_text(r.applied_threshold or {})}")
    for m in matches:
        f = m.face
        click.echo(
            f"  {similarity_text(m.similarity):>7}  {f.get('ExternalImageId', '')}  face {f['FaceId']}"
            f"  user {f.get('UserId', '')}"
        )


def _print_index(s: dict[str, Any]) -> None:
    click.echo(", ".join(f"{k}: {v}" for k, v in s.items() if not isinstance(v, (list, dict))))
    known = s.get("already_enrolled") or []
    if known:
        shown = ", ".join(known[:5]) + (f" and {len(known) - 5} more" if len(known) > 5 else "")
        click.echo(
            f"note: {len(known)} image(s) already enrolled in {s['collection']} (same content) were "
            f"not enrolled again: {shown}"
        )
    refused = s.get("refused") or []
    if refused:
        click.echo(f"refused: {len(refused)} file(s), never read (policy decided from the path)")
    _report_refused(refused)
    for e in s.get("errors") or []:
        click.echo(f"error: {e['path']}: {e['error']}", err=True)


# ---- faces ---------------------------------------------------------------------------------------------
@main.group()
def faces() -> None:
    """List and delete enrolled faces."""


@faces.command("list")
@click.option("--collection", "collection_id", required=True)
@click.option("--user-id", default=None)
@pass_app
def faces_list(app: App, collection_id: str, user_id: str | None) -> None:
    req = gallery_ops.ListFacesRequest(collection_id, user_id=user_id or None)
    items = _pages(app, gallery_ops.list_faces, req, lambda p: p.faces)
    app.emit({"Faces": items}, lambda r: _table(items, ["FaceId", "ExternalImageId", "UserId", "Confidence"]))


@faces.command("delete")
@click.argument("face_ids", nargs=-1, required=True)
@click.option("--collection", "collection_id", required=True)
@pass_app
def faces_delete(app: App, face_ids: tuple[str, ...], collection_id: str) -> None:
    r = app.run(gallery_ops.delete_faces, gallery_ops.DeleteFacesRequest(collection_id, list(face_ids)))
    app.emit(r, lambda r: click.echo(f"deleted {len(r.deleted_faces)} face(s)"))


# ---- users -----------------------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Users: a person's several faces searched as one."""


@users.command("create")
@click.argument("user_id")
@click.option("--collection", "collection_id", required=True)
@pass_app
def users_create(app: App, user_id: str, collection_id: str) -> None:
    app.emit(
        app.run(user_ops.create_user, user_ops.UserRequest(collection_id, user_id)),
        lambda r: click.echo(f"created user {user_id}"),
    )


@users.command("associate")
@click.argument("user_id")
@click.argument("face_ids", nargs=-1, required=True)
@click.option("--collection", "collection_id", required=True)
@pass_app
def users_associate(app: App, user_id: str, face_ids: tuple[str, ...], collection_id: str) -> None:
    r = app.run(
        user_ops.associate_faces, user_ops.AssociateFacesRequest(collection_id, user_id, list(face_ids))
    )
    app.emit(r, lambda r: click.echo(f"associated {len(r.associated_faces)} face(s); user {r.user_status}"))


@users.command("list")
@click.option("--collection", "collection_id", required=True)
@pass_app
def users_list(app: App, collection_id: str) -> None:
    items = [
        to_wire(u)
        for u in _pages(app, user_ops.list_users, user_ops.ListUsersRequest(collection_id), lambda p: p.users)
    ]
    app.emit({"Users": items}, lambda r: _table(items, ["UserId", "UserStatus"]))


@users.command("search")
@click.option("--collection", "collection_id", required=True)
@click.option("--image", type=IMAGE, default=None, help="Search by the largest face in this photo.")
@click.option("--user-id", default=None, help="Search by an enrolled user.")
@click.option("--threshold", type=click.FloatRange(0, 100), default=None)
@pass_app
def users_search(
    app: App, collection_id: str, image: str | None, user_id: str | None, threshold: float | None
) -> None:
    """Which users match a photo (SearchUsersByImage) or a user (SearchUsers)?"""
    if bool(image) == bool(user_id):
        raise click.UsageError("give exactly one of --image or --user-id")
    r: user_ops.SearchUsersByImageResult | user_ops.SearchUsersResult
    if image:
        r = app.run(
            user_ops.search_users_by_image,
            user_ops.SearchUsersByImageRequest(collection_id, image_request(image, app), threshold),
        )
    else:
        r = app.run(
            user_ops.search_users,
            user_ops.SearchUsersRequest(collection_id, user_id, user_match_threshold=threshold),
        )

    def human(r: user_ops.SearchUsersByImageResult | user_ops.SearchUsersResult) -> None:
        click.echo(f"{len(r.user_matches)} user match(es) at {threshold_text(r.applied_threshold or {})}")
        for m in r.user_matches:
            click.echo(f"  {similarity_text(m.similarity):>7}  {m.user.user_id}")

    app.emit(r, human)


@users.command("delete")
@click.argument("user_id")
@click.option("--collection", "collection_id", required=True)
@pass_app
def users_delete(app: App, user_id: str, collection_id: str) -> None:
    app.emit(
        app.run(user_ops.delete_user, user_ops.UserRequest(collection_id, user_id)),
        lambda r: click.echo(f"deleted user {user_id}"),
    )


# ---- clustering --------------------------------------------------------------------------------------------
@main.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--collection", "collection_id", default=None, help="Also enrol the faces into this collection."
)
@click.option(
    "--make-users", is_flag=True, help="With --collection: turn each group of two or more faces into a user."
)
@click.option(
    "--threshold",
    type=click.FloatRange(50, 100),
    default=None,
    help="Similarity that links two faces (default 80).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default=None,
    help="text (for people; the default), json (as --json) or csv (one row per face).",
)
@click.option("--workers", type=click.IntRange(1, 256), default=None)
@click.option(
    "--external-id-from",
    type=click.Choice(["filename", "folder"]),
    default="filename",
    show_default=True,
    help="With --collection: the subject (ExternalImageId) of each file, from its name or its folder's.",
)
@pass_app
def cluster(
    app: App,
    paths: tuple[str, ...],
    collection_id: str | None,
    make_users: bool,
    threshold: float | None,
    fmt: str | None,
    workers: int | None,
    external_id_from: str,
) -> None:
    """Group the faces in PATH... by person (the photo-library job)."""
    from ..service.bulk import cluster_paths

    if make_users and not collection_id:
        raise click.UsageError("--make-users needs --collection")
    fmt = "json" if app.json else fmt or "text"
    result = cluster_paths(
        app.service,
        list(paths),
        threshold=threshold,
        workers=workers,
        progress=fmt == "text",
        principal=app.principal,
        collection_id=collection_id,
        create_users=make_users,
        external_id_from=external_id_from,
    )
    if not app.json:
        _report_refused(result["refused"])
    if fmt == "json":
        click.echo(json.dumps(result))
        return
    if fmt == "text":
        _print_clusters(result, collection_id)
        return
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["group", "path", "face_id", "left", "top", "width", "height"])
    rows = [(g["group"], f) for g in result["groups"] for f in g["faces"]] + [
        ("", f) for f in result["singletons"]
    ]
    for group, f in rows:
        b = f["BoundingBox"]
        w.writerow(
            [
                group,
                f["path"],
                f.get("FaceId", ""),
                *(round(b[k], 4) for k in ("Left", "Top", "Width", "Height")),
            ]
        )
    click.echo(out.getvalue(), nl=False)


def _print_clusters(result: dict[str, Any], collection_id: str | None) -> None:
    groups, alone = result["groups"], result["singletons"]
    threshold = (result.get("AppliedThreshold") or {}).get("Similarity", "?")
    click.echo(
        f"{result['images']} image(s), {result['faces']} face(s): {len(groups)} group(s) of the same person, "
        f"{len(alone)} face(s) alone (similarity >= {threshold})"
    )
    for g in groups:
        click.echo(f"  group {g['group']} ({g['size']} faces): " + ", ".join(f["path"] for f in g["faces"]))
    if alone:
        click.echo("  alone: " + ", ".join(f["path"] for f in alone))
    for u in result.get("users") or []:
        click.echo(f"user {u['UserId']} in {collection_id}: {u['faces']} face(s) associated")
    for path in result.get("skipped_known") or []:
        click.echo(f"note: {path} is already enrolled in {collection_id}; not enrolled again")
    for e in result.get("errors") or []:
        click.echo(f"error: {e['path']}: {e['error']}", err=True)

"""``facewarden release ...``: footage-release requests, from either side.

The requester files a request and downloads what is released; the owner keeps a footage library,
and declines a request or approves it with chosen files, which leave as redacted copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

from ..redact import masks
from ..release.store import DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS, READY
from ..service import release as ops
from ..service.params import Time, to_wire
from . import App, When, iso, main, pass_app


@main.group("release")
def release_group() -> None:
    """Footage release: requests for footage, decisions, redacted copies (downloaded once)."""


@release_group.group("footage")
def footage() -> None:
    """Your organisation's footage library (what you may release, redacted)."""


@footage.command("add")
@click.argument(
    "files", metavar="FILE...", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option("--recorded-at", type=When(), default=None, help="When it was recorded (ISO 8601).")
@click.option("--place", default=None, help="Where it was recorded.")
@pass_app
def footage_add(app: App, files: tuple[str, ...], recorded_at: Time | None, place: str | None) -> None:
    """Add photos or videos to the library (each checked: a clear error if it is not one)."""
    for name in files:
        info = app.run(
            ops.add_footage, ops.AddFootageRequest(recorded_at=recorded_at, place=place, path=name)
        )
        app.emit(info, lambda i: click.echo(f"{i.footage_id}  {i.media:5}  {i.size:>10} bytes  {i.name}"))


@footage.command("list")
@pass_app
def footage_list(app: App) -> None:
    result = app.run(ops.list_footage, ops.ListFootageRequest())

    def human(r: ops.ListFootageResult) -> None:
        for f in r.footage:
            click.echo(f"{f.footage_id}  {f.media:5}  {f.size:>10} bytes  {f.name}  {f.place or ''}")
        if not r.footage:
            click.echo("(no footage)")

    app.emit(result, human)


@release_group.command("request")
@click.option("--owner", "owner", required=True, help="The organisation whose footage you ask for.")
@click.option("--from", "start", type=When(), required=True, help="Start of the time asked for (ISO 8601).")
@click.option("--to", "end", type=When(), required=True, help="End of the time asked for.")
@click.option("--place", required=True)
@click.option("--reason", required=True)
@click.option("--legal-basis", required=True, help='e.g. "warrant", "court order".')
@click.option("--reference", default=None, help="The warrant's or order's reference.")
@pass_app
def request(
    app: App,
    owner: str,
    start: Time,
    end: Time,
    place: str,
    reason: str,
    legal_basis: str,
    reference: str | None,
) -> None:
    """Ask ORG for its footage of a time and place (CreateReleaseRequest)."""
    req = ops.CreateReleaseRequestRequest(
        owner, ops.TimeRange(start, end), place, reason, legal_basis, reference
    )
    app.emit(app.run(ops.create_release_request, req), _print_request)


@release_group.command("list")
@click.option("--role", type=click.Choice(["requester", "owner", "any"]), default="any", show_default=True)
@click.option("--status", type=click.Choice(["PENDING", "DECLINED", "RELEASED", "EXPIRED"]), default=None)
@pass_app
def release_list(app: App, role: str, status: str | None) -> None:
    """The requests your organisation made (requester) or received (owner), newest first."""
    result = app.run(ops.list_release_requests, ops.ListReleaseRequestsRequest(role, status))

    def human(r: ops.ListReleaseRequestsResult) -> None:
        for q in r.release_requests:
            click.echo(
                f"{q.request_id}  {q.status:8}  {q.requester_organization} -> {q.owner_organization}  "
                f"{q.place}: {q.reason}"
            )
        if not r.release_requests:
            click.echo("(no requests)")

    app.emit(result, human)


@release_group.command("show")
@click.argument("request_id")
@pass_app
def release_show(app: App, request_id: str) -> None:
    app.emit(app.run(ops.describe_release_request, ops.ReleaseRequestRef(request_id)), _print_request)


@release_group.command("decline")
@click.argument("request_id")
@click.option("--reason", required=True)
@pass_app
def release_decline(app: App, request_id: str, reason: str) -> None:
    """Decline a request made to your organisation."""
    req = ops.DeclineReleaseRequestRequest(request_id, reason)
    app.emit(app.run(ops.decline_release_request, req), _print_request)


@release_group.command("approve")
@click.argument("request_id")
@click.argument("footage_ids", metavar="FOOTAGE_ID...", nargs=-1, required=True)
@click.option(
    "--keep-collection",
    default=None,
    metavar="COLLECTION",
    help="Leave your consenting people of this collection visible (an identification).",
)
@click.option(
    "--expires-in-days",
    type=click.FloatRange(0.01, MAX_EXPIRY_DAYS),
    default=DEFAULT_EXPIRY_DAYS,
    show_default=True,
)
@click.option("--method", type=click.Choice(masks.METHODS), default="blur", show_default=True)
@click.option("--reason", default=None)
@pass_app
def release_approve(
    app: App,
    request_id: str,
    footage_ids: tuple[str, ...],
    keep_collection: str | None,
    expires_in_days: float,
    method: str,
    reason: str | None,
) -> None:
    """Release FOOTAGE_IDs of your library for REQUEST_ID, as redacted copies (ReleaseFootage)."""
    req = ops.ReleaseFootageRequest(
        request_id, list(footage_ids), keep_collection, expires_in_days, method=method, reason=reason
    )
    app.emit(app.run(ops.release_footage, req), _print_request)


@release_group.command("download")
@click.argument("request_id")
@click.argument("item_ids", metavar="[ITEM_ID...]", nargs=-1)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@pass_app
def release_download(app: App, request_id: str, item_ids: tuple[str, ...], out_dir: str) -> None:
    """Download released copies (each once; all those ready when no ITEM_ID is given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not item_ids:
        described = app.run(ops.describe_release_request, ops.ReleaseRequestRef(request_id))
        item_ids = tuple(i.item_id for i in described.items or [] if i.status == READY)
    for item_id in item_ids:
        file = app.run(ops.get_released_footage, ops.GetReleasedFootageRequest(request_id, item_id))
        target = out / file.filename
        shutil.copyfile(file.path, target)
        file.done()
        summary: dict[str, Any] = {"RequestId": request_id, "ItemId": item_id, "Output": str(target)}
        app.emit(summary, lambda s: click.echo(f"{s['ItemId']} -> {s['Output']}"))


def _print_request(r: ops.ReleaseRequestInfo) -> None:
    w = to_wire(r)
    click.echo(
        f"{r.request_id}  {r.status}  {r.requester_organization} ({r.requester_sector}) -> {r.owner_organization}"
    )
    span = w["TimeRange"]
    click.echo(f"  time {iso(span['Start'])} to {iso(span['End'])}  place {r.place}")
    click.echo(f"  reason {r.reason}  legal basis {r.legal_basis} {r.reference or ''}")
    if r.decision_reason:
        click.echo(f"  decision: {r.decision_reason}")
    for i in r.items or []:
        click.echo(
            f"  {i.item_id}  {i.status:10}  {i.media:5}  {i.name}  faces hidden {i.faces_hidden}, kept {i.faces_kept}"
            + (f"  ({i.message})" if i.message else "")
        )

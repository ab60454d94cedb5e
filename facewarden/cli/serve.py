"""`facewarden serve`: the HTTP service (Rekognition wire protocol, REST API, web console)."""

from __future__ import annotations

import json

import click

from ..errors import ResourceNotFound
from ..service import household
from ..service.jobs import worker_pool
from . import FILE, App, main, pass_app


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8750, show_default=True, type=click.IntRange(1, 65535))
@click.option("--init-org", default=None, help="On first start, initialise with this owner organisation.")
@click.option("--init-sector", default=None, help="On first start, the owner organisation's declared sector.")
@click.option(
    "--init-defaults",
    is_flag=True,
    hidden=True,
    help="The --init-* values are defaults nobody asked for (make serve without ORG/SECTOR): "
    "say nothing when the installation exists already.",
)
@click.option("--ssl-certfile", type=FILE, default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", type=FILE, default=None, help="The certificate's private key (PEM).")
@click.option(
    "--sweep-every",
    type=click.FloatRange(1, None),
    default=3600,
    show_default=True,
    help="Seconds between retention sweeps (expired consents and templates are erased).",
)
@pass_app
def serve(
    app: App,
    host: str,
    port: int,
    init_org: str | None,
    init_sector: str | None,
    init_defaults: bool,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    sweep_every: float,
) -> None:
    """Serve the HTTP API and the web console (HTTPS with --ssl-certfile and --ssl-keyfile)."""
    from ..api import serve as run

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("give both --ssl-certfile and --ssl-keyfile, or neither")
    svc = app.service
    try:
        svc.owner_principal()
        owner = svc.principals.owner_org()
        asked = (init_org, init_sector)
        if (
            owner is not None
            and not init_defaults
            and any(asked)
            and asked != (owner["Name"], owner["Sector"])
        ):
            click.echo(
                f"note: {app.settings.data_dir} is initialised already: owner organisation {owner['Name']}, "
                f"declared sector {owner['Sector']}. --init-org/--init-sector (make serve ORG=... SECTOR=...) "
                "apply on the first start only and are ignored. To change the declared sector (an audited "
                f"admin command): facewarden org set-sector {owner['Name']} {init_sector or 'SECTOR'}",
                err=True,
            )
    except ResourceNotFound:
        if not (init_org and init_sector):
            raise click.UsageError(
                "not initialised: run `facewarden init --org-name NAME --sector SECTOR` first "
                "(or pass --init-org and --init-sector). The sector is declared because the moratorium "
                "decides on it."
            ) from None
        principal, secret = svc.init_owner(init_org, init_sector)
        key_file = app.settings.data_dir / "owner-key.json"
        key_file.write_text(json.dumps({"AccessKeyId": principal.key_id, "SecretAccessKey": secret}) + "\n")
        key_file.chmod(0o600)
        click.echo(f"Initialised {app.settings.data_dir} for {init_org} (declared sector: {init_sector}).")
        click.echo(f"Owner key (shown once; a copy readable only by you is in {key_file}):")
        click.echo(f"  AccessKeyId={principal.key_id}\n  SecretAccessKey={secret}")
    for col, sector in household.misplaced(svc):  # (the service audited each once as HouseholdRefused)
        click.echo(
            f"refused: household collection {col.collection_id} belongs to {col.owner_org} (sector {sector}), "
            "not to a natural person (sector individual): every call on it is refused until you run "
            f"`facewarden collection convert {col.collection_id} --consent required` (which erases every "
            "face without a consent record)",
            err=True,
        )
    scheme = "https" if ssl_certfile else "http"
    click.echo(
        f"facewarden on {scheme}://{host}:{port}/  (console: {scheme}://{host}:{port}/console, API docs: /docs)"
    )
    workers = app.settings.job_workers
    pool = worker_pool(svc, workers).start() if workers > 0 else None
    if pool is not None:
        click.echo(f"{workers} job worker(s) running video jobs (FACEWARDEN_JOB_WORKERS)")
    try:
        run(
            svc,
            host=host,
            port=port,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            sweep_every_s=sweep_every,
        )
    finally:
        if pool is not None:
            pool.stop()
